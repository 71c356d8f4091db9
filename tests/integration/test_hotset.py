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
