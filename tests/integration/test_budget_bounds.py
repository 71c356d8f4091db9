"""Bounded failures of a real lazy restore (issue 12 item 4), in the lab with
CRIU: the page server is SIGSTOPped (to the destination a partition: the
connection stays up, nothing answers).

- An eviction write-back that cannot complete never keeps the process's
  threads stopped: `distriproc sync` (the write-back of every modified page,
  one stop per batch) returns with the batch abandoned at
  --writeback-timeout, every thread of the process runs (none in a ptrace
  stop), and once the server answers again a sync writes everything back and
  no write was lost.
- A fault that cannot be served ends by the default rule: the daemon notices
  the silent server (--request-timeout), and at --fault-timeout (default
  action kill) the restored tree is stopped with a clear message.
Behaviour only: the bounds asserted are generous (several times the flags)."""
import json
import os
import signal
import subprocess
import time

import pytest

import util

SERVE_PORT = 7312


def serve(procs, images, key):
    """The page server, its Popen being the server process itself (nsenter
    execs it), so the test can stop and continue it."""
    listen = f"{util.HOSTS['src']}:{SERVE_PORT}"
    server = procs.spawn(util.netns_cmd("src", [util.DISTRIPROC, "serve", "--images", images, "--listen", listen,
                                                "--key", key]),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    util.wait_until(lambda: util.run(util.netns_cmd("src", ["ss", "-ltnH", f"sport = :{SERVE_PORT}"]))
                    .stdout.strip() != "", 20, "the page server to listen")
    return server, listen


def memwalk_checkpoint(procs, tmp_path, mib, write_ratio):
    images = tmp_path / "images"
    images.mkdir()
    pid = util.start_container(procs, "src", [util.MEMWALK, "--mib", str(mib), "--threads", "2", "--write-ratio",
                                              str(write_ratio), "--seed", "7"], tmp_path / "src.pid")
    util.wait_until(lambda: util.memwalk_request(util.HOSTS["src"], host="src")["writes"] > 2000, 60,
                    "memwalk to write")
    util.distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", images, timeout=120)
    util.wait_gone(pid, timeout=20)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    server, listen = serve(procs, images, key)
    return server, listen, key


def memwalk(cmd="STAT", timeout=120):
    return util.memwalk_request(util.HOSTS["dst"], command=cmd, host="dst", timeout=timeout)


def thread_states(pid):
    """State letter and tracer of every thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            out[int(tid)] = (fields["State"].split()[0], int(fields["TracerPid"]))
        except (OSError, KeyError):
            pass
    return out


@pytest.mark.time_limit(300)
def test_eviction_write_back_to_a_stopped_server_resumes_the_threads(lab, procs, criu, tmp_path):
    server, listen, key = memwalk_checkpoint(procs, tmp_path, 16, 0.5)
    workdir = tmp_path / "wd"
    res = util.restore_json(procs, workdir, "--source", listen, "--key", key, "--budget", "8M",
                            "--writeback-timeout", "1000", "--fault-timeout", "0")
    pid = res["pid"]
    util.wait_until(lambda: memwalk()["writes"] > 20000, 60, "memwalk to write after the restore")
    server.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        # every modified resident page must go to the stopped server: the
        # first batch's write-back is abandoned after 1 s, and sync returns
        cp = util.distriproc("sync", "--workdir", workdir, timeout=120, check=False)
        took = time.monotonic() - t0
        out = json.loads(cp.stdout) if cp.stdout.strip() else {}
        print("sync while stopped:", cp.returncode, out, f"{took:.1f} s")
        assert out.get("tasks_failed", 0) >= 1 or cp.returncode != 0, (cp.returncode, out, cp.stderr)
        assert took < 60, f"sync held on for {took:.1f} s"
        states = thread_states(pid)
        assert states and all(st != "t" and tracer == 0 for st, tracer in states.values()), states
        log = (workdir / "lazyd.log").read_text()
        assert "eviction batch abandoned, the threads resume" in log, log[-3000:]
        assert util.lazy_stats(workdir)["budget"]["writeback_aborts"] >= 1
    finally:
        server.send_signal(signal.SIGCONT)
    # the server answers again: the abandoned write-backs land, a sync now
    # succeeds, and every page memwalk reads is its last write
    def synced():
        cp = util.distriproc("sync", "--workdir", workdir, timeout=120, check=False)
        return cp.returncode == 0 and json.loads(cp.stdout)["tasks_failed"] == 0
    util.wait_until(synced, 90, "a sync to succeed once the server answers", interval=2)
    st = memwalk()
    assert st["errors"] == 0 and st["bad_bytes"] == 0, st
    v = memwalk("VERIFY", timeout=300)
    assert v["verify_errors"] == 0, v
    os.kill(pid, signal.SIGKILL)
    util.wait_gone(res["daemon_pid"], timeout=30)


@pytest.mark.time_limit(300)
def test_fault_on_a_stopped_server_ends_by_the_stated_default(lab, procs, criu, tmp_path):
    server, listen, key = memwalk_checkpoint(procs, tmp_path, 16, 0.2)
    workdir = tmp_path / "wd"
    # no --on-timeout: the default (kill) applies
    res = util.restore_json(procs, workdir, "--source", listen, "--key", key, "--fault-timeout", "3",
                            "--request-timeout", "1000")
    util.wait_until(lambda: memwalk()["reads"] > 1000, 60, "memwalk to run after the restore")
    server.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        util.wait_gone(res["pid"], timeout=90)  # memwalk faults on pages it has not touched yet
        util.wait_gone(res["daemon_pid"], timeout=30)
        took = time.monotonic() - t0
    finally:
        server.send_signal(signal.SIGCONT)
    log = (workdir / "lazyd.log").read_text()
    assert "no reply for 1000 ms" in log and "--request-timeout" in log, log[-3000:]
    assert "--on-timeout kill" in log and "No page was filled with wrong data" in log, log[-3000:]
    assert took < 90, took
