"""bench warmup's analysis and report (scripts/bench_warmup.py) on synthetic
series and on a small recorded result (tests/fixtures/bench/warmup-small.json).
The benchmark itself never runs in the tests."""

import importlib.util
import json
import os

import pytest

import util

SCRIPT = os.path.join(util.ROOT, "scripts", "bench_warmup.py")
FIXTURE = os.path.join(util.ROOT, "tests", "fixtures", "bench", "warmup-small.json")


def load():
    spec = importlib.util.spec_from_file_location("bench_warmup", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_time_to_90_percent_of_steady():
    bw = load()
    # 10 buckets of 0.1 s ramping 0..900, then 1000 for 20 buckets
    series = [i * 100.0 for i in range(10)] + [1000.0] * 20
    r = bw.analyze(series, offset_s=0.5, bucket=0.1, smooth=1)
    assert r["steady_per_s"] == 1000.0
    assert r["time_to_90_s"] == pytest.approx(0.5 + 1.0)  # bucket 9 (900) ends at 1.0 s
    # a dip after the first crossing moves the answer past the dip
    series = [0.0] * 5 + [950.0] + [100.0] + [1000.0] * 23
    r = bw.analyze(series, offset_s=0.0, bucket=0.1, smooth=1, hold=3)
    assert r["time_to_90_s"] == pytest.approx(0.8)
    assert bw.analyze(series, 0.0, bucket=0.1, smooth=1, hold=1)["time_to_90_s"] == pytest.approx(0.6)
    # steady is the mean of the last 30%: a series that only jumps at its very
    # end reaches 90% of it in its last bucket
    r = bw.analyze([0.0] * 9 + [3000.0], offset_s=0.0, bucket=1.0, smooth=1)
    assert r["steady_per_s"] == 1000.0 and r["time_to_90_s"] == 10.0
    r = bw.analyze([0.0] * 10, offset_s=0.0)
    assert r == {"steady_per_s": 0.0, "time_to_90_s": None}
    with pytest.raises(ValueError):
        bw.analyze([], 0.0)
    # smoothing over 3 buckets delays the answer until the mean is there
    series = [0.0, 1000.0, 1000.0, 1000.0] + [1000.0] * 16
    assert bw.analyze(series, 0.0, bucket=1.0, smooth=3)["time_to_90_s"] == 4.0


def test_throughput_series_buckets():
    bw = load()
    s = bw.throughput_series([0.01, 0.05, 0.15, 0.99, 1.5], 1.0, bucket=0.1)
    assert len(s) == 10 and s[0] == 20.0 and s[1] == 10.0 and s[9] == 10.0 and sum(s) == 40.0


@pytest.mark.time_limit(60)
def test_report_from_fixture(tmp_path):
    cp = util.run([util.PYTHON, SCRIPT, "report", FIXTURE, "--outdir", tmp_path, "--command", "CMD"])
    md = (tmp_path / "warmup.md").read_text()
    assert cp.stdout == md
    d = json.load(open(FIXTURE))
    w = d["workloads"][0]
    assert "Command: `CMD`" in md
    prec = "%.1f%%" % (100 * w["accuracy"]["trace"]["precision"])
    assert f"| redis | trace of run A | {prec} |" in md, md
    for tag in ("A", "B", "C"):
        assert f"| redis | {tag} |" in md
    for ext in ("png", "svg"):
        data = (tmp_path / f"warmup-redis.{ext}").read_bytes()
        assert len(data) > 1000
    assert (tmp_path / "warmup-redis.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "warmup-redis.svg").read_bytes()[:2000]
    # a malformed result is an error, not a half-written report
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"workloads": [{"workload": "redis"}]}))
    cp = util.run([util.PYTHON, SCRIPT, "report", bad, "--outdir", tmp_path / "b"], check=False)
    assert cp.returncode != 0 and not (tmp_path / "b" / "warmup.md").exists()


@pytest.mark.time_limit(60)
def test_report_with_measured_hit_rate(tmp_path):
    """With stage runs (S*), the hit-rate column is the measured median and a
    table gives each S run's counts; without them it stays the estimate."""
    d = json.load(open(FIXTURE))
    w = d["workloads"][0]
    c = w["runs"]["C"]

    def stage_run(hits, inflight, staged, misses, within):
        delivered = staged + inflight
        st = {"staged": staged, "hits": hits, "hits_inflight": inflight,
              "hit_rate": round((hits + inflight) / delivered, 4), "misses": misses,
              "misses_while_replaying": 0, "coverage": round((hits + inflight) / (hits + inflight + misses), 4),
              "dropped": 0, "expired": 0, "still_staged": staged - hits, "unstaged": 0,
              "staged_bytes": (staged - hits) * 4096,
              "hits_within_s": {"1": within[0], "2": within[0], "5": within[1], "10": within[2],
                                "20": hits + inflight, "30": hits + inflight, "60": hits + inflight},
              "hits_by_second": [within[0], 0, 0, 0, within[1] - within[0]]}
        return {**c, "replay": {**(c.get("replay") or {}), "mode": "stage", "stage": st}}

    w["stage_runs"] = {"S": stage_run(27000, 400, 28000, 10, (20000, 27000, 27400)),
                       "S2": stage_run(14000, 0, 28000, 14000, (1000, 5000, 14000)),
                       "X": stage_run(2800, 0, 28000, 25000, (100, 1000, 2000))}
    # A stored summary that disagrees with the runs: the report must compute
    # the median of the S runs itself (X is not one of them), not print this.
    w["replay_hit_rate"] = 0.11
    d["params"] = {"seconds": 20}
    for other in d["workloads"][1:]:
        other["stage_runs"] = {"S": stage_run(100, 0, 100, 0, (100, 100, 100))}
        other["replay_hit_rate"] = 0.0
    fx = tmp_path / "fx.json"
    fx.write_text(json.dumps(d))
    util.run([util.PYTHON, SCRIPT, "report", fx, "--outdir", tmp_path, "--command", "CMD"])
    md = (tmp_path / "warmup.md").read_text()
    assert "replay hit rate (measured: median of the S runs)" in md, md
    assert "Replay hit rate (est.)" not in md
    # median of S (27400 / 28400 = 96.48%) and S2 (14000 / 28000 = 50.00%):
    # 73.24%; the first run alone would give 96.48%, with X 50.00%, the
    # planted summary 11.00%
    row_c = [ln for ln in md.splitlines() if ln.startswith("| redis | C |")][0]
    assert row_c.rstrip().split("|")[-3].strip() == "73.24%", row_c
    for other in d["workloads"][1:]:
        row = [ln for ln in md.splitlines() if ln.startswith(f"| {other['workload']} | C |")][0]
        assert row.rstrip().split("|")[-3].strip() == "100.00%", row
    # S: (27000 + 400) / 28400 = 96.48%; within 1 s 20000/28400 = 70.4%
    assert "| redis | S | 28400 | 27400 | 400 | 96.48% | 70.4% | 95.1% | 96.5% | 10 |" in md, md
    assert "| redis | S2 | 28000 | 14000 | 0 | 50.00% | 3.6% | 17.9% | 50.0% | 14000 | 50.00% | 14000 |" in md, md
    assert "| redis | X (other keys) | 28000 | 2800 | 0 | 10.00% |" in md, md
