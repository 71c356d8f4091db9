"""The benchmark report generator on small fixtures (tests/fixtures/bench):
parsing the ttfr/faults JSON, plotting with gnuplot (PNG and SVG), the tables
and computed checks in REPORT.md, and clear errors on malformed input. The
benchmarks themselves never run in `make test`."""

import json
import os
import re
import shutil

import pytest

import util

REPORT = os.path.join(util.ROOT, "scripts", "bench_report.py")
FIX = os.path.join(util.ROOT, "tests", "fixtures", "bench")
TTFR = os.path.join(FIX, "ttfr-small.json")
FAULTS = os.path.join(FIX, "faults-small.json")


def report(*args, check=True):
    return util.run([util.PYTHON, REPORT, *args], timeout=120, check=check)


@pytest.mark.time_limit(120)
def test_plots_and_report_from_fixtures(tmp_path):
    out = tmp_path / "results"
    notes = tmp_path / "notes.md"
    notes.write_text("The fixture numbers are made up.\n")
    report("--ttfr", TTFR, "--faults", FAULTS, "--notes", notes, "--out", out)
    for name in ("ttfr-restore", "ttfr-freeze", "fault-cdf", "scan"):
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000, name
        svg = (out / f"{name}.svg").read_text()
        assert "<svg" in svg and "</svg>" in svg, name
    md = (out / "REPORT.md").read_text()
    ttfr = json.load(open(TTFR))
    # Every measured median appears in the table; the skipped size says why.
    for z in ttfr["sizes"]:
        if z["skipped"]:
            assert z["skipped"] in md
            continue
        med = z["systems"]["distriproc"]["from_restore_s"]["median"]
        assert f"| {z['size']} | DistriProc (lazy) | {med:.3f} (" in md, z["size"]
    # Checks are computed from the numbers, not asserted: 128M/64M = 1.5x -> met
    assert "= 1.50x (target: within 2x) -> met" in md, md
    assert "64M: CRIU full / DistriProc = 4.2x from restore" in md
    # Faults: fixture p50 66 <= 1.3 x (48 + 14.2) = 80.9 -> met; at 300 us: 366 <= 1.3 x 362.2 -> met
    assert "remote fault p50 66.0 us vs 1.3 x (raw 48.0 + floor 14.2) = 80.9 us -> met" in md
    assert "best policy seq:64 100.0 MB/s = 2.5x no-prefetch" in md
    assert "best policy seq:64 100.0 MB/s = 11.1x no-prefetch" in md
    assert ttfr["command"] in md and "fixture: distriproc bench faults" in md
    assert "The fixture numbers are made up." in md
    assert ttfr["machine"]["uname"] in md
    # the fixture's floor is the same in both rows: said to be one measurement
    assert "local floor of this run is one measurement, copied into every RTT row" in md


def test_floor_measured_per_row_is_not_called_copied(tmp_path):
    doc = json.load(open(FAULTS))
    doc["runs"][1]["latency"]["local_floor"] = dict(doc["runs"][1]["latency"]["local_floor"], p50_us=17.3)
    path = tmp_path / "f.json"
    path.write_text(json.dumps(doc))
    report("--faults", path, "--out", tmp_path / "r")
    md = (tmp_path / "r" / "REPORT.md").read_text()
    assert "measured again in each RTT row" in md and "copied into every RTT row" not in md, md
    assert "floor 17.3) =" in md, md


@pytest.mark.time_limit(60)
def test_ttfr_only_and_failed_system(tmp_path):
    doc = json.load(open(TTFR))
    doc["sizes"] = doc["sizes"][:1]
    sys_ = doc["sizes"][0]["systems"]["criu_lazy_local"]
    sys_.update({"n": 0, "error": "rep 1: criu restore --lazy-pages failed: tee EPERM", "runs": []})
    for k in ("from_restore_s", "from_freeze_s", "bytes_moved"):
        sys_.pop(k, None)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    out = tmp_path / "r"
    report("--ttfr", path, "--out", out)
    md = (out / "REPORT.md").read_text()
    assert "| 64M | CRIU lazy, local images | failed: rep 1: criu restore --lazy-pages failed: tee EPERM |" in md
    assert not (out / "fault-cdf.png").exists() and (out / "ttfr-restore.svg").exists()


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d.pop("sizes"), "missing field 'sizes'"),
    (lambda d: d.update(benchmark="faults"), "expected 'ttfr'"),
    (lambda d: d.update(schema=7), "schema 7 is not supported"),
    (lambda d: d["sizes"][0]["systems"]["distriproc"]["from_restore_s"].pop("median"),
     "sizes[0].systems.distriproc.from_restore_s: missing field 'median'"),
    (lambda d: d["sizes"][0]["systems"]["local"].update(n="2"), "systems.local.n: expected int"),
])
def test_malformed_ttfr_is_refused(tmp_path, mutate, needle):
    doc = json.load(open(TTFR))
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    cp = report("--ttfr", path, "--out", tmp_path / "r", check=False)
    assert cp.returncode != 0 and needle in cp.stderr, cp.stderr
    assert not (tmp_path / "r" / "REPORT.md").exists()


def test_malformed_faults_and_not_json(tmp_path):
    doc = json.load(open(FAULTS))
    doc["runs"][0]["latency"]["raw_tcp"]["buckets"][1] = [1, 2, 3]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    cp = report("--faults", path, "--out", tmp_path / "r", check=False)
    assert cp.returncode != 0 and "latency.raw_tcp.buckets[1]: expected [upper_us, count]" in cp.stderr
    path.write_text("{not json")
    cp = report("--ttfr", path, "--out", tmp_path / "r", check=False)
    assert cp.returncode != 0 and "not JSON" in cp.stderr


def test_gnuplot_present():
    assert shutil.which("gnuplot"), "gnuplot missing: make deps installs gnuplot-nox"


def _faults_with_methods():
    doc = json.load(open(FAULTS))
    lat = doc["runs"][0]["latency"]
    lat["local_floor"]["method"] = "first touch (application, exact)"
    lat["distriproc"]["method"] = "first touch (application, exact)"
    # a secondary series far above the bound: it must not decide the check
    d = dict(lat["distriproc"], method="daemon histogram (log2 buckets)", p50_us=999.0)
    lat["distriproc_daemon"] = d
    return doc


@pytest.mark.time_limit(120)
def test_methods_secondary_series_and_loadavg(tmp_path):
    path = tmp_path / "f.json"
    path.write_text(json.dumps(_faults_with_methods()))
    load = tmp_path / "load.log"
    load.write_text("06:25:41 5.62 4.92 4.71 3/400 123\n06:25:51 3.10 4.80 4.70 2/400 124\n"
                    "06:26:01 4.00 4.70 4.70 2/401 125\n")
    out = tmp_path / "r"
    report("--faults", path, "--loadavg", load, "--out", out)
    md = (out / "REPORT.md").read_text()
    assert "| 0 | DistriProc remote fault | first touch (application, exact) | 1000 | 66.0 |" in md, md
    assert "| 0 | DistriProc remote fault, daemon's histogram | daemon histogram (log2 buckets) |" in md
    assert "remote fault p50 66.0 us vs 1.3 x (raw 48.0 + floor 14.2) = 80.9 us -> met" in md
    assert ("load average (1 min) during the runs, shared machine: median 4.00, min 3.10, max 5.62 "
            "(3 samples 06:25:41..06:26:01 UTC)") in md
    assert "--loadavg" in md  # the report names its own command


def test_bad_method_and_bad_loadavg(tmp_path):
    doc = _faults_with_methods()
    doc["runs"][0]["latency"]["distriproc"]["method"] = 3
    path = tmp_path / "f.json"
    path.write_text(json.dumps(doc))
    cp = report("--faults", path, "--out", tmp_path / "r", check=False)
    assert cp.returncode != 0 and "latency.distriproc.method: expected str" in cp.stderr, cp.stderr
    path.write_text(json.dumps(_faults_with_methods()))
    load = tmp_path / "load.log"
    load.write_text("06:25:41 5.62 4.92\nnot a sample\n")
    cp = report("--faults", path, "--loadavg", load, "--out", tmp_path / "r", check=False)
    assert cp.returncode != 0 and "line 2: expected 'HH:MM:SS L1 L5 L15 ...'" in cp.stderr, cp.stderr
    assert not (tmp_path / "r" / "REPORT.md").exists()


@pytest.mark.time_limit(60)
def test_section_from_another_benchmark_is_nested(tmp_path):
    section = tmp_path / "warmup.md"
    section.write_text("# Warm-up\n\nreplay took 1.45 s\n\n## Details\n\n| a | b |\n")
    out = tmp_path / "results"
    report("--ttfr", TTFR, "--section", section, "--out", out)
    md = (out / "REPORT.md").read_text()
    assert "\n## Warm-up\n" in md and "\n### Details\n" in md and "replay took 1.45 s" in md
    assert "\n# Warm-up" not in md
    cp = report("--ttfr", TTFR, "--section", tmp_path / "missing.md", "--out", out, check=False)
    assert cp.returncode != 0 and "cannot read --section" in cp.stderr, cp.stderr


def _remote_fraction_doc():
    """Two mixes, two points, both local baselines (start and end of the run)."""
    def res(ops, p99):
        return {"ops_per_s": ops, "p50_us": 30.0, "p99_us": p99}
    local = {"95/5": res(10000.0, 100.0), "50/50": res(20000.0, 90.0)}
    end = {"95/5": res(11000.0, 110.0), "50/50": res(19000.0, 95.0)}
    b = {"evictions": 4242, "writebacks": 17, "refaults": 9, "victim_buffer_hits": 3, "stop_p99_us": 1234.5}
    pts = [{"remote_pct": 0, "budget": None, "remote_fraction": 0.314, "budget_stats": None,
            "results": {"95/5": dict(res(9000.0, 200.0), vs_local=0.9, vs_local_end=0.818),
                        "50/50": dict(res(18000.0, 150.0), vs_local=0.9, vs_local_end=0.947)}},
           {"remote_pct": 50, "budget": "50%", "remote_fraction": 0.507, "budget_stats": b,
            "results": {"95/5": dict(res(5000.0, 400.0), vs_local=0.5, vs_local_end=0.4545),
                        "50/50": dict(res(8000.0, 300.0), vs_local=0.4, vs_local_end=0.421)}}]
    return {"benchmark": "remote-fraction", "schema": 1, "command": "distriproc bench remote-fraction FIXTURE",
            "workload": "redis", "seconds": 10, "warmup": 10, "prefetch": "none", "local": local,
            "local_warmup": 10, "local_end": end, "local_drift": {"95/5": 0.1, "50/50": -0.05}, "points": pts}


@pytest.mark.time_limit(120)
def test_remote_fraction_noise_floor_budget_rows_and_measured_x(tmp_path):
    path = tmp_path / "rf.json"
    path.write_text(json.dumps(_remote_fraction_doc()))
    out = tmp_path / "r"
    report("--remote-fraction", path, "--out", out)
    md = (out / "REPORT.md").read_text()
    # both baselines, warmed up like the points, and their drift as the noise floor
    assert "warmed up for 10 s like every point" in md, md
    assert "| 95/5 | 10000 | 11000 | +10.0% | 100.0 / 110.0 |" in md, md
    assert "| 50/50 | 20000 | 19000 | -5.0% | 90.0 / 95.0 |" in md, md
    assert "| 50 (50%) | 95/5 | 5000 | 50% | 45% | 30.0 | 400.0 | 50.7% |" in md, md
    # budget statistics once per point, not repeated on each mix's row
    assert md.count("4242") == 1, md
    assert "| 50 (50%) | 50.7% | 4242 | 17 | 9 | 3 | 1234.5 |" in md, md
    for ext in ("png", "svg"):
        assert (out / f"remote-fraction-throughput.{ext}").stat().st_size > 1000
    # the plot's x is the measured steady remote fraction, the budget a label
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_report", REPORT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tmp, plots = tmp_path / "plot", tmp_path / "p"
    tmp.mkdir()
    plots.mkdir()
    scripts = []
    mod.gnuplot = lambda script, outdir, name: scripts.append(script)
    assert mod.plot_remote_fraction([_remote_fraction_doc()], str(plots), str(tmp))
    rows = [ln.split() for ln in (tmp / "rf0.dat").read_text().splitlines()]
    for script in scripts:
        # every curve of rf0.dat: which column is its x, and what is in it
        for xcol in re.findall(r"rf0\.dat' using (\d+):", script):
            assert [r[int(xcol) - 1] for r in rows] == ["31.40", "50.70"], (script, rows)
        assert "budget" in script and "measured steady remote" in script, script
    assert rows[1][-2:] == ['"budget', '50%"'], rows


def test_remote_fraction_run_without_second_baseline_says_so(tmp_path):
    doc = _remote_fraction_doc()
    for k in ("local_end", "local_drift", "local_warmup"):
        doc.pop(k)
    path = tmp_path / "rf.json"
    path.write_text(json.dumps(doc))
    report("--remote-fraction", path, "--out", tmp_path / "r")
    md = (tmp_path / "r" / "REPORT.md").read_text()
    assert "measured once, before the checkpoint, after min(warm-up, 5) s of warm-up" in md, md
    assert "vs local (end)" not in md and "Noise floor" not in md


def _sys(from_freeze, phases):
    """A system's summary with one run: phases (freeze, skeleton, transfer, restore, first reply)."""
    names = ("freeze_s", "skeleton_s", "transfer_s", "restore_s", "first_reply_s")
    ph = dict(zip(names, phases))
    assert abs(sum(phases) - from_freeze) < 1e-9
    st = lambda v: {"median": v, "min": v, "max": v}  # noqa: E731
    fr = from_freeze - phases[0]
    return {"n": 1, "error": None, "from_restore_s": st(fr), "from_freeze_s": st(from_freeze),
            "bytes_moved": st(1e6), "phases": {k: st(v) for k, v in ph.items()},
            "runs": [{"from_restore_s": fr, "from_freeze_s": from_freeze, "bytes_moved": 1e6, "phases": ph}]}


def _targets_doc():
    """256M and 4G: memory mode meets the 4 GiB bound and the CRIU-full ratio, misses the growth and is
    slower than CRIU's remote lazy migration at 4G (in the restore phase)."""
    def size(label, n, mem, lazy, full):
        return {"size": label, "bytes": n, "keys": 1, "redis_used_memory": n, "skipped": None,
                "loadavg_start": "3.00 2.00 1.00", "loadavg_end": "4.00 2.50 1.10",
                "systems": {"distriproc_memory": mem, "criu_lazy_remote": lazy, "criu_full": full}}
    return {"benchmark": "ttfr", "schema": 1, "started": "2026-12-03T12:00:00Z", "command": "fixture: targets",
            "bandwidth": "1gbit", "repeat": 1, "prefetch": "auto", "probe": "P", "probe_interval_ms": 5,
            "sizes": [size("256M", 256 << 20, _sys(0.2, (0.1, 0.03, 0, 0.04, 0.03)),
                           _sys(0.3, (0.15, 0.05, 0, 0.05, 0.05)), _sys(3.0, (1.0, 0, 1.8, 0.1, 0.1))),
                      size("4G", 4 << 30, _sys(0.45, (0.2, 0.05, 0, 0.15, 0.05)),
                           _sys(0.40, (0.2, 0.05, 0, 0.1, 0.05)), _sys(45.0, (20.0, 0, 24.0, 0.9, 0.1)))]}


@pytest.mark.time_limit(60)
def test_issue11_targets_ratios_verdicts_and_phases(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(_targets_doc()))
    out = tmp_path / "r"
    report("--ttfr", path, "--out", out)
    md = (out / "REPORT.md").read_text()
    assert "| DistriProc memory mode from freeze at 4 GiB <= 0.5 s | 0.450 s | 0.90x the bound | **pass** |" in md, md
    assert "| DistriProc memory mode from freeze, 4 GiB / 256 MiB <= 1.5x | 0.450 s / 0.200 s | 2.25x | **miss** |" in md
    assert ("| 256M: DistriProc memory mode / CRIU lazy, remote (its page server), from freeze <= 1.0x | "
            "0.200 s / 0.300 s | 0.67x | **pass** |") in md
    assert ("| 4G: DistriProc memory mode / CRIU lazy, remote (its page server), from freeze <= 1.0x | "
            "0.450 s / 0.400 s | 1.12x | **miss** |") in md
    assert "| 4 GiB: CRIU full migration / DistriProc memory mode, from freeze >= 50x | 45.000 s / 0.450 s | 100.0x | **pass** |" in md
    # from restore: (45 - 20) / (0.45 - 0.2) = 100x
    assert "from restore >= 50x | 25.000 s / 0.250 s | 100.0x | **pass** |" in md
    # a miss says where the time went: the growth is in freeze and restore; vs CRIU, in the restore
    assert "grown from 256 MiB to 4 GiB: freeze +0.100 s, skeleton +0.020 s, restore +0.110 s, first reply +0.020 s" in md, md
    assert "- 4G from freeze: slower than CRIU's remote lazy migration in: restore +0.050 s" in md, md
    assert "the largest is freeze (44 %)" in md
    # the phase table and the load per size
    assert "| 4G | DistriProc memory mode | 0.200 | 0.050 | 0.000 | 0.150 | 0.050 |" in md
    assert "4G: 3.00 2.00 1.00 at the start, 4.00 2.50 1.10 at the end" in md
    # a system the run did not measure is left out, not an error; the targets say what is missing
    doc = _targets_doc()
    for z in doc["sizes"]:
        del z["systems"]["distriproc_memory"]
    path.write_text(json.dumps(doc))
    report("--ttfr", path, "--out", out)
    md = (out / "REPORT.md").read_text()
    assert "DistriProc memory mode |" not in md.split("### Issue 11")[0]
    assert "| DistriProc memory mode from freeze at 4 GiB <= 0.5 s | not measured: DistriProc memory mode was not run |" in md
