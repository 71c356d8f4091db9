"""DISTRIPROC_LAB=NAME: a private lab beside the default one, so a long
benchmark survives tests that bring the default lab up and down."""

import json
import os

import pytest

import util

NAME = "dptest"


def dp(*args, check=True, name=NAME):
    env = dict(os.environ, DISTRIPROC_LAB=name)
    return util.run([util.DISTRIPROC, *args], timeout=60, check=check, env=env)


@pytest.mark.time_limit(120)
def test_private_lab_is_separate(lab, procs):
    dp("lab", "down")
    try:
        dp("lab", "up", "--bandwidth", "100mbit")
        st = json.loads(dp("lab", "status", "--json").stdout)
        assert [h["netns"] for h in st["hosts"]] == [f"{NAME}-src", f"{NAME}-dst"], st
        assert all(h["bandwidth_bps"] == 100_000_000 for h in st["hosts"]), st
        # the fixture's lab (util.LAB: dp, or the run's own DISTRIPROC_LAB) is still there
        assert os.path.exists(f"/run/netns/{NAME}-src") and os.path.exists(f"/run/netns/{util.LAB}-src")
        # A container in the private src answers in the private namespace only.
        pid = int(dp("lab", "exec", "src", "--container", "--detach", "--", util.MEMWALK, "--mib", "4").stdout)
        procs.track(pid)
        assert util.pid_netns_inode(pid) == os.stat(f"/run/netns/{NAME}-src").st_ino
        assert util.pid_netns_inode(pid) != util.netns_inode("src")
        # Taking the fixture's lab down leaves the private one and its processes alone.
        util.distriproc("lab", "down", timeout=60)
        assert util.alive(pid) and os.path.exists(f"/run/netns/{NAME}-src")
    finally:
        dp("lab", "down")
    assert not os.path.exists(f"/run/netns/{NAME}-src")


def test_bad_private_lab_name_is_refused():
    cp = dp("lab", "status", check=False, name="Bad/Name")
    assert cp.returncode == 2 and "DISTRIPROC_LAB" in cp.stderr, cp.stderr
