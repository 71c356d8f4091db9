"""distriproc checkpoint against the real thing: a Redis server running as a
session leader in its own pid namespace inside a network namespace, with an
established client connection, checkpointed by `distriproc checkpoint` and
restored with plain `criu restore` into a second network namespace.

Needs root (namespaces, CRIU) and `make deps` + `make` done (make test does both).
Everything it creates (namespaces, processes, files) is removed even on failure.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DISTRIPROC = os.path.join(REPO, "build", "distriproc")
CRIU = os.environ.get("DISTRIPROC_CRIU", os.path.join(REPO, ".deps", "bin", "criu"))
PORT = 7391
STEP_TIMEOUT = 60  # seconds, for any single command


def run(cmd, **kw):
    kw.setdefault("timeout", STEP_TIMEOUT)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


def in_ns(ns, cmd):
    # nsenter --net only: `ip netns exec` would add a mount namespace CRIU then dumps.
    return ["nsenter", "--net=/run/netns/" + ns] + cmd


def alive(pid):
    """Running and not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def redis_cli(ns, *args):
    return run(in_ns(ns, ["redis-cli", "-p", str(PORT)] + list(args)), timeout=10)


@pytest.fixture
def lab():
    """Two fresh network namespaces with loopback up, and a record of what to kill."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces, criu dump/restore); run make test as root")
    for path in (DISTRIPROC, CRIU):
        if not os.access(path, os.X_OK):
            pytest.fail("%s missing: run 'make deps && make' first (make test does both)" % path)
    tag = "dpt-ckpt-%d" % os.getpid()
    env = {"a": tag + "-a", "b": tag + "-b", "pids": [], "procs": [],
           "dir": tempfile.mkdtemp(prefix="dp-test-checkpoint.")}
    try:
        for ns in (env["a"], env["b"]):
            run(["ip", "netns", "del", ns])  # leftovers of a crashed run
            r = run(["ip", "netns", "add", ns])
            assert r.returncode == 0, "ip netns add %s: %s" % (ns, r.stderr)
            r = run(in_ns(ns, ["ip", "link", "set", "lo", "up"]))
            assert r.returncode == 0, r.stderr
        yield env
    finally:
        for p in env["procs"]:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for pid in env["pids"]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for ns in (env["a"], env["b"]):
            run(["ip", "netns", "del", ns])
        shutil.rmtree(env["dir"], ignore_errors=True)


def start_redis(env):
    """Redis as a session leader in a new pid namespace inside netns a; returns its host pid."""
    outer = subprocess.Popen(
        in_ns(env["a"], ["unshare", "--pid", "--fork", "setsid", "redis-server", "--port", str(PORT),
                         "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        close_fds=True)
    env["procs"].append(outer)
    children = []

    def child():
        children[:] = run(["pgrep", "-P", str(outer.pid)], timeout=5).stdout.split()
        return children

    # nsenter execs unshare, which forks the pid-ns init (setsid execs redis in it).
    wait_for(child, 10, "the redis pid-namespace init")
    pid = int(children[0])
    env["pids"].append(pid)
    wait_for(lambda: redis_cli(env["a"], "ping").stdout.strip() == "PONG", 10, "redis to answer")
    return pid


def checkpoint(pid, images, ns, *extra):
    return run([DISTRIPROC, "checkpoint", "--netns", ns, "--pid", str(pid), "--images", images,
                "--json"] + list(extra))


def test_checkpoint_reports_and_restores_elsewhere(lab):
    pid = start_redis(lab)
    assert redis_cli(lab["a"], "set", "dp-key", "dp-value-42").stdout.strip() == "OK"
    # 8 MiB of values so there is real private anonymous memory to report.
    r = redis_cli(lab["a"], "eval",
                  "for i=1,2048 do redis.call('set','k'..i,string.rep('x',4096)) end return 1", "0")
    assert r.stdout.strip() == "1", r.stdout + r.stderr
    # An established connection held by a client outside the dumped tree.
    client = subprocess.Popen(
        in_ns(lab["a"], ["/usr/bin/python3", "-c",
                         "import socket,time\ns=socket.create_connection(('127.0.0.1',%d))\ntime.sleep(60)" % PORT]),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lab["procs"].append(client)
    wait_for(lambda: ":%d " % PORT in run(in_ns(lab["a"], ["ss", "-Htn", "state", "established"])).stdout,
             10, "the client connection")

    images = os.path.join(lab["dir"], "img")
    r = checkpoint(pid, images, lab["a"])
    assert r.returncode == 0, "checkpoint failed:\n" + r.stderr
    report = json.loads(r.stdout)
    assert report["pid"] == pid
    assert report["tasks"] == 1
    assert report["tcp_established"] is True
    assert report["shell_job"] is False  # a session leader needs no --shell-job
    assert report["left_running"] is False
    assert report["lazy_bytes"] >= 8 << 20, report
    assert report["total_memory_bytes"] >= report["lazy_bytes"]
    assert 0 < report["image_bytes"] <= sum(
        os.path.getsize(os.path.join(images, f)) for f in os.listdir(images))
    assert os.path.exists(os.path.join(images, "dump.log"))
    wait_for(lambda: not os.path.exists("/proc/%d" % pid), 10, "the dumped redis to be gone")
    lab["pids"].remove(pid)  # gone: never signal whatever reuses its pid

    # Restore into the other namespace and ask the restored server for its data.
    pidfile = os.path.join(images, "restored.pid")
    r = run(in_ns(lab["b"], [CRIU, "restore", "-D", images, "-o", "restore.log", "--tcp-established",
                             "--restore-detached", "--pidfile", pidfile]))
    assert r.returncode == 0, "criu restore failed:\n" + r.stderr + open(os.path.join(images, "restore.log")).read()[-3000:]
    rpid = int(open(pidfile).read())
    lab["pids"].append(rpid)
    assert alive(rpid)
    assert redis_cli(lab["b"], "get", "dp-key").stdout.strip() == "dp-value-42"
    assert redis_cli(lab["b"], "dbsize").stdout.strip() == "2049"
    assert alive(rpid)


def test_checkpoint_leave_running_and_refuses_used_dir(lab):
    pid = start_redis(lab)
    images = os.path.join(lab["dir"], "img")
    r = checkpoint(pid, images, lab["a"], "--leave-running", "--file-validation", "filesize")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["left_running"] is True and report["file_validation"] == "filesize"
    assert alive(pid)
    assert redis_cli(lab["a"], "ping").stdout.strip() == "PONG"

    # A second dump into the same directory would mix images: refused, tree untouched.
    r = checkpoint(pid, images, lab["a"])
    assert r.returncode == 1
    assert "not empty" in r.stderr
    assert alive(pid)


def test_checkpoint_failure_names_the_cause(lab):
    # Init of its own pid namespace but not a session leader: its session leader is
    # outside the tree, so with --no-shell-job criu must refuse, and the error must
    # carry criu's reason, what to do about it, and the log path. (A plain child of
    # the test would be judged by where the test runner's own session leader is,
    # which differs between a terminal and CI.)
    p = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "60"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    lab["procs"].append(p)
    child = None
    deadline = time.monotonic() + 10
    while child is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
                kids = f.read().split()
            child = int(kids[0]) if kids else None
        except OSError:
            pass
        if child is None:
            time.sleep(0.05)
    assert child is not None, "unshare did not start its child"
    images = os.path.join(lab["dir"], "img")
    r = run([DISTRIPROC, "checkpoint", "--pid", str(child), "--images", images, "--no-shell-job"])
    assert r.returncode == 1
    assert "session leader" in r.stderr and "is outside of its pid namespace" in r.stderr
    assert "--container" in r.stderr and "--shell-job" in r.stderr
    assert os.path.join(images, "dump.log") in r.stderr
    assert p.poll() is None and alive(child)  # a failed dump leaves the tree running


def test_checkpoint_usage_errors():
    assert run([DISTRIPROC, "checkpoint", "--help"]).returncode == 0
    r = run([DISTRIPROC, "checkpoint", "--pid", "1"])
    assert r.returncode == 2 and "--images" in r.stderr
    r = run([DISTRIPROC, "checkpoint", "--pid", "x", "--images", "/tmp/x"])
    assert r.returncode == 2
    r = run([DISTRIPROC, "checkpoint", "--host", "mars", "--pid", "1", "--images", "/tmp/x"])
    assert r.returncode == 2 and "src or dst" in r.stderr


def test_checkpoint_warns_about_written_files(lab):
    # A workload whose stdout is a regular file: restore fails if that file
    # changes after the dump, so checkpoint warns before dumping.
    out_path = os.path.join(lab["dir"], "out.txt")
    with open(out_path, "w") as out:
        p = subprocess.Popen(["setsid", "sleep", "60"], stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.DEVNULL, start_new_session=False)
    lab["procs"].append(p)
    wait_for(lambda: open("/proc/%d/comm" % p.pid).read().strip() == "sleep", 10, "sleep to start")
    r = run([DISTRIPROC, "checkpoint", "--pid", str(p.pid), "--images", os.path.join(lab["dir"], "img"),
             "--leave-running", "--json"])
    assert r.returncode == 0, r.stderr
    assert "writes to %s (fd 1)" % out_path in r.stderr
    assert json.loads(r.stdout)["shell_job"] is False
    assert p.poll() is None


def test_checkpoint_warns_about_kill_child(lab):
    # CRIU restores the parent-death signal `unshare --kill-child` sets, so such a
    # tree dies as soon as a detached restore's criu exits: checkpoint says so.
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "setsid", "sleep", "60"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lab["procs"].append(outer)
    children = []

    def child():
        children[:] = run(["pgrep", "-P", str(outer.pid)], timeout=5).stdout.split()
        return children

    wait_for(child, 10, "the pid-namespace init")
    r = run([DISTRIPROC, "checkpoint", "--pid", children[0], "--images", os.path.join(lab["dir"], "img"),
             "--leave-running"])
    assert r.returncode == 0, r.stderr
    assert "unshare --kill-child" in r.stderr
