"""CRIU's kernel-feature cache on a host whose /run is not a tmpfs (lib/kdat.h):
the first dump or restore of a boot has criu write its cache in a private
mount namespace and keeps it in /run with a stamp naming the boot and the
file; a cache of another boot, or one nobody vouches for, is replaced before
criu can read it; later runs load it. Where /run is a tmpfs, criu keeps its
cache itself and DistriProc writes nothing there."""

import hashlib
import os

import pytest

import util

RUN = "/run"
CACHE = os.path.join(RUN, "criu.kdat")
STAMP = os.path.join(RUN, "distriproc-criu.kdat.boot")
KEPT = "kept CRIU's kernel-feature cache for this boot"
LOADED = "Loaded kdat cache from /run/criu.kdat"


def boot_id():
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def run_is_tmpfs():
    return util.run(["stat", "-f", "-c", "%T", RUN]).stdout.strip() == "tmpfs"


def checkpoint(procs, tmp_path, name):
    """Checkpoints a small memwalk container; returns (stderr, dump.log text)."""
    images = tmp_path / name
    images.mkdir()
    pid = util.start_container(procs, "src", [util.MEMWALK, "--mib", "4"], tmp_path / f"{name}.pid")
    util.wait_memwalk(util.HOSTS["src"], host="src")
    cp = util.distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", images, timeout=120)
    util.wait_gone(pid, timeout=20)
    return cp.stderr, (images / "dump.log").read_text(errors="replace")


def stamp_for(boot, data):
    return f"{boot} {hashlib.blake2b(data, digest_size=16).hexdigest()}\n"


def assert_ours(old_bytes):
    with open(CACHE, "rb") as f:
        data = f.read()
    assert 0 < len(data) < 65536 and data != old_bytes
    with open(STAMP) as f:
        assert f.read() == stamp_for(boot_id(), data)


@pytest.mark.time_limit(240)
def test_criu_cache_is_kept_per_boot_and_never_stale(lab, procs, criu, tmp_path):
    if run_is_tmpfs():
        # criu's own business: nothing of ours appears, and criu still caches.
        if os.path.exists(STAMP):
            os.unlink(STAMP)
        err, log = checkpoint(procs, tmp_path, "a")
        assert KEPT not in err and not os.path.exists(STAMP), err
        err, log = checkpoint(procs, tmp_path, "b")
        assert LOADED in log
        return

    # A cache of another boot (garbage here: a kernel's worth of wrong facts).
    garbage = b"\x01" * 912
    with open(CACHE, "wb") as f:
        f.write(garbage)
    with open(STAMP, "w") as f:
        f.write(stamp_for("00000000-1111-2222-3333-444444444444", garbage))
    err, log = checkpoint(procs, tmp_path, "a")
    assert KEPT in err, err
    assert LOADED in log and "Stale" not in log, log[:2000]
    assert_ours(garbage)

    # Kept: the next dump loads it, and nothing is made again.
    with open(CACHE, "rb") as f:
        made = f.read()
    st = os.stat(CACHE)
    err, log = checkpoint(procs, tmp_path, "b")
    assert KEPT not in err, err
    assert LOADED in log
    assert os.stat(CACHE).st_ino == st.st_ino and os.stat(CACHE).st_mtime_ns == st.st_mtime_ns

    # Other bytes under this boot's stamp: nobody vouches for them.
    with open(CACHE, "r+b") as f:
        f.write(garbage[:len(made)])
    err, log = checkpoint(procs, tmp_path, "c")
    assert KEPT in err, err
    assert LOADED in log and "Stale" not in log
    assert_ours(garbage)

    # None at all (a criu of another build found ours stale and removed it).
    os.unlink(CACHE)
    err, log = checkpoint(procs, tmp_path, "d")
    assert KEPT in err and LOADED in log, err
    assert_ours(garbage)
