"""`distriproc bench prefetch` end to end at a tiny size, in a lab of its own:
memwalk (4 walker threads, each walking its part in order: interleaved
streams) restored lazily with prefetch none and streams; every page the
passes read is verified by memwalk, and the run fails on a bad page. Checks
behaviour, not speed: the result is well formed, a pass with none faults once
per page it reads, and streams finds the four walks among the interleaved
faults (a few dozen faults), which the policy cannot do without telling the
streams apart (auto, one stream per mapping, faults on most pages here)."""
import json

import pytest

import util

MIB = 8
PAGES = MIB * 256


@pytest.mark.time_limit(240)
def test_bench_prefetch_runs_and_streams_find_the_walkers(tmp_path):
    out = tmp_path / "prefetch.json"
    lab = (util.LAB[:8] + "pb")
    util.distriproc("bench", "prefetch", "--json", out, "--mib", MIB, "--threads", 4, "--patterns", "seq",
                    "--policies", "none,streams", "--repeat", 1, "--lab", lab, "--workdir", tmp_path / "wd",
                    timeout=200)
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "prefetch" and doc["mib"] == MIB and doc["threads"] == 4, doc
    (p,) = doc["patterns"]
    assert p["pattern"] == "seq" and p["pass_pages"] == PAGES and p["local_s"] > 0, p
    none, streams = p["policies"]["none"], p["policies"]["streams"]
    for r in (none, streams):
        assert r["pass_s"] > 0 and r["MBps"] > 0 and r["vs_link_floor"] > 0, r
        assert len(r["runs"]) == 1 and r["runs"][0]["ops"] == PAGES, r
    # none: one remote fault per page read (plus memwalk's few other pages)
    assert PAGES <= none["faults_remote"] <= PAGES + 256 and none["pages_prefetched"] == 0, none
    # streams: per walker 2 faults to find its stream, then one per window
    # (8, 16, ..., 256 pages): 512 pages each take < 10; + memwalk's others
    assert streams["faults_remote"] <= 4 * 10 + 256, streams
    assert streams["pages_prefetched"] >= PAGES - 4 * 10, streams
    assert none["vs_none"] == 1.0
    # the link: every page the pass needs crossed once, in one request per
    # page without prefetch and in a few hundred with it
    assert p["needed_pages"] == PAGES, p
    for r in (none, streams):
        assert 1.0 <= r["moved_vs_needed"] <= (PAGES + 256) / PAGES, r
        run = r["runs"][0]
        assert set(run["pass_cpu_s"]) == {"daemon", "server", "workload"}, run
        assert all(v is not None and v >= 0 for v in run["pass_cpu_s"].values()), run
    assert none["pass_fetch_requests"] >= PAGES, none
    assert streams["pass_fetch_requests"] <= PAGES // 8, streams


@pytest.mark.time_limit(240)
def test_bench_prefetch_budget_streams_the_pass_through_eviction(tmp_path):
    """--budget 4M: the pass reads twice the budget, so the daemon evicts
    during it; memwalk verifies every page read (a bad page fails the run),
    and the run reports the evictions and the pages moved for the pass."""
    out = tmp_path / "prefetch.json"
    lab = (util.LAB[:8] + "pc")
    util.distriproc("bench", "prefetch", "--json", out, "--mib", MIB, "--threads", 2, "--patterns", "seq",
                    "--policies", "streams", "--repeat", 1, "--budget", "4M", "--lab", lab, "--workdir",
                    tmp_path / "wd", timeout=200)
    doc = json.loads(out.read_text())
    assert doc["budget"] == "4M", doc
    (p,) = doc["patterns"]
    (run,) = p["policies"]["streams"]["runs"]
    assert run["ops"] == PAGES, run
    assert run["pass_evictions"] > 0 and run["stop_p99_us"] is not None, run
    assert run["pass_pages_moved"] >= PAGES - 4 * 10, run
