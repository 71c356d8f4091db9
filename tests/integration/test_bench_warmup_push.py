"""bench warmup --push's analysis (scripts/bench_warmup_push.py) is pure:
the first pass's throughput, the time to a goal, the summary's ratios and
ceiling, checked on hand-made passes (no lab)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import bench_warmup_push as bp  # noqa: E402


def test_first_pass_counts_the_crossing_pass_pro_rata():
    # 100 ops in 1 s, then 100 ops in 0.5 s: the first 150 take 1.25 s
    passes = [(0.0, 1.0, 100), (1.0, 1.5, 100)]
    assert abs(bp.first_pass(passes, 150) - 150 / 1.25) < 1e-9
    assert bp.first_pass(passes, 201) is None
    # empty or broken passes are skipped
    assert abs(bp.first_pass([(0, 0, 5), (0.0, 2.0, 0), (2.0, 3.0, 10)], 10) - 10.0) < 1e-9


def test_time_to_is_the_end_of_the_first_pass_at_the_goal():
    passes = [(0.0, 1.0, 10), (1.0, 1.5, 40), (1.5, 2.0, 5)]
    assert bp.time_to(passes, 50) == 1.5
    assert bp.time_to(passes, 81) is None


def test_summary_ratios_and_ceiling():
    # local 1000 ops/s, a pass of 1000 ops; 125 MB over 1 Gbit/s = 1 s link time
    passes = [(0.0, 2.0, 500), (2.0, 2.6, 500), (2.6, 3.6, 1000)]
    s = bp.summarize(1000.0, passes, 1000, 125_000_000, 1e9)
    assert s["first_pass_per_s"] == round(1000 / 2.6, 1)
    assert s["first_pass_vs_local"] == round(1000 / 2.6 / 1000, 3)
    # 250/s, 833/s, 1000/s: 90% of local (900/s) is reached by the third pass
    assert s["time_to_90_s"] == 3.6 and s["link_time_s"] == 1.0 and s["time_to_90_vs_link"] == 3.6
    assert bp.summarize(2000.0, passes, 1000, 125_000_000, 1e9)["time_to_90_s"] is None
    # a pass that takes 1 s locally against a 1 s link: the ceiling is 100%
    assert s["first_pass_ceiling"] == 1.0
    # 0.1 s locally against the same link: at most 10%
    assert bp.summarize(10000.0, passes, 1000, 125_000_000, 1e9)["first_pass_ceiling"] == 0.1


def test_compare_takes_each_modes_median_against_none():
    def point(mode, fp, during, idle, rate=1e8):
        return {"mode": mode, "first_pass_vs_local": fp, "first_pass_ceiling": 1.0, "time_to_90_vs_link": 2.0,
                "fault_p50_us": during or idle,
                "warmup": {"fault_during": {"count": 1 if during else 0, "p50_us": during or 0},
                           "fault_idle": {"count": 1, "p50_us": idle}, "rate_bytes_per_s": rate}}
    pts = [point("none", 0.1, None, 100), point("all", 0.5, 110, 100), point("all-shared", 0.2, 400, 100),
           point("all", 0.7, 150, 100), point("all-shared", 0.3, 300, 100), point("all", 0.6, 130, 100)]
    c = bp.compare(pts)
    # "all" keeps the summary's names; three runs: the median
    assert c["first_pass_vs_local_none"] == 0.1 and c["first_pass_vs_local_all"] == 0.6
    assert c["fault_p50_us_during_warmup"] == 130 and c["fault_p50_ratio"] == 1.3 and c["runs"] == 3
    # the other mode by its name; two runs: the mean of the middle two
    assert c["first_pass_vs_local_all_shared"] == 0.25 and c["fault_p50_us_during_warmup_all_shared"] == 350
    assert c["fault_p50_ratio_all_shared"] == 3.5 and c["runs_all_shared"] == 2
    assert bp.compare([point("all", 0.5, 110, 100)]) == {}  # nothing to compare with


def test_shared_mode_restores_with_the_lane_shared():
    assert bp.restore_args("all") == ("all", {})
    assert bp.restore_args("all-shared") == ("all", {"DISTRIPROC_WARMUP_LANE": "shared"})
