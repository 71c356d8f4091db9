"""memwalk on its own: it runs, answers STAT/VERIFY, stops cleanly, and its
verification really catches corrupted memory (written into the running
process from outside through /proc/PID/mem)."""

import re
import signal
import subprocess

import pytest

import util

START_RE = re.compile(r"memwalk: pid (\d+), (\d+) MiB \((\d+) pages\), .* area (0x[0-9a-f]+), "
                      r"STAT on 0\.0\.0\.0:(\d+)")


def start_memwalk(procs, *args):
    """Starts memwalk locally on a free port; returns (popen, port, area address)."""
    p = procs.spawn([util.MEMWALK, "--port", "0", *args], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    line = util.read_line(p.stdout, 30, "memwalk's start line")
    m = START_RE.match(line)
    assert m, f"unexpected start line: {line!r}"
    assert int(m.group(1)) == p.pid
    return p, int(m.group(5)), int(m.group(4), 16)


def stat(port, command="STAT"):
    return util.memwalk_request("127.0.0.1", port, command)


@pytest.mark.time_limit(60)
def test_runs_answers_stat_and_verify(procs):
    p, port, _ = start_memwalk(procs, "--mib", "16", "--threads", "2", "--write-ratio", "0.5")
    first = util.wait_memwalk("127.0.0.1", port)
    second = util.wait_until(lambda: (lambda s: s if s["ops"] > first["ops"] else None)(stat(port)),
                             10, "ops to increase")
    for s in (first, second):
        assert s["errors"] == 0 and s["bad_bytes"] == 0, s
        assert s["mib"] == 16 and s["pages"] == 4096 and s["threads"] == 2, s
        assert s["pattern"] == "uniform" and s["write_ratio"] == 0.5
    assert second["writes"] > 0 and second["reads"] > 0
    assert second["pages_verified"] >= second["ops"] - 2  # every access verifies
    assert second["uptime_s"] >= first["uptime_s"]

    v = stat(port, "VERIFY")
    assert v["verify_pages"] == 4096 and v["verify_errors"] == 0 and v["verify_bad_bytes"] == 0, v
    assert v["pages_verified"] >= second["pages_verified"] + 4096

    bad = stat(port, "HELLO")
    assert "error" in bad

    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, (out, err)
    assert '"errors":0' in out.decode(), out


@pytest.mark.time_limit(60)
@pytest.mark.parametrize("pattern", ["seq", "uniform", "zipf:0.99", "zipf:1.5", "stride:7"])
def test_every_pattern_runs_clean(procs, pattern):
    p, port, _ = start_memwalk(procs, "--mib", "8", "--threads", "2", "--write-ratio", "0.3",
                               "--pattern", pattern, "--seed", "42", "--duration", "1")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, (out, err)
    summary = out.decode().splitlines()[-1]
    assert summary.startswith("memwalk: done {"), summary
    assert '"errors":0' in summary and f'"pattern":"{pattern}"' in summary, summary
    assert not err, err


def corrupt(pid, address, data):
    """Writes data into the running process's memory from outside."""
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        mem.seek(address)
        old = mem.read(len(data))
        mem.seek(address)
        mem.write(bytes(a ^ b for a, b in zip(old, data)))
    return old


@pytest.mark.time_limit(60)
def test_verification_catches_corrupted_memory(procs):
    # Read-only walk: nothing rewrites the corrupted page before VERIFY sees it.
    p, port, area = start_memwalk(procs, "--mib", "4", "--threads", "2", "--write-ratio", "0")
    util.wait_memwalk("127.0.0.1", port)
    assert stat(port, "VERIFY")["verify_errors"] == 0

    page, offset = 100, 123
    corrupt(p.pid, area + page * 4096 + offset, bytes([0xff] * 16))  # flip 16 bytes

    v = stat(port, "VERIFY")
    assert v["verify_errors"] == 1 and v["verify_bad_bytes"] == 16, v
    after = stat(port)
    assert after["errors"] >= 1 and after["bad_bytes"] >= 16, after

    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 1, "memwalk must exit 1 after seeing corruption"
    err = err.decode()
    assert f"MISMATCH page {page} " in err and f"first at offset {offset} " in err, err


def read_page_stopped(pid, addr):
    """A page of a stopped process (so no walker is half-way through it)."""
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        mem.seek(addr)
        return mem.read(4096)


@pytest.mark.time_limit(60)
def test_a_lost_write_is_caught(procs):
    # Put an old generation of a page back after memwalk rewrote it: what a
    # migration that loses a write would do.
    p, port, area = start_memwalk(procs, "--mib", "16", "--threads", "1", "--write-ratio", "1",
                                  "--pattern", "seq")
    util.wait_memwalk("127.0.0.1", port)
    page = 5
    addr = area + page * 4096
    # If the walker happens to be stopped inside this very page, its rewrite
    # hides our stale copy; another attempt then lands elsewhere in its pass.
    for attempt in range(3):
        p.send_signal(signal.SIGSTOP)
        old = read_page_stopped(p.pid, addr)
        p.send_signal(signal.SIGCONT)
        # seq with writes rewrites every page on each pass: wait for two passes.
        ops = stat(port)["ops"]
        util.wait_until(lambda: stat(port)["ops"] > ops + 2 * 4096, 20, "two passes over the pages")
        p.send_signal(signal.SIGSTOP)
        try:
            assert read_page_stopped(p.pid, addr) != old, "the page was not rewritten"
            with open(f"/proc/{p.pid}/mem", "r+b", buffering=0) as mem:
                mem.seek(addr)
                mem.write(old)
        finally:
            p.send_signal(signal.SIGCONT)
        ops = stat(port)["ops"]
        util.wait_until(lambda: stat(port)["ops"] > ops + 2 * 4096, 20, "another pass")
        if stat(port)["errors"] >= 1:
            break
    assert stat(port)["errors"] == 1, "memwalk did not notice the stale page"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 1
    assert f"MISMATCH page {page} " in err.decode(), err


@pytest.mark.time_limit(30)
def test_rejects_bad_options_and_busy_port(procs):
    for args, text in ((["--pattern", "zipf:0"], "--pattern"), (["--write-ratio", "2"], "--write-ratio"),
                       (["--threads", "0"], "--threads"), (["--mib", "x"], "--mib")):
        cp = util.run([util.MEMWALK, *args], check=False, timeout=10)
        assert cp.returncode == 2 and text in cp.stderr, (args, cp.stderr)
    p, port, _ = start_memwalk(procs, "--mib", "1")
    cp = util.run([util.MEMWALK, "--mib", "1", "--port", str(port)], check=False, timeout=10)
    assert cp.returncode == 2 and f"cannot listen on 0.0.0.0:{port}" in cp.stderr, cp.stderr
