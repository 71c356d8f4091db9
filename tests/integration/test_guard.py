"""The lazy-pages daemon's guard (lib/guard.c): when the daemon dies
abnormally (SIGKILL here), the restored tree must never see its
not-yet-fetched memory as zeros. The guard holds every uffd (so a fault waits
instead of zero-filling), kills the tree, says why in the daemon's log, and
goes away; on a normal end it just goes away.

Real CRIU, real namespaces, a private lab with DISTRIPROC_LAB=NAME. Behaviour
only, never timing: bounds are generous limits, not measurements."""

import json
import os
import signal
import subprocess

import pytest

import util

# make test also runs every test here against the ASan/UBSan build (the
# daemon, its guard and the inject helpers; about 25 s for test_inject, 12 s
# for test_guard under ASan here)
pytestmark = pytest.mark.asan

FORKMEM = os.path.join(util.BUILD, "forkmem")
FORKMEM_PORT = 7071
SERVE_PORT = 7320
GUARD_LINE = "SIGKILLed the restored process tree"

forkmem = util.forkmem_request
checkpoint = util.checkpoint_container
restore = util.restore_json
stats = util.lazy_stats

def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def children(pid):
    """Direct children of pid, from /proc."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                data = f.read()
        except OSError:
            continue
        if int(data[data.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(name))
    return out


def descendants(pid):
    out, queue = [], [pid]
    while queue:
        for c in children(queue.pop()):
            out.append(c)
            queue.append(c)
    return out


def guard_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().rstrip(b"\0")
    except OSError:
        return None


def sig_set(pid, field):
    """A signal mask line of /proc/PID/status (SigIgn, ShdPnd, ...) as an int."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def guard_of(daemon_pid):
    """The daemon's guard: its child named dp-guard (exactly one). The guard
    names itself right after its fork; on a loaded machine that can come after
    the daemon is already serving, so give it a moment."""
    util.wait_until(lambda: any(comm(c) == "dp-guard" and guard_cmdline(c) == b"dp-guard"
                                for c in children(daemon_pid)), 10, f"daemon {daemon_pid}'s guard to name itself")
    g = [c for c in children(daemon_pid) if comm(c) == "dp-guard"]
    assert len(g) == 1, f"daemon {daemon_pid} has guard(s) {g}; children {children(daemon_pid)}"
    # not matched by `pkill -f distriproc` meant for the daemon
    cmdline = guard_cmdline(g[0])
    assert cmdline == b"dp-guard", cmdline
    return g[0]


def serve(procs, images, tmp_path, rtt_us):
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = f"{util.HOSTS['src']}:{SERVE_PORT}"
    procs.spawn(util.netns_cmd("src", [util.DISTRIPROC, "serve", "--images", images, "--listen", listen,
                                       "--key", key, "--emulate-rtt", rtt_us]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    util.wait_until(lambda: util.run(util.netns_cmd("src", ["ss", "-ltnH", f"sport = :{SERVE_PORT}"]))
                    .stdout.strip() != "", 20, "the page server to listen")
    return ["--source", listen, "--key", key]


def assert_guard_stopped_the_tree(res, workdir, guard, tree, bound=20, killed_by_guard=True):
    for pid in tree:
        util.wait_gone(pid, timeout=bound)
    util.wait_gone(guard, timeout=bound)
    log = (workdir / "lazyd.log").read_text()
    assert f"lazy-pages daemon (pid {res['daemon_pid']}) died without a clean shutdown" in log, log
    assert "No page was filled with wrong data" in log and "restore it again" in log, log
    if killed_by_guard:
        assert GUARD_LINE in log and "as zeros" in log, log


@pytest.mark.time_limit(300)
def test_sigkill_of_the_daemon_kills_memwalk_instead_of_serving_zeros(lab, procs, criu, tmp_path):
    images = checkpoint(
        procs, tmp_path,
        [util.MEMWALK, "--mib", "64", "--threads", "2", "--write-ratio", "0.3", "--seed", "5"],
        lambda: util.wait_until(
            lambda: util.memwalk_request(util.HOSTS["src"], host="src")["writes"] > 20000,
            60, "memwalk to do 20000 writes"))
    # a slow link keeps most of the memory remote while memwalk keeps
    # touching new pages (uniform over 64 MiB, two threads)
    source = serve(procs, images, tmp_path, 2000)
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, *source)
    guard = procs.track(guard_of(res["daemon_pid"]))
    st = util.wait_memwalk(util.HOSTS["dst"], host="dst")
    assert st["errors"] == 0 and st["bad_bytes"] == 0, st
    util.wait_until(lambda: stats(workdir)["total"]["faults"] > 200, 30, "memwalk to fault",
                    diag=lambda: util.stall_report(workdir, {"memwalk": res["pid"], "daemon": res["daemon_pid"]},
                                                   memwalk_host="dst"))
    tot = stats(workdir)["total"]
    assert tot["remote_fraction"] > 0.5, tot
    st = util.memwalk_request(util.HOSTS["dst"], host="dst")
    assert st["errors"] == 0 and st["bad_bytes"] == 0, st

    os.kill(res["daemon_pid"], signal.SIGKILL)
    assert_guard_stopped_the_tree(res, workdir, guard, [res["pid"]])
    # it is gone, not running on with zeros: nothing answers any more
    cp = util.run(util.netns_cmd("dst", [util.PYTHON, "-c", util.LINE_CLIENT, util.HOSTS["dst"], 7070, "STAT", 5]),
                  check=False, timeout=20)
    assert cp.returncode != 0 and not cp.stdout.strip(), cp.stdout


@pytest.mark.time_limit(300)
def test_sigkill_of_the_daemon_kills_forked_children_too(lab, procs, criu, tmp_path):
    images = checkpoint(procs, tmp_path, [FORKMEM, "--mib", "32", "--port", FORKMEM_PORT], util.wait_forkmem)
    source = serve(procs, images, tmp_path, 1000)
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, *source)
    guard = procs.track(guard_of(res["daemon_pid"]))
    # FORK 3: three children with a grandchild each read every page (one
    # fault per page over a 1 ms link: they stay busy long enough)
    fork = procs.spawn(util.netns_cmd("dst", [util.PYTHON, "-c", util.LINE_CLIENT, util.HOSTS["dst"], FORKMEM_PORT,
                                              "FORK 3", 120]),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tree = util.wait_until(lambda: (lambda d: d if len(d) >= 6 else None)(descendants(res["pid"])),
                           30, "forkmem's children and grandchildren")
    for p in tree:
        procs.track(p)
    util.wait_until(lambda: stats(workdir)["total"]["events"]["fork"] >= 6, 20, "the FORK events")
    assert len([t for t in stats(workdir)["tasks"] if t["alive"]]) >= 7

    os.kill(res["daemon_pid"], signal.SIGKILL)
    assert_guard_stopped_the_tree(res, workdir, guard, [res["pid"], *tree])
    out, _ = fork.communicate(timeout=30)
    assert out.strip() == b"", f"FORK answered although its memory could not be served: {out}"


@pytest.mark.time_limit(300)
def test_guard_leaves_with_the_daemon_on_a_normal_end(lab, procs, criu, tmp_path):
    images = checkpoint(procs, tmp_path, [FORKMEM, "--mib", "16", "--port", FORKMEM_PORT], util.wait_forkmem)

    # 1. The tree exits (after a fork: the children's uffds were handed over
    # and dropped again): daemon and guard leave, quietly.
    workdir = tmp_path / "wd1"
    res = restore(procs, workdir, "--images", images)
    guard = procs.track(guard_of(res["daemon_pid"]))
    assert forkmem("dst", "FORK 2")["child_errors"] == 0
    assert forkmem("dst", "VERIFY")["errors"] == 0
    os.kill(res["pid"], signal.SIGKILL)
    util.wait_gone(res["daemon_pid"], timeout=15)
    util.wait_gone(guard, timeout=10)
    log = (workdir / "lazyd.log").read_text()
    assert GUARD_LINE not in log and "guard process" not in log, log

    # 2. SIGTERM to the daemon: it stops the tree itself, then both leave.
    workdir = tmp_path / "wd2"
    res = restore(procs, workdir, "--images", images)
    guard = procs.track(guard_of(res["daemon_pid"]))
    # the guard ignores stop signals meant for the daemon's process group. It
    # names itself before it installs SIG_IGN: wait for the disposition, then
    # an ignored signal is discarded when sent (never pending), so alive and
    # nothing pending right after kill() is exact, not a guess at delivery time.
    util.wait_until(lambda: sig_set(guard, "SigIgn") & (1 << (signal.SIGTERM - 1)), 10,
                    "the guard to ignore SIGTERM")
    os.kill(guard, signal.SIGTERM)
    pending = sig_set(guard, "ShdPnd") | sig_set(guard, "SigPnd")
    assert util.alive(guard) and not pending & (1 << (signal.SIGTERM - 1)), hex(pending)
    os.kill(res["daemon_pid"], signal.SIGTERM)
    util.wait_gone(res["pid"], timeout=15)
    util.wait_gone(res["daemon_pid"], timeout=15)
    util.wait_gone(guard, timeout=10)
    log = (workdir / "lazyd.log").read_text()
    assert GUARD_LINE not in log, log


@pytest.mark.time_limit(300)
def test_a_killed_guard_is_replaced_and_still_covers_the_tree(lab, procs, criu, tmp_path):
    images = checkpoint(procs, tmp_path, [FORKMEM, "--mib", "16", "--port", FORKMEM_PORT], util.wait_forkmem)
    source = serve(procs, images, tmp_path, 1000)
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, *source)
    old = procs.track(guard_of(res["daemon_pid"]))
    os.kill(old, signal.SIGKILL)
    util.wait_gone(old, timeout=10)
    new = procs.track(util.wait_until(
        lambda: (lambda g: g[0] if len(g) == 1 and g[0] != old else None)(
            [c for c in children(res["daemon_pid"]) if comm(c) == "dp-guard"]),
        10, "a new guard"))
    # the restored process was not disturbed; the new guard holds its uffd
    assert util.alive(res["pid"])
    log = (workdir / "lazyd.log").read_text()
    assert f"the guard process (pid {old}) died" in log, log
    os.kill(res["daemon_pid"], signal.SIGKILL)
    assert_guard_stopped_the_tree(res, workdir, new, [res["pid"]])


@pytest.mark.time_limit(300)
def test_sigkill_of_the_daemon_while_it_evicts_under_a_budget(lab, procs, criu, tmp_path):
    """A tiny budget keeps the daemon stopping memwalk's threads with ptrace
    and injecting process_madvise: the kill lands in or between batches.
    Either way the tree is gone (threads still seized die with their tracer,
    PTRACE_O_EXITKILL; the rest the guard kills) and the guard leaves."""
    images = checkpoint(
        procs, tmp_path,
        [util.MEMWALK, "--mib", "8", "--threads", "2", "--write-ratio", "0.5", "--seed", "9"],
        lambda: util.wait_until(
            lambda: util.memwalk_request(util.HOSTS["src"], host="src")["writes"] > 2000,
            60, "memwalk to write"))
    source = serve(procs, images, tmp_path, 0)
    workdir = tmp_path / "wd"
    res = restore(procs, workdir, *source, "--budget", "256K", "--evict-batch", "16")
    guard = procs.track(guard_of(res["daemon_pid"]))
    util.wait_until(lambda: stats(workdir)["budget"]["evictions"] > 2000, 60, "evictions")
    st = util.memwalk_request(util.HOSTS["dst"], host="dst")
    assert st["errors"] == 0 and st["bad_bytes"] == 0, st

    os.kill(res["daemon_pid"], signal.SIGKILL)
    # killed by the guard, or by the kernel with its tracer if the kill
    # landed inside an eviction batch: the guard's line says which
    assert_guard_stopped_the_tree(res, workdir, guard, [res["pid"]], killed_by_guard=False)


@pytest.mark.time_limit(300)
def test_foreground_restore_reports_the_daemon_death_and_the_guard_line(lab, procs, criu, tmp_path):
    """restore --foreground: the daemon logs to restore's stderr, and so
    does its guard; restore ends with an error once the daemon is gone."""
    images = checkpoint(procs, tmp_path, [FORKMEM, "--mib", "16", "--port", FORKMEM_PORT], util.wait_forkmem)
    workdir = tmp_path / "wd"
    p = procs.spawn([util.DISTRIPROC, "restore", "--images", images, "--workdir", workdir, "--host", "dst",
                     "--foreground", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    res = json.loads(util.read_line(p.stdout, 120, "restore's JSON line"))
    procs.track(res["daemon_pid"])
    procs.track(res["pid"])
    guard = procs.track(guard_of(res["daemon_pid"]))
    assert forkmem("dst", "VERIFY")["errors"] == 0
    os.kill(res["daemon_pid"], signal.SIGKILL)
    util.wait_gone(res["pid"], timeout=20)
    util.wait_gone(guard, timeout=20)
    _, err = p.communicate(timeout=30)
    err = err.decode()
    assert p.returncode == 1, (p.returncode, err)
    assert "lazy-pages daemon ended with signal 9" in err and GUARD_LINE in err, err
