"""One writer, fenced (issue 12, item 2; docs/pageserver.md "One writer,
fenced", docs/protocol.md §4.9). The write lease driven through raw sockets
(protocol version 4, computed here with Python's struct and dpchan.py) over
the tinymem fixture of test_pageserver.py: a second writer is refused, a
take-over fences the first (its connection is told and closed, its resume,
writes and reads are refused), the new epoch reads the checkpoint's pages and
never the old writer's (kept on disk in the earlier generation's log), and a
lease survives a server restart. The same with real restores:
test_two_restores_* below."""
import json
import os
import signal
import struct
import time

import pytest

import test_pageserver as tp
import util
from test_pageserver import ADDR, ERROR, GET, PUT, Conn, Server, msg, tinymem_page

LEASE = 0x0C
E_LEASE_HELD, E_FENCED = 17, 18
TAKE_OVER, RELEASE = 1, 2
GRANTED, RESUMED, RELEASED = 1, 2, 3
OVERLAY = "distriproc-overlay.log"


def lease(c, rid, epoch=0, flags=0, holder=b"A"):
    body = struct.pack("<QIHH", epoch, flags, len(holder), 0) + holder.ljust(64, b"\0")
    c.send(msg(LEASE, rid, body))


def lease_reply(c, rid):
    t, f, got, p = c.recv()
    assert t == LEASE | 0x80 and got == rid, (t, got, p[8:].decode(errors="replace") if t == ERROR else p)
    epoch, verdict, _, prev, plen = struct.unpack_from("<QIIQH", p)
    return epoch, verdict, prev, p[32:32 + plen].decode()


def leased(server, holder, flags=0):
    c = Conn(server)
    c.handshake(version=4)
    lease(c, 1, flags=flags, holder=holder)
    return c, lease_reply(c, 1)


def put_ack(c, rid, data, page=5):
    c.put(rid, 1, ADDR + page * 4096, data)
    t, _, got, p = c.recv()
    assert (t, got) == (PUT | 0x80, rid), (t, p[8:].decode(errors="replace"))


def get_page(c, rid, page=5):
    c.get(rid, [(1, ADDR + page * 4096, 1)])
    t, _, got, p = c.recv()
    assert (t, got) == (GET | 0x80, rid), (t, p[8:].decode(errors="replace"))
    segs = tp.parse_get_reply(p)
    return segs[0][4] if segs[0][0] == tp.SEG_DATA else bytes(4096)


def test_second_writer_refused_take_over_fences_the_first(tmp_path):
    srv = Server(str(tmp_path))
    try:
        a, (epoch, verdict, prev, _) = leased(srv, b"restore A")
        assert (epoch, verdict, prev) == (1, GRANTED, 0)
        mine = bytes([0xA1]) * 4096
        put_ack(a, 2, mine)
        assert get_page(a, 3) == mine
        # A second restore is refused, naming the holder and the way out; so is an unleased write.
        b = Conn(srv)
        b.handshake(version=4)
        lease(b, 1, holder=b"restore B")
        _, text = tp.expect_error(b, E_LEASE_HELD, fatal=False)
        assert "'restore A'" in text and "epoch 1" in text and "--take-over" in text, text
        b.put(2, 1, ADDR, bytes(4096))
        _, text = tp.expect_error(b, E_LEASE_HELD, fatal=False)
        assert "held by 'restore A'" in text, text
        # Take-over: epoch 2, A's generation moved aside, A told and closed.
        lease(b, 3, flags=TAKE_OVER, holder=b"restore B")
        assert lease_reply(b, 3) == (2, GRANTED, 1, "restore A")
        rid, text = tp.expect_error(a, E_FENCED, fatal=True)
        assert rid == 0 and "taken over by 'restore B'" in text, text
        # The new writer sees the checkpoint's page (rule: a new epoch starts
        # from checkpoint time), never A's; A's acknowledged page is kept.
        assert get_page(b, 4) == tinymem_page(5)
        kept = open(os.path.join(srv.images, OVERLAY + ".epoch-1"), "rb").read()
        assert kept[64:64 + 4096] == mine
        theirs = bytes([0xB2]) * 4096
        put_ack(b, 5, theirs)
        assert get_page(b, 6) == theirs
        # A reconnecting: its resume, writes and reads are refused (FENCED).
        a2 = Conn(srv)
        a2.handshake(version=4)
        lease(a2, 1, epoch=1, holder=b"restore A")
        _, text = tp.expect_error(a2, E_FENCED, fatal=False)
        assert "stale" in text and "'restore B'" in text, text
        a2.put(2, 1, ADDR, bytes(4096))  # the old writer's write: refused
        _, text = tp.expect_error(a2, E_FENCED, fatal=False)
        assert "epoch 1" in text and "its restore must stop" in text, text
        a2.get(3, [(1, ADDR, 1)])  # and it reads nothing of the new generation
        tp.expect_error(a2, E_FENCED, fatal=False)
        assert "taken over by 'restore B' at epoch 2" in srv.logtext()
        assert OVERLAY + ".epoch-1" in srv.logtext()
    finally:
        srv.stop()


def test_release_frees_the_lease_and_the_next_epoch_starts_from_the_checkpoint(tmp_path):
    """A restore whose tree ended gives its epoch back: the next restore
    needs no take-over, gets a new epoch and generation (the checkpoint's
    pages), and the released epoch can never be resumed."""
    srv = Server(str(tmp_path))
    try:
        a, _ = leased(srv, b"A")
        put_ack(a, 2, bytes([0x77]) * 4096)
        lease(a, 3, epoch=1, flags=RELEASE, holder=b"A")
        assert lease_reply(a, 3)[:2] == (1, RELEASED)
        b, (epoch, verdict, prev, holder) = leased(srv, b"B")
        assert (epoch, verdict, prev, holder) == (2, GRANTED, 1, "A")
        assert get_page(b, 2) == tinymem_page(5)
        a2 = Conn(srv)
        a2.handshake(version=4)
        lease(a2, 1, epoch=1, holder=b"A")
        _, text = tp.expect_error(a2, E_FENCED, fatal=False)
        assert "stale" in text, text
    finally:
        srv.stop()


def test_lease_survives_a_server_restart_and_the_holder_resumes(tmp_path):
    srv = Server(str(tmp_path))
    try:
        a, (epoch, _, _, _) = leased(srv, b"restore A")
        mine = bytes([0x5A]) * 4096
        put_ack(a, 2, mine)
        srv.stop(signal.SIGKILL)
        srv.start()
        c = Conn(srv)
        c.handshake(version=4)
        lease(c, 1, holder=b"restore C")
        _, text = tp.expect_error(c, E_LEASE_HELD, fatal=False)
        assert "'restore A'" in text, text
        a = Conn(srv)
        a.handshake(version=4)
        lease(a, 1, epoch=epoch, holder=b"restore A")
        assert lease_reply(a, 1)[:2] == (epoch, RESUMED)
        assert get_page(a, 2) == mine  # the same epoch continues its generation
        put_ack(a, 3, bytes([0x5B]) * 4096, page=6)
    finally:
        srv.stop()


def test_version_3_connection_has_no_lease_and_cannot_write_while_one_is_held(tmp_path):
    srv = Server(str(tmp_path))
    try:
        leased(srv, b"A")
        c = Conn(srv)
        c.handshake(version=3)
        c.put(1, 1, ADDR, bytes(4096))
        tp.expect_error(c, E_LEASE_HELD, fatal=False)
        lease(c, 2)
        tp.expect_error(c, tp.E_UNKNOWN, fatal=True)
    finally:
        srv.stop()


# ---- two real restores (CRIU, lab namespaces) --------------------------------------------

SERVE_PORT = 7320


def memwalk(host, cmd="STAT", timeout=120):
    return util.memwalk_request(util.HOSTS[host], command=cmd, host=host, timeout=timeout)


def server_stats(listen, key):
    return json.loads(util.run(util.netns_cmd("dst", [util.DISTRIPROC, "query", "--source", listen, "--key", key,
                                                      "stats"])).stdout)


def restore_in(procs, host, workdir, listen, key, *extra, check=True):
    """restore into lab host `host` (the first restore goes to src, where the
    checkpointed memwalk ran, so the second can use dst's network)."""
    cp = util.distriproc("restore", "--source", listen, "--key", key, *extra, "--workdir", workdir, "--host", host,
                         "--json", timeout=150, check=check)
    if cp.returncode != 0:
        return cp
    res = json.loads(cp.stdout)
    procs.track(res["daemon_pid"])
    procs.track(res["pid"])
    return res


def checkpoint_and_serve(procs, tmp_path, seed):
    """memwalk (16 MiB, half writes) checkpointed from src and served there."""
    images = util.checkpoint_container(
        procs, tmp_path, [util.MEMWALK, "--mib", "16", "--threads", "1", "--write-ratio", "0.5", "--seed", seed],
        lambda: util.wait_until(lambda: memwalk("src")["writes"] > 2000, 60, "memwalk to write"))
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    return images, key, util.serve_images(procs, images, key, SERVE_PORT)


@pytest.mark.time_limit(420)
def test_a_restore_keeps_its_lease_across_a_server_restart(lab, procs, criu, tmp_path):
    """The holder's client resumes its epoch first on every reconnect: after a
    kill -9 and restart of the page server the restore goes on writing back
    (its PUTs are accepted: it is still the writer), nothing is fenced, and
    memwalk reads every page it wrote."""
    images, key, listen = checkpoint_and_serve(procs, tmp_path, "13")
    server = procs.popens[-1]  # util.serve_images' process: `ip netns exec` runs the server itself
    a = restore_in(procs, "dst", tmp_path / "a", listen, key, "--budget", "4M")
    util.wait_until(lambda: server_stats(listen, key)["pages_written_back"] > 200, 120, "write-backs")
    server.kill()
    server.wait()
    listen = util.serve_images(procs, images, key, SERVE_PORT)
    # counters start again at 0: these write-backs were accepted after the restart
    util.wait_until(lambda: server_stats(listen, key)["pages_written_back"] > 200, 120,
                    "write-backs to the restarted server")
    st = server_stats(listen, key)
    assert st["lease_epoch"] == 1 and st["lease_held"] == 1 and st["fenced_requests"] == 0, st
    assert util.alive(a["pid"]) and not (tmp_path / "a" / "fenced.json").exists()
    v = memwalk("dst", "VERIFY")
    assert v["verify_errors"] == 0 and v["errors"] == 0, v
    assert "reconnected to page server" in (tmp_path / "a" / "lazyd.log").read_text()


@pytest.mark.time_limit(420)
def test_two_restores_second_refused_take_over_stops_the_first(lab, procs, criu, tmp_path):
    """Restore A writes back under a budget; restore B is refused (naming A);
    B with --take-over runs; A's daemon is fenced and SIGKILLs its tree with
    the message; B's memory is exactly the checkpoint's (memwalk verifies
    every page against the generation table it was checkpointed with: any
    page A wrote back would be a newer generation, a mismatch), and A's
    acknowledged pages are kept in the earlier generation's log."""
    images, key, listen = checkpoint_and_serve(procs, tmp_path, "12")
    a = restore_in(procs, "src", tmp_path / "a", listen, key, "--budget", "4M")
    util.wait_until(lambda: server_stats(listen, key)["pages_written_back"] > 500, 120,
                    "restore A to write back pages under its budget")
    st = server_stats(listen, key)
    assert st["lease_epoch"] == 1 and st["lease_held"] == 1, st

    refused = restore_in(procs, "dst", tmp_path / "b0", listen, key, check=False)
    assert refused.returncode != 0
    assert "this restore cannot start" in refused.stderr and "held by 'restore pid" in refused.stderr, refused.stderr
    assert "--take-over" in refused.stderr, refused.stderr
    assert util.alive(a["pid"]) and memwalk("src")["errors"] == 0

    b = restore_in(procs, "dst", tmp_path / "b", listen, key, "--take-over")
    assert (a["lease_epoch"], b["lease_epoch"]) == (1, 2), (a, b)
    # A is fenced: its daemon kills its tree and says why.
    util.wait_gone(a["pid"], timeout=60)
    util.wait_gone(a["daemon_pid"], timeout=60)
    log_a = (tmp_path / "a" / "lazyd.log").read_text()
    assert "this restore was fenced" in log_a and "SIGKILL" in log_a, log_a[-3000:]
    fenced = json.loads((tmp_path / "a" / "fenced.json").read_text())
    assert fenced["fenced"] is True and fenced["action"] == "SIGKILL" and "taken over" in fenced["why"], fenced
    # B: the checkpoint's memory, every page (no page of A's run mixed in).
    util.wait_until(lambda: memwalk("dst")["writes"] > 2000, 60, "restore B's memwalk to write")
    v = memwalk("dst", "VERIFY")
    assert v["verify_errors"] == 0 and v["errors"] == 0, v
    st = server_stats(listen, key)
    assert st["lease_epoch"] == 2 and st["lease_held"] == 1, st
    kept = images / "distriproc-overlay.log.epoch-1"
    assert kept.stat().st_size >= 500 * 4160, kept.stat()
    os.kill(b["pid"], signal.SIGKILL)
    util.wait_gone(b["daemon_pid"], timeout=30)
    # B's daemon gave the lease back when its tree ended.
    st = server_stats(listen, key)
    assert st["lease_epoch"] == 2 and st["lease_held"] == 0, st
