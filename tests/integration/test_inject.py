"""lib/inject against a live multi-threaded target (tools/evicttest), driven by
tests/helpers/injdrv: every thread stops (including threads blocked in read()
and nanosleep()), one batched injected process_madvise drops 256 pages that
then read back as zero (no userfaultfd here) while their neighbours keep their
content, registers and stack bytes of every thread are unchanged, and the
target keeps running and verifying its own state with 0 errors. Also: a
seccomp filter denying madvise/process_madvise does not stop the zap
(PTRACE_O_SUSPEND_SECCOMP), more ranges than UIO_MAXIOV, queued signals sent
during the stops are all delivered, and a job-control-stopped target stays
stopped after being zapped."""

import json
import os
import signal
import subprocess
import time

import pytest

import util

# make test also runs every test here against the ASan/UBSan build (the
# daemon, its guard and the inject helpers; about 25 s for test_inject, 12 s
# for test_guard under ASan here)
pytestmark = pytest.mark.asan

EVICTTEST = os.path.join(util.BUILD, "evicttest")
INJDRV = os.path.join(util.HELPERS, "injdrv")


def start_target(procs, *args):
    assert os.access(EVICTTEST, os.X_OK) and os.access(INJDRV, os.X_OK), "run 'make' first"
    p = procs.spawn([EVICTTEST, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    first = json.loads(util.read_line(p.stdout, 10, "evicttest's first status line"))
    assert first["pid"] == p.pid
    return p, first


def status(p):
    p.stdin.write(b"status\n")
    p.stdin.flush()
    return json.loads(util.read_line(p.stdout, 10, "evicttest status"))


def drive(p, first, *args, timeout=120):
    cp = util.run([INJDRV, "--pid", str(p.pid), "--region", str(first["region"]),
                   "--pages", str(first["region_pages"]), *args], timeout=timeout)
    return json.loads(cp.stdout.strip().splitlines()[-1])


def quit_target(p):
    p.stdin.write(b"quit\n")
    p.stdin.flush()
    last = json.loads(util.read_line(p.stdout, 10, "evicttest final status"))
    assert p.wait(timeout=10) == 0, f"evicttest saw errors: {last} {p.stderr.read()!r}"
    return last


def assert_clean_run(r, batch, rounds):
    assert r["rounds"] == rounds and r["batch"] == batch, r
    assert r["zero_fail"] == 0, f"zapped pages still hold data: {r}"
    assert r["intact_fail"] == 0, f"neighbouring pages were changed: {r}"
    assert r["range_fail"] == 0, f"ranges not zapped: {r}"
    assert r["regs_mismatch"] == 0, f"registers not restored: {r}"
    assert r["stack_mismatch"] == 0, f"stack bytes below sp not restored: {r}"
    assert r["pm_self"] == 1 and r["fallback_madvise"] == 0, f"batched path not used: {r}"


def assert_target_progresses(p, before, threads):
    """After the driver is gone: blocked syscalls resumed, writers verify, 0 errors."""
    def progressed():
        s = status(p)
        ok = (s["pipe_msgs"] > before["pipe_msgs"] + 20 and s["sleeps"] > before["sleeps"] + 3
              and all(a > b for a, b in zip(s["iters"], before["iters"])))
        return s if ok else None
    s = util.wait_until(progressed, 10, "the target to make progress after the driver left")
    assert s["errors"] == 0, s
    assert len(s["iters"]) == threads
    return s


@pytest.mark.time_limit(90)
def test_stop_zap_resume_detaching(procs):
    p, first = start_target(procs, "--threads", "2", "--pages", "512")
    time.sleep(0.3)
    before = status(p)
    r = drive(p, first, "--rounds", "30", "--batch", "256")
    assert_clean_run(r, 256, 30)
    # 2 writers + pipe reader + sleeper + feeder + main (blocked in read on stdin)
    assert r["threads"] == 6, r
    assert r["threads_in_syscall"] > 0, f"no thread was stopped inside a system call: {r}"
    assert r["injected_in_syscall"] > 0, f"never injected on a thread inside a syscall: {r}"
    s = assert_target_progresses(p, before, 2)
    assert s["zero"] == 256 and s["intact"] == 256 and s["other"] == 0, s
    assert quit_target(p)["errors"] == 0


@pytest.mark.time_limit(90)
def test_stop_zap_resume_staying_seized(procs):
    p, first = start_target(procs, "--threads", "2", "--pages", "512")
    before = status(p)
    r = drive(p, first, "--rounds", "30", "--batch", "256", "--keep-seized")
    assert_clean_run(r, 256, 30)
    s = assert_target_progresses(p, before, 2)
    assert s["zero"] == 256 and s["intact"] == 256, s
    assert quit_target(p)["errors"] == 0


@pytest.mark.time_limit(60)
def test_seccomp_filter_does_not_apply_to_injected_calls(procs):
    p, first = start_target(procs, "--threads", "1", "--pages", "512", "--seccomp")
    assert first["seccomp"] == 1, f"the filter did not make the target's own madvise fail: {first}"
    before = status(p)
    r = drive(p, first, "--rounds", "5", "--batch", "256")
    assert_clean_run(r, 256, 5)
    s = assert_target_progresses(p, before, 1)
    assert s["zero"] == 256, s
    assert quit_target(p)["errors"] == 0


@pytest.mark.time_limit(60)
def test_more_ranges_than_uio_maxiov(procs):
    p, first = start_target(procs, "--threads", "2", "--pages", "3000")
    before = status(p)
    r = drive(p, first, "--rounds", "3", "--batch", "1500")
    assert_clean_run(r, 1500, 3)
    assert r["syscalls"] >= 6, f"1500 ranges need two process_madvise calls per round: {r}"
    s = assert_target_progresses(p, before, 2)
    assert s["zero"] == 1500 and s["intact"] == 1500, s
    assert quit_target(p)["errors"] == 0


@pytest.mark.time_limit(90)
def test_queued_signals_during_stops_are_all_delivered(procs):
    p, first = start_target(procs, "--threads", "2", "--pages", "512")
    before = status(p)
    drv = procs.spawn([INJDRV, "--pid", str(p.pid), "--region", str(first["region"]),
                       "--pages", "512", "--rounds", "200", "--batch", "64", "--interval-ms", "2"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sent = 0
    while drv.poll() is None and sent < 400:
        os.kill(p.pid, signal.SIGRTMIN)
        sent += 1
        time.sleep(0.002)
    out, err = drv.communicate(timeout=60)
    assert drv.returncode == 0, err
    r = json.loads(out.decode().strip().splitlines()[-1])
    assert_clean_run(r, 64, 200)
    assert sent > 20, "the driver finished before signals could race with it"
    last = {}

    def all_handled():
        last.update(status(p))
        return last["rtsigs"] == sent
    try:
        util.wait_until(all_handled, 10, f"all {sent} SIGRTMIN to be handled")
    except AssertionError as e:
        raise AssertionError(f"{e}: target {last}, driver {r}")
    s = assert_target_progresses(p, before, 2)
    assert s["rtsigs"] == sent, s
    assert quit_target(p)["errors"] == 0


@pytest.mark.time_limit(60)
def test_job_control_stop_survives_injection(procs):
    p, first = start_target(procs, "--threads", "2", "--pages", "512")
    os.kill(p.pid, signal.SIGSTOP)
    util.wait_until(lambda: util.proc_state(p.pid) == "T", 5, "the target to stop")
    r = drive(p, first, "--rounds", "3", "--batch", "256")
    assert_clean_run(r, 256, 3)
    time.sleep(0.3)
    assert util.proc_state(p.pid) == "T", "detaching resumed a job-control-stopped process"
    for task in os.listdir(f"/proc/{p.pid}/task"):
        with open(f"/proc/{p.pid}/task/{task}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        assert state == "T", f"thread {task} runs while its process is stopped ({state})"
    before = {"pipe_msgs": 0, "sleeps": 0, "iters": [0, 0]}
    os.kill(p.pid, signal.SIGCONT)
    s = assert_target_progresses(p, before, 2)
    assert s["zero"] == 256, s
    assert quit_target(p)["errors"] == 0


@pytest.mark.time_limit(90)
def test_userfaultfd_faults_and_remove_events_are_served_while_stopping_and_zapping(procs, tmp_path):
    """The driver plays the lazy-pages daemon: it owns the target's userfaultfd
    (with EVENT_REMOVE, like CRIU's), serves user-mode and kernel-mode faults
    from the inject pump while threads stop, and reads the REMOVE event that
    each zapped range raises while the injected process_madvise runs (the
    zapping thread waits for it: without the pump this deadlocks)."""
    sock = str(tmp_path / "uffd.sock")
    p, first = start_target(procs, "--threads", "2", "--pages", "512", "--uffd-sock", sock,
                            "--lazy-pages", "64")
    assert first["lazy"] and first["lazy_pages"] == 64, first
    r = drive(p, first, "--rounds", "30", "--batch", "256", "--uffd-sock", sock,
              "--lazy", str(first["lazy"]), "--lazy-pages", "64")
    assert_clean_run(r, 256, 30)
    # + user-mode and kernel-mode lazy readers (+ the uffd sender thread when
    # the first stop catches it before it exits)
    assert r["threads"] in (8, 9), r
    assert r["lazy_remove_short"] == 0 and r["lazy_removes"] >= 30 * 64, r
    assert r["lazy_faults"] > 30, f"the lazy pages were not faulted back after zaps: {r}"
    assert r["ensure_calls"] > 0, r
    before = status(p)
    s = util.wait_until(lambda: (lambda s: s if s["lazy_checks"] > before["lazy_checks"] + 50 else None)(status(p)),
                        10, "lazy page checks to continue after the driver left")
    assert s["errors"] == 0, s
    assert quit_target(p)["errors"] == 0


@pytest.mark.time_limit(60)
def test_thread_inside_rseq_critical_section_is_not_used_for_injection(procs):
    """The target's rseq thread spins inside a critical section registered in
    glibc's rseq area. Asked to prefer it, inject finds it inside (rip within
    [start_ip, start_ip + post_commit_offset)) and injects on another thread;
    asked to prefer the main thread (blocked in read, no critical section), it
    uses that one and finds nothing busy."""
    p, first = start_target(procs, "--threads", "1", "--pages", "512", "--rseq")
    assert first["rseq_tid"] > 0, first
    r = drive(p, first, "--rounds", "30", "--batch", "256", "--prefer-tid", str(first["rseq_tid"]))
    assert_clean_run(r, 256, 30)
    # Each round picks a thread once: the preferred one is either seen inside
    # its critical section (busy: another thread takes the call) or used. How
    # often it is inside depends on scheduling (under load it may not have run
    # since the last resume moved it to its abort handler), so the count is
    # only bounded below by 1: in 30 rounds a runnable spinner reaches its
    # critical section at least once (it spends nearly all its time there).
    assert r["rseq_busy"] >= 1, f"the spinner was never seen inside its critical section: {r}"
    assert r["rseq_busy"] + r["injected_on_preferred"] == 30 and r["rseq_retries"] == 0, r
    control = drive(p, first, "--rounds", "10", "--batch", "256", "--prefer-tid", str(p.pid))
    assert_clean_run(control, 256, 10)
    assert control["rseq_busy"] == 0 and control["injected_on_preferred"] == 10, control
    s = status(p)
    assert s["rseq_aborts"] > 0 and s["rseq_commits"] > 0, s
    assert quit_target(p)["errors"] == 0


EVICTSIM = os.path.join(util.HELPERS, "evictsim")


def run_evictsim(procs, tmp_path, seconds, *extra):
    sock = str(tmp_path / "uffd.sock")
    p, first = start_target(procs, "--threads", "1", "--pages", "64", "--uffd-sock", sock,
                            "--lazy-pages", "64", "--lazy-writers", "2")
    cp = util.run([EVICTSIM, "--pid", str(p.pid), "--uffd-sock", sock, "--lazy", str(first["lazy"]),
                   "--lazy-pages", "64", "--budget", "8", "--seconds", str(seconds), *extra],
                  timeout=seconds + 60)
    return p, json.loads(cp.stdout.strip().splitlines()[-1])


@pytest.mark.time_limit(90)
def test_eviction_protocol_loses_no_write(procs, tmp_path):
    """Two writers hammer 64 lazy pages with a budget of 8: the policy must
    evict the pages being written, over and over. Stop all, read, hash, write
    back the modified ones, zap, resume: not one write is lost (the writers
    check every word they wrote), the victim buffer always equals the source,
    every zap's REMOVE event is recognised as ours."""
    p, r = run_evictsim(procs, tmp_path, 10)
    assert r["evictions"] > 1000 and r["writebacks"] > 1000, r
    assert r["refaults"] > 0 and r["vb_hits"] > 0 and r["vb_mismatch"] == 0, r
    assert r["removes_own"] == r["evictions"] and r["removes_other"] == 0 and r["missing_remove"] == 0, r
    # slack: pages faulted in while a batch stops, zaps and resumes the process
    assert r["max_resident_after_batch"] <= 8 + 16, r
    s = status(p)
    assert s["lazy_writes"] > 10000, s
    assert quit_target(p)["errors"] == 0


@pytest.mark.time_limit(60)
def test_eviction_without_writeback_is_caught(procs, tmp_path):
    """Control: the same run dropping modified pages instead of writing them
    back. The target's writers must see their writes disappear."""
    p, r = run_evictsim(procs, tmp_path, 3, "--skip-writeback")
    assert r["evictions"] > 100, r
    s = status(p)
    assert s["errors"] > 0, f"lost writes went unnoticed: {s}"
    p.stdin.write(b"quit\n")
    p.stdin.flush()
    assert p.wait(timeout=10) == 1


@pytest.mark.time_limit(60)
def test_scratch_refused_by_the_daemon(procs):
    """ops.ensure refuses the preferred thread's stack: the zap runs on another
    thread with the batched call. Refusing every scratch area: the zap falls
    back to one injected madvise per range, and still drops every page."""
    p, first = start_target(procs, "--threads", "2", "--pages", "512")
    r = drive(p, first, "--rounds", "10", "--batch", "256", "--prefer-tid", str(p.pid),
              "--refuse-scratch", "preferred")
    assert_clean_run(r, 256, 10)
    assert r["ensure_refused"] >= 10 and r["injected_on_preferred"] == 0, r
    r = drive(p, first, "--rounds", "3", "--batch", "64", "--refuse-scratch", "all")
    assert r["zero_fail"] == 0 and r["intact_fail"] == 0 and r["range_fail"] == 0, r
    assert r["regs_mismatch"] == 0 and r["stack_mismatch"] == 0, r
    assert r["fallback_madvise"] == 3 * 64 and r["syscalls"] == 3 * 64, r
    s = assert_target_progresses(p, {"pipe_msgs": 0, "sleeps": 0, "iters": [0, 0]}, 2)
    assert s["zero"] == 256, s
    assert quit_target(p)["errors"] == 0
