"""distriproc lab: up/down leave nothing behind, up is idempotent and repairs a
crashed lab, exec runs in a host's network namespace only, --container makes a
pid-namespace session leader."""

import os
import signal

import pytest

import util
from util import distriproc


@pytest.mark.time_limit(90)
def test_up_then_down_leaves_nothing(lab_clean):
    assert util.lab_leftovers() == []
    out = distriproc("lab", "up").stdout
    assert "lab up" in out
    st = util.lab_status()
    assert st["state"] == "up", st
    assert sorted(util.lab_leftovers()) == [f"file /run/netns/{util.LAB}-dst", f"file /run/netns/{util.LAB}-src",
                                            f"netns {util.LAB}-dst", f"netns {util.LAB}-src"]
    for h in st["hosts"]:
        assert h["netns_exists"] and h["iface_up"] and h["address_ok"] and h["loopback_up"], h
    distriproc("lab", "down")
    assert util.lab_leftovers() == []
    assert util.lab_status()["state"] == "down"
    # down on nothing is fine too.
    distriproc("lab", "down")


@pytest.mark.time_limit(90)
def test_up_is_idempotent_and_keeps_processes(lab_clean, procs, tmp_path):
    distriproc("lab", "up")
    src_ino = util.netns_inode("src")
    pid = util.start_container(procs, "src", ["sleep", "600"], tmp_path / "pid")

    out = distriproc("lab", "up").stdout
    assert "already up" in out and "nothing to do" in out, out
    assert util.alive(pid), "a repeated 'lab up' killed a process in the lab"
    assert util.netns_inode("src") == src_ino, "a repeated 'lab up' recreated the namespace"

    out = distriproc("lab", "up", "--bandwidth", "1gbit").stdout
    assert "bandwidth set to 1gbit" in out, out
    st = util.lab_status()
    assert st["state"] == "up"
    assert [h["bandwidth_bps"] for h in st["hosts"]] == [1000000000, 1000000000]
    tc = util.run(["tc", "-n", f"{util.LAB}-dst", "qdisc", "show", "dev", f"{util.LAB}-dst0"]).stdout
    assert "tbf" in tc and "rate 1Gbit" in tc, tc

    out = distriproc("lab", "up", "--bandwidth", "1gbit").stdout
    assert "already up with bandwidth 1gbit" in out, out
    assert util.alive(pid)

    # Dropping the cap.
    distriproc("lab", "up")
    assert [h["bandwidth_bps"] for h in util.lab_status()["hosts"]] == [None, None]
    assert util.alive(pid)

    cp = distriproc("lab", "up", "--bandwidth", "fast", check=False)
    assert cp.returncode == 2 and "invalid rate" in cp.stderr, cp.stderr


@pytest.mark.time_limit(90)
def test_up_cleans_leftovers_of_a_crash(lab_clean, procs):
    # What a crashed run can leave: a namespace with a process in it, a plain
    # file where the other namespace should be, a veth end in the root namespace.
    util.run(["ip", "netns", "add", f"{util.LAB}-src"])
    sleeper = procs.spawn(util.netns_cmd("src", ["sleep", "600"]))
    util.wait_until(lambda: util.alive(sleeper.pid) and
                    util.pid_netns_inode(sleeper.pid) == util.netns_inode("src"),
                    10, f"the leftover process to enter {util.LAB}-src")
    open(f"/run/netns/{util.LAB}-dst", "w").close()
    util.run(["ip", "link", "add", f"{util.LAB}-dst0", "type", "veth", "peer", "name", f"{util.LAB}-stale0"])
    assert util.lab_status()["state"] == "partial"

    cp = distriproc("lab", "up")
    assert "leftover" in cp.stderr, cp.stderr
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    st = util.lab_status()
    assert st["state"] == "up", st
    assert st["stale_root_links"] == 0
    links = util.run(["ip", "-o", "link", "show"]).stdout
    assert f"{util.LAB}-stale0" not in links and f"{util.LAB}-dst0" not in links, links


@pytest.mark.time_limit(60)
def test_exec_runs_in_the_host_netns_only(lab):
    for host, addr in util.HOSTS.items():
        out = distriproc("lab", "exec", host, "--", "ip", "-o", "-4", "addr", "show").stdout
        assert f"inet {addr}/30" in out, out
        ns = distriproc("lab", "exec", host, "--", "stat", "-L", "-c", "%i",
                        "/proc/self/ns/net").stdout.strip()
        assert int(ns) == util.netns_inode(host)
        # Same mount namespace as ours: nothing extra for CRIU to dump.
        mnt = distriproc("lab", "exec", host, "--", "readlink", "/proc/self/ns/mnt").stdout.strip()
        assert mnt == os.readlink("/proc/self/ns/mnt")
    # No way out: no default route in a lab host.
    routes = distriproc("lab", "exec", "src", "--", "ip", "route", "show").stdout
    assert "default" not in routes, routes
    # Exit status passes through.
    assert distriproc("lab", "exec", "dst", "--", "sh", "-c", "exit 7", check=False).returncode == 7


@pytest.mark.time_limit(60)
def test_hosts_talk_over_the_veth(lab, procs, tmp_path):
    pid = util.start_container(procs, "src", [util.MEMWALK, "--mib", "4"], tmp_path / "pid")
    st = util.wait_memwalk(util.HOSTS["src"], host="dst")
    assert st["errors"] == 0 and st["mib"] == 4
    assert util.pid_netns_inode(pid) == util.netns_inode("src")


@pytest.mark.time_limit(60)
def test_container_is_a_pid_namespace_session_leader(lab, procs, tmp_path):
    pid = util.start_container(procs, "src", ["sleep", "600"], tmp_path / "pid")
    assert util.alive(pid)
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    # Host-visible pid, and pid 1 inside its own pid namespace.
    assert status["NSpid"].split() == [str(pid), "1"], status["NSpid"]
    assert status["NSsid"].split() == [str(pid), "1"], status["NSsid"]  # session leader
    assert status["NSpgid"].split() == [str(pid), "1"], status["NSpgid"]
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    assert os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
    assert util.pid_netns_inode(pid) == util.netns_inode("src")
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"

    # Without --pidfile, --detach prints just the pid.
    out = distriproc("lab", "exec", "dst", "--container", "--detach", "--", "sleep", "600").stdout
    pid2 = procs.track(int(out.strip()))
    assert util.pid_netns_inode(pid2) == util.netns_inode("dst")

    # Foreground: the command runs as pid 1 and its exit status comes back.
    cp = distriproc("lab", "exec", "src", "--container", "--", "sh", "-c", "echo $$; exit 5",
                    check=False)
    assert cp.returncode == 5 and cp.stdout.strip() == "1", (cp.stdout, cp.stderr)

    # lab down kills whatever runs in the lab.
    distriproc("lab", "down")
    util.wait_gone(pid)
    util.wait_gone(pid2)


@pytest.mark.time_limit(30)
def test_exec_says_when_the_lab_is_down(lab_clean):
    cp = distriproc("lab", "exec", "src", "--", "true", check=False)
    assert cp.returncode != 0
    assert "lab is not up" in cp.stderr and "distriproc lab up" in cp.stderr, cp.stderr
    cp = distriproc("lab", "exec", "nowhere", "--", "true", check=False)
    assert cp.returncode == 2 and "unknown lab host" in cp.stderr, cp.stderr
