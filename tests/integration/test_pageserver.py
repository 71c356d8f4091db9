"""The page server driven through raw sockets (the protocol computed here with
Python's struct, hmac and the secure channel of dpchan.py, independently of
lib/proto.c and lib/channel.c) and through
`distriproc query` (the C client library), over the tinymem CRIU dump in
tests/fixtures/images-tinymem: pid 1 has 64 pages at 0x100000000000 whose
page p holds tinymem_word(p, w) for each 8-byte word w, except every page with
p % 4 == 3, which never held data."""
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

import dpchan
import util

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("DISTRIPROC_BIN", os.path.join(ROOT, "build", "distriproc"))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "images-tinymem")
MAGIC = 0x53505044
ADDR = 0x100000000000
PAGES = 64
HELLO, AUTH, TASK_MAP, GET, PUT, SKEL, STATS, ACCESS_LOG, ERROR = 1, 2, 3, 4, 5, 6, 7, 8, 0xFF
E_MALFORMED, E_VERSION, E_UNAUTH, E_AUTH_FAILED, E_TOO_LARGE, E_UNKNOWN, E_SEQUENCE, E_NO_TASK, E_NOT_LAZY = range(1, 10)
FLAG_MORE, FLAG_FATAL = 1, 2
SEG_DATA, SEG_ZERO, SEG_NOT_LAZY = 1, 2, 3


def tinymem_page(p):
    if p % 4 == 3:
        return bytes(4096)
    words = [(0xD15700000000000 ^ (p << 20) ^ (((w * 0x9E3779B97F4A7C15) & (2**64 - 1)) >> 20)) & (2**64 - 1)
             for w in range(512)]
    return struct.pack("<512Q", *words)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, tmp, extra=(), prefix=()):
        self.images = os.path.join(tmp, "images")
        if not os.path.exists(self.images):
            shutil.copytree(FIXTURE, self.images)
        self.keyfile = os.path.join(tmp, "key")
        if not os.path.exists(self.keyfile):
            subprocess.run([BIN, "keygen", self.keyfile], check=True, capture_output=True)
        self.key = util.read_key(self.keyfile)
        self.port = free_port()
        self.log = os.path.join(tmp, "server-%d.log" % self.port)
        self.extra = list(extra)
        self.plaintext = "--insecure-plaintext" in self.extra  # frames after the handshake in clear
        self.prefix = list(prefix)  # e.g. strace and its options: the server runs under it
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            self.prefix + [BIN, "serve", "--images", self.images, "--listen", "127.0.0.1:%d" % self.port,
             "--key", self.keyfile] + self.extra,
            stdout=subprocess.DEVNULL, stderr=open(self.log, "a"))
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, open(self.log).read()
                time.sleep(0.02)
        raise RuntimeError("server did not start: " + open(self.log).read())

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Under the sanitizer build (make test runs this file with it too) any
        # report in the server's log fails the test that provoked it.
        log = self.logtext()
        assert "Sanitizer" not in log and "runtime error:" not in log, log[-4000:]
        return self.proc.returncode

    def logtext(self):
        return open(self.log).read()


@pytest.fixture
def server(tmp_path):
    s = Server(str(tmp_path))
    yield s
    s.stop()


def msg(t, rid, payload=b"", flags=0, version=1, magic=MAGIC, length=None):
    return struct.pack("<IBBHQII", magic, version, t, flags, rid,
                       len(payload) if length is None else length, 0) + payload


class Conn:
    """A raw protocol connection. After handshake() every message sent and
    received goes through the secure channel (unless the server runs with
    --insecure-plaintext): send() seals the messages it is given, recv()
    opens records, so the tests below write plain frames either way."""

    def __init__(self, server, timeout=10):
        self.server = server
        self.s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        self.tx = self.rx = None

    def send(self, data):
        if self.tx is None:
            self.s.sendall(data)
            return
        out = b""
        while data:  # one header record, then (if any) one payload record per message
            hdr = data[:24]
            ln = struct.unpack_from("<I", hdr, 16)[0] if len(hdr) == 24 else 0
            body, data = data[24:24 + ln], data[24 + ln:]
            out += self.tx.seal(hdr) + (self.tx.seal(body) if body else b"")
        self.s.sendall(out)

    def recv_exact(self, n):
        b = b""
        while len(b) < n:
            x = self.s.recv(n - len(b))
            if not x:
                raise EOFError("closed after %d of %d bytes" % (len(b), n))
            b += x
        return b

    def recv(self):
        raw = self.recv_exact(24) if self.rx is None else self.rx.open(self.recv_exact(40))
        m, v, t, f, rid, ln, r = struct.unpack("<IBBHQII", raw)
        assert m == MAGIC and v == 1 and r == 0
        if self.rx is None or ln == 0:
            return t, f, rid, self.recv_exact(ln)
        return t, f, rid, self.rx.open(self.recv_exact(ln + dpchan.TAG))

    def closed(self):
        """True if the server closed the connection (EOF)."""
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True

    def handshake(self, key=None, version=3):
        """Protocol version 3 (or 4, which adds LEASE): HELLO with an ephemeral
        X25519 key, AUTH with the MAC over the transcript; then the channel is
        sealed."""
        plain = self.server.plaintext
        sk, hello = dpchan.hello_payload(max_v=version, flags=dpchan.FLAG_PLAINTEXT if plain else 0)
        self.send(msg(HELLO, 1, hello))
        t, f, rid, p = self.recv()
        if t == ERROR:
            return t, f, rid, p
        assert t == HELLO | 0x80 and rid == 1 and len(p) == 128
        r = dpchan.parse_hello_reply(p)
        assert r["version"] == version and r["flags"] == (dpchan.FLAG_PLAINTEXT if plain else 0)
        self.cpid = r["cpid"]
        th = dpchan.transcript(hello, p)
        c2s, s2c, cmac, smac = dpchan.derive(key or self.server.key, sk, r["eph_pk"], th)
        self.send(msg(AUTH, 2, cmac))
        t, f, rid, p = self.recv()
        if t == AUTH | 0x80:
            assert p == smac, "server proof does not verify"
            if not plain:
                self.tx = dpchan.Direction(r["cipher"], c2s)
                self.rx = dpchan.Direction(r["cipher"], s2c)
        return t, f, rid, p

    def get(self, rid, ranges):
        body = struct.pack("<II", len(ranges), 0) + b"".join(struct.pack("<iIQ", pid, n, a) for pid, a, n in ranges)
        self.send(msg(GET, rid, body))

    def put(self, rid, pid, addr, data):
        body = struct.pack("<II", 1, 0) + struct.pack("<iIQ", pid, len(data) // 4096, addr) + data
        self.send(msg(PUT, rid, body))


def parse_get_reply(p):
    n, _ = struct.unpack("<II", p[:8])
    off, segs = 8, []
    for _ in range(n):
        kind, pid, cnt, _, addr = struct.unpack("<IiIIQ", p[off:off + 24])
        off += 24
        data = None
        if kind == SEG_DATA:
            data = p[off:off + cnt * 4096]
            off += cnt * 4096
        segs.append((kind, pid, cnt, addr, data))
    assert off == len(p)
    return segs


def pages_of(segs):
    out = []
    for kind, pid, cnt, addr, data in segs:
        for i in range(cnt):
            out.append((kind, data[i * 4096:(i + 1) * 4096] if kind == SEG_DATA else None))
    return out


def expect_error(c, code, fatal=True):
    t, f, rid, p = c.recv()
    assert t == ERROR, "expected ERROR, got type 0x%x" % t
    got, ln, _ = struct.unpack("<IHH", p[:8])
    assert got == code, "expected error %d, got %d: %s" % (code, got, p[8:].decode(errors="replace"))
    assert bool(f & FLAG_FATAL) == fatal
    if fatal:
        assert c.closed()
    return rid, p[8:8 + ln].decode()


def test_get_serves_checkpoint_pages(server):
    c = Conn(server)
    t, _, _, _ = c.handshake()
    assert t == AUTH | 0x80
    c.get(7, [(1, ADDR, PAGES)])
    t, f, rid, p = c.recv()
    assert (t, rid) == (GET | 0x80, 7)
    pages = pages_of(parse_get_reply(p))
    assert len(pages) == PAGES
    for i, (kind, data) in enumerate(pages):
        if i % 4 == 3:
            assert kind == SEG_ZERO  # zero pages cost no bytes
        else:
            assert kind == SEG_DATA and data == tinymem_page(i), "page %d" % i
    # Not lazy memory, and an unknown pid, come back as NOT_LAZY segments.
    c.get(8, [(1, 0x1000, 2), (999, ADDR, 1)])
    t, f, rid, p = c.recv()
    segs = parse_get_reply(p)
    assert [(s[0], s[1], s[2]) for s in segs] == [(SEG_NOT_LAZY, 1, 2), (SEG_NOT_LAZY, 999, 1)]


def test_task_map_lists_lazy_ranges(server):
    c = Conn(server)
    c.handshake()
    c.send(msg(TASK_MAP, 3))
    t, f, rid, p = c.recv()
    assert t == TASK_MAP | 0x80
    ntasks, _ = struct.unpack("<II", p[:8])
    assert ntasks == 1
    pid, ppid, nr, _ = struct.unpack("<iiII", p[8:24])
    ranges = [struct.unpack("<QQ", p[24 + 16 * i:40 + 16 * i]) for i in range(nr)]
    assert pid == 1
    assert any(a <= ADDR and ADDR + PAGES * 4096 <= b for a, b in ranges)


def test_pipelined_requests_all_answered(server):
    c = Conn(server)
    c.handshake()
    # 100 GETs in one write; each id asks for one page, so the reply tells which.
    c.send(b"".join(msg(GET, 1000 + i, struct.pack("<II", 1, 0) + struct.pack("<iIQ", 1, 1, ADDR + (i % PAGES) * 4096))
                    for i in range(100)))
    seen = set()
    for _ in range(100):
        t, f, rid, p = c.recv()
        assert t == GET | 0x80
        i = rid - 1000
        kind, data = pages_of(parse_get_reply(p))[0]
        assert (data or bytes(4096)) == tinymem_page(i % PAGES)
        seen.add(rid)
    assert seen == set(range(1000, 1100))


def test_unauthenticated_request_is_refused_others_keep_working(server):
    good = Conn(server)
    good.handshake()
    bad = Conn(server)
    bad.get(5, [(1, ADDR, 1)])
    rid, text = expect_error(bad, E_UNAUTH)
    assert rid == 5
    good.get(6, [(1, ADDR, 1)])
    assert good.recv()[0] == GET | 0x80


def test_wrong_key_fails_auth(server):
    c = Conn(server)
    t, f, rid, p = c.handshake(key=b"k" * 32)
    assert t == ERROR and f & FLAG_FATAL
    assert struct.unpack("<I", p[:4])[0] == E_AUTH_FAILED
    assert c.closed()
    assert "authentication failed" in server.logtext()


def test_out_of_order_messages(server):
    c = Conn(server)
    c.send(msg(AUTH, 1, bytes(32)))  # AUTH before HELLO
    expect_error(c, E_SEQUENCE)
    c = Conn(server)
    c.handshake()
    c.send(msg(HELLO, 9, struct.pack("<HHI", 1, 1, 0)))  # HELLO again
    expect_error(c, E_SEQUENCE)


def test_version_mismatch(server):
    c = Conn(server)
    c.send(msg(HELLO, 1, struct.pack("<HHI", 1, 2, 0)))  # a version-1/2 client; the server speaks 3
    rid, text = expect_error(c, E_VERSION)
    assert "1..2" in text and "3..4" in text
    c = Conn(server)
    c.send(msg(HELLO, 1, dpchan.hello_payload(min_v=5, max_v=9)[1]))
    expect_error(c, E_VERSION)


def test_malformed_requests(server):
    c = Conn(server)
    c.send(msg(HELLO, 1, struct.pack("<HHI", 1, 1, 0), magic=0x12345678))
    expect_error(c, E_MALFORMED)
    c = Conn(server)
    c.handshake()
    c.get(4, [(1, ADDR + 1, 1)])  # unaligned
    expect_error(c, E_MALFORMED)
    c = Conn(server)
    c.handshake()
    c.send(msg(GET, 4, struct.pack("<II", 2, 0) + struct.pack("<iIQ", 1, 1, ADDR)))  # count says 2, one present
    expect_error(c, E_MALFORMED)
    c = Conn(server)
    c.handshake()
    c.send(msg(0x0d, 4))  # unassigned type
    expect_error(c, E_UNKNOWN)
    c = Conn(server)
    c.handshake()
    c.send(msg(0x0b, 4, struct.pack("<I", 1)))  # MIGRATION is a version-4 type: unknown on 3
    expect_error(c, E_UNKNOWN)
    c = Conn(server)
    c.handshake(version=4)
    c.send(msg(0x0b, 4, struct.pack("<I", 9)))  # MIGRATION with a verdict out of 1..5
    expect_error(c, E_MALFORMED)
    c = Conn(server)
    c.handshake()
    c.send(msg(STATS, 4, flags=0x8000))  # unknown flag
    expect_error(c, E_MALFORMED)


def test_oversized_requests(server):
    c = Conn(server)
    c.send(msg(HELLO, 1, length=100000))  # before auth the limit is 256 bytes
    expect_error(c, E_TOO_LARGE)
    c = Conn(server)
    c.handshake()
    c.send(msg(PUT, 2, length=(16 << 20) + 1))  # no allocation for a lying length
    expect_error(c, E_TOO_LARGE)
    c = Conn(server)
    c.handshake()
    c.get(3, [(1, ADDR, 1025)])  # more than 1024 pages
    expect_error(c, E_TOO_LARGE)
    c = Conn(server)
    c.handshake()
    c.send(msg(GET, 3, struct.pack("<II", 100000, 0)))
    expect_error(c, E_TOO_LARGE)
    c = Conn(server)
    c.handshake()
    c.send(msg(GET, 3, length=8 + 257 * 16))  # refused from the header: more than 256 ranges fit
    expect_error(c, E_TOO_LARGE)
    c = Conn(server)
    c.handshake()
    c.send(msg(STATS, 3, length=1))
    expect_error(c, E_TOO_LARGE)


def test_truncated_message_then_close_leaves_server_up(server):
    c = Conn(server)
    c.handshake()
    c.send(msg(GET, 1, length=40)[:30])
    c.s.close()
    c = Conn(server)
    c.handshake()
    c.send(msg(STATS, 2))
    t, f, rid, p = c.recv()
    st = json.loads(p)
    assert st["protocol_errors"] == 0 and st["connections"] >= 2


def test_put_outside_lazy_memory_is_refused_but_connection_stays(server):
    c = Conn(server)
    c.handshake()
    c.put(5, 1, 0x1000, bytes(4096))
    expect_error(c, E_NOT_LAZY, fatal=False)
    c.put(6, 77, ADDR, bytes(4096))
    expect_error(c, E_NO_TASK, fatal=False)
    c.get(7, [(1, ADDR, 1)])
    assert c.recv()[0] == GET | 0x80


def test_writeback_survives_kill_9(tmp_path):
    srv = Server(str(tmp_path))
    try:
        c = Conn(srv)
        c.handshake()
        new = bytes([0xA5]) * 4096 + bytes(range(256)) * 16
        c.put(11, 1, ADDR + 4096, new)  # pages 1 and 2
        t, f, rid, p = c.recv()
        assert (t, rid) == (PUT | 0x80, 11)
        assert struct.unpack("<I", p[:4])[0] == 2
        # Acknowledged: now the server dies without any chance to clean up.
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv.start()
        c = Conn(srv)
        c.handshake()
        c.get(12, [(1, ADDR, 4)])
        pages = pages_of(parse_get_reply(c.recv()[3]))
        assert pages[0][1] == tinymem_page(0)
        assert pages[1][1] == new[:4096]
        assert pages[2][1] == new[4096:]
        assert pages[3][0] == SEG_ZERO
    finally:
        srv.stop()


# ---- durable before acknowledged, at the system-call level ---------------------
# kill -9 cannot tell whether a write-back was synced: the page cache survives
# the process. So the server runs under strace, which records, in the order
# they happened, the appends to the write-back log (pwritev of the records,
# each with its page address), its fdatasyncs and every reply sent (the first
# 16 bytes of each: magic, version, type, flags, request id); and strace can
# fail an fdatasync with EIO, a real fault injection.

OVERLAY = "distriproc-overlay.log"
STRACE_SYSCALLS = "pwrite64,pwritev,pwritev2,fdatasync,fsync,sendmsg,sendto,write,writev"


def traced_server(tmp_path, inject=()):
    """A server under strace; returns (server, trace file)."""
    assert shutil.which("strace"), "strace not found: run 'make deps' (it installs the strace package)"
    trace = str(tmp_path / "strace.txt")
    # LeakSanitizer cannot work under ptrace (the ASan build of make test):
    # leaks are left to the untraced tests, every other check stays on.
    asan = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "detect_leaks=0"]))
    prefix = ["env", "ASAN_OPTIONS=" + asan, "strace", "-f", "-qq", "-y", "-xx", "-s", "24", "-e", "trace=" + STRACE_SYSCALLS,
              "-e", "signal=none", *inject, "-o", trace]
    # The trace reads reply types and ids off the wire: frames in clear.
    return Server(str(tmp_path), extra=["--insecure-plaintext"], prefix=prefix), trace


def stop_traced(srv):
    """SIGTERM to the server itself (strace's child), then its exit status."""
    with open("/proc/%d/task/%d/children" % (srv.proc.pid, srv.proc.pid)) as f:
        child = int(f.read().split()[0])
    os.kill(child, signal.SIGTERM)
    return srv.stop()


def unhex(text):
    """Bytes of strace's -xx notation (\\x41\\x42...)."""
    return bytes(int(h, 16) for h in text.split("\\x")[1:])


def trace_events(trace):
    """The trace as [(kind, detail)], in the order the calls happened:
    ("append", page address) per record written to the log, ("sync", result)
    per fdatasync of the log, ("reply", (type, id)) per protocol message
    whose start a send to a socket carried."""
    events = []
    for line in open(trace):
        m = re.match(r"(?:\d+ +)?(\w+)\(\d+<([^>]*)>(.*)", line)
        if not m:
            continue
        name, target, rest = m.group(1), unhex(m.group(2)).decode(errors="replace"), m.group(3)
        blobs = [unhex(h) for h in re.findall(r'"((?:\\x[0-9a-f]{2})+)"', rest)]
        if name == "fdatasync" and target.endswith("/" + OVERLAY):
            events.append(("sync", line.rsplit("= ", 1)[1].strip()))
        elif name.startswith("pwrite") and target.endswith("/" + OVERLAY):
            events += [("append", struct.unpack("<Q", b[16:24])[0]) for b in blobs
                       if len(b) >= 24 and b[:4] == struct.pack("<I", 0x564F5044)]
        elif target.startswith("socket:"):
            events += [("reply", (b[5], struct.unpack("<Q", b[8:16])[0])) for b in blobs
                       if len(b) >= 16 and b[:4] == struct.pack("<I", MAGIC)]
    return events


def test_put_reply_leaves_only_after_its_records_are_synced(tmp_path):
    srv, trace = traced_server(tmp_path)
    try:
        c = Conn(srv)
        c.handshake()
        pages = {}
        for i in range(6):  # one at a time
            data = bytes([0x40 + i]) * 4096
            c.put(100 + i, 1, ADDR + i * 4096, data)
            t, f, rid, p = c.recv()
            assert (t, rid) == (PUT | 0x80, 100 + i)
            pages[100 + i] = ADDR + i * 4096
        batch = b""
        for i in range(6, 30):  # pipelined: several PUTs per sync
            c.put(200 + i, 1, ADDR + i * 4096, bytes([0x40 + i]) * 4096)
            pages[200 + i] = ADDR + i * 4096
        got = set()
        for _ in range(24):
            t, f, rid, p = c.recv()
            assert t == PUT | 0x80, t
            got.add(rid)
        assert got == set(range(206, 230))
        c.get(300, [(1, ADDR, 30)])
        assert c.recv()[0] == GET | 0x80
    finally:
        assert stop_traced(srv) == 0, srv.logtext()[-2000:]
    events = trace_events(trace)
    acks = [(k, v) for k, v in enumerate(events) if v[0] == "reply" and v[1][0] == PUT | 0x80]
    assert len(acks) == len(pages), "the trace shows %d PUT replies, the client read %d" % (len(acks), len(pages))
    for at, (_, (_, rid)) in acks:
        addr = pages[rid]
        appended = max(k for k, e in enumerate(events[:at]) if e == ("append", addr))
        syncs = [e[1] for e in events[appended:at] if e[0] == "sync"]
        assert "0" in syncs, ("PUT %d (page 0x%x) was acknowledged with no successful fdatasync of the "
                              "log between its append and its reply: %s" % (rid, addr, events[appended:at + 1]))


def put_ack(c):
    """The id of the PUT reply that comes next (fails on anything else)."""
    t, f, rid, p = c.recv()
    assert t == PUT | 0x80, "expected a PUT reply, got type 0x%x: %r" % (t, p[8:])
    return rid


def test_fdatasync_eio_fails_the_log_for_good_and_nothing_is_acknowledged_after_it(tmp_path):
    """The third fdatasync returns EIO (strace fault injection; later ones would
    succeed, as on Linux after the kernel dropped the pages it could not
    write). The PUT waiting for it and every later one get an IO error; no
    PUT is acknowledged and no fdatasync tried after the failure; reads go on
    from what was synced before; the log says what failed and what to do."""
    srv, trace = traced_server(tmp_path, inject=["-e", "inject=fdatasync:error=EIO:when=3"])
    first, second, lost = bytes([0xA1]) * 4096, bytes([0xB2]) * 4096, bytes([0xC3]) * 4096
    try:
        c = Conn(srv)
        c.handshake()
        c.put(1, 1, ADDR + 4096, first)     # fdatasync 1
        assert put_ack(c) == 1
        c.put(2, 1, ADDR + 8192, second)    # fdatasync 2
        assert put_ack(c) == 2
        c.put(3, 1, ADDR + 4096, lost)      # fdatasync 3: EIO
        rid, text = expect_error(c, 10, fatal=False)
        assert rid == 3 and "fdatasync" in text and "Input/output error" in text and "restart" in text, text
        c.put(4, 1, ADDR + 5 * 4096, lost)  # refused: no append, no sync
        rid, text = expect_error(c, 10, fatal=False)
        assert rid == 4 and "no more write-backs" in text and "Input/output error" in text, text
        # Reads are served from what was synced: page 1 is the first PUT's, never the lost one.
        for conn in (c, Conn(srv)):
            if conn is not c:
                conn.handshake()
            conn.get(5, [(1, ADDR, 6)])
            got = [p[1] for p in pages_of(parse_get_reply(conn.recv()[3]))]
            want = [tinymem_page(0), first, second, None, tinymem_page(4), tinymem_page(5)]
            assert got == want, "pages %s are not their last synced versions (page 1 holds 0x%02x..)" % (
                [i for i in range(6) if got[i] != want[i]], got[1][0])
        c.put(6, 1, ADDR, second)
        assert expect_error(c, 10, fatal=False)[0] == 6
        c.send(msg(STATS, 7))
        st = json.loads(c.recv()[3])
        assert st["writeback_failed"] == 1 and st["puts_refused"] == 3 and st["overlay_syncs"] == 2, st
    finally:
        code = stop_traced(srv)
    log = srv.logtext()
    assert code != 0, "the server exited with status 0 after refusing write-backs"
    assert "fdatasync of %s/%s failed: Input/output error" % (srv.images, OVERLAY) in log, log
    assert "no longer be made durable" in log and "Check the disk" in log and "restart the server" in log, log
    events = trace_events(trace)
    syncs = [k for k, e in enumerate(events) if e[0] == "sync"]
    assert [events[k][1] for k in syncs] == ["0", "0", "-1 EIO (Input/output error) (INJECTED)"], events
    after = events[syncs[-1]:]
    assert not [e for e in after if e[0] == "reply" and e[1][0] == PUT | 0x80], after
    assert not [e for e in after if e[0] == "append"], after
    assert [e[1][1] for e in after if e[0] == "reply" and e[1][0] == ERROR] == [3, 4, 6], after


REC, COMMIT = 4160, 64  # write-back log: page record, commit record closing a sync group


def test_torn_overlay_tail_is_dropped(tmp_path):
    srv = Server(str(tmp_path))
    try:
        c = Conn(srv)
        c.handshake()
        good = bytes([0x11]) * 4096
        c.put(1, 1, ADDR, good)
        assert c.recv()[0] == PUT | 0x80
        srv.stop(signal.SIGKILL)
        log = os.path.join(srv.images, "distriproc-overlay.log")
        size = os.path.getsize(log)
        assert size == REC + COMMIT
        # A crash in the middle of the next append: a record for the same page
        # whose data never fully reached the disk, and no commit record.
        with open(log, "rb") as f:
            rec = bytearray(f.read(REC))
        rec[64:64 + 4096] = bytes([0x22]) * 4096  # other data, old checksum: invalid
        with open(log, "r+b") as f:
            f.seek(size)
            f.write(bytes(rec))                        # full-length but corrupt record first
            f.write(bytes(rec[:3000]))                 # and a short tail after it
        srv.start()
        c = Conn(srv)
        c.handshake()
        c.get(2, [(1, ADDR, 1)])
        pages = pages_of(parse_get_reply(c.recv()[3]))
        assert pages[0][1] == good  # the acknowledged version, never the torn one
        assert "torn tail" in srv.logtext()
        assert os.path.getsize(log) == REC + COMMIT
    finally:
        srv.stop()


def test_damage_inside_acknowledged_writes_stops_the_server_and_keeps_the_log(tmp_path):
    """A bit flipped in the FIRST record of a log of several synced groups is
    not a torn tail: cutting there would turn acknowledged pages into zeros.
    The server refuses to start, says where and what to do, and leaves the
    file byte for byte as it was; repaired, it serves every acknowledged page."""
    srv = Server(str(tmp_path))
    c = Conn(srv)
    c.handshake()
    want = {}
    for i in range(3):  # three PUTs, each acknowledged after its own sync
        data = bytes([0x30 + i]) * 4096
        c.put(10 + i, 1, ADDR + i * 4096, data)
        assert c.recv()[:3:2] == (PUT | 0x80, 10 + i)
        want[i] = data
    srv.stop()
    log = os.path.join(srv.images, "distriproc-overlay.log")
    before = open(log, "rb").read()
    assert len(before) == 3 * (REC + COMMIT)
    damaged = bytearray(before)
    damaged[64 + 100] ^= 0x04  # page data of the first record
    open(log, "wb").write(damaged)
    proc = subprocess.run([BIN, "serve", "--images", srv.images, "--listen", "127.0.0.1:%d" % free_port(),
                           "--key", srv.keyfile], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert "damaged at offset 0" in proc.stderr, proc.stderr
    assert "not a torn tail" in proc.stderr and "left untouched" in proc.stderr, proc.stderr
    assert open(log, "rb").read() == bytes(damaged)  # not cut, not rewritten
    open(log, "wb").write(before)  # "restored from a backup"
    srv.start()
    try:
        c = Conn(srv)
        c.handshake()
        c.get(20, [(1, ADDR, 3)])
        pages = pages_of(parse_get_reply(c.recv()[3]))
        assert [p[1] for p in pages] == [want[0], want[1], want[2]]
    finally:
        srv.stop()


def test_skeleton_leaves_lazy_data_out(server, tmp_path):
    out = str(tmp_path / "skel")
    r = subprocess.run([BIN, "query", "--source", "127.0.0.1:%d" % server.port, "--key", server.keyfile,
                        "skeleton", out], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    # Every file of the checkpoint but our write-back log.
    c = Conn(server)
    c.handshake()
    c.put(1, 1, ADDR, bytes(4096))
    assert c.recv()[0] == PUT | 0x80
    imgs = sorted(f for f in os.listdir(server.images) if f != "distriproc-overlay.log")
    assert "distriproc-overlay.log" in os.listdir(server.images)
    assert sorted(os.listdir(out)) == imgs and res["files"] == len(imgs)
    for f in imgs:
        a = open(os.path.join(server.images, f), "rb").read()
        b = open(os.path.join(out, f), "rb").read()
        assert len(a) == len(b), f
        if not f.startswith("pages-"):
            assert a == b, f
    # The lazy pages are not in the skeleton: where tinymem's data sits in the
    # source's pages file, the skeleton's reads as zeros; everything else matches.
    src = open(os.path.join(server.images, "pages-1.img"), "rb").read()
    dst = open(os.path.join(out, "pages-1.img"), "rb").read()
    page0 = tinymem_page(0)
    at = src.find(page0)
    assert at >= 0 and dst[at:at + 4096] == bytes(4096)
    assert res["bytes_received"] < len(src)
    for i in range(0, len(src), 4096):
        assert dst[i:i + 4096] in (src[i:i + 4096], bytes(4096))


def test_stats_and_access_log(server, tmp_path):
    c = Conn(server)
    c.handshake()
    for rid in range(3):
        c.get(10 + rid, [(1, ADDR, 2)])
        c.recv()
    c.send(msg(ACCESS_LOG, 20))
    body = b""
    while True:
        t, f, rid, p = c.recv()
        assert t == ACCESS_LOG | 0x80 and rid == 20
        body += p
        if not f & FLAG_MORE:
            break
    log = json.loads(body)
    by_addr = {int(e["addr"], 16): e for e in log["pages"] if e["pid"] == 1}
    assert by_addr[ADDR]["count"] == 3 and by_addr[ADDR + 4096]["count"] == 3
    assert by_addr[ADDR]["first"] <= by_addr[ADDR]["last"]
    r = subprocess.run([BIN, "query", "--source", "127.0.0.1:%d" % server.port, "--key", server.keyfile, "stats"],
                       capture_output=True, text=True, timeout=30)
    st = json.loads(r.stdout)
    assert st["pages_data"] >= 6 and st["requests"]["get_pages"] >= 3


def test_sigterm_writes_access_log(tmp_path):
    path = str(tmp_path / "access.json")
    srv = Server(str(tmp_path), extra=["--access-log", path])
    c = Conn(srv)
    c.handshake()
    c.get(1, [(1, ADDR, 4)])
    c.recv()
    assert srv.stop(signal.SIGTERM) == 0
    log = json.load(open(path))
    assert log["pages_touched"] == 4
    assert "shutting down" in srv.logtext()


def test_client_library_get_put_and_reconnect(tmp_path):
    """`distriproc query` uses lib/client.c: GET/PUT, and a request in flight
    while the server is down is resubmitted after the reconnect."""
    srv = Server(str(tmp_path))
    try:
        q = [BIN, "query", "--source", "127.0.0.1:%d" % srv.port, "--key", srv.keyfile]
        r = subprocess.run(q + ["get", "1", hex(ADDR), "8", str(tmp_path / "p.bin")], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        got = open(tmp_path / "p.bin", "rb").read()
        assert got == b"".join(tinymem_page(i) for i in range(8))
        newdata = os.urandom(8192)
        (tmp_path / "new.bin").write_bytes(newdata)
        r = subprocess.run(q + ["put", "1", hex(ADDR + 5 * 4096), str(tmp_path / "new.bin")], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 and json.loads(r.stdout)["durable"], r.stderr
        # 300 rounds of GET (~3 s); the server is killed and restarted meanwhile.
        p = subprocess.Popen(q + ["--timeout", "20000", "--repeat", "300", "get", "1", hex(ADDR), "8",
                                  str(tmp_path / "p2.bin")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The kill must land while the client is connected and mid-run, not
        # before it connected (under load 0.5 s was not always enough): wait
        # for its GETs to reach the server.
        def get_requests():
            r = subprocess.run(q + ["stats"], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)["requests"]["get_pages"]
        before = get_requests()
        util.wait_until(lambda: get_requests() >= before + 5, 30, "the repeating client's first GETs")
        srv.stop(signal.SIGKILL)
        time.sleep(0.5)  # the client sees the server gone and retries; this is not a wait on an event
        srv.start()
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert "lost" in err and "reconnected" in err
        got = open(tmp_path / "p2.bin", "rb").read()
        assert got[5 * 4096:7 * 4096] == newdata
        assert got[:4096] == tinymem_page(0)
    finally:
        srv.stop()


def test_client_refuses_wrong_key(server, tmp_path):
    bad = tmp_path / "bad.key"
    util.write_key(bad, os.urandom(32))
    r = subprocess.run([BIN, "query", "--source", "127.0.0.1:%d" % server.port, "--key", str(bad), "stats"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "AUTH_FAILED" in r.stderr


def test_reader_that_never_reads_does_not_block_others(server):
    hog = Conn(server)
    hog.handshake()
    hog.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # 64 requests of 64 pages each, never read: the server stops reading this
    # client once its queued output passes the high-water mark.
    req = b"".join(msg(GET, 100 + i, struct.pack("<II", 1, 0) + struct.pack("<iIQ", 1, PAGES, ADDR))
                   for i in range(64))
    hog.s.settimeout(5)
    try:
        hog.send(req)
    except socket.timeout:
        pass
    other = Conn(server)
    other.handshake()
    other.get(1, [(1, ADDR, 1)])
    t, f, rid, p = other.recv()
    assert t == GET | 0x80


def test_silent_unauthenticated_connection_is_dropped(server):
    """A peer that connects and never authenticates holds nothing for long:
    the server closes it after its 10-second handshake limit."""
    idle = Conn(server, timeout=30)
    idle.send(msg(HELLO, 1, dpchan.hello_payload()[1]))
    assert idle.recv()[0] == HELLO | 0x80
    assert idle.closed()  # blocks until the server gives up on it
    assert "did not authenticate in time" in server.logtext()
    good = Conn(server)
    assert good.handshake()[0] == AUTH | 0x80


def test_streamed_skeleton_equals_local_skeleton(server, tmp_path):
    """The skeleton that crosses the network is byte for byte what
    `distriproc images --skeleton-to` writes locally from the same plan (the
    one the image helper's test restores with real CRIU)."""
    local, remote = str(tmp_path / "local"), str(tmp_path / "remote")
    r = subprocess.run([BIN, "images", "--images", FIXTURE, "--skeleton-to", local], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([BIN, "query", "--source", "127.0.0.1:%d" % server.port, "--key", server.keyfile,
                        "skeleton", remote], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    names = sorted(os.listdir(local))
    assert names == sorted(os.listdir(remote)) and len(names) > 5
    for n in names:
        a = open(os.path.join(local, n), "rb").read()
        b = open(os.path.join(remote, n), "rb").read()
        assert a == b, n


def test_skeleton_file_shrinking_mid_stream_fails_the_download_at_once(tmp_path):
    """A skeleton file that shrinks while it streams (an operator truncating an
    image under a running server) ends that download with the server's I/O
    error, at once, instead of leaving the client to wait for its timeout; the
    server goes on serving."""
    images = str(tmp_path / "images")
    shutil.copytree(FIXTURE, images)
    big = os.path.join(images, "zz-big.img")  # sorts last: streamed after the real images
    with open(big, "wb") as f:
        f.truncate(4 << 30)  # sparse: no disk, but seconds of stream
    server = Server(str(tmp_path))
    try:
        out = str(tmp_path / "out")
        q = subprocess.Popen([BIN, "query", "--source", "127.0.0.1:%d" % server.port, "--key", server.keyfile,
                              "--timeout", "600000", "skeleton", out],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 60
            while not os.path.exists(os.path.join(out, "zz-big.img")) and time.time() < deadline:
                assert q.poll() is None, q.communicate()
                time.sleep(0.01)
            assert os.path.exists(os.path.join(out, "zz-big.img")), "the big file never started streaming"
            os.truncate(big, 4096)
            _, err = q.communicate(timeout=60)  # the client's own timeout is 600 s
        finally:
            if q.poll() is None:
                q.kill()
                q.wait()
        assert q.returncode == 1, err
        assert "reading zz-big.img for the skeleton failed: file shrank" in err
        assert "no reply from the page server" not in err
        assert server.proc.poll() is None
        os.truncate(big, 0)
        r = subprocess.run([BIN, "query", "--source", "127.0.0.1:%d" % server.port, "--key", server.keyfile,
                            "task-map"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        server.stop()


def test_emulated_rtt_path_answers_everything(tmp_path):
    """Replies held back by --emulate-rtt (FIFO + timerfd) still all arrive,
    with the right ids and data, PUT acknowledgements included; a fatal error
    still closes the connection after its delayed ERROR."""
    srv = Server(str(tmp_path), extra=["--emulate-rtt", "2000"])
    try:
        c = Conn(srv)
        c.handshake()
        new = bytes([0x5C]) * 4096
        batch = [msg(GET, 100 + i, struct.pack("<II", 1, 0) + struct.pack("<iIQ", 1, 1, ADDR + (i % 8) * 4096))
                 for i in range(40)]
        batch.insert(20, msg(PUT, 500, struct.pack("<II", 1, 0) + struct.pack("<iIQ", 1, 1, ADDR + 9 * 4096) + new))
        c.send(b"".join(batch))
        got = {}
        for _ in range(41):
            t, f, rid, p = c.recv()
            got[rid] = (t, p)
        assert got[500][0] == PUT | 0x80
        for i in range(40):
            t, p = got[100 + i]
            assert t == GET | 0x80
            kind, data = pages_of(parse_get_reply(p))[0]
            assert (data or bytes(4096)) == tinymem_page(i % 8)
        c.get(600, [(1, ADDR + 9 * 4096, 1)])
        assert pages_of(parse_get_reply(c.recv()[3]))[0][1] == new
        c.send(msg(GET, 601, struct.pack("<II", 0, 0)))  # malformed: no ranges
        expect_error(c, E_MALFORMED)
    finally:
        srv.stop()


def test_garbage_from_many_clients_never_stops_the_server(server):
    """300 connections send seeded random bytes (some after a valid handshake,
    some with a valid header and a random payload); every one is refused or
    closed, and the server keeps serving a well-behaved client throughout."""
    import random
    rnd = random.Random(1234)
    good = Conn(server)
    good.handshake()
    for i in range(300):
        c = Conn(server)
        if i % 3 == 0:
            c.handshake()
        if i % 2 == 0:
            t = rnd.choice([HELLO, AUTH, TASK_MAP, GET, PUT, SKEL, STATS, ACCESS_LOG, rnd.randrange(256)])
            body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(64)))
            data = msg(t, rnd.randrange(2**64), body)
        else:
            data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200)))
        try:
            c.send(data)
        except OSError:
            pass
        c.s.close()
        if i % 50 == 0:
            good.get(i + 1, [(1, ADDR, 1)])
            t, f, rid, p = good.recv()
            assert (t, rid) == (GET | 0x80, i + 1)
    assert server.proc.poll() is None
    good.send(msg(STATS, 9999))
    st = json.loads(good.recv()[3])
    assert st["connections"] >= 301
