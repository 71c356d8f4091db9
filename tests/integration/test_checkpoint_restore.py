"""The foundation's must-show: memwalk (64 MiB, 2 threads, writes on) in a
`src` container is checkpointed with `distriproc checkpoint`, restored fully
with plain `criu restore` in `dst`, and keeps running there with every byte of
its memory intact."""

import json
import os

import pytest

import util


@pytest.mark.time_limit(240)
def test_memwalk_survives_checkpoint_and_full_restore(lab, procs, criu, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    pid = util.start_container(
        procs, "src",
        [util.MEMWALK, "--mib", "64", "--threads", "2", "--write-ratio", "0.3", "--seed", "7"],
        tmp_path / "src.pid")
    before = util.wait_memwalk(util.HOSTS["src"], host="src")
    assert before["errors"] == 0 and before["mib"] == 64 and before["threads"] == 2, before
    # Let it rewrite a good share of its pages first, so the image holds many generations.
    util.wait_until(lambda: util.memwalk_request(util.HOSTS["src"], host="src")["writes"] > 20000,
                    60, "memwalk to do 20000 writes")
    last = util.memwalk_request(util.HOSTS["src"], host="src")

    cp = util.distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", images,
                         "--json", timeout=120)
    report = json.loads(cp.stdout)
    # One task (threads are part of it); its 64 MiB area is private anonymous
    # memory, so lazy memory is at least that and the images hold it.
    assert report["tasks"] == 1, report
    assert report["lazy_bytes"] >= 64 << 20, report
    assert report["image_bytes"] >= 64 << 20, report
    # criu dump stops the tree for good (no --leave-running).
    util.wait_gone(pid, timeout=20)
    assert (images / "inventory.img").exists(), os.listdir(images)

    # Full restore on dst: plain criu, only the network namespace entered.
    restored_pidfile = tmp_path / "restored.pid"
    util.run(util.netns_cmd("dst", [criu, "restore", "-D", images, "--restore-detached",
                                    "--tcp-established", "--pidfile", restored_pidfile,
                                    "-v4", "-o", tmp_path / "restore.log"]),
             timeout=120)
    rpid = procs.track(int(restored_pidfile.read_text().strip()))
    assert util.alive(rpid)
    assert util.pid_netns_inode(rpid) == util.netns_inode("dst")
    with open(f"/proc/{rpid}/status") as f:
        nspid = [line.split()[1:] for line in f if line.startswith("NSpid:")][0]
    assert nspid[-1] == "1", f"restored task is not its pid namespace's init: NSpid {nspid}"

    # STAT over TCP to dst's address, from dst.
    first = util.memwalk_request(util.HOSTS["dst"], host="dst")
    assert first["errors"] == 0, first
    assert first["ops"] >= last["ops"], "counters went back: not the checkpointed process"
    second = util.wait_until(
        lambda: (lambda s: s if s["ops"] > first["ops"] else None)(
            util.memwalk_request(util.HOSTS["dst"], host="dst")),
        30, "ops to increase after the restore")
    assert second["errors"] == 0 and second["bad_bytes"] == 0, second
    assert second["writes"] > first["writes"], "writes stopped after the restore"

    # And one full pass over every page.
    v = util.memwalk_request(util.HOSTS["dst"], command="VERIFY", host="dst")
    assert v["verify_pages"] == 64 * 256 and v["verify_errors"] == 0, json.dumps(v)
