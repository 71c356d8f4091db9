"""The replay's hit rate, measured exactly (restore --hotset-mode stage,
issue 7): the daemon keeps the replayed pages until a fault asks for one, so
it sees every use of a replayed page. forkmem touches exactly the pages it is
told to (TOUCHR), so the expected hits and misses are known: hits = staged
pages touched, misses = the touched pages that were not staged. Staged copies
of removed or unmapped pages are dropped, never installed, and every byte the
workload reads is checked.

Runs in the lab (set DISTRIPROC_LAB=NAME for a private one)."""

import json
import os
import signal
import subprocess
import time

import pytest

import util
from test_hotset import encode_hotset

FORKMEM = os.path.join(util.BUILD, "forkmem")
# A sanitized forkmem (DISTRIPROC_BUILD=build-asan) also reads ASan's shadow
# of every page it touches: those lazy pages fault too (as misses), so only
# an uninstrumented one gives exact miss counts. Hits are exact either way.
SANITIZED = b"__asan_init" in open(FORKMEM, "rb").read()
PORT = 7071
SERVE_PORT = 7312
PG = 4096


def forkmem(host, command, timeout=60):
    return util.forkmem_request(host, command, timeout, port=PORT)


stats = util.lazy_stats


def checkpoint_forkmem(procs, tmp_path, mib=8):
    """forkmem in src, checkpointed and served; returns (images, listen, key, info)."""
    pid = util.start_container(procs, "src", [FORKMEM, "--mib", mib, "--port", PORT], tmp_path / "src.pid")
    info = util.wait_until(lambda: forkmem("src", "INFO", timeout=5), 30, "forkmem INFO", interval=0.2)
    return checkpoint_and_serve(procs, tmp_path, pid)[:3] + (info,)


def checkpoint_and_serve(procs, tmp_path, pid, *serve_args):
    images = tmp_path / "images"
    util.distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", images, timeout=120)
    util.wait_gone(pid, timeout=20)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = f"{util.HOSTS['src']}:{SERVE_PORT}"
    log = open(tmp_path / "serve.log", "a")
    server = procs.spawn(util.netns_cmd("src", [util.DISTRIPROC, "serve", "--images", images, "--listen", listen,
                                                "--key", key, *serve_args]), stdout=subprocess.DEVNULL, stderr=log)
    util.wait_until(lambda: util.run(util.netns_cmd("src", ["ss", "-ltnH", f"sport = :{SERVE_PORT}"]))
                    .stdout.strip() != "", 20, "the page server to listen")
    return images, listen, key, server


def hotset_file(tmp_path, images, info, ranges, name):
    """A hot set of forkmem's data pages [a, b) for each (a, b) in ranges.
    forkmem is the init of its pid namespace: pid 1 in the checkpoint."""
    ident = util.distriproc("hotset", "identity", "--images", images).stdout.strip()
    mem = int(info["mem"], 16)
    runs = [(mem + a * PG, b - a, 1000, i) for i, (a, b) in enumerate(ranges)]
    path = tmp_path / name
    path.write_bytes(encode_hotset(2, ident, {1: runs}))
    return path, sum(b - a for a, b in ranges)


def restore_staged(procs, wd, listen, key, hot, *extra, wait=True):
    res = util.restore_json(procs, wd, "--source", listen, "--key", key, "--hotset", hot, "--hotset-mode", "stage",
                            *extra)
    assert res["hotset_mode"] == "stage", res
    if wait:
        util.wait_until(lambda: not stats(wd)["replay"]["active"], 60, "the replay to finish staging")
    return res


def stop(res, wd):
    os.kill(res["pid"], signal.SIGKILL)
    util.wait_gone(res["daemon_pid"], timeout=30)
    return json.loads((wd / "stats-final.json").read_text())


def delta(after, before, *keys):
    return {k: after[k] - before[k] for k in keys}


def check_balance(stage):
    assert stage["staged"] == stage["hits"] + stage["dropped"] + stage["expired"] + stage["still_staged"], stage
    assert stage["staged_bytes"] == stage["still_staged"] * PG, stage
    assert sum(stage["hits_by_second"]) == stage["hits"] + stage["hits_inflight"], stage


@pytest.mark.time_limit(300)
def test_stage_counts_exactly_the_staged_pages_the_workload_touches(lab, procs, criu, tmp_path):
    images, listen, key, info = checkpoint_forkmem(procs, tmp_path)
    holes = info["holes"]
    # staged: pages [0, 512) and [1200, 1500); none of them is a hole
    hot, n_hot = hotset_file(tmp_path, images, info, [(0, 512), (1200, 1500)], "hot.bin")
    assert holes[0] >= 512 and holes[1] <= 1200, holes
    wd = tmp_path / "wd"
    res = restore_staged(procs, wd, listen, key, hot)
    st = stats(wd)["replay"]
    assert st["mode"] == "stage" and st["pages"] == n_hot, st
    s0 = st["stage"]
    assert s0["staged"] == n_hot and s0["hits"] == 0 and s0["still_staged"] == n_hot, s0
    assert s0["unstaged"] == 0 and s0["dropped"] == 0, s0

    # The same command with an empty range faults in everything but data
    # pages (forkmem's generation table, its reply buffer); from then on every
    # fault of a TOUCHR is one of the pages it was told to touch.
    assert forkmem("dst", "TOUCHR 0 0") == {"touched": 0, "errors": 0}
    before = stats(wd)["replay"]["stage"]
    # 256 staged + 256 not staged, then 100 staged + 100 not staged
    assert forkmem("dst", "TOUCHR 256 768") == {"touched": 512, "errors": 0}
    assert forkmem("dst", "TOUCHR 1400 1600") == {"touched": 200, "errors": 0}
    after = stats(wd)["replay"]["stage"]
    d = delta(after, before, "hits", "misses", "hits_inflight")
    assert d["hits"] == 256 + 100 and d["hits_inflight"] == 0, (before, after)
    assert d["misses"] == 256 + 100 or (SANITIZED and d["misses"] > 256 + 100), (before, after)
    assert after["still_staged"] == n_hot - after["hits"], after
    assert after["hit_rate"] == pytest.approx(after["hits"] / n_hot, abs=1e-4), after
    # a page used twice is one hit
    assert forkmem("dst", "TOUCHR 256 768") == {"touched": 512, "errors": 0}
    again = stats(wd)["replay"]["stage"]
    assert delta(again, after, "hits", "misses") == {"hits": 0, "misses": 0}, (after, again)
    check_balance(again)
    assert again["hits_within_s"]["60"] == again["hits"], again  # well within the first minute

    text = util.distriproc("stats", "--workdir", wd).stdout
    assert "hot-set replay (stage)" in text and "replay hit rate" in text, text

    # Everything read back from the staging buffer is the checkpoint's data.
    v = forkmem("dst", "VERIFY")
    assert v == {"pages": info["pages"], "errors": 0}, v
    full = stats(wd)["replay"]["stage"]
    assert full["hits"] == n_hot and full["still_staged"] == 0 and full["hit_rate"] == 1.0, full
    check_balance(full)
    final = stop(res, wd)["replay"]["stage"]
    assert final["hits"] == n_hot and final["expired"] == 0, final


@pytest.mark.time_limit(360)
def test_stage_drops_removed_unmapped_and_exited_pages_and_follows_mremap(lab, procs, criu, tmp_path):
    images, listen, key, info = checkpoint_forkmem(procs, tmp_path)
    assert info["holes"][0] >= 1024, info
    hot, n_hot = hotset_file(tmp_path, images, info, [(0, 1024)], "hot.bin")

    # REMOVE (MADV_DONTNEED) and munmap of staged pages: the staged copies go;
    # the removed pages read zeros, never the stale staged bytes.
    wd = tmp_path / "wd1"
    res = restore_staged(procs, wd, listen, key, hot)
    assert forkmem("dst", "TOUCHR 0 0") == {"touched": 0, "errors": 0}
    s0 = stats(wd)["replay"]["stage"]
    assert s0["staged"] == n_hot and s0["hits"] == 0, s0
    assert forkmem("dst", "REMOVE 100 200") == {"removed": 100, "errors": 0}
    s1 = stats(wd)["replay"]["stage"]
    assert s1["dropped"] == 100 and s1["hits"] == 0 and s1["still_staged"] == n_hot - 100, s1
    assert forkmem("dst", "UNMAP 300 400") == {"unmapped": 100, "errors": 0}
    s2 = stats(wd)["replay"]["stage"]
    assert s2["dropped"] == 200 and s2["hits"] == 0, s2
    # the rest is still staged and used once each; removed pages read zeros
    assert forkmem("dst", "TOUCHR 0 1024") == {"touched": 1024, "errors": 0}
    s3 = stats(wd)["replay"]["stage"]
    d = delta(s3, s2, "hits", "misses")
    assert d["hits"] == n_hot - 200 and (d["misses"] == 0 or SANITIZED), (s2, s3)
    assert s3["still_staged"] == 0, s3
    check_balance(s3)
    assert forkmem("dst", "VERIFY") == {"pages": info["pages"], "errors": 0}
    stop(res, wd)

    # The task exits with pages still staged: they expire, unused.
    wd = tmp_path / "wd2"
    res = restore_staged(procs, wd, listen, key, hot)
    assert forkmem("dst", "TOUCHR 0 10") == {"touched": 10, "errors": 0}
    final = stop(res, wd)["replay"]["stage"]
    assert final["hits"] == 10 and final["expired"] == n_hot - 10 and final["still_staged"] == 0, final
    assert final["hit_rate"] == pytest.approx(10 / n_hot, abs=1e-4), final
    check_balance(final)

    # mremap moves staged pages: their copies (keyed by checkpoint address)
    # are installed at the new place; every byte checks.
    wd = tmp_path / "wd3"
    res = restore_staged(procs, wd, listen, key, hot)
    assert forkmem("dst", "TOUCHR 0 0") == {"touched": 0, "errors": 0}
    b = stats(wd)
    assert forkmem("dst", "REMAP") == {"errors": 0}
    a = stats(wd)
    rb, ra = b["replay"]["stage"], a["replay"]["stage"]
    assert ra["hits"] - rb["hits"] == n_hot and ra["dropped"] == 0, (rb, ra)
    # every other data page was fetched (a miss) or, for a hole the daemon
    # knew of, zero-filled; REMAP's own code path (deeper stack) may add a
    # page or two that TOUCHR did not fault in
    other = (ra["misses"] - rb["misses"]) + (a["total"]["faults_zero"] - b["total"]["faults_zero"])
    assert 0 <= other - (info["pages"] - n_hot) <= (512 if SANITIZED else 2), (other, rb, ra, b["total"], a["total"])
    assert forkmem("dst", "VERIFY") == {"pages": info["pages"], "errors": 0}
    stop(res, wd)


@pytest.mark.time_limit(60)
def test_stage_mode_refuses_budget_and_needs_a_hotset(tmp_path):
    cp = util.distriproc("restore", "--source", "127.0.0.1:1", "--key", tmp_path / "k", "--workdir", tmp_path / "w",
                         "--hotset", "auto", "--hotset-mode", "stage", "--budget", "16M", check=False)
    assert cp.returncode == 2 and "--budget" in cp.stderr and "docs/hotset.md" in cp.stderr, cp.stderr
    cp = util.distriproc("restore", "--source", "127.0.0.1:1", "--key", tmp_path / "k", "--workdir", tmp_path / "w",
                         "--hotset-mode", "stage", check=False)
    assert cp.returncode == 2 and "--hotset" in cp.stderr, cp.stderr
    cp = util.distriproc("restore", "--source", "127.0.0.1:1", "--key", tmp_path / "k", "--workdir", tmp_path / "w",
                         "--hotset", "auto", "--hotset-mode", "maybe", check=False)
    assert cp.returncode == 2 and "install or stage" in cp.stderr, cp.stderr


@pytest.mark.time_limit(300)
def test_stage_counts_a_touch_of_a_page_still_in_flight(lab, procs, criu, tmp_path):
    # The replay, slowed down (1 s per reply, one 1 MiB batch in flight at a
    # time), is caught with a batch in flight by stopping the page server
    # (SIGSTOP; nsenter execs it, so the Popen is the server). forkmem then
    # touches 4 pages of that batch: the first waits for the batch (a hit in
    # flight, counted when it faults), the other 3 are staged by the time
    # forkmem gets to them (hits).
    if SANITIZED:
        pytest.skip("a sanitized forkmem reads ASan's shadow of the page first: another page, which the "
                    "stopped server cannot deliver")
    # 32 MiB: 32 batches, so the replay is still running after forkmem's
    # ~10 misses of a second each (its generation table, reply buffer...)
    pid = util.start_container(procs, "src", [FORKMEM, "--mib", 32, "--port", PORT], tmp_path / "src.pid")
    info = util.wait_until(lambda: forkmem("src", "INFO", timeout=5), 30, "forkmem INFO", interval=0.2)
    images, listen, key, server = checkpoint_and_serve(procs, tmp_path, pid, "--emulate-rtt", "1000000")
    holes = info["holes"]
    ranges = [(0, holes[0]), (holes[1], info["pages"])]
    hot, n_hot = hotset_file(tmp_path, images, info, ranges, "hot.bin")
    order = [p for a, b in ranges for p in range(a, b)]  # replay order: the runs in turn
    wd = tmp_path / "wd"
    res = restore_staged(procs, wd, listen, key, hot, "--replay-window", "1M", wait=False)
    assert forkmem("dst", "TOUCHR 0 0", timeout=60) == {"touched": 0, "errors": 0}  # a few seconds: 1 s a miss
    try:
        os.kill(server.pid, signal.SIGSTOP)
        # settle: replies already on their way are read, the next batch is
        # submitted and stays in flight. The event: no reply byte is left in
        # the stopped server's send queue nor in the daemon's receive queue
        # (the server's own RTT FIFO holds the rest for 1 s, and it is
        # stopped), and then the completed count is the same in two samples
        # 0.5 s apart (the daemon done with what it already read; on its own,
        # without the queues, a stalled daemon passed for a settled one).
        def queued(host, match):
            out = util.run(util.netns_cmd(host, ["ss", "-tnH", "state", "established",
                                                 f"( {match} = :{SERVE_PORT} )"])).stdout
            total = 0
            for line in out.splitlines():
                f = line.split()
                if f and not f[0].isdigit():   # the State column, when ss prints it
                    f = f[1:]
                total += int(f[0]) + int(f[1])  # Recv-Q + Send-Q
            return total

        def still():
            if queued("src", "sport") or queued("dst", "dport"):
                return False
            before = stats(wd)["replay"]["completed"]
            time.sleep(0.5)
            return stats(wd)["replay"]["completed"] == before
        util.wait_until(still, 20, "the replay to stand still")
        rp = stats(wd)["replay"]
        assert rp["active"] and rp["submitted"] > rp["completed"], \
            f"the replay is not in flight (finished before the server was stopped?): {rp}"
        done = rp["completed"]
        assert rp["stage"]["staged"] == done and rp["stage"]["hits"] == 0, rp
        first = order[done]  # the first page in flight
        assert order[done + 3] == first + 3, "the 4 pages cross a run boundary"
        toucher = subprocess.Popen(util.netns_cmd("dst", [util.PYTHON, "-c", util.LINE_CLIENT, util.HOSTS["dst"],
                                                          PORT, f"TOUCHR {first} {first + 4}", 60]),
                                   stdout=subprocess.PIPE, text=True)
        util.wait_until(lambda: stats(wd)["replay"]["stage"]["hits_inflight"] == 1, 20,
                        "forkmem's touch to wait for the batch in flight")
        assert toucher.poll() is None, "forkmem answered while its page was still in flight"
    finally:
        os.kill(server.pid, signal.SIGCONT)
    out, _ = toucher.communicate(timeout=60)
    assert json.loads(out) == {"touched": 4, "errors": 0}, out
    util.wait_until(lambda: not stats(wd)["replay"]["active"], 60, "the replay to finish")
    sg = stats(wd)["replay"]["stage"]
    assert sg["hits_inflight"] == 1 and sg["hits"] == 3 and sg["staged"] == n_hot - 1, sg
    # every replayed page checks (not VERIFY: the holes would cost 1 s each)
    for a, b in ranges:
        assert forkmem("dst", f"TOUCHR {a} {b}") == {"touched": b - a, "errors": 0}
    sg = stats(wd)["replay"]["stage"]
    assert sg["hits"] == n_hot - 1 and sg["still_staged"] == 0 and sg["hit_rate"] == 1.0, sg
    check_balance(sg)
    stop(res, wd)
