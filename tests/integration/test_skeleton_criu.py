"""The skeleton against real CRIU: a restore from the skeleton (pages files
sparse, lazy data left out) works when the lazy pages come from elsewhere, and
breaks when they do not, so the left-out bytes really are the lazy ones and
the kept ones really are needed.

tinymem (tests/fixtures/tinymem.c) checks its memory every 20 ms and rewrites
its status file: "ok ROUNDS" or "BAD page P word W".
Run as root after `make deps` and `make`."""
import os
import signal
import subprocess
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CRIU = os.environ.get("DISTRIPROC_CRIU", os.path.join(ROOT, ".deps", "bin", "criu"))
DISTRIPROC = os.path.join(ROOT, "build", "distriproc")
MAKE_IMAGES = os.path.join(ROOT, "tests", "fixtures", "make-tinymem-images.sh")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(CRIU) or not os.path.exists(DISTRIPROC),
    reason="needs root, .deps/bin/criu (make deps) and build/distriproc (make)")


def read_status(work):
    with open(os.path.join(work, "status")) as f:
        return f.read().strip()


def rounds(status):
    parts = status.split()
    return int(parts[1]) if len(parts) == 2 and parts[0] == "ok" else None


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive for us
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


@pytest.fixture
def dumped(tmp_path):
    """A plain criu dump of tinymem and its skeleton written next to it."""
    work = str(tmp_path / "w")
    full = str(tmp_path / "full")
    skel = str(tmp_path / "skel")
    subprocess.run([MAKE_IMAGES, full], env=dict(os.environ, TINYMEM_WORK=work),
                   check=True, timeout=120, stdout=subprocess.DEVNULL)
    subprocess.run([DISTRIPROC, "images", "--images", full, "--skeleton-to", skel],
                   check=True, timeout=60, stdout=subprocess.DEVNULL)
    pids = []
    yield tmp_path, work, full, skel, pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def restore(images, workdir, pidfile, lazy):
    cmd = [CRIU, "restore", "-D", images, "--work-dir", workdir, "-d",
           "--pidfile", pidfile, "-o", "restore.log", "-v4"]
    if lazy:
        cmd.append("--lazy-pages")
    subprocess.run(cmd, check=True, timeout=60)
    with open(pidfile) as f:
        return int(f.read())


def test_lazy_restore_from_skeleton(dumped):
    tmp, work, full, skel, pids = dumped
    wd = str(tmp / "wd")
    os.mkdir(wd)
    # CRIU's own daemon serves the lazy pages from the full images; the
    # restore itself only sees the skeleton.
    daemon = subprocess.Popen([CRIU, "lazy-pages", "-D", full, "--work-dir", wd,
                               "-o", "lazy.log", "-v4"])
    try:
        for _ in range(100):
            if os.path.exists(os.path.join(wd, "lazy-pages.socket")):
                break
            time.sleep(0.05)
        before = rounds(read_status(work))
        pid = restore(skel, wd, str(tmp / "pid"), lazy=True)
        pids.append(pid)
        deadline = time.time() + 10
        status = read_status(work)
        while time.time() < deadline:
            status = read_status(work)
            if rounds(status) is not None and rounds(status) >= before + 20:
                break
            assert not status.startswith("BAD"), status
            time.sleep(0.05)
        assert rounds(status) is not None and rounds(status) >= before + 20, status
        assert alive(pid)
        with open(os.path.join(wd, "restore.log")) as f:
            log = f.read()
        # the restore skipped the lazy entries and read the rest from the skeleton
        lazy = [l for l in log.splitlines() if "nr_lazy:" in l]
        assert lazy and int(lazy[-1].split()[-1]) > 0
    finally:
        daemon.kill()
        daemon.wait(timeout=10)


def test_plain_restore_from_skeleton_lacks_lazy_data(dumped):
    """Without a lazy-pages daemon the left-out pages read as zeros: the
    program dies (its stack is lazy too) or reports BAD. This is what makes
    the first test meaningful: the skeleton really lacks the lazy data."""
    tmp, work, full, skel, pids = dumped
    wd = str(tmp / "wd")
    os.mkdir(wd)
    before = rounds(read_status(work))
    pid = restore(skel, wd, str(tmp / "pid"), lazy=False)
    pids.append(pid)
    deadline = time.time() + 5
    while time.time() < deadline and alive(pid) and not read_status(work).startswith("BAD"):
        time.sleep(0.05)
    status = read_status(work)
    assert status.startswith("BAD") or not alive(pid), status
    assert rounds(status) is None or rounds(status) <= before + 1, status


def test_plain_restore_from_full_images(dumped):
    """Control: the same restore from the full images runs and verifies."""
    tmp, work, full, skel, pids = dumped
    wd = str(tmp / "wd")
    os.mkdir(wd)
    before = rounds(read_status(work))
    pid = restore(full, wd, str(tmp / "pid"), lazy=False)
    pids.append(pid)
    deadline = time.time() + 10
    while time.time() < deadline and (rounds(read_status(work)) or 0) < before + 20:
        assert not read_status(work).startswith("BAD")
        time.sleep(0.05)
    assert (rounds(read_status(work)) or 0) >= before + 20
    assert alive(pid)
