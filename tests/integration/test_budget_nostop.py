"""Issue 13 items 1-2 in the real daemon: under `restore --budget`, pages are
installed write-protected, a clean page is evicted with no write-back and no
content comparison, and most evictions go through the helper thread the daemon
injects into the restored process (named dp-evict, visible in its task list),
which stops no thread. memwalk checks every byte it reads against its last
write: a lost write is an error. With DISTRIPROC_EVICT_HELPER=off the same run
takes the stop path for every eviction, still exact.

Runs in the lab (DISTRIPROC_LAB=NAME for a private one). Behaviour only."""

import os
import time

import pytest

import util
from test_budget import checkpoint_and_serve, finish, memwalk, memwalk_ready, restore, stats


def thread_names(pid):
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names


def run_budget(procs, tmp_path, helper):
    listen, key = checkpoint_and_serve(
        procs, tmp_path,
        [util.MEMWALK, "--mib", "16", "--threads", "2", "--write-ratio", "0.1", "--seed", "13"], memwalk_ready())
    workdir = tmp_path / "wd"
    old = os.environ.get("DISTRIPROC_EVICT_HELPER")
    if not helper:
        os.environ["DISTRIPROC_EVICT_HELPER"] = "off"
    try:
        res = restore(procs, workdir, listen, key, "--budget", "4M", "--evict-batch", "64")
    finally:
        if old is None:
            os.environ.pop("DISTRIPROC_EVICT_HELPER", None)
        else:
            os.environ["DISTRIPROC_EVICT_HELPER"] = old
    # a soak, not a wait for an event: 20 s of writers racing eviction
    time.sleep(20)
    names = thread_names(res["pid"])
    st = memwalk()
    b = stats(workdir)["budget"]
    print("memwalk", st, "\nbudget", b, "\nthreads", names)
    assert st["errors"] == 0 and st["bad_bytes"] == 0, st
    assert b["evictions"] > 1000 and b["writeback_errors"] == 0, f"budget {b}\n" + util.stall_report(
        workdir, {"memwalk": res["pid"], "daemon": res["daemon_pid"]}, memwalk_host="dst")
    v = memwalk("VERIFY")
    assert v["verify_errors"] == 0, v
    finish(res, workdir)
    return b["no_stop"], b, names


@pytest.mark.time_limit(300)
def test_budget_evicts_clean_pages_through_the_helper_without_a_stop(lab, procs, criu, tmp_path):
    ns, b, names = run_budget(procs, tmp_path, helper=True)
    assert "dp-evict" in names, names
    assert ns["wp_tasks"] >= 1 and ns["wp_faults"] > 0, ns
    assert ns["helper_tasks"] >= 1 and ns["helper_failures"] == 0, ns
    # most evictions stop no thread; clean pages leave without a write-back
    assert ns["helper_pages"] * 2 > b["evictions"], (ns, b["evictions"])
    assert ns["clean_drops"] >= ns["helper_pages"], ns


@pytest.mark.time_limit(300)
def test_budget_without_the_helper_stops_for_every_eviction_and_stays_exact(lab, procs, criu, tmp_path):
    ns, b, names = run_budget(procs, tmp_path, helper=False)
    assert "dp-evict" not in names, names
    assert ns["helper_tasks"] == 0 and ns["helper_pages"] == 0, ns
    assert ns["wp_faults"] > 0 and ns["clean_drops"] > 0, ns
    assert b["batches"] > 0, b
