"""`distriproc bench nginx` and `bench pg-ttfr` at their smallest sizes: real
runc containers on the real rootfs, real CRIU, the lab. Checks the JSON's
structure and that the baselines and every point were measured (requests
served, probes answered correctly, bytes moved), never how fast.

Parallel-safe: the benchmarks run in this test's own lab (DISTRIPROC_LAB), with
container ids, veths and addresses derived from it, and a private workdir."""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

import util

ROOTFS_SH = os.path.join(util.ROOT, "scripts", "rootfs.sh")


@pytest.fixture(scope="module")
def rootfs():
    """The container rootfs must be built (make rootfs): else a clear failure, not a skip."""
    cp = subprocess.run([ROOTFS_SH, "--path"], capture_output=True, text=True, timeout=30)
    if cp.returncode != 0:
        pytest.fail(f"the container rootfs is not built ({cp.stderr.strip()}): run 'make rootfs'", pytrace=False)
    return cp.stdout.strip()


@pytest.fixture
def workdir():
    """A private workdir the container's mapped root can traverse."""
    # Not pytest's tmp_path: its 0700 parents keep the container's mapped root
    # (host uid 100000) from its bind-mount sources.
    path = tempfile.mkdtemp(prefix="dp-bench-containers-")
    os.chmod(path, 0o711)   # mkdtemp's 0700 would stop the restored tasks on their way to their images
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def bench(name, workdir, *args, timeout):
    """Runs one benchmark in this test's lab; its JSON and the completed process."""
    out = os.path.join(workdir, f"{name}.json")
    cp = util.run([util.DISTRIPROC, "bench", name, "--json", out, "--lab", util.LAB,
                   "--workdir", os.path.join(workdir, "w"), *args],
                  timeout=timeout, env=dict(os.environ, DISTRIPROC_LAB=util.LAB))
    with open(out) as f:
        return json.load(f), cp


def report(workdir, option, name, plots):
    """scripts/bench_containers_report.py on the run's JSON: its plots and the
    Markdown page exist; returns the page."""
    util.run(["/usr/bin/python3", os.path.join(util.ROOT, "scripts", "bench_containers_report.py"), option,
              os.path.join(workdir, f"{name}.json"), "--out", workdir], timeout=120)
    for plot in plots:
        for ext in ("png", "svg"):
            assert os.path.getsize(os.path.join(workdir, f"{plot}.{ext}")) > 0
    with open(os.path.join(workdir, "containers.md")) as f:
        return f.read()


def assert_no_containers_left(workdir):
    """No runc container and no lab left behind."""
    for host in util.HOSTS:
        root = os.path.join(workdir, "w", f"runc-{host}")
        if os.path.isdir(root):
            cp = util.run(["runc", "--root", root, "list", "--format", "json"])
            assert not json.loads(cp.stdout or "null"), f"runc ({host}) still lists containers"
    assert not util.lab_leftovers(), "the benchmark left its lab behind"


def assert_wrk_measured(r, where):
    """Requests were served and timed, without errors: measured, whatever the speed."""
    assert r["requests"] > 0 and r["duration_us"] > 0 and r["req_per_s"] > 0, f"{where}: {r}"
    assert r["bytes"] >= r["requests"] * 4000, f"{where}: every reply carries a 4000-byte object: {r}"
    assert sum(r["errors"].values()) == 0, f"{where}: {r['errors']}"
    assert 0 < r["p50_us"] <= r["p99_us"] <= r["max_us"], f"{where}: {r}"


@pytest.mark.time_limit(300)
def test_bench_nginx_smallest(lab_clean, criu, rootfs, workdir):
    """Baselines (start, end) and both points measured, the budget binding, report built."""
    doc, _ = bench("nginx", workdir, "--objects-mib", "2", "--seconds", "1", "--warmup", "1",
                   "--fractions", "0,50", "--connections", "2", timeout=280)
    assert doc["benchmark"] == "nginx" and doc["schema"] == 1
    assert doc["objects"] == 2 * 1024 * 1024 // 4000 and doc["content_bytes"] == doc["objects"] * 4000
    assert "heap" in doc["what_is_remote"]
    # The same container, measured locally before and after the points, with
    # the same warm-up as the points.
    for base in ("local_start", "local_end"):
        assert_wrk_measured(doc[base], base)
    assert doc["nginx_memory_kib"]["Anonymous"] * 1024 >= doc["content_bytes"], "the objects live in its memory"
    assert [p["remote_pct_target"] for p in doc["points"]] == [0, 50]
    p0, p50 = doc["points"]
    assert p0["budget"] is None and doc["working_set_bytes"] == p0["resident_bytes"] > 0
    assert p50["budget"] == f"{50 * doc['working_set_bytes'] // 100 // 1024}K"
    for p in doc["points"]:
        assert_wrk_measured(p["result"], f"point {p['remote_pct_target']}")
        assert p["objects_verified"] >= 2, "restored NGINX served byte-identical objects"
        assert 0 <= p["remote_fraction"] <= 1 and p["resident_bytes"] + p["remote_bytes"] > 0
        assert p["vs_local"] > 0 and p["fault_latency"]["count"] > 0
    # The budget holds part of the working set remote: measured, not the target.
    assert p50["budget_stats"]["evictions"] > 0 and p50["budget_stats"]["writeback_errors"] == 0
    assert p50["working_set_remote"] > 0 and p50["resident_bytes"] < p0["resident_bytes"]
    assert_no_containers_left(workdir)
    md = report(workdir, "--nginx", "nginx", ("nginx-throughput", "nginx-p99"))
    assert f"**{p50['vs_local']:.0%}**" in md and "local, end" in md


@pytest.mark.time_limit(300)
def test_bench_pg_ttfr_smallest(lab_clean, criu, rootfs, workdir):
    """Every system probed to a correct answer once, migrations moved bytes, report built."""
    doc, _ = bench("pg-ttfr", workdir, "--table-mib", "1", "--runs", "1", timeout=280)
    assert doc["benchmark"] == "pg-ttfr" and doc["schema"] == 1
    assert doc["rows"] >= 1000 and len(doc["expected"]) == 32, "the probe's answer is an md5 from the source"
    assert set(doc["systems"]) == {"local", "distriproc", "runc_full"}
    for name, s in doc["systems"].items():
        assert s["n"] == 1 and len(s["runs"]) == 1, name
        r = s["runs"][0]
        assert r["attempts"] >= 1 and r["prewarmed_blocks"] > 0, (name, r)
        assert 0 < r["from_restore_s"] <= r["from_freeze_s"], (name, r)
        assert s["from_restore_s"]["median"] == r["from_restore_s"]
    for name in ("distriproc", "runc_full"):
        r = doc["systems"][name]["runs"][0]
        assert r["dump_s"] > 0 and r["images_bytes"] > 0 and r["bytes_moved"] > 0, (name, r)
        assert r["from_freeze_s"] >= r["from_restore_s"] + r["dump_s"] * 0.9, (name, r)
    # DistriProc's daemon served the restored tree (pages fetched on faults);
    # runc's copy carried the whole image set.
    assert doc["systems"]["distriproc"]["runs"][0]["pages_fetched_at_end"] > 0
    assert "restore --runc-bundle" in doc["distriproc_commands"]
    assert doc["systems"]["distriproc"]["runs"][0]["restore_cmd_s"] > 0
    assert doc["systems"]["runc_full"]["runs"][0]["bytes_moved"] >= doc["systems"]["runc_full"]["runs"][0][
        "images_bytes"]
    assert doc["systems"]["runc_full"]["vs_runc_full_from_restore"] == 1.0
    assert_no_containers_left(workdir)
    md = report(workdir, "--pg-ttfr", "pg-ttfr", ("pg-ttfr",))
    assert f"{doc['systems']['distriproc']['from_restore_s']['median']:.3f} s" in md


@pytest.mark.time_limit(30)
def test_bench_containers_usage_and_bad_arguments(tmp_path):
    """--help, missing --json, bad arguments and an unreachable workdir: refused early."""
    for name, option in (("nginx", "--objects-mib"), ("pg-ttfr", "--table-mib")):
        cp = util.run([util.DISTRIPROC, "bench", name, "--help"])
        assert option in cp.stdout and "make rootfs" in cp.stdout
        cp = util.run([util.DISTRIPROC, "bench", name], check=False)
        assert cp.returncode == 2 and "--json OUT" in cp.stderr, "no --json: usage, nothing run"
    out = tmp_path / "x.json"
    # The budgets are shares of the working set the no-budget point measures.
    cp = util.run([util.DISTRIPROC, "bench", "nginx", "--json", out, "--fractions", "50,0"], check=False)
    assert cp.returncode == 2 and "must start with 0" in cp.stderr
    cp = util.run([util.DISTRIPROC, "bench", "pg-ttfr", "--json", out, "--runs", "0"], check=False)
    assert cp.returncode == 2 and "--runs 1..20" in cp.stderr
    # pytest's tmp_path has 0700 parents: refused before anything starts.
    cp = util.run([util.DISTRIPROC, "bench", "pg-ttfr", "--json", out, "--workdir", tmp_path / "w", "--lab",
                   "cbnone"], check=False)
    assert cp.returncode == 1 and "not searchable by others" in cp.stderr and "--workdir" in cp.stderr
    assert not out.exists() and not os.path.exists("/run/netns/cbnone-src")
