"""Local trust (docs/local-security.md): keys refused unless they are the
caller's, mode 0600 and in keygen's format; work directories 0700 and
owner-checked; logs never opened through a planted symlink; the daemon's unix
sockets refuse peers of another uid (SO_PEERCRED).

The daemon runs in local mode (`lazy-pages --images`, the tinymem fixture):
no lab, no CRIU restore needed to reach its sockets. Behaviour only."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile

import pytest

import util

FIXTURE = os.path.join(util.ROOT, "tests", "fixtures", "images-tinymem")
NOBODY = 65534
SERVE_PORT = 7330


def run(*args, timeout=30):
    return subprocess.run([util.DISTRIPROC, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def lazy_pages(procs, workdir):
    """Runs `lazy-pages` in local mode; a daemon it started (also when the
    test expects a refusal and the code is wrong) is tracked, so the procs
    fixture kills it."""
    cp = run("lazy-pages", "--images", FIXTURE, "--workdir", workdir, "--json")
    if cp.returncode == 0:
        procs.track(json.loads(cp.stdout)["daemon_pid"])
    return cp


def start_daemon(procs, workdir):
    cp = lazy_pages(procs, workdir)
    assert cp.returncode == 0, cp.stderr


def test_group_readable_key_is_refused_by_serve_and_restore(tmp_path):
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    os.chmod(key, 0o640)
    listen = "127.0.0.1:%d" % SERVE_PORT
    # A copy: a serve that (wrongly) started would write its log next to them.
    images = tmp_path / "images"
    shutil.copytree(FIXTURE, images)
    serve = run("serve", "--images", images, "--listen", listen, "--key", key, timeout=10)
    restore = run("restore", "--source", listen, "--key", key, "--workdir", tmp_path / "w")
    for cp in (serve, restore):
        assert cp.returncode == 1, cp.stderr
        assert f"key file {key} is readable or writable by group or others (mode 640)" in cp.stderr, cp.stderr
        assert f"run 'chmod 600 {key}'" in cp.stderr, cp.stderr


def test_key_not_in_keygen_format_is_refused(tmp_path):
    key = tmp_path / "key"
    key.write_bytes(os.urandom(16))  # any 16 bytes used to be a key
    os.chmod(key, 0o600)
    images = tmp_path / "images"
    shutil.copytree(FIXTURE, images)
    cp = run("serve", "--images", images, "--listen", "127.0.0.1:%d" % SERVE_PORT, "--key", key, timeout=10)
    assert cp.returncode == 1
    assert "not a distriproc key" in cp.stderr and "distriproc keygen" in cp.stderr, cp.stderr


def test_workdir_writable_by_others_or_not_ours_is_refused(procs, tmp_path):
    w = tmp_path / "w"
    w.mkdir()
    os.chmod(w, 0o777)
    cp = lazy_pages(procs, w)
    assert cp.returncode == 1 and "writable by group or others (mode 777)" in cp.stderr, cp.stderr
    assert f"chmod 700 {w}" in cp.stderr
    os.chmod(w, 0o700)
    os.chown(w, NOBODY, NOBODY)
    cp = lazy_pages(procs, w)
    assert cp.returncode == 1 and f"belongs to uid {NOBODY}" in cp.stderr, cp.stderr
    assert not os.listdir(w)


def test_new_workdir_is_private(procs, tmp_path):
    w = tmp_path / "new"
    start_daemon(procs, w)
    assert os.stat(w).st_mode & 0o777 == 0o700


def test_planted_lazyd_log_symlink_is_not_followed(procs, tmp_path):
    w = tmp_path / "w"
    w.mkdir(mode=0o700)
    target = tmp_path / "target"
    target.write_text("")
    os.symlink(target, w / "lazyd.log")
    cp = lazy_pages(procs, w)
    assert cp.returncode != 0
    assert f"cannot open log {w}/lazyd.log" in cp.stderr and "symlink" in cp.stderr, cp.stderr
    assert target.read_text() == ""
    assert os.path.islink(w / "lazyd.log")


def _connect_as_nobody(path, send):
    """What a peer of uid nobody gets back from the socket at path."""
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.settimeout(10)\n"
            f"s.connect({str(path)!r})\n"
            "got = b''\n"
            "try:\n"
            f"    s.sendall({send!r})\n"
            "    while True:\n"
            "        b = s.recv(65536)\n"
            "        if not b: break\n"
            "        got += b\n"
            "except (BrokenPipeError, ConnectionResetError):\n"
            "    pass\n"
            "sys.stdout.write(repr(got))\n")
    cp = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                         util.PYTHON, "-c", code], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


@pytest.fixture
def reachable_dir():
    """A directory under /tmp that uid nobody can traverse (tmp_path's
    parents are 0700)."""
    d = tempfile.mkdtemp(prefix="dp-perm-")
    os.chmod(d, 0o711)
    try:
        yield pathlib.Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_daemon_sockets_refuse_another_uid(procs, reachable_dir):
    w = reachable_dir / "w"
    start_daemon(procs, w)
    # Let nobody reach the sockets at all (the 0700 workdir alone keeps it
    # out): what is left to refuse it is the peer-credential check.
    os.chmod(w, 0o711)
    for name in ("control.sock", "lazy-pages.socket"):
        os.chmod(w / name, 0o666)
    assert _connect_as_nobody(w / "control.sock", b"stats\n") == "b''"
    _connect_as_nobody(w / "lazy-pages.socket", b"\x01\x00\x00\x00")
    log = (w / "lazyd.log").read_text()
    for name in ("control.sock", "lazy-pages.socket"):
        assert f"refused a connection on {w}/{name} from uid {NOBODY}" in log, log
    # The daemon's own user is still served.
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(w / "control.sock"))
    s.sendall(b"stats\n")
    assert s.recv(100).startswith(b"{"), "the owner must still get stats"
    s.close()
