"""Eviction without stopping the application (lib/ehelper) and exact dirty
tracking with write-protect (lib/wptrack), driven by tests/helpers/ehdrv: a
budgeted lazy-pages loop against a forked process whose threads write while
their pages are evicted (each thread checks every value it reads back is the
last one it wrote: a lost write is counted) and read pages that are never
written (checked against their pattern; never written back).

- helper: every page leaves through the injected helper (UFFDIO_MOVE, no
  thread stopped), the helper thread is named dp-evict, only written pages
  are written back, PAGEMAP_SCAN agrees with the map, teardown removes the
  thread and its mappings; 0 lost writes.
- fork with shared pages: MOVE refuses pages shared copy-on-write (EBUSY);
  those go through the ptrace path; still 0 lost writes.
- a task without a helper (--no-helper) and a seccomp-filtered task (never
  injected into): the ptrace path; 0 lost writes."""

import json
import os

import pytest

import util

pytestmark = pytest.mark.asan

EHDRV = os.path.join(util.HELPERS, "ehdrv")


def drive(*args):
    assert os.access(EHDRV, os.X_OK), "run 'make' first"
    cp = util.run([EHDRV, "--seconds", "2", *args], timeout=60)
    r = json.loads(cp.stdout.strip().splitlines()[-1])
    assert r["exit"] == 0, r
    return r


def assert_exact(r):
    """Nothing lost, nothing wrong, only written pages written back."""
    assert r["writes"] > 1000, r
    assert r["lost_writes"] == 0, r
    assert r["ro_bad"] == 0, r
    assert r["evicted"] > 1000, r
    assert r["writebacks"] > 0 and r["clean_drops"] > 0, r
    # a page is written back only after a write-protect fault said it was written
    assert r["writebacks"] <= r["wp_faults"], r
    # the read-only half is never written: never written back
    assert r["ro_writebacks"] == 0, r
    assert r["scan_mismatch"] == 0, r


def test_helper_evicts_without_stopping_threads_and_loses_no_write():
    r = drive("--mode", "helper", "--threads", "2")
    assert r["helper"] is True, r
    assert r["helper_comm"] == "dp-evict", r
    assert_exact(r)
    assert r["helper_pages"] == r["evicted"], r
    assert r["ptrace_pages"] == 0 and r["batches_ptrace"] == 0, r
    assert r["teardown_ok"] == 1 and r["helper_gone"] == 1, r


def test_fork_shared_pages_fall_back_to_ptrace_and_stay_exact():
    r = drive("--mode", "helper", "--fork-shared")
    assert r["helper"] is True, r
    assert_exact(r)
    assert r["busy_pages"] > 0, r
    assert r["fallback_pages"] > 0 and r["ptrace_pages"] == r["fallback_pages"], r
    assert r["helper_pages"] + r["ptrace_pages"] == r["evicted"], r
    assert r["teardown_ok"] == 1 and r["helper_gone"] == 1, r


def test_task_without_helper_uses_ptrace_path():
    r = drive("--mode", "helper", "--no-helper")
    assert r["helper"] is False, r
    assert_exact(r)
    assert r["ptrace_pages"] == r["evicted"] and r["helper_pages"] == 0, r


def test_helper_check_of_a_stopped_task_returns_instead_of_waiting():
    """A task stopped by job control (or a freezer) right after its helper was
    installed answers nothing until it runs again: the first check must say
    "later" instead of holding the daemon's loop (CI: a daemon that waited for
    a SIGSTOPped child's helper let `distriproc stats` time out), and the
    check once it runs must get the answer to the same request."""
    r = drive("--mode", "helper", "--stop-check")
    assert r["check_while_stopped"] == 1, r
    assert r["helper"] is True and r["helper_comm"] == "dp-evict", r
    assert_exact(r)
    assert r["helper_pages"] > 0, r


def test_seccomp_filtered_task_gets_no_helper():
    r = drive("--mode", "helper", "--seccomp")
    assert r["helper"] is False, r
    assert "seccomp" in r["helper_why"], r
    assert_exact(r)
    assert r["ptrace_pages"] == r["evicted"], r
