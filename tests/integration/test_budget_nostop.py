"""Issue 13 items 1-2 in the real daemon: under `restore --budget`, pages are
installed write-protected, a clean page is evicted with no write-back and no
content comparison, and most evictions go through the helper thread the daemon
injects into the restored process (named dp-evict, visible in its task list),
which stops no thread. memwalk checks every byte it reads against its last
write: a lost write is an error. With DISTRIPROC_EVICT_HELPER=off the same run
takes the stop path for every eviction, still exact.

Runs in the lab (DISTRIPROC_LAB=NAME for a private one). Behaviour only."""

import json
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


def run_budget(procs, tmp_path, helper, mib="16", writes="0.1", budget="4M", batch="64", soak=20, extra=()):
    listen, key = checkpoint_and_serve(
        procs, tmp_path,
        [util.MEMWALK, "--mib", mib, "--threads", "2", "--write-ratio", writes, "--seed", "13"], memwalk_ready())
    workdir = tmp_path / "wd"
    old = os.environ.get("DISTRIPROC_EVICT_HELPER")
    if not helper:
        os.environ["DISTRIPROC_EVICT_HELPER"] = "off"
    try:
        res = restore(procs, workdir, listen, key, "--budget", budget, "--evict-batch", batch, *extra)
    finally:
        if old is None:
            os.environ.pop("DISTRIPROC_EVICT_HELPER", None)
        else:
            os.environ["DISTRIPROC_EVICT_HELPER"] = old
    # a soak, not a wait for an event: writers racing eviction for this long
    time.sleep(soak)
    # a lost write in memwalk's own stack or heap kills it: say so
    assert os.path.isdir(f"/proc/{res['pid']}/task"), "the restored memwalk died while being evicted"
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


@pytest.mark.time_limit(300)
def test_written_victims_beyond_the_slack_leave_without_a_stop_and_lose_no_write(lab, procs, criu, tmp_path):
    """Write-heavy (60% writes) over a set 16x the budget: nearly every victim
    was written, and the budget is above its slack most of the time. Written
    victims are protected, read, written back and moved once acknowledged
    while the writers keep writing: a write landing between the protect and
    the move must never be lost (memwalk checks every read against its last
    write, VERIFY every page at the end). No victim buffer, so that refaults
    read what the page server holds rather than the daemon's copy of what was
    moved (which would hide a write-back that missed a write)."""
    ns, b, names = run_budget(procs, tmp_path, helper=True, mib="2", writes="0.6", budget="128K", batch="16",
                              soak=30, extra=("--victim-buffer", "0"))
    assert b["victim_buffer_hits"] == 0 and b["victim_buffer_bytes"] == 0, b  # 0 means none
    assert "dp-evict" in names, names
    assert ns["helper_tasks"] >= 1 and ns["helper_failures"] == 0, ns
    # written victims went through the no-stop write-back, some while
    # waiting for their ack (ack_wait), and were moved by the helper
    assert ns["cleaned_without_stop"] > 1000 and ns["ack_wait"]["count"] > 0, ns
    # the stops left: the one that installs the helper (and pages the helper
    # refused); before, about half of all evictions here stopped
    assert ns["helper_pages"] * 10 > b["evictions"] * 9, (ns, b["evictions"])
    assert b["batches"] * 100 < b["evictions"], b


def anon_exec_maps(pid):
    """Anonymous executable mappings of pid: the helper's code page is one
    (memwalk itself has none: its code is file-backed, [vdso] is named)."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 5 and "x" in parts[1]:
                out.append(line.strip())
    return out


def uffd_fds(pid):
    """Userfaultfds the process holds (the helper's scratch uffd; CRIU's is
    the daemon's, not the process's)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[userfaultfd]"
        except OSError:
            pass
    return n


def helpers_off(workdir):
    cp = util.distriproc("stats", "--workdir", workdir, "--evict-helpers", "off")
    return json.loads(cp.stdout)


@pytest.mark.time_limit(300)
def test_evict_helpers_off_removes_the_helper_and_eviction_goes_on_stopping(lab, procs, criu, tmp_path):
    """`stats --evict-helpers off` while the helper evicts: thread, mapping
    and descriptor gone, eviction goes on through the stop path, and no write
    is lost across the switch (memwalk verifies every read; VERIFY at the
    end). `on` installs it again."""
    listen, key = checkpoint_and_serve(
        procs, tmp_path,
        [util.MEMWALK, "--mib", "16", "--threads", "2", "--write-ratio", "0.3", "--seed", "21"], memwalk_ready())
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, listen, key, "--budget", "4M", "--evict-batch", "64")
    pid = res["pid"]
    util.wait_until(lambda: stats(workdir)["budget"]["no_stop"]["helper_pages"] > 2000, 60,
                    "evictions through the helper")
    assert "dp-evict" in thread_names(pid) and anon_exec_maps(pid) and uffd_fds(pid) == 1
    r = helpers_off(workdir)
    print("off", r)
    assert r == {"evict_helpers": "off", "removed": 1, "failed": 0, "running": 0}, r
    assert "dp-evict" not in thread_names(pid), thread_names(pid)
    assert anon_exec_maps(pid) == [] and uffd_fds(pid) == 0, (anon_exec_maps(pid), uffd_fds(pid))
    b0 = stats(workdir)["budget"]
    util.wait_until(lambda: stats(workdir)["budget"]["batches"] > b0["batches"] + 20, 60,
                    "evictions through the stop path after the helpers left")
    b1 = stats(workdir)["budget"]
    assert b1["no_stop"]["helper_pages"] == b0["no_stop"]["helper_pages"], (b0["no_stop"], b1["no_stop"])
    assert b1["no_stop"]["evict_helpers"] == "off" and b1["evictions"] > b0["evictions"], b1
    on = json.loads(util.distriproc("stats", "--workdir", workdir, "--evict-helpers", "on").stdout)
    assert on["evict_helpers"] == "on" and on["failed"] == 0, on
    util.wait_until(lambda: "dp-evict" in thread_names(pid), 60, "the helper installed again")
    st = memwalk()
    assert st["errors"] == 0 and st["bad_bytes"] == 0, st
    v = memwalk("VERIFY")
    assert v["verify_errors"] == 0, v
    finish(res, workdir)


@pytest.mark.time_limit(300)
def test_checkpoint_of_the_running_tree_after_the_helpers_left_restores_exactly(lab, procs, criu, tmp_path):
    """The reason for `--evict-helpers off`: a later checkpoint of the tree
    restored under a budget. With all its memory local (the budget above its
    size, the warm-up fetching the rest), a dump with the helper in the tree
    fails; once the helper is removed, the running tree is dumped by CRIU,
    restored again, and its memory is exactly what it wrote (memwalk VERIFY),
    with no helper thread in the new tree."""
    listen, key = checkpoint_and_serve(
        procs, tmp_path,
        [util.MEMWALK, "--mib", "8", "--threads", "2", "--write-ratio", "0.3", "--seed", "22"], memwalk_ready())
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, listen, key, "--budget", "64M", "--warmup", "all")
    pid = res["pid"]
    util.wait_until(lambda: "dp-evict" in thread_names(pid), 60, "the helper installed after the restore")
    util.wait_until(lambda: stats(workdir)["total"]["remote_bytes"] == 0, 120, "all memory local")
    # with the helper in it, CRIU cannot dump the tree (its socket's peer is
    # the daemon, outside the tree): the dump fails and the tree runs on
    images1 = tmp_path / "images-with-helper"
    images1.mkdir()
    cp = util.distriproc("checkpoint", "--host", "dst", "--pid", pid, "--images", images1, "--leave-running",
                         timeout=120, check=False)
    assert cp.returncode != 0 and "dp-evict" in thread_names(pid), (cp.returncode, cp.stderr[-800:])
    r = helpers_off(workdir)
    assert r["removed"] == 1 and r["failed"] == 0 and r["running"] == 0, r
    assert "dp-evict" not in thread_names(pid) and anon_exec_maps(pid) == [] and uffd_fds(pid) == 0
    images2 = tmp_path / "images2"
    images2.mkdir()
    util.distriproc("checkpoint", "--host", "dst", "--pid", pid, "--images", images2, timeout=120)
    util.wait_gone(pid, timeout=20)
    util.wait_gone(res["daemon_pid"], timeout=20)
    listen2 = util.serve_images(procs, images2, key, 7311)
    res2 = restore(procs, tmp_path / "wd2", listen2, key)
    assert "dp-evict" not in thread_names(res2["pid"])
    v = memwalk("VERIFY")
    print("restored again: pid", res2["pid"], "threads", thread_names(res2["pid"]), "verify", v)
    assert v["verify_errors"] == 0, v
    st = memwalk()
    assert st["errors"] == 0 and st["bad_bytes"] == 0, st
    finish(res2, tmp_path / "wd2")
