"""`distriproc bench ttfr` itself, at a tiny size, for the systems issue 11
added (CRIU's own remote lazy migration and DistriProc memory mode): each
runs with real CRIU and Redis in the lab and yields a well-formed result whose
phases add up to the time from the freeze, the global fs.pipe-max-size is put
back, and the report shows the systems and the targets' table. Timings are
never asserted: the bench's numbers are whatever this machine gives."""

import json
import os
import shutil
import tempfile

import pytest

import util

REPORT = os.path.join(util.ROOT, "scripts", "bench_report.py")
PIPE_MAX = "/proc/sys/fs/pipe-max-size"
NEW = ("criu_lazy_remote", "distriproc_memory")
PHASES = ("freeze_s", "skeleton_s", "transfer_s", "restore_s", "first_reply_s")


def pipe_max():
    with open(PIPE_MAX) as f:
        return f.read().strip()


@pytest.mark.time_limit(400)
def test_new_systems_at_a_tiny_size(lab_clean, criu, tmp_path):
    out = tmp_path / "ttfr.json"
    before = pipe_max()
    # a short scratch path: the restores put unix sockets (at most 107 bytes) under it
    work = tempfile.mkdtemp(prefix="ttfr", dir="/tmp")
    try:
        util.distriproc("bench", "ttfr", "--sizes", "16M", "--repeat", "1", "--systems",
                        ",".join(NEW + ("local",)), "--port", "7480", "--workdir", work, "--json", out, timeout=380)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert pipe_max() == before, "the bench left fs.pipe-max-size changed"
    doc = json.load(open(out))
    assert doc["benchmark"] == "ttfr" and doc["command"].startswith("distriproc bench ttfr --sizes 16M")
    z = doc["sizes"][0]
    assert z["skipped"] is None and z["size"] == "16M"
    assert len(z["loadavg_start"].split()) == 3 and len(z["loadavg_end"].split()) == 3
    # only the systems asked for, and each measured once without error
    assert set(z["systems"]) == set(NEW) | {"local"}, z["systems"].keys()
    for name in NEW:
        s = z["systems"][name]
        assert s["n"] == 1 and s["error"] is None, (name, s)
        run = s["runs"][0]
        ph = run["phases"]
        assert set(ph) == set(PHASES), (name, ph)
        # contiguous phases: they add up to from freeze; from restore is what follows the freeze
        assert sum(ph.values()) == pytest.approx(run["from_freeze_s"], abs=2e-6), (name, run)
        assert run["from_restore_s"] == pytest.approx(run["from_freeze_s"] - ph["freeze_s"], abs=2e-6), (name, run)
        assert ph["freeze_s"] > 0 and ph["restore_s"] > 0 and ph["first_reply_s"] > 0, (name, ph)
        assert ph["transfer_s"] == 0, (name, ph)  # lazy: no memory moves before the restore
        assert ph["skeleton_s"] > 0, (name, ph)  # the images / skeleton cross the link
        assert run["bytes_moved"] > 0, (name, run)
        for field in ("from_restore_s", "from_freeze_s", "bytes_moved"):
            assert s[field]["min"] <= s[field]["median"] <= s[field]["max"], (name, field, s[field])
        assert s["phases"]["freeze_s"]["median"] == ph["freeze_s"]
    # DistriProc's finer steps come with its runs only
    assert "distriproc_steps" in z["systems"]["distriproc_memory"]["runs"][0]
    assert "distriproc_steps" not in z["systems"]["criu_lazy_remote"]["runs"][0]
    # CRIU's lazy dump resumed the source: the local probe after it answered at once
    assert z["systems"]["local"]["n"] == 1, z["systems"]["local"]

    res = tmp_path / "r"
    util.run([util.PYTHON, REPORT, "--ttfr", out, "--out", res], timeout=120)
    md = (res / "REPORT.md").read_text()
    assert "| 16M | DistriProc memory mode | " in md and "| 16M | CRIU lazy, remote (its page server) | " in md
    assert "### Issue 11 targets" in md
    # the one target a 16M run can compute: memory mode vs CRIU's remote lazy migration
    x = z["systems"]["distriproc_memory"]["from_freeze_s"]["median"]
    y = z["systems"]["criu_lazy_remote"]["from_freeze_s"]["median"]
    verdict = "pass" if x / y <= 1.0 else "miss"
    assert (f"| 16M: DistriProc memory mode / CRIU lazy, remote (its page server), from freeze <= 1.0x | "
            f"{x:.3f} s / {y:.3f} s | {x / y:.2f}x | **{verdict}** |") in md, md


def test_unknown_system_is_refused(tmp_path):
    cp = util.distriproc("bench", "ttfr", "--systems", "criu_lazy_remote,nosuch", "--json", tmp_path / "x.json",
                         check=False)
    assert cp.returncode == 2 and "unknown system 'nosuch'" in cp.stderr and "distriproc_memory" in cp.stderr
    assert not (tmp_path / "x.json").exists()
