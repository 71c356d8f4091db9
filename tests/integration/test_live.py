"""Memory mode (issue 11, docs/live-migration.md): `distriproc serve --pid`
serves the lazy pages straight from the frozen source tree; the source is
killed only after the destination reports its restore (commit) and resumes
when the restore fails or no destination reports in time (rollback).

Exact digests (forkmem SUM, Redis DEBUG DIGEST) across the migration, writes
after the restore, a serve SIGKILLed and restarted mid-run after the commit
(the source stays frozen and never runs; no page is lost), rollback when the
destination's criu is killed mid-restore, rollback at --connect-timeout."""

import json
import os
import shutil
import signal
import stat
import subprocess
import time

import pytest

import util

FORKMEM = os.path.join(util.BUILD, "forkmem")
FORKMEM_PORT = 7071
REDIS_PORT = 6379
FREEZER = "/sys/fs/cgroup/freezer"


def forkmem(host, command, timeout=60):
    return util.forkmem_request(host, command, timeout=timeout)


def start_forkmem(procs, tmp_path, mib=32):
    pid = util.start_container(procs, "src", [FORKMEM, "--mib", mib, "--port", FORKMEM_PORT, "--seed", 3],
                               tmp_path / "src.pid")
    util.wait_forkmem("src")
    assert forkmem("src", "WRITE 3")["pages_written"] > 0
    return pid


def live_state(workdir):
    with open(os.path.join(workdir, "live.state")) as f:
        return dict(line.split(" ", 1) for line in f.read().splitlines())


def freezer_of(pid):
    """The task's v1 freezer cgroup, as /proc/PID/cgroup names it."""
    with open(f"/proc/{pid}/cgroup") as f:
        return [ln.split(":", 2)[2] for ln in f.read().splitlines() if ln.split(":")[1] == "freezer"][0]


def frozen(pid):
    """The task is stopped by the freezer (it never runs)."""
    cg = freezer_of(pid)
    if cg == "/":
        return False  # the root cgroup cannot be frozen
    with open(f"{FREEZER}{cg}/freezer.state") as f:
        return f.read().strip() == "FROZEN"


def utime(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[11])


@pytest.fixture
def thaw_leftovers():
    """A failing test must not leave a frozen tree behind: SIGKILL to a frozen
    task takes effect only at the thaw. Kills and thaws every cgroup the
    workdirs it registers name."""
    workdirs = []
    yield workdirs
    for w in workdirs:
        try:
            cg = live_state(w)["cgroup"].strip()
        except (OSError, KeyError):
            continue
        finally:
            if str(w).startswith("/var/lib/distriproc/live/"):  # serve's default workdir: not under tmp_path
                shutil.rmtree(w, ignore_errors=True)
        for path in (cg, cg[: -len(".held")]):
            if not os.path.isdir(path):
                continue
            with open(f"{path}/cgroup.procs") as f:
                for p in f.read().split():
                    try:
                        os.kill(int(p), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            with open(f"{path}/freezer.state", "w") as f:
                f.write("THAWED")
            util.wait_until(lambda: not open(f"{path}/cgroup.procs").read().strip(), 10, "frozen leftovers to die")
            os.rmdir(path)


def serve_live(procs, workdir, port, key, *extra, pid=None, log=None):
    """serve in memory mode in src (setns only: `ip netns exec` would remount
    /sys without the freezer); returns the Popen once it listens."""
    args = [util.DISTRIPROC, "serve", *(["--workdir", workdir] if workdir else []),
            "--listen", f"{util.HOSTS['src']}:{port}", "--key", key, *extra]
    if pid:
        args += ["--pid", pid]
    out = open(log, "ab") if log else subprocess.DEVNULL
    p = procs.spawn(util.netns_cmd("src", args), stdout=out, stderr=out)
    util.wait_until(lambda: p.poll() is not None or
                    util.run(util.netns_cmd("src", ["ss", "-ltnH", f"sport = :{port}"])).stdout.strip() != "",
                    60, "the page server to listen")
    assert p.poll() is None, f"serve exited ({p.returncode}); see {log}"
    return p


@pytest.mark.time_limit(240)
def test_live_forkmem_digest_serve_restart_and_commit(lab, procs, criu, tmp_path, thaw_leftovers):
    src = start_forkmem(procs, tmp_path)
    digest = forkmem("src", "SUM")["sum"]
    workdir = tmp_path / "mig"
    thaw_leftovers.append(workdir / "src")
    # --warmup none: the source must stay needed here (a warm-up would release it
    # once every page is on dst: test_warmup.py)
    res = json.loads(util.distriproc("migrate", "--pid", src, "--workdir", workdir, "--port", 7330,
                                     "--from", "memory", "--prefetch", "none", "--warmup", "none", "--json",
                                     timeout=120).stdout)
    procs.track(res["pid"])
    procs.track(res["daemon_pid"])
    assert res["mode"] == "memory", res
    assert res["skeleton_bytes"] < res["lazy_bytes"] / 8, res   # no page data was written or sent up front
    st = live_state(workdir / "src")
    assert st["state"] == "committed", st
    # No copy to disk: the images hold the skeleton only.
    img = sum(e.stat().st_size for e in os.scandir(workdir / "src" / "images") if e.is_file())
    assert img < 8 << 20, img

    # Commit: the source is frozen, never runs again, even when serve is SIGKILLed.
    assert frozen(src)
    os.kill(res["server_pid"], signal.SIGKILL)
    util.wait_gone(res["server_pid"])
    before = utime(src)
    time.sleep(0.5)
    assert frozen(src) and utime(src) == before

    # A restarted serve re-attaches to the frozen tree and serves on: every
    # page arrives intact (exact digest), writes after the restore stick.
    log = tmp_path / "serve2.log"
    serve = serve_live(procs, workdir / "src", 7330, workdir / "key", log=log)
    assert forkmem("dst", "SUM")["sum"] == digest
    assert forkmem("dst", "WRITE 5")["pages_written"] > 0
    assert forkmem("dst", "VERIFY")["errors"] == 0
    assert frozen(src) and utime(src) == before
    assert "re-attaching to the migration of pid" in log.read_text()

    # Released when serve stops (after the destination is done): the source
    # dies without running.
    os.kill(res["pid"], signal.SIGKILL)
    util.wait_gone(res["pid"])
    serve.send_signal(signal.SIGTERM)
    serve.wait(timeout=30)
    util.wait_gone(src, timeout=20)
    assert live_state(workdir / "src")["state"] == "released"
    assert not os.path.exists(st["cgroup"])
    assert "killed while frozen and never ran again" in log.read_text()


@pytest.mark.time_limit(240)
def test_live_redis_digest_and_writes(lab, procs, criu, tmp_path, thaw_leftovers):
    src = util.start_container(procs, "src", ["redis-server", "--port", REDIS_PORT, "--bind", "0.0.0.0",
                                              "--protected-mode", "no", "--save", "", "--appendonly", "no",
                                              "--enable-debug-command", "yes"],
                               tmp_path / "src.pid")

    def cli(host, *args):
        return util.run(util.netns_cmd(host, ["redis-cli", "-h", util.HOSTS[host], "-p", REDIS_PORT, *args]),
                        timeout=30).stdout.strip()
    util.wait_until(lambda: util.run(util.netns_cmd("src", ["redis-cli", "-h", util.HOSTS["src"], "-p", REDIS_PORT,
                                                            "ping"]), check=False).stdout.strip() == "PONG",
                    20, "redis on src")
    cli("src", "DEBUG", "POPULATE", "100000", "k", "200")
    digest = cli("src", "DEBUG", "DIGEST")
    assert len(digest) == 40 and int(digest, 16) != 0 and cli("src", "DBSIZE") == "100000", digest
    workdir = tmp_path / "mig"
    thaw_leftovers.append(workdir / "src")
    probe = f"redis-cli -h {util.HOSTS['dst']} -p {REDIS_PORT} ping | grep -qx PONG"
    res = json.loads(util.distriproc("migrate", "--pid", src, "--workdir", workdir, "--port", 7331,
                                     "--probe", probe, "--warmup", "none", "--json", timeout=120).stdout)
    procs.track(res["pid"])
    procs.track(res["daemon_pid"])
    assert res["mode"] == "memory" and res["probe_attempts"] >= 1, res   # memory is the default
    assert frozen(src)
    # The restored tree starts in the root freezer cgroup: no copy of the
    # source's (which would stay behind, empty, on a separate destination).
    assert freezer_of(res["pid"]) == "/"
    assert not os.path.exists(live_state(workdir / "src")["cgroup"][: -len(".held")])
    assert cli("dst", "DEBUG", "DIGEST") == digest
    assert cli("dst", "SET", "after", "restore") == "OK"
    assert cli("dst", "GET", "after") == "restore"
    assert cli("dst", "DEBUG", "DIGEST") != digest
    assert cli("dst", "DBSIZE") == "100001"
    util.distriproc("migrate", "--stop", "--workdir", workdir, timeout=60)
    util.wait_gone(src, timeout=20)
    assert live_state(workdir / "src")["state"] == "released"


@pytest.mark.time_limit(240)
def test_live_rollback_when_dst_criu_is_killed(lab, procs, criu, tmp_path, thaw_leftovers):
    src = start_forkmem(procs, tmp_path)
    digest = forkmem("src", "SUM")["sum"]
    workdir = tmp_path / "src"
    thaw_leftovers.append(workdir)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    log = tmp_path / "serve.log"
    serve = serve_live(procs, workdir, 7332, key, pid=src, log=log)
    assert frozen(src) and live_state(workdir)["state"] == "serving"
    # serve SIGKILLed before any verdict: the tree stays frozen; a restarted
    # serve re-attaches in state serving.
    serve.kill()
    serve.wait(timeout=10)
    time.sleep(0.3)
    assert frozen(src) and live_state(workdir)["state"] == "serving"
    serve = serve_live(procs, workdir, 7332, key, log=log)
    assert "re-attaching to the migration of pid" in log.read_text()

    # The destination's criu is SIGKILLed while it restores.
    wrapper = util.criu_killed_after(tmp_path, criu, "restore")
    cp = util.run([util.DISTRIPROC, "restore", "--source", f"{util.HOSTS['src']}:7332", "--key", key,
                   "--workdir", tmp_path / "dst", "--host", "dst", "--json"], timeout=120, check=False,
                  env={**os.environ, "DISTRIPROC_CRIU": str(wrapper)})
    assert cp.returncode != 0, cp.stdout

    # Rollback: the source resumes exactly once, with its data, and answers.
    serve.wait(timeout=30)
    assert live_state(workdir)["state"] == "rolled-back"
    assert not frozen(src)
    assert forkmem("src", "VERIFY")["errors"] == 0
    assert forkmem("src", "SUM")["sum"] == digest
    assert "rolled back: the source tree" in log.read_text()
    assert util.run(util.netns_cmd("dst", ["ss", "-ltnH", f"sport = :{FORKMEM_PORT}"])).stdout.strip() == ""
    # A restarted serve does not resume it a second time, nor serve again.
    cp = util.run(util.netns_cmd("src", [util.DISTRIPROC, "serve", "--workdir", workdir, "--listen",
                                         f"{util.HOSTS['src']}:7332", "--key", key]), timeout=30)
    assert "the migration is over (rolled-back)" in cp.stderr
    assert forkmem("src", "VERIFY")["errors"] == 0


@pytest.mark.time_limit(120)
def test_live_rollback_when_no_destination_reports(lab, procs, criu, tmp_path, thaw_leftovers):
    """Also the interface as the issue names it: serve --pid PID --listen --key,
    the workdir defaulting to /var/lib/distriproc/live/PID."""
    src = start_forkmem(procs, tmp_path, mib=8)
    workdir = f"/var/lib/distriproc/live/{src}"
    assert not os.path.exists(workdir)
    thaw_leftovers.append(workdir)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    log = tmp_path / "serve.log"
    serve = serve_live(procs, None, 7333, key, "--connect-timeout", "2", pid=src, log=log)
    assert frozen(src)
    assert serve.wait(timeout=30) != 0
    assert live_state(workdir)["state"] == "rolled-back"
    assert not frozen(src)
    assert forkmem("src", "VERIFY")["errors"] == 0
    assert "none connected" in log.read_text()


@pytest.mark.time_limit(180)
def test_live_background_fetch_releases_the_source(lab, procs, criu, tmp_path, thaw_leftovers):
    """With --background-fetch the destination pulls every page, then tells
    the source (RELEASE): the frozen tree is killed at once, serve ends, and
    the restored process keeps every byte."""
    src = start_forkmem(procs, tmp_path, mib=16)
    digest = forkmem("src", "SUM")["sum"]
    workdir = tmp_path / "src"
    thaw_leftovers.append(workdir)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    log = tmp_path / "serve.log"
    serve = serve_live(procs, workdir, 7334, key, pid=src, log=log)
    res = util.restore_json(procs, tmp_path / "dst", "--source", f"{util.HOSTS['src']}:7334", "--key", key,
                            "--background-fetch", "100M")
    util.wait_until(lambda: live_state(workdir)["state"] == "released", 60, "the source to be released")
    util.wait_gone(src, timeout=20)
    assert serve.wait(timeout=30) == 0
    assert util.alive(res["pid"])
    assert forkmem("dst", "SUM")["sum"] == digest
    assert forkmem("dst", "WRITE 7")["pages_written"] > 0
    assert forkmem("dst", "VERIFY")["errors"] == 0
    assert "killed while frozen and never ran again" in log.read_text()


@pytest.mark.time_limit(120)
def test_live_rollback_when_serve_stops_before_a_verdict_or_the_dump_fails(lab, procs, criu, tmp_path,
                                                                          thaw_leftovers):
    """serving --stopped--> rolled-back, and freezing --dump failed--> rolled-back."""
    src = start_forkmem(procs, tmp_path, mib=8)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    workdir = tmp_path / "a"
    thaw_leftovers.append(workdir)
    serve = serve_live(procs, workdir, 7335, key, pid=src, log=tmp_path / "a.log")
    assert frozen(src)
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(timeout=30) != 0
    assert live_state(workdir)["state"] == "rolled-back" and not frozen(src)
    assert forkmem("src", "VERIFY")["errors"] == 0

    # criu dump fails: the tree, frozen by CRIU through the cgroup, runs again.
    wrapper = tmp_path / "criu-dump-fails"
    wrapper.write_text(f"#!/bin/sh\nif [ \"$1\" = dump ]; then exit 1; fi\nexec \"{criu}\" \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    workdir = tmp_path / "b"
    thaw_leftovers.append(workdir)
    cp = util.run(util.netns_cmd("src", [util.DISTRIPROC, "serve", "--pid", src, "--workdir", workdir, "--listen",
                                         f"{util.HOSTS['src']}:7335", "--key", key]),
                  timeout=60, check=False, env={**os.environ, "DISTRIPROC_CRIU": str(wrapper)})
    assert cp.returncode != 0 and "did not finish the images" in cp.stderr, cp.stderr
    assert live_state(workdir)["state"] == "rolled-back" and not frozen(src)
    assert forkmem("src", "VERIFY")["errors"] == 0


# One verdict over the real protocol (the secure channel of test_pageserver's
# Conn), from inside src's network namespace: prints the reply as JSON.
VERDICT_CLIENT = r"""
import json, struct, sys
sys.path.insert(0, sys.argv[1])
import util
from test_pageserver import Conn, msg
class S:
    port, key, plaintext = int(sys.argv[2]), util.read_key(sys.argv[3]), False
c = Conn(S())
c.handshake(version=4)
c.send(msg(0x0b, 3, struct.pack("<I", int(sys.argv[4]))))
t, f, rid, p = c.recv()
print(json.dumps({"type": t, "payload": p.decode(errors="replace")}))
"""


def send_verdict(port, key, verdict):
    cp = util.run(util.netns_cmd("src", [util.PYTHON, "-c", VERDICT_CLIENT, os.path.dirname(__file__), port, key,
                                         verdict]), timeout=30)
    return json.loads(cp.stdout)


def small_source(procs, tmp_path, thaw_leftovers):
    """An 8 MiB forkmem on src, its digest, a key, serve's workdir (thawed if
    the test fails) and log path."""
    src = start_forkmem(procs, tmp_path, mib=8)
    digest = forkmem("src", "SUM")["sum"]
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    workdir = tmp_path / "src"
    thaw_leftovers.append(workdir)
    return src, digest, key, workdir, tmp_path / "serve.log"


@pytest.mark.time_limit(120)
def test_live_committed_source_resumes_when_the_destination_aborts(lab, procs, criu, tmp_path, thaw_leftovers):
    """committed --aborted--> rolled-back: a destination whose success was
    never acknowledged kills its copy and, once that copy is gone, says so
    (verdict 5): the committed source runs again with its data, so the
    process is never nowhere; serve ends there (rolled-back is final)."""
    src, digest, key, workdir, log = small_source(procs, tmp_path, thaw_leftovers)
    port = 7336
    args = [util.DISTRIPROC, "serve", "--pid", src, "--workdir", workdir, "--listen", f"127.0.0.1:{port}",
            "--key", key]
    serve = procs.spawn(util.netns_cmd("src", args), stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    util.wait_until(lambda: "listening on" in log.read_text(), 60, "serve to listen")
    r = send_verdict(port, key, 1)  # restored
    assert r["type"] == 0x8b and json.loads(r["payload"])["state"] == "committed", r
    assert frozen(src) and live_state(workdir)["state"] == "committed"
    r = send_verdict(port, key, 5)  # aborted: its copy is gone
    assert r["type"] == 0x8b and json.loads(r["payload"])["state"] == "rolled-back", r
    assert serve.wait(timeout=30) != 0
    assert live_state(workdir)["state"] == "rolled-back" and not frozen(src)
    assert forkmem("src", "SUM")["sum"] == digest
    assert forkmem("src", "VERIFY")["errors"] == 0
    text = log.read_text()
    assert "committed -> rolled-back (aborted)" in text and "rolled back: the source tree" in text



@pytest.mark.time_limit(150)
def test_live_unacknowledged_restore_is_killed_then_aborted(lab, procs, criu, tmp_path, thaw_leftovers):
    """The destination's side of the abort: its "restored" cannot reach the
    source (new connections to the page server are rejected in dst from the
    start of criu restore on; the daemon's pages come over the connection the
    skeleton came on), so it kills its copy, waits until that
    copy (init of its own pid namespace) is gone, and then, the network back,
    reports "aborted": the source rolls back at once (not at its
    --connect-timeout) and runs on with its data. Never both running."""
    src, digest, key, workdir, log = small_source(procs, tmp_path, thaw_leftovers)
    port = 7338
    serve = serve_live(procs, workdir, port, key, "--connect-timeout", "100", pid=src, log=log)
    rule = ["OUTPUT", "-p", "tcp", "--dport", str(port), "--syn", "-j", "REJECT", "--reject-with", "tcp-reset"]
    wrapper = tmp_path / "criu-cut"  # runs in dst's network namespace
    wrapper.write_text(f"#!/bin/sh\nif [ \"$1\" = restore ]; then iptables -I {' '.join(rule)} || exit 1; fi\n"
                       f"exec \"{criu}\" \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    err = tmp_path / "restore.err"
    rs = procs.spawn([util.DISTRIPROC, "restore", "--source", f"{util.HOSTS['src']}:{port}", "--key", key,
                      "--workdir", tmp_path / "dst", "--host", "dst", "--json"], stdout=subprocess.DEVNULL,
                     stderr=open(err, "w"), env={**os.environ, "DISTRIPROC_CRIU": str(wrapper)})
    try:
        util.wait_until(lambda: "killing the restored tree" in err.read_text(), 90, "restore to give up")
    finally:
        util.run(util.netns_cmd("dst", ["iptables", "-D", *rule]), check=False)
    assert rs.wait(timeout=60) != 0
    text = err.read_text()
    assert "could not report the restore's success" in text, text
    assert "our copy is gone and the source was told" in text, text
    assert serve.wait(timeout=30) != 0
    assert live_state(workdir)["state"] == "rolled-back" and not frozen(src)
    assert "serving -> rolled-back (aborted)" in log.read_text()
    assert util.run(util.netns_cmd("dst", ["ss", "-ltnH", f"sport = :{FORKMEM_PORT}"])).stdout.strip() == ""
    assert forkmem("src", "SUM")["sum"] == digest
