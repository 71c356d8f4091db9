"""Hot sets against the real thing: `distriproc checkpoint --classify` on a
memwalk with one hot and one cold mapping, and the refusal of a hot set that
belongs to another checkpoint or to an earlier (stale) dump of the same
workload.

The hot-set file is parsed here independently of the C code, from the format
documented in lib/hotset.h."""

import hashlib
import json
import shutil
import struct
import subprocess

import pytest

import util

PG = 4096
HOTSET = "distriproc-hotset.bin"
FIXTURE = f"{util.ROOT}/tests/fixtures/images-tinymem"


def parse_hotset(path):
    """lib/hotset.h's format: header, task records, run records, BLAKE2b-128."""
    data = open(path, "rb").read()
    assert len(data) >= 96, f"{path}: {len(data)} bytes"
    magic, version, source = struct.unpack_from("<IHB", data, 0)
    assert magic == 0x53485044 and version == 1, (hex(magic), version)
    ident = data[8:40].hex()
    created_us, window_ms, nr_tasks, nr_runs = struct.unpack_from("<QIII", data, 40)
    (total_pages,) = struct.unpack_from("<Q", data, 64)
    assert len(data) == 80 + 8 * nr_tasks + 24 * nr_runs + 16
    assert hashlib.blake2b(data[:-16], digest_size=16).digest() == data[-16:], "checksum"
    tasks, off = [], 80
    for _ in range(nr_tasks):
        pid, n = struct.unpack_from("<iI", data, off)
        tasks.append((pid, n))
        off += 8
    runs = {}
    for pid, n in tasks:
        runs[pid] = []
        for _ in range(n):
            vaddr, pages, score, t_ms, _r = struct.unpack_from("<QIIII", data, off)
            runs[pid].append((vaddr, pages, score, t_ms))
            off += 24
    assert sum(p for r in runs.values() for _, p, _, _ in r) == total_pages
    return {"source": source, "identity": ident, "window_ms": window_ms, "runs": runs,
            "pages": total_pages, "created_us": created_us}


def pages_in(runs, lo, hi):
    """How many pages of [lo, hi) the runs cover."""
    n = 0
    for vaddr, pages, _, _ in runs:
        a, b = max(lo, vaddr), min(hi, vaddr + pages * PG)
        n += max(0, b - a) // PG
    return n


def mapping_of(summary, addr):
    for m in summary["tasks"][0]["mappings"]:
        if int(m["start"], 16) <= addr < int(m["end"], 16):
            return m
    raise AssertionError(f"no lazy mapping holds {addr:#x}: {summary['tasks'][0]['mappings']}")


def start_memwalk(procs, tmp_path, *args):
    pid = util.start_container(procs, "src", [util.MEMWALK, *args], tmp_path / "src.pid")
    st = util.wait_memwalk(util.HOSTS["src"], host="src")
    return pid, st


@pytest.mark.time_limit(180)
def test_classify_separates_hot_and_cold_mappings(lab, procs, tmp_path):
    # 32 MiB walked in sequence over and over (hot), 16 MiB filled once and
    # never touched again (cold), each a mapping of its own.
    pid, st = start_memwalk(procs, tmp_path, "--mib", "32", "--cold-mib", "16", "--pattern", "seq")
    area, cold = int(st["area"], 16), int(st["cold"], 16)
    assert st["cold_mib"] == 16 and cold != 0, st
    images = tmp_path / "images"
    cp = util.distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", images,
                         "--classify", "2", "--json", timeout=120)
    report = json.loads(cp.stdout)
    summary = json.loads((images / "distriproc-hotset.json").read_text())
    assert report["hotset"] == summary
    assert summary["seconds"] >= 2.0 and summary["tasks"][0]["pid"] == 1, summary

    hot_m, cold_m = mapping_of(summary, area), mapping_of(summary, cold)
    assert int(hot_m["start"], 16) == area and int(hot_m["end"], 16) == area + (32 << 20), hot_m
    assert int(cold_m["start"], 16) == cold and int(cold_m["end"], 16) == cold + (16 << 20), cold_m
    assert hot_m["hot"] and hot_m["score"] >= 900, hot_m
    assert not cold_m["hot"] and cold_m["referenced_kb"] == 0 and cold_m["rss_kb"] == 16 << 10, cold_m

    hs = parse_hotset(images / HOTSET)
    assert hs["source"] == 1 and hs["window_ms"] >= 2000
    ident = util.distriproc("hotset", "identity", "--images", images).stdout.strip()
    assert hs["identity"] == ident
    runs = hs["runs"][1]
    assert pages_in(runs, area, area + (32 << 20)) == 32 * 256, "hot mapping not fully in the hot set"
    assert pages_in(runs, cold, cold + (16 << 20)) == 0, "cold mapping in the hot set"
    # The densest mappings come first: the hot area before anything scored lower.
    order = [r for r in runs if r[2] < hot_m["score"]]
    first_low = runs.index(order[0]) if order else len(runs)
    assert any(v == area for v, *_ in runs[:first_low]), runs[:first_low + 1]
    util.distriproc("hotset", "check", "--images", images, images / HOTSET)


@pytest.mark.time_limit(240)
def test_hotset_of_another_or_stale_checkpoint_is_refused(lab, procs, tmp_path):
    pid, _ = start_memwalk(procs, tmp_path, "--mib", "16", "--cold-mib", "4", "--pattern", "seq")
    old, new = tmp_path / "old", tmp_path / "new"
    # An earlier dump of the same process (left running), then a later one:
    # same pids, same mappings; the earlier hot set is stale for the later.
    util.distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", old, "--leave-running",
                    "--classify", "1", timeout=120)
    util.distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", new,
                    "--classify", "1", timeout=120)
    id_old = util.distriproc("hotset", "identity", "--images", old).stdout.strip()
    id_new = util.distriproc("hotset", "identity", "--images", new).stdout.strip()
    id_fix = util.distriproc("hotset", "identity", "--images", FIXTURE).stdout.strip()
    assert len({id_old, id_new, id_fix}) == 3, (id_old, id_new, id_fix)
    # Each is accepted by its own checkpoint ...
    util.distriproc("hotset", "check", "--images", old, old / HOTSET)
    util.distriproc("hotset", "check", "--images", new, new / HOTSET)
    # ... and the structure alone would fit: same pid, same lazy mappings.
    assert parse_hotset(old / HOTSET)["runs"].keys() == parse_hotset(new / HOTSET)["runs"].keys()

    def refused(images, path, mine, theirs):
        cp = util.distriproc("hotset", "check", "--images", images, path, check=False)
        assert cp.returncode == 1, (cp.stdout, cp.stderr)
        assert cp.stdout == "", cp.stdout
        msg = cp.stderr
        assert theirs in msg and mine in msg, msg
        assert "refusing" in msg and "another checkpoint" in msg and "stale" in msg, msg
        return msg

    # stale: the earlier dump's hot set, even when copied beside the new images
    refused(new, old / HOTSET, id_new, id_old)
    shutil.copy(old / HOTSET, new / "copied-hotset.bin")
    refused(new, new / "copied-hotset.bin", id_new, id_old)
    # the other way round, and against a different workload's checkpoint
    refused(old, new / HOTSET, id_old, id_new)
    refused(FIXTURE, new / HOTSET, id_fix, id_new)
    # merging hot sets of two checkpoints is refused as well
    cp = util.distriproc("hotset", "merge", "--images", new, "--output", tmp_path / "m.bin",
                         new / HOTSET, old / HOTSET, check=False)
    assert cp.returncode == 1 and id_old in cp.stderr, cp.stderr
    assert not (tmp_path / "m.bin").exists()


# ---- the page server's side: PUT_TRACE and GET_HOTSET (protocol version 2) ----

TINY_ADDR, TINY_PAGES = 0x100000000000, 64


def encode_hotset(source, ident, tasks, created_us=1_800_000_000_000_000, window_ms=5000):
    """lib/hotset.h's format, written here independently: tasks is
    {pid: [(vaddr, pages, score, t_ms), ...]} in replay order."""
    runs = [r for pid in tasks for r in tasks[pid]]
    head = struct.pack("<IHBB", 0x53485044, 1, source, 0) + bytes.fromhex(ident)
    head += struct.pack("<QIIIIQQ", created_us, window_ms, len(tasks), len(runs), 0,
                        sum(r[1] for r in runs), 0)
    body = b"".join(struct.pack("<iI", pid, len(tasks[pid])) for pid in tasks)
    body += b"".join(struct.pack("<QIIII", v, n, s, t, 0) for v, n, s, t in runs)
    data = head + body
    return data + hashlib.blake2b(data, digest_size=16).digest()


class Serve:
    """`distriproc serve` over an images directory on loopback."""

    def __init__(self, procs, tmp_path, images):
        self.key = tmp_path / "key"
        if not self.key.exists():
            util.distriproc("keygen", self.key)
        self.port = _free_port()
        self.log = open(tmp_path / f"serve-{self.port}.log", "w")
        self.proc = procs.spawn([util.DISTRIPROC, "serve", "--images", images, "--listen",
                                 f"127.0.0.1:{self.port}", "--key", self.key],
                                stdout=subprocess.DEVNULL, stderr=self.log)
        util.wait_until(lambda: self.query("stats", check=False).returncode == 0, 20, "the page server")

    def query(self, *args, check=True):
        return util.distriproc("query", "--source", f"127.0.0.1:{self.port}", "--key", self.key,
                               "--timeout", "5000", *[str(a) for a in args], check=check)


def _free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.time_limit(60)
def test_server_stores_a_trace_and_refuses_a_foreign_one(procs, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(FIXTURE, images)
    ident = util.distriproc("hotset", "identity", "--images", images).stdout.strip()
    srv = Serve(procs, tmp_path, images)

    # Nothing yet: NO_HOTSET, and the connection stays usable.
    cp = srv.query("hotset", "auto", tmp_path / "none.bin", check=False)
    assert cp.returncode == 1 and "NO_HOTSET" not in cp.stdout and "no fault trace" in cp.stderr, cp.stderr
    assert not (tmp_path / "none.bin").exists()

    # A trace of this checkpoint: pages 5, 6, 7 then 0 of tinymem's region.
    trace = tmp_path / "trace.bin"
    trace.write_bytes(encode_hotset(2, ident, {1: [(TINY_ADDR + 5 * PG, 3, 1000, 1),
                                                   (TINY_ADDR, 1, 1000, 7)]}))
    util.distriproc("hotset", "check", "--images", images, trace)
    out = json.loads(srv.query("put-trace", trace).stdout)
    assert out == {"pages": 4, "runs": 2, "stored": True}, out
    stored = sorted(p.name for p in images.iterdir() if p.name.startswith("distriproc-trace-"))
    assert stored == ["distriproc-trace-1800000000000000.bin"], stored
    assert (images / stored[0]).read_bytes() == trace.read_bytes()

    # auto and trace both give it back, byte for byte; classify does not exist.
    for kind in ("auto", "trace"):
        srv.query("hotset", kind, tmp_path / f"{kind}.bin")
        assert (tmp_path / f"{kind}.bin").read_bytes() == trace.read_bytes()
    cp = srv.query("hotset", "classify", tmp_path / "c.bin", check=False)
    assert cp.returncode == 1 and "checkpoint --classify" in cp.stderr, cp.stderr

    # A trace of another checkpoint: refused, naming both identities; nothing stored.
    other = "ab" * 32
    foreign = tmp_path / "foreign.bin"
    foreign.write_bytes(encode_hotset(2, other, {1: [(TINY_ADDR, 1, 1000, 0)]}, created_us=1_900_000_000_000_000))
    cp = srv.query("put-trace", foreign, check=False)
    assert cp.returncode == 1, cp.stdout
    assert other in cp.stderr and ident in cp.stderr and "refusing" in cp.stderr, cp.stderr
    # Right checkpoint, but a page outside the task's lazy memory, or a pid it lacks.
    for bad in ({1: [(TINY_ADDR + TINY_PAGES * PG, 1, 1000, 0)]}, {2: [(TINY_ADDR, 1, 1000, 0)]}):
        f = tmp_path / "bad.bin"
        f.write_bytes(encode_hotset(2, ident, bad, created_us=1_900_000_000_000_000))
        cp = srv.query("put-trace", f, check=False)
        assert cp.returncode == 1 and ("not lazy memory" in cp.stderr or "pid 2 is not a task" in cp.stderr), \
            cp.stderr
    # A classification is not a trace; a corrupt file is malformed.
    f = tmp_path / "cls.bin"
    f.write_bytes(encode_hotset(1, ident, {1: [(TINY_ADDR, 1, 1000, 0)]}, created_us=1_900_000_000_000_000))
    cp = srv.query("put-trace", f, check=False)
    assert cp.returncode == 1 and "only a recorded trace" in cp.stderr, cp.stderr
    f.write_bytes(trace.read_bytes()[:-1] + b"\x00")
    cp = srv.query("put-trace", f, check=False)
    assert cp.returncode == 1 and "checksum" in cp.stderr, cp.stderr
    stored = sorted(p.name for p in images.iterdir() if p.name.startswith("distriproc-trace-"))
    assert stored == ["distriproc-trace-1800000000000000.bin"], stored

    # A stale file copied into the directory is never served: the server
    # skips it and serves the valid one (or nothing).
    (images / "distriproc-trace-1999999999999999.bin").write_bytes(foreign.read_bytes())
    srv.query("hotset", "trace", tmp_path / "t2.bin")
    assert (tmp_path / "t2.bin").read_bytes() == trace.read_bytes()
    (images / stored[0]).unlink()
    cp = srv.query("hotset", "auto", tmp_path / "t3.bin", check=False)
    assert cp.returncode == 1 and other in cp.stderr and ident in cp.stderr, cp.stderr
    assert not (tmp_path / "t3.bin").exists()
    stats = json.loads(srv.query("stats").stdout)
    assert stats["requests"]["put_trace"] >= 6 and stats["requests"]["get_hotset"] >= 6, stats


@pytest.mark.time_limit(60)
def test_hotset_from_the_servers_access_log(procs, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(FIXTURE, images)
    srv = Serve(procs, tmp_path, images)
    # an "earlier run": pages 9, 10, 11 first, then 2
    srv.query("get", 1, hex(TINY_ADDR + 9 * PG), 3)
    srv.query("get", 1, hex(TINY_ADDR + 2 * PG), 1)
    log = tmp_path / "access.json"
    log.write_text(srv.query("access-log").stdout)
    out = tmp_path / "from-log.bin"
    util.distriproc("hotset", "from-access-log", "--images", images, "--output", out, log)
    hs = parse_hotset(out)
    assert hs["source"] == 2 and hs["pages"] == 4
    assert hs["identity"] == util.distriproc("hotset", "identity", "--images", images).stdout.strip()
    assert [(v, n) for v, n, _, _ in hs["runs"][1]] == [(TINY_ADDR + 9 * PG, 3), (TINY_ADDR + 2 * PG, 1)]
    util.distriproc("hotset", "check", "--images", images, out)
    # An access log carries no identity (the hot set gets DIR's), but a log of
    # another checkpoint shows itself by pages that are not lazy memory here.
    log.write_text('{"pages": [{"pid": 1, "addr": "0x1000", "count": 1, "first": 1, "last": 1}]}')
    cp = util.distriproc("hotset", "from-access-log", "--images", images, "--output", tmp_path / "y.bin", log,
                         check=False)
    assert cp.returncode == 1 and "not lazy memory" in cp.stderr and not (tmp_path / "y.bin").exists(), cp.stderr
    log.write_text('{"pages": [{"pid": 1, "addr": "0x7", "count": 1, "first": 1, "last": 1}]}')
    cp = util.distriproc("hotset", "from-access-log", "--images", images, "--output", tmp_path / "x.bin", log,
                         check=False)
    assert cp.returncode == 1 and "bad entry" in cp.stderr and not (tmp_path / "x.bin").exists(), cp.stderr
