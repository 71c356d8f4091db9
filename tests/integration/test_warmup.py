"""Warm-up after a lazy restore (issue 16, docs/hotset.md "Warm-up"): real
CRIU, real processes in the lab's namespaces, exact contents.

- faults overtake a running warm-up: while writers fault on random pages, the
  daemon's stats show faults served with thousands of warm-up pages still
  queued, and never more warm-up in flight ahead of a fault than the window
  allows (structure, not time);
- a page the process writes during the warm-up is never overwritten by an
  older background copy (memwalk checks every page's generation; forkmem's
  exact digest);
- the warm-up never pulls beyond a budget;
- migrate's default warm-up ends with every page resident and the source
  released."""

import json
import os

import pytest

import util
from test_budget import checkpoint_and_serve, finish, memwalk
from test_live import forkmem, live_state, start_forkmem, thaw_leftovers  # noqa: F401 (fixture)

MIB = 1 << 20
PG = 4096
FORKMEM = os.path.join(util.BUILD, "forkmem")
stats = util.lazy_stats


@pytest.mark.time_limit(300)
def test_faults_overtake_a_running_warmup_and_writes_survive_it(lab, procs, criu, tmp_path):
    listen, key = checkpoint_and_serve(
        procs, tmp_path,
        [util.MEMWALK, "--mib", "64", "--threads", "2", "--write-ratio", "0.3", "--seed", "11"],
        lambda: util.wait_until(lambda: util.memwalk_request(util.HOSTS["src"], host="src")["writes"] > 2000,
                                60, "memwalk to write"))
    workdir = tmp_path / "wd"
    # capped so that the warm-up is still running while memwalk's writers
    # fault on random pages: 64 MiB at 4 MB/s is ~16 s of warm-up
    res = util.restore_json(procs, workdir, "--source", listen, "--key", key, "--warmup", "all",
                            "--background-fetch", "4M")
    assert res["warmup"] == "all", res
    # a fault can land before the first warm-up request is sent: wait for
    # faults that found warm-up requests in flight ahead of them, too
    util.wait_until(lambda: (lambda w: w["faults_overtook"] >= 20 and w["max_ahead_pages"] > 0)(
        stats(workdir)["warmup"]), 60, "faults served while warm-up requests were in flight")
    w = stats(workdir)["warmup"]
    print("\nwarm-up while faulting:", w)
    assert w["mode"] == "all" and w["state"] == "running", w
    # faults were served while most of the plan still waited behind them
    assert w["max_queued_at_fault"] > 8000, w
    # and never found more warm-up in flight ahead of them than the window
    # (of the largest requests: on its own connection their size adapts)
    assert 0 < w["max_ahead_pages"] <= w["window_max"] * w["chunk_pages_max"], w
    assert w["fault_during"]["count"] > 0, w
    assert memwalk()["writes"] > 1000
    # writes keep running until every page is here
    util.wait_until(lambda: stats(workdir)["warmup"]["state"] == "done", 120, "the warm-up to finish")
    s = stats(workdir)
    assert s["total"]["remote_bytes"] == 0, s["total"]
    assert s["warmup"]["source_needed"] is False, s["warmup"]
    assert s["warmup"]["pages_moved"] > 1000, s["warmup"]
    st = memwalk()
    assert st["errors"] == 0 and st["bad_bytes"] == 0, st
    v = memwalk("VERIFY", timeout=300)
    assert v["verify_pages"] == 64 * 256 and v["verify_errors"] == 0, v
    final = finish(res, workdir)
    assert final["total"]["eexist"] == 0, final["total"]


@pytest.mark.time_limit(300)
def test_warmup_never_pulls_beyond_the_budget(lab, procs, criu, tmp_path):
    listen, key = checkpoint_and_serve(
        procs, tmp_path, [FORKMEM, "--mib", "64", "--port", 7071, "--seed", 4],
        lambda: util.wait_forkmem("src"))
    workdir = tmp_path / "wd"
    budget = 16 * MIB
    res = util.restore_json(procs, workdir, "--source", listen, "--key", key, "--warmup", "all",
                            "--budget", "16M")
    # nobody touches the memory: only the warm-up brings pages in
    util.wait_until(lambda: stats(workdir)["warmup"]["state"] == "done", 60, "the warm-up to stop")
    s = stats(workdir)
    w, b = s["warmup"], s["budget"]
    print("\nwarm-up under a budget:", w, b)
    assert "budget" in w["done_reason"], w
    assert w["budget_pages"] == budget // PG, w
    assert 0 < w["bytes_moved"] <= budget, w
    assert b["evictions"] == 0, b  # it never pushed the process over the budget
    assert b["max_resident_bytes"] <= budget, b
    assert w["source_needed"] is True, w
    # the memory is intact (the rest arrives by faults, under the budget)
    assert forkmem("dst", "VERIFY", timeout=120)["errors"] == 0
    finish(res, workdir)


@pytest.mark.time_limit(240)
def test_migrate_default_warmup_makes_everything_resident_and_releases_the_source(lab, procs, criu, tmp_path,
                                                                                  thaw_leftovers):  # noqa: F811
    src = start_forkmem(procs, tmp_path, mib=32)
    digest = forkmem("src", "SUM")["sum"]
    workdir = tmp_path / "mig"
    thaw_leftovers.append(workdir / "src")
    res = json.loads(util.distriproc("migrate", "--pid", src, "--workdir", workdir, "--port", 7341,
                                     "--from", "memory", "--json", timeout=120).stdout)
    procs.track(res["pid"])
    procs.track(res["daemon_pid"])
    assert res["warmup"] == "all", res
    dst = workdir / "dst"
    util.wait_until(lambda: stats(dst)["warmup"]["state"] == "done", 60, "the warm-up to finish")
    s = stats(dst)
    assert s["warmup"]["source_needed"] is False, s["warmup"]
    assert s["total"]["remote_bytes"] == 0, s["total"]
    assert s["warmup"]["pages_moved"] > 32 * 256 // 2, s["warmup"]
    util.wait_until(lambda: live_state(workdir / "src")["state"] == "released", 60, "the source to be released")
    util.wait_gone(src, timeout=20)
    assert "the source holds nothing more" in (dst / "lazyd.log").read_text()
    # every byte arrived: the digest is exact, and writes stick
    assert forkmem("dst", "SUM")["sum"] == digest
    assert forkmem("dst", "WRITE 7")["pages_written"] > 0
    assert forkmem("dst", "VERIFY")["errors"] == 0
    util.distriproc("migrate", "--stop", "--workdir", workdir, timeout=60)


@pytest.mark.time_limit(240)
def test_warmup_hot_moves_the_classified_mappings_only(lab, procs, criu, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    pid = util.start_container(procs, "src", [util.MEMWALK, "--mib", "32", "--threads", "1", "--seed", "12"],
                               tmp_path / "src.pid")
    util.wait_until(lambda: util.memwalk_request(util.HOSTS["src"], host="src")["ops"] > 1000, 60, "memwalk")
    # per-mapping heat, sampled while memwalk walks its area
    util.distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", images, "--classify", "1",
                    timeout=120)
    util.wait_gone(pid, timeout=20)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = util.serve_images(procs, images, key, 7342)
    workdir = tmp_path / "wd"
    res = util.restore_json(procs, workdir, "--source", listen, "--key", key, "--warmup", "hot")
    util.wait_until(lambda: stats(workdir)["warmup"]["state"] == "done", 60, "the warm-up to finish")
    w = stats(workdir)["warmup"]
    print("\nwarm-up hot:", w)
    # the plan is the classification's hot mappings, nothing else
    assert w["pages_planned_heat"] >= 32 * 256 and w["pages_planned_rest"] == 0, w
    assert w["pages_moved"] <= w["pages_planned_heat"] + w["pages_planned_trace"], w
    assert "hot set" in w["done_reason"] and w["source_needed"] is True, w
    v = memwalk("VERIFY", timeout=120)
    assert v["verify_errors"] == 0, v
    finish(res, workdir)


def server_stats(listen, key):
    return json.loads(util.run(util.netns_cmd("dst", [util.DISTRIPROC, "query", "--source", listen, "--key", key,
                                                      "stats"]), timeout=60).stdout)


@pytest.mark.time_limit(300)
def test_warmup_has_its_own_connection_and_faults_pass_it_stalled(lab, procs, criu, tmp_path):
    """The warm-up runs on a second connection, announced to the server as
    bulk; a fault never needs it: with that connection stalled outright (its
    packets dropped in dst, the extreme of a saturated lane), faults are still
    answered on the first one while the warm-up moves nothing. Then the lane
    recovers (TCP retransmits, or the client reconnects) and every page
    arrives intact."""
    def hold():  # the walkers parked: the faults come when the test says
        util.memwalk_request(util.HOSTS["src"], command="HOLD", host="src")
        return True
    listen, key = checkpoint_and_serve(
        procs, tmp_path, [util.MEMWALK, "--mib", "64", "--threads", "2", "--seed", "5"],
        lambda: util.wait_until(hold, 60, "memwalk to hold"))
    workdir = tmp_path / "wd"
    # capped: 64 MiB at 8 MB/s keeps the warm-up running for ~8 s
    res = util.restore_json(procs, workdir, "--source", listen, "--key", key, "--warmup", "all",
                            "--background-fetch", "8M")
    util.wait_until(lambda: (lambda w: w["state"] == "running" and w["lane_port"] and w["pages_moved"] > 0)(
        stats(workdir)["warmup"]), 60, "the warm-up to run on its own connection")
    w0 = stats(workdir)["warmup"]
    assert w0["lane"] == "own", w0
    assert server_stats(listen, key)["bulk_connections"] == 1
    port = str(w0["lane_port"])
    rules = [["INPUT", "-p", "tcp", "--dport", port, "-j", "DROP"],
             ["OUTPUT", "-p", "tcp", "--sport", port, "-j", "DROP"]]
    try:
        for r in rules:
            util.run(util.netns_cmd("dst", ["iptables", "-I", *r]))
        moved0 = stats(workdir)["warmup"]["pages_moved"]
        f0 = stats(workdir)["total"]["faults_remote"]
        memwalk("GO")
        # faults answered on the first connection while the lane is stalled
        # (within --tcp-user-timeout, 10 s: the lane is not reconnected yet)
        util.wait_until(lambda: stats(workdir)["total"]["faults_remote"] >= f0 + 500, 8,
                        "faults to be answered with the warm-up's connection stalled")
        memwalk("HOLD")
        w1 = stats(workdir)["warmup"]
        print("\nwarm-up stalled:", w0, w1)
        assert w1["lane_port"] == w0["lane_port"], w1  # the same, stalled connection
        # the stalled lane delivered at most what had arrived before the drop
        assert w1["pages_moved"] - moved0 <= w1["window_max"] * w1["chunk_pages_max"], (moved0, w1)
        assert w1["state"] == "running", w1
    finally:
        for r in rules:
            util.run(util.netns_cmd("dst", ["iptables", "-D", *r]), check=False)
    memwalk("GO")
    util.wait_until(lambda: stats(workdir)["warmup"]["state"] == "done", 120, "the warm-up to finish")
    s = stats(workdir)
    assert s["total"]["remote_bytes"] == 0, s["total"]
    st = memwalk()
    assert st["errors"] == 0 and st["bad_bytes"] == 0, st
    v = memwalk("VERIFY", timeout=300)
    assert v["verify_pages"] == 64 * 256 and v["verify_errors"] == 0, v
    finish(res, workdir)


@pytest.mark.time_limit(300)
def test_warmup_shares_the_connection_when_told(lab, procs, criu, tmp_path, monkeypatch):
    """DISTRIPROC_WARMUP_LANE=shared (for measuring one against the other):
    no second connection, the server sees no bulk connection."""
    listen, key = checkpoint_and_serve(
        procs, tmp_path, [FORKMEM, "--mib", "32", "--port", 7071, "--seed", 6],
        lambda: util.wait_forkmem("src"))
    workdir = tmp_path / "wd"
    monkeypatch.setenv("DISTRIPROC_WARMUP_LANE", "shared")
    res = util.restore_json(procs, workdir, "--source", listen, "--key", key, "--warmup", "all")
    util.wait_until(lambda: stats(workdir)["warmup"]["state"] == "done", 60, "the warm-up to finish")
    w = stats(workdir)["warmup"]
    assert w["lane"] == "shared" and w["lane_port"] is None, w
    assert server_stats(listen, key)["bulk_connections"] == 0
    assert forkmem("dst", "VERIFY", timeout=120)["errors"] == 0
    finish(res, workdir)
