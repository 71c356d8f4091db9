"""The page-server link against an attacker on the path without the key: a TCP
proxy (mitm.py) between the client (distriproc query, or a real restore's
lazy-pages daemon) and distriproc serve. It reads every byte, flips one,
replays recorded requests into later connections and drops a PUT to forge
its acknowledgement with a genuine reply of another connection. Expected:
no page content on the wire in clear (and, as the control, in clear with
--insecure-plaintext), no altered byte accepted by either side, no forged
acknowledgement believed, each case ending with a clear message and a clean
reconnect."""
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import dpchan
import mitm
import util
from test_pageserver import ADDR, BIN, FLAG_FATAL, PAGES, Server, tinymem_page

QUERY_TIMEOUT = 20000


def query(srv, port, *args, plaintext=False, check=True):
    cmd = [BIN, "query", "--source", "127.0.0.1:%d" % port, "--key", srv.keyfile, "--timeout", str(QUERY_TIMEOUT)]
    cp = subprocess.run(cmd + (["--insecure-plaintext"] if plaintext else []) + [str(a) for a in args],
                        capture_output=True, text=True, timeout=60)
    if check:
        assert cp.returncode == 0, cp.stderr
    return cp


def stats(srv):
    return json.loads(query(srv, srv.port, "stats", plaintext=srv.plaintext).stdout)


def markers(pages):
    """32-byte windows of page contents, every 512 bytes (runs of one byte
    value left out: they could be anything)."""
    out = []
    for p in pages:
        for i in range(0, 4096, 512):
            w = p[i:i + 32]
            if len(set(w)) > 1:
                out.append(w)
    return out


def tinymem_markers():
    return markers([tinymem_page(p) for p in range(PAGES) if p % 4 != 3])


def seen(captured, windows):
    return [w for w in windows if w in captured]


def get_all(srv, port, out, plaintext=False):
    cp = query(srv, port, "get", 1, hex(ADDR), PAGES, out, plaintext=plaintext)
    return json.loads(cp.stdout), cp.stderr


@pytest.fixture
def secure_server(tmp_path):
    s = Server(str(tmp_path))
    yield s
    s.stop()


@pytest.mark.parametrize("plaintext", [False, True], ids=["encrypted", "plaintext-control"])
def test_no_page_content_on_the_wire_in_clear(tmp_path, plaintext):
    srv = Server(str(tmp_path), extra=["--insecure-plaintext"] if plaintext else [])
    proxy = mitm.Proxy(("127.0.0.1", srv.port))
    try:
        res, _ = get_all(srv, proxy.port, str(tmp_path / "pages"), plaintext=plaintext)
        assert res["data"] == 48
        page = bytes([0x5C, 0xC5]) * 2048
        open(tmp_path / "put", "wb").write(page)
        query(srv, proxy.port, "put", 1, hex(ADDR), tmp_path / "put", plaintext=plaintext)
        query(srv, proxy.port, "skeleton", tmp_path / "skel", plaintext=plaintext)
        wire = b"".join(bytes(x) for x in proxy.c2s + proxy.s2c)
        assert len(wire) > 48 * 4096
        hits = seen(wire, tinymem_markers() + markers([page]))
        skel = open(os.path.join(srv.images, "inventory.img"), "rb").read()
        if plaintext:  # the control: the same check finds them all in clear
            assert len(hits) == len(tinymem_markers()) + len(markers([page]))
            assert skel[:64] in wire
            assert "IN CLEAR" in srv.logtext()
        else:
            assert hits == []
            assert skel[:64] not in wire
    finally:
        proxy.close()
        srv.stop()


def test_flipped_byte_from_the_server_never_reaches_the_client(secure_server, tmp_path):
    srv = secure_server
    direct, _ = get_all(srv, srv.port, str(tmp_path / "direct"))
    proxy = mitm.Proxy(("127.0.0.1", srv.port), "flip_s2c", flip_at=40 + 5000)  # inside a page of the reply
    try:
        res, err = get_all(srv, proxy.port, str(tmp_path / "via"))
        assert proxy.tampered and proxy.conns == 2
        assert "failed authentication" in err and "reconnect" in err, err
        assert res["blake2b"] == direct["blake2b"]
        assert open(tmp_path / "via", "rb").read() == open(tmp_path / "direct", "rb").read()
    finally:
        proxy.close()


def test_flipped_byte_from_the_client_is_refused(secure_server, tmp_path):
    srv = secure_server
    page = os.urandom(4096)
    open(tmp_path / "put", "wb").write(page)
    proxy = mitm.Proxy(("127.0.0.1", srv.port), "flip_c2s", flip_at=40 + 40 + 100)  # inside the PUT's page
    try:
        cp = query(srv, proxy.port, "put", 1, hex(ADDR), tmp_path / "put")
        assert json.loads(cp.stdout)["durable"] is True
        assert proxy.tampered and proxy.conns == 2
        assert "failed authentication" in cp.stderr, cp.stderr
    finally:
        proxy.close()
    st = stats(srv)
    assert st["records_rejected"] == 1 and st["put_requests"] == 1, st
    assert "a record failed authentication" in srv.logtext()
    query(srv, srv.port, "get", 1, hex(ADDR), 1, tmp_path / "back")
    assert open(tmp_path / "back", "rb").read() == page  # the client's page, not the flipped one


def put_via(srv, port, path, data):
    open(path, "wb").write(data)
    return query(srv, port, "put", 1, hex(ADDR), path)


def test_replayed_put_is_refused_in_a_later_connection(secure_server, tmp_path):
    srv = secure_server
    old, new = bytes([0xA1]) * 4096, bytes([0xB2]) * 4096
    rec = mitm.Proxy(("127.0.0.1", srv.port))
    put_via(srv, rec.port, tmp_path / "old", old)
    rec.close()
    recorded = bytes(rec.c2s[0])
    put_via(srv, srv.port, tmp_path / "new", new)

    # 1. The whole recorded connection sent again: the server's fresh nonce
    # and ephemeral key make the recorded AUTH worthless.
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(recorded)
    got = b""
    while True:
        x = s.recv(65536)
        if not x:
            break
        got += x
    s.close()
    t = got[24 + 128 + 5]
    assert t == 0xFF and got[24 + 128 + 6] & FLAG_FATAL
    assert struct.unpack_from("<I", got, 24 + 128 + 24)[0] == 4  # AUTH_FAILED

    # 2. The recorded PUT records injected into a later, authenticated
    # connection: they do not open under its keys; the client reconnects.
    inj = mitm.Proxy(("127.0.0.1", srv.port), "inject", feed=recorded[mitm.HANDSHAKE_C2S:])
    try:
        cp = query(srv, inj.port, "stats")
        assert inj.tampered and inj.conns == 2
        assert "failed authentication" in cp.stderr, cp.stderr
    finally:
        inj.close()
    st = stats(srv)
    assert st["put_requests"] == 2 and st["records_rejected"] == 1, st
    query(srv, srv.port, "get", 1, hex(ADDR), 1, tmp_path / "back")
    assert open(tmp_path / "back", "rb").read() == new  # the acknowledged newer page, not the replayed older one


def test_dropped_put_with_a_forged_acknowledgement_is_not_believed(secure_server, tmp_path):
    srv = secure_server
    rec = mitm.Proxy(("127.0.0.1", srv.port))
    put_via(srv, rec.port, tmp_path / "a", bytes([0x11]) * 4096)
    rec.close()
    genuine_reply = bytes(rec.s2c[0][mitm.HANDSHAKE_S2C:])  # a real, sealed PUT reply for request id 1
    assert len(genuine_reply) == 40 + 8 + 16
    forge = mitm.Proxy(("127.0.0.1", srv.port), "forge", feed=genuine_reply)
    page = bytes([0x22]) * 4096
    try:
        cp = put_via(srv, forge.port, tmp_path / "b", page)
        assert forge.tampered and forge.conns == 2
        assert "failed authentication" in cp.stderr, cp.stderr
        assert json.loads(cp.stdout)["durable"] is True
    finally:
        forge.close()
    # Believed, the forged reply would have ended the PUT with one write on
    # the server; the client retried on a clean connection instead.
    st = stats(srv)
    assert st["put_requests"] == 2 and st["pages_written_back"] == 2, st
    query(srv, srv.port, "get", 1, hex(ADDR), 1, tmp_path / "back")
    assert open(tmp_path / "back", "rb").read() == page


def test_forged_handshake_error_on_a_reconnect_does_not_stop_the_client(secure_server, tmp_path):
    """Before the keys exist an ERROR is unauthenticated. Once the server has
    accepted the client, a forged AUTH_FAILED on a reconnect is retried, not
    believed: the GET completes over a third connection."""
    srv = secure_server
    direct, _ = get_all(srv, srv.port, str(tmp_path / "direct"))
    proxy = mitm.Proxy(("127.0.0.1", srv.port), "autherr", flip_at=40 + 5000)
    try:
        res, err = get_all(srv, proxy.port, str(tmp_path / "via"))
        assert proxy.conns == 3 and proxy.tampered
        assert "AUTH_FAILED: authentication failed: forged" in err, err
        assert res["blake2b"] == direct["blake2b"]
    finally:
        proxy.close()


def test_plaintext_only_when_both_sides_say_so(secure_server, tmp_path):
    srv = secure_server
    cp = query(srv, srv.port, "stats", plaintext=True, check=False)
    assert cp.returncode == 1
    assert "PLAINTEXT_MISMATCH" in cp.stderr and "--insecure-plaintext" in cp.stderr, cp.stderr


# ---- a real lazy restore through the attacker ------------------------------------
FORKMEM = os.path.join(util.BUILD, "forkmem")
SERVE_PORT, PROXY_PORT = 7310, 7311


@pytest.mark.time_limit(300)
def test_restore_through_a_tampering_proxy(lab, procs, criu, tmp_path):
    """forkmem's memory crosses the proxy, which flips one byte of the first
    connection after the handshake: the restore goes on over a new
    connection, the restored process verifies every byte it reads, and no
    window of the checkpoint's page data appears on the wire."""
    images = util.checkpoint_container(procs, tmp_path, [FORKMEM, "--mib", "32", "--port", 7071],
                                       util.wait_forkmem)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = util.serve_images(procs, images, key, SERVE_PORT)
    cap = tmp_path / "capture"
    cap.mkdir()
    proxy_addr = f"{util.HOSTS['src']}:{PROXY_PORT}"
    procs.spawn(util.netns_cmd("src", [sys.executable, os.path.join(os.path.dirname(__file__), "mitm.py"),
                                       proxy_addr, listen, "flip_s2c", cap]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    util.wait_until(lambda: util.run(util.netns_cmd("src", ["ss", "-ltnH", f"sport = :{PROXY_PORT}"]))
                    .stdout.strip() != "", 20, "the proxy to listen")
    workdir = tmp_path / "wd"
    res = util.restore_json(procs, workdir, "--source", proxy_addr, "--key", key, "--prefetch", "none")
    assert res["pid"] > 0, res
    v = util.forkmem_request("dst", "VERIFY")
    assert v["errors"] == 0 and v["pages"] > 0, v
    s = util.lazy_stats(workdir)
    assert s["total"]["fetch_errors"] == 0, s["total"]
    os.kill(res["pid"], 9)
    util.wait_gone(res["daemon_pid"], timeout=15)
    util.wait_until(lambda: any(f.name.endswith(".s2c") for f in cap.iterdir()), 10, "the capture")
    wire = b"".join(f.read_bytes() for f in cap.iterdir())
    assert os.path.exists(cap / "0.s2c") and os.path.exists(cap / "tampered"), "no byte was flipped"
    assert len(list(cap.glob("*.s2c"))) >= 2, "the client did not reconnect after the flipped byte"
    pages = []
    for f in sorted(images.glob("pages-*.img")):
        data = f.read_bytes()
        pages += [data[i:i + 4096] for i in range(0, min(len(data), 256 * 4096), 4096)]
    windows = markers(pages)
    assert len(windows) > 100
    assert seen(wire, windows) == []


# ---- acknowledgements are checked against what was sent -------------------------
def fake_server(key, pages_acked, ready):
    """A page server that knows the key but acknowledges a PUT with the wrong
    page count (a broken or compromised source): speaks version 3 through
    dpchan, answers one PUT, returns what it received."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ready.append(ls.getsockname()[1])
    c, _ = ls.accept()
    c.settimeout(20)

    def recv_exact(n):
        b = b""
        while len(b) < n:
            x = c.recv(n - len(b))
            assert x, "client closed"
            b += x
        return b

    def frame(t, rid, payload):
        return struct.pack("<IBBHQII", 0x53505044, 1, t, 0, rid, len(payload), 0) + payload

    h = recv_exact(24)
    hello = recv_exact(struct.unpack_from("<I", h, 16)[0])
    flags, ciphers = struct.unpack_from("<II", hello, 4)
    sk = os.urandom(32)
    reply = (struct.pack("<HHIIIIIII", 3, 0, 16 << 20, 1024, 256, 256, flags, dpchan.CHACHA, 0) + os.urandom(32)
             + dpchan.public_key(sk) + bytes(32))
    c.sendall(frame(0x81, 0, reply))
    c2s, s2c, cmac, smac = dpchan.derive(key, sk, hello[16:48], dpchan.transcript(hello, reply))
    h = recv_exact(24)
    assert recv_exact(32) == cmac
    c.sendall(frame(0x82, 0, smac))
    rx, tx = dpchan.Direction(dpchan.CHACHA, c2s), dpchan.Direction(dpchan.CHACHA, s2c)
    hdr = rx.open(recv_exact(40))
    t, rid, ln = hdr[5], struct.unpack_from("<Q", hdr, 8)[0], struct.unpack_from("<I", hdr, 16)[0]
    body = rx.open(recv_exact(ln + 16))
    assert t == 5  # PUT_PAGES
    ack = frame(0x85, rid, struct.pack("<II", pages_acked, 0))
    c.sendall(tx.seal(ack[:24]) + tx.seal(ack[24:]))
    time.sleep(0.5)
    c.close()
    ls.close()
    return body


def test_put_acknowledging_fewer_pages_is_not_believed(tmp_path):
    key = os.urandom(32)
    util.write_key(tmp_path / "key", key)
    ready, got = [], []
    th = threading.Thread(target=lambda: got.append(fake_server(key, 1, ready)), daemon=True)
    th.start()
    util.wait_until(lambda: ready, 10, "the fake server")
    (tmp_path / "data").write_bytes(os.urandom(2 * 4096))
    cp = subprocess.run([BIN, "query", "--source", "127.0.0.1:%d" % ready[0], "--key", tmp_path / "key",
                         "--timeout", "5000", "put", "1", hex(ADDR), tmp_path / "data"],
                        capture_output=True, text=True, timeout=60)
    th.join(10)
    assert got and struct.unpack_from("<I", got[0], 12)[0] == 2  # the server did receive a 2-page PUT
    assert cp.returncode == 1, cp.stdout
    assert "durable" not in cp.stdout
    assert "acknowledges 1 pages, the request wrote 2: not believed" in cp.stderr, cp.stderr
