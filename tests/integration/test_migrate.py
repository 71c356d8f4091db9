"""`distriproc migrate` end to end in the lab: memwalk (writer threads, every
byte verified) checkpointed on src, served from src, restored lazily on dst,
probed until it answers; then stopped with `migrate --stop`. This file runs
the images path (--from images); memory mode is tests/integration/test_live.py. A probe that
never succeeds makes migrate fail and clean up everything it started."""

import json
import os

import pytest

import util

SERVE_PORT = 7320
MEMWALK_PORT = 7070

# Probe: memwalk on dst answers STAT with 0 errors (exit 0), else exit 1.
PROBE = (f"{util.PYTHON} -c \"import socket,json,sys; "
         f"s=socket.create_connection(('{util.HOSTS['dst']}',{MEMWALK_PORT}),timeout=5); "
         f"s.sendall(b'STAT\\n'); r=json.loads(s.makefile('rb').readline()); "
         f"sys.exit(0 if r['errors']==0 and r['ops']>0 else 1)\"")


# Restore's bounds (issue 12 item 4), each off its default, which migrate must pass on.
BOUNDS = ["--fault-timeout", "90", "--on-timeout", "kill", "--writeback-timeout", "4000",
          "--tcp-user-timeout", "9000", "--request-timeout", "14000", "--auth-retry", "29000",
          "--max-reply", "32M", "--max-skeleton", "2G"]


def start_memwalk(procs, tmp_path):
    pid = util.start_container(procs, "src", [util.MEMWALK, "--mib", "64", "--threads", "2",
                                              "--write-ratio", "0.3", "--seed", "5",
                                              "--port", MEMWALK_PORT], tmp_path / "src.pid")
    util.wait_until(lambda: util.memwalk_request(util.HOSTS["src"], MEMWALK_PORT, host="src")["writes"] > 20000,
                    60, "memwalk to do 20000 writes on src")
    return pid


def track_state(procs, workdir):
    """Tracks the pids migrate left running so a failing test still kills them."""
    pids = {}
    with open(workdir / "migrate.state") as f:
        for line in f:
            name, pid, _start = line.split()
            pids[name] = int(pid)
            if int(pid) > 0:
                procs.track(int(pid))
    return pids


@pytest.mark.time_limit(240)
def test_migrate_memwalk_probe_and_stop(lab, procs, criu, tmp_path):
    pid = start_memwalk(procs, tmp_path)
    workdir = tmp_path / "mig"
    cp = util.distriproc("migrate", "--pid", pid, "--workdir", workdir, "--port", SERVE_PORT, "--from", "images",
                         "--prefetch", "seq:4", "--probe", PROBE, "--probe-timeout", "60", "--json",
                         *BOUNDS, timeout=200)
    res = json.loads(cp.stdout)
    pids = track_state(procs, workdir)
    assert pids == {"server": res["server_pid"], "daemon": res["daemon_pid"], "restored": res["pid"]}, pids
    # The restore's bounds were passed on: the daemon (restore forked it) runs with them.
    with open(f"/proc/{res['daemon_pid']}/cmdline", "rb") as f:
        daemon_args = f.read().decode().split("\0")
    for flag, value in zip(BOUNDS[::2], BOUNDS[1::2]):
        assert daemon_args[daemon_args.index(flag) + 1] == value, (flag, daemon_args)
    util.wait_gone(pid, timeout=20)  # the source was dumped (not left running)

    # The restored tree lives in dst; the server in src.
    assert util.pid_netns_inode(res["pid"]) == util.netns_inode("dst")
    assert util.pid_netns_inode(res["server_pid"]) == util.netns_inode("src")
    # Times are ordered, bytes add up, and memory mostly stayed remote at the reply.
    assert 0 < res["ttfr_from_restore_s"] < res["ttfr_from_freeze_s"], res
    assert res["ttfr_from_freeze_s"] >= res["dump_s"] + res["restore_s"], res
    assert res["probe_attempts"] >= 1 and res["probe"] == PROBE, res
    assert res["skeleton_bytes"] > 0 and res["fetched_bytes_at_reply"] > 0, res
    assert res["bytes_before_reply"] == res["skeleton_bytes"] + res["fetched_bytes_at_reply"], res
    assert res["lazy_bytes"] >= 64 << 20, res
    assert res["skeleton_bytes"] < res["lazy_bytes"] / 4, res

    # memwalk keeps running on dst with 0 verification errors, every page intact.
    v = util.memwalk_request(util.HOSTS["dst"], MEMWALK_PORT, command="VERIFY", host="dst", timeout=60)
    assert v["verify_pages"] == 64 * 256 and v["verify_errors"] == 0 and v["errors"] == 0, v
    stats = json.loads(util.distriproc("stats", "--workdir", workdir / "dst", "--json").stdout)
    assert stats["total"]["fetch_errors"] == 0, stats["total"]

    # A second migrate into the same workdir refuses while this one runs.
    again = util.distriproc("migrate", "--pid", pid, "--workdir", workdir, check=False)
    assert again.returncode != 0 and "still running" in again.stderr, again.stderr

    util.distriproc("migrate", "--stop", "--workdir", workdir, timeout=60)
    for name, p in pids.items():
        assert not util.alive(p), f"{name} pid {p} still alive after migrate --stop"
    assert not (workdir / "migrate.state").exists()
    final = json.loads((workdir / "dst" / "stats-final.json").read_text())
    assert final["tasks_alive"] == 0 and final["total"]["fetch_errors"] == 0, final


@pytest.mark.time_limit(180)
def test_migrate_failed_probe_cleans_up(lab, procs, criu, tmp_path):
    pid = start_memwalk(procs, tmp_path)
    workdir = tmp_path / "mig"
    cp = util.distriproc("migrate", "--pid", pid, "--workdir", workdir, "--port", SERVE_PORT,
                         "--probe", "exit 1", "--probe-timeout", "2", timeout=120, check=False)
    assert cp.returncode != 0
    assert "probe did not succeed" in cp.stderr, cp.stderr
    assert (workdir / "probe.log").exists()
    # Nothing of it is left: no state, no server, no daemon, no restored tree in the lab.
    assert not (workdir / "migrate.state").exists()
    # (server and daemon carry the workdir in their command lines)
    left = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if str(workdir).encode() in f.read():
                        left.append(int(d))
            except OSError:
                pass
    assert not left, f"processes of the failed migration still running: {left}"
    ss = util.run(util.netns_cmd("dst", ["ss", "-ltnH", f"sport = :{MEMWALK_PORT}"])).stdout
    assert ss.strip() == "", f"restored memwalk still listening on dst: {ss}"
    ss = util.run(util.netns_cmd("src", ["ss", "-ltnH", f"sport = :{SERVE_PORT}"])).stdout
    assert ss.strip() == "", f"page server still listening: {ss}"


def test_migrate_usage_errors(tmp_path):
    cp = util.distriproc("migrate", "--workdir", tmp_path, check=False)
    assert cp.returncode == 2 and "--pid" in cp.stderr
    cp = util.distriproc("migrate", "--stop", "--workdir", tmp_path / "nothing", check=False)
    assert cp.returncode == 1 and "nothing migrated" in cp.stderr
    assert "time to first" in util.distriproc("migrate", "--help").stdout
    # A bound restore would refuse is refused before anything is checkpointed.
    for flag, bad in [("--request-timeout", "15s"), ("--writeback-timeout", "0"), ("--max-skeleton", "lots"),
                      ("--on-timeout", "maybe"), ("--tcp-user-timeout", "-1")]:
        cp = util.distriproc("migrate", "--pid", "1", "--workdir", tmp_path / "bad", flag, bad, check=False)
        assert cp.returncode == 2 and flag in cp.stderr, (flag, cp.stderr)
        assert not (tmp_path / "bad").exists()
