"""Working-set record and replay end to end (issue 7): a restore from the page
server records the first-touch trace and stores it with the checkpoint; the
next restore of the same checkpoint with --hotset auto fetches that working
set in bulk, so its faults mostly find their pages already there; and a hot
set of another checkpoint is refused before anything is restored."""

import os
import signal
import subprocess

import pytest

import util
from test_hotset import parse_hotset, pages_in

SERVE_PORT = 7310


def serve(procs, images, key):
    listen = f"{util.HOSTS['src']}:{SERVE_PORT}"
    log = open(os.path.join(os.path.dirname(images), "serve.log"), "a")
    procs.spawn(util.netns_cmd("src", [util.DISTRIPROC, "serve", "--images", images, "--listen", listen,
                                       "--key", key]),
                stdout=subprocess.DEVNULL, stderr=log)
    util.wait_until(lambda: util.run(util.netns_cmd("src", ["ss", "-ltnH", f"sport = :{SERVE_PORT}"]))
                    .stdout.strip() != "", 20, "the page server to listen")
    return listen


def restore(procs, workdir, listen, key, *extra, check=True):
    return util.restore_json(procs, workdir, "--source", listen, "--key", key, *extra, check=check)


stats = util.lazy_stats


def stop(res):
    os.kill(res["pid"], signal.SIGKILL)
    util.wait_gone(res["daemon_pid"], timeout=30)


@pytest.mark.time_limit(420)
def test_trace_recorded_then_replayed(lab, procs, criu, tmp_path):
    # 24 MiB walked in sequence (the working set), 32 MiB never touched.
    pid = util.start_container(procs, "src", [util.MEMWALK, "--mib", "24", "--cold-mib", "32", "--pattern", "seq"],
                               tmp_path / "src.pid")
    st = util.wait_memwalk(util.HOSTS["src"], host="src")
    area, cold = int(st["area"], 16), int(st["cold"], 16)
    images = tmp_path / "images"
    util.distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", images, timeout=120)
    util.wait_gone(pid, timeout=20)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = serve(procs, images, key)

    # Run 1: no hot set yet (auto finds none), records 4 s of first touches.
    res = restore(procs, tmp_path / "wd1", listen, key, "--hotset", "auto", "--record-trace", "4")
    assert res["hotset_pages"] == 0 and res["hotset_source"] == "none", res
    # The daemon says how the upload ended; its client gives up after at most
    # 70 s (connect 10 s, reconnects 30 s, reply 30 s), so wait longer than that.
    log = tmp_path / "wd1" / "lazyd.log"
    verdict = util.wait_until(lambda: next((line for line in log.read_text().splitlines()
                                            if "fault trace stored on" in line or "fault trace was not stored" in line),
                                           None), 100, "the daemon to report the trace's upload")
    assert "fault trace stored on" in verdict, verdict
    assert any(p.name.startswith("distriproc-trace-") for p in images.iterdir()), "the server did not keep it"
    first = util.memwalk_request(util.HOSTS["dst"], host="dst")
    assert first["errors"] == 0, first
    s1 = stats(tmp_path / "wd1")
    stop(res)
    [trace_file] = [p for p in images.iterdir() if p.name.startswith("distriproc-trace-")]
    tr = parse_hotset(trace_file)
    assert tr["source"] == 2 and tr["identity"] == util.distriproc(
        "hotset", "identity", "--images", images).stdout.strip()
    runs = tr["runs"][1]
    hot = pages_in(runs, area, area + (24 << 20))
    assert hot >= 24 * 256 * 0.9, f"trace holds {hot} of the 6144 walked pages"
    assert pages_in(runs, cold, cold + (32 << 20)) == 0, "an untouched page is in the trace"
    assert (tmp_path / "wd1" / "trace.bin").read_bytes() == trace_file.read_bytes()

    # Run 2: replays it right after the restore.
    res = restore(procs, tmp_path / "wd2", listen, key, "--hotset", "auto")
    assert res["hotset_source"] == "trace" and res["hotset_pages"] == tr["pages"], res
    util.wait_until(lambda: not stats(tmp_path / "wd2")["replay"]["active"], 60, "the replay to finish")
    s2 = stats(tmp_path / "wd2")
    rp = s2["replay"]
    assert rp["pages"] == tr["pages"] and rp["submitted"] + rp["skipped"] == rp["pages"], rp
    assert rp["submitted"] >= 0.9 * rp["pages"], rp
    later = util.wait_until(
        lambda: (lambda x: x if x["ops"] > 2 * 24 * 256 else None)(
            util.memwalk_request(util.HOSTS["dst"], host="dst")), 60, "memwalk to walk its area twice")
    assert later["errors"] == 0, later
    v = util.memwalk_request(util.HOSTS["dst"], command="VERIFY", host="dst")
    assert v["verify_errors"] == 0, v
    s2 = stats(tmp_path / "wd2")
    # The walk found its pages there: far fewer faults had to fetch than in run 1.
    assert s2["total"]["faults_remote"] < 0.2 * max(s1["total"]["faults_remote"], 24 * 256), \
        (s1["total"]["faults_remote"], s2["total"]["faults_remote"])
    assert s2["trace"]["recording"] is False and s2["trace"]["sent"] is False  # not with --hotset
    stop(res)


@pytest.mark.time_limit(300)
def test_restore_refuses_a_hotset_of_another_checkpoint(lab, procs, criu, tmp_path):
    pid = util.start_container(procs, "src", [util.MEMWALK, "--mib", "8", "--pattern", "seq"], tmp_path / "src.pid")
    util.wait_memwalk(util.HOSTS["src"], host="src")
    old, new = tmp_path / "old", tmp_path / "new"
    util.distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", old, "--leave-running",
                    "--classify", "1", timeout=120)
    util.distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", new, "--classify", "1", timeout=120)
    util.wait_gone(pid, timeout=20)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = serve(procs, new, key)
    id_old = util.distriproc("hotset", "identity", "--images", old).stdout.strip()
    id_new = util.distriproc("hotset", "identity", "--images", new).stdout.strip()

    # The earlier dump's hot set: refused, and nothing was restored.
    wd = tmp_path / "wd"
    cp = restore(procs, wd, listen, key, "--hotset", old / "distriproc-hotset.bin", check=False)
    assert cp.returncode == 1, cp.stdout
    assert id_old in cp.stderr and id_new in cp.stderr and "refused" in cp.stderr, cp.stderr
    assert not (wd / "restored.pid").exists() and not (wd / "restore.log").exists()
    assert util.run(util.netns_cmd("dst", ["ss", "-ltnH", "sport = :7070"])).stdout.strip() == ""

    # The same file planted on the server as the classification: the server
    # does not serve it, the restore is refused.
    (new / "distriproc-hotset.bin").write_bytes((old / "distriproc-hotset.bin").read_bytes())
    cp = restore(procs, tmp_path / "wd2", listen, key, "--hotset", "classify", check=False)
    assert cp.returncode == 1 and id_old in cp.stderr and id_new in cp.stderr, cp.stderr
    assert not (tmp_path / "wd2" / "restored.pid").exists()
