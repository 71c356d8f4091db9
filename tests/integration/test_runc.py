"""runc containers (issue 10): a root runc container running memwalk, made
with `distriproc bundle`, checkpointed with `checkpoint --runc` on src,
served from src and restored lazily on dst with `restore --runc-bundle`
(with and without --budget), every byte verified; runc list/state see it,
runc kill leaves nothing behind. The lazy-pages recipe (our daemon, the
user's own `runc restore --lazy-pages`), `migrate --runc`, and each bad input
(unknown container, missing bundle, a rootfs that differs, runc missing or too
old) failing with a clear message and nothing left behind.

Every test uses its own runc --root under tmp_path, so tests are parallel-safe
and leave no runc state in /run/runc."""

import glob
import json
import os
import shutil
import signal
import subprocess

import pytest

import util

RUNC = shutil.which("runc") or "/usr/sbin/runc"
SERVE_PORT = 7330
MEMWALK_PORT = 7070
MIB = 48
# read ends of the containers' stdout pipes, held until the test ends
_held_fds = []


# ---- helpers ----------------------------------------------------------------------

def runc(root, *args, check=True, timeout=60):
    return util.run([RUNC, "--root", root, *args], check=check, timeout=timeout)


def runc_ids(root):
    if not os.path.isdir(root):
        return []
    return runc(root, "list", "-q").stdout.split()


@pytest.fixture
def runc_root(tmp_path):
    """A private runc state directory; every container still in it at the end
    is killed and deleted (a failing test must not leave one behind)."""
    root = tmp_path / "runc-root"
    root.mkdir()
    try:
        yield root
    finally:
        for cid in runc_ids(root):
            runc(root, "kill", cid, "KILL", check=False)
            runc(root, "delete", "--force", cid, check=False)
        while _held_fds:
            os.close(_held_fds.pop())


def make_bundle(tmp_path, name, host, bind_dir=util.BUILD, mib=MIB, write_ratio="0.3", annotation=None):
    """A bundle of the host's system directories plus bind_dir on /dp, running
    memwalk from there in the lab host's network namespace."""
    bundle = tmp_path / name
    ann = ["--annotation", annotation] if annotation else []
    out = util.distriproc("bundle", "--dir", bundle, "--host-rootfs", "--host", host, *ann,
                          "--bind", f"{bind_dir}:/dp:ro", "--json", "--",
                          "/dp/memwalk", "--mib", mib, "--threads", "2", "--write-ratio", write_ratio,
                          "--seed", "5", "--port", MEMWALK_PORT).stdout
    assert json.loads(out)["bundle"] == str(bundle)
    return bundle


def run_container(root, bundle, cid):
    """runc run -d with pipes as stdio (CRIU cannot checkpoint a host file
    there); returns the container's init pid."""
    r, w = os.pipe()
    rin, win = os.pipe()
    os.close(win)  # stdin at end of file
    cp = subprocess.run([RUNC, "--root", root, "run", "-d", "--bundle", bundle, cid], stdin=rin, stdout=w,
                        stderr=w, timeout=60)
    os.close(w)
    os.close(rin)
    if cp.returncode != 0:
        os.set_blocking(r, False)
        try:
            msg = os.read(r, 65536).decode(errors="replace")
        except BlockingIOError:
            msg = ""
        os.close(r)
        raise AssertionError(f"runc run {cid} failed: {msg}")
    _held_fds.append(r)  # stays open (memwalk prints one line: it never blocks)
    state = json.loads(runc(root, "state", cid).stdout)
    assert state["status"] == "running", state
    return state["pid"]


def memwalk_on(host, command="STAT", timeout=30):
    return util.memwalk_request(util.HOSTS[host], MEMWALK_PORT, command, host=host, timeout=timeout)


def start_source(root, tmp_path, cid="ct1"):
    bundle = make_bundle(tmp_path, "bundle-src", "src")
    pid = run_container(root, bundle, cid)
    util.wait_until(lambda: memwalk_on("src")["writes"] > 20000, 60, "memwalk to do 20000 writes on src")
    return pid


def checkpoint(root, cid, images):
    out = util.distriproc("checkpoint", "--runc", cid, "--runc-root", root, "--images", images, "--json",
                          timeout=120).stdout
    return json.loads(out)


def serve(procs, images, key, tmp_path):
    util.distriproc("keygen", key)
    listen = f"{util.HOSTS['src']}:{SERVE_PORT}"
    log = open(tmp_path / "serve.log", "w")
    procs.spawn(util.netns_cmd("src", [util.DISTRIPROC, "serve", "--images", images, "--listen", listen,
                                       "--key", key]), stdout=log, stderr=log)
    util.wait_until(lambda: "listening" in (tmp_path / "serve.log").read_text(), 30, "the page server")
    return listen


def processes_with(text):
    """Pids whose command line contains text (the daemon and the stdio drain
    carry the workdir in theirs)."""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(d))
            except OSError:
                pass
    return found


def restore_foreground(procs, root, bundle, cid, workdir, listen, key, *extra):
    """`restore --runc-bundle ... --foreground --json`: returns (Popen, JSON);
    the Popen exits with the daemon's status once the container is gone."""
    log = workdir.parent / f"{workdir.name}-restore.log"
    with open(log, "w") as err:  # the daemon logs here in the foreground: a file never fills up
        p = procs.spawn([util.DISTRIPROC, "restore", "--source", listen, "--key", key, "--workdir", workdir,
                         "--host", "dst", "--runc-bundle", bundle, "--runc-id", cid, "--runc-root", root,
                         "--foreground", "--json", *extra], stdout=subprocess.PIPE, stderr=err)
    try:
        line = util.read_line(p.stdout, 120, "restore's JSON line")
    except AssertionError:
        p.kill()
        raise AssertionError(f"restore failed: {log.read_text()[-3000:]}") from None
    res = json.loads(line)
    procs.track(res["daemon_pid"])
    return p, res


def assert_nothing_left(root, cid, workdir):
    assert cid not in runc_ids(root), runc(root, "list").stdout
    assert not (root / cid).exists(), f"runc state {root / cid} left behind"
    assert not processes_with(str(workdir)), f"processes of {workdir} left: {processes_with(str(workdir))}"


# ---- end to end ---------------------------------------------------------------------

@pytest.mark.parametrize("budget", [None, "8M"])
@pytest.mark.time_limit(240)
def test_runc_container_lazy_migration(lab, procs, criu, runc_root, tmp_path, budget):
    cid = "ct1"
    src_pid = start_source(runc_root, tmp_path, cid)
    images = tmp_path / "images"
    ck = checkpoint(runc_root, cid, images)
    assert ck["runc_id"] == cid and ck["tasks"] == 1 and ck["lazy_bytes"] >= MIB << 20, ck
    assert ck["rootfs_files"] >= 3 and len(ck["rootfs_digest"]) == 64, ck
    util.wait_gone(src_pid, timeout=20)
    assert cid not in runc_ids(runc_root)  # runc checkpoint removed the source container
    assert (images / "descriptors.json").exists() and (images / "container-rootfs.json").exists()
    # CRIU ran in the container's network namespace: no namespace dumped, none locked.
    assert not list(images.glob("netns-*.img"))
    assert "CRIU" not in util.run(util.netns_cmd("src", ["iptables-save"])).stdout

    key = tmp_path / "key"
    listen = serve(procs, images, key, tmp_path)
    workdir = tmp_path / "dst"
    bundle = make_bundle(tmp_path, "bundle-dst", "dst")
    extra = ("--budget", budget) if budget else ()
    p, res = restore_foreground(procs, runc_root, bundle, cid, workdir, listen, key, *extra)
    pid = procs.track(res["pid"])
    assert res["runc_id"] == cid and res["skeleton_bytes"] < ck["lazy_bytes"] / 8, res

    # runc sees it running, in dst's network namespace; ps/pgrep see memwalk.
    state = json.loads(runc(runc_root, "state", cid).stdout)
    assert state["status"] == "running" and state["pid"] == pid and state["bundle"] == str(bundle), state
    assert cid in runc_ids(runc_root)
    assert util.pid_netns_inode(pid) == util.netns_inode("dst")
    # its command line too: the argument pages are fetched once the restore
    # has finished and never evicted, under --budget as well
    pattern = f"^/dp/memwalk --mib {MIB} "
    util.wait_until(lambda: str(pid) in util.run(["pgrep", "-f", pattern], check=False).stdout.split(),
                    20, "pgrep -f to find the restored memwalk")

    # Every page of memwalk arrives intact, written pages included (VERIFY reads them all).
    v = memwalk_on("dst", "VERIFY", timeout=90)
    assert v["verify_pages"] == MIB * 256 and v["verify_errors"] == 0 and v["errors"] == 0, v
    stats = util.lazy_stats(workdir)
    assert stats["total"]["fetch_errors"] == 0 and stats["total"]["pages_fetched"] > 0, stats["total"]
    if budget:
        b = stats["budget"]
        assert b["evictions"] > 0 and b["resident_bytes"] <= 8 << 20, b
        # the writers keep going under the budget, still with no error
        util.wait_until(lambda: memwalk_on("dst")["writes"] > v["writes"] + 20000, 60, "writes under the budget")
        assert memwalk_on("dst")["errors"] == 0

    # runc kill ends it; the daemon exits 0 by itself; runc delete leaves nothing.
    runc(runc_root, "kill", cid, "KILL")
    util.wait_gone(pid, timeout=20)
    assert p.wait(timeout=30) == 0, (tmp_path / "dst-restore.log").read_text()[-3000:]
    final = json.loads((workdir / "stats-final.json").read_text())
    assert final["tasks_alive"] == 0 and final["total"]["fetch_errors"] == 0, final
    runc(runc_root, "delete", cid)
    assert_nothing_left(runc_root, cid, workdir)


@pytest.mark.parametrize("how", ["flags", "criu-config"])
@pytest.mark.time_limit(180)
def test_lazy_pages_recipe_with_users_own_runc_restore(lab, procs, criu, runc_root, tmp_path, how):
    """flags: runc restore --lazy-pages --work-path DIR. criu-config: what
    podman does, which has no --lazy-pages for restore: the bundle's
    org.criu.config annotation names a CRIU configuration file with
    lazy-pages and work-dir, and runc restore gets neither flag (and another
    --work-path, which the file overrides)."""
    cid = "ct2"
    start_source(runc_root, tmp_path, cid)
    images = tmp_path / "images"
    checkpoint(runc_root, cid, images)
    key = tmp_path / "key"
    listen = serve(procs, images, key, tmp_path)
    workdir = tmp_path / "lazy"
    out = util.distriproc("lazy-pages", "--source", listen, "--key", key, "--workdir", workdir,
                          "--host", "dst", "--json").stdout
    lp = json.loads(out)
    daemon = procs.track(lp["daemon_pid"])
    assert lp["socket"] == str(workdir / "lazy-pages.socket") and os.path.exists(lp["socket"]), lp
    assert lp["images"] == str(workdir / "images") and (workdir / "images" / "descriptors.json").exists(), lp

    # The recipe of docs/containers.md: runc restore --lazy-pages in the
    # network namespace the bundle joins, work path = the daemon's workdir.
    if how == "flags":
        bundle = make_bundle(tmp_path, "bundle-dst", "dst")
        lazy = ["--lazy-pages", "--work-path", workdir]
    else:
        conf = tmp_path / "dp-lazy.conf"
        conf.write_text(f"lazy-pages\nwork-dir {workdir}\n")
        bundle = make_bundle(tmp_path, "bundle-dst", "dst", annotation=f"org.criu.config={conf}")
        other = tmp_path / "runc-work"
        other.mkdir()
        lazy = ["--work-path", other]
    r, w = os.pipe()
    _held_fds.append(r)
    rin, win = os.pipe()
    os.close(win)
    cp = subprocess.run(util.netns_cmd("dst", [RUNC, "--root", runc_root, "--criu", criu, "restore", *lazy,
                                               "--image-path", lp["images"], "--pid-file",
                                               workdir / "restored.pid", "--bundle", bundle, "--detach", cid]),
                        stdin=rin, stdout=w, stderr=w, timeout=120)
    os.close(w)
    os.close(rin)
    assert cp.returncode == 0, (workdir / "restore.log").read_text()[-2000:]
    assert (workdir / "restore.log").exists()  # CRIU's work dir is the daemon's, in both ways
    pid = procs.track(int((workdir / "restored.pid").read_text()))
    assert json.loads(runc(runc_root, "state", cid).stdout)["status"] == "running"
    v = memwalk_on("dst", "VERIFY", timeout=90)
    assert v["verify_pages"] == MIB * 256 and v["verify_errors"] == 0 and v["errors"] == 0, v
    assert util.lazy_stats(workdir)["total"]["pages_fetched"] > 0

    runc(runc_root, "kill", cid, "KILL")
    util.wait_gone(pid, timeout=20)
    util.wait_gone(daemon, timeout=30)
    final = json.loads((workdir / "stats-final.json").read_text())
    assert final["tasks_alive"] == 0 and final["total"]["fetch_errors"] == 0, final
    runc(runc_root, "delete", cid)
    assert_nothing_left(runc_root, cid, workdir)


@pytest.mark.time_limit(180)
def test_migrate_runc_probe_and_stop(lab, procs, criu, runc_root, tmp_path):
    cid = "ct3"
    start_source(runc_root, tmp_path, cid)
    workdir = tmp_path / "mig"
    bundle = make_bundle(tmp_path, "bundle-dst", "dst")
    probe = (f"{util.PYTHON} -c \"import socket,json,sys; "
             f"s=socket.create_connection(('{util.HOSTS['dst']}',{MEMWALK_PORT}),timeout=5); "
             f"s.sendall(b'STAT\\n'); r=json.loads(s.makefile('rb').readline()); sys.exit(0 if r['errors']==0 else 1)\"")
    res = json.loads(util.distriproc("migrate", "--runc", cid, "--runc-root", runc_root, "--runc-bundle", bundle,
                                     "--workdir", workdir, "--port", SERVE_PORT, "--probe", probe, "--json",
                                     timeout=200).stdout)
    for k in ("pid", "daemon_pid", "server_pid"):
        procs.track(res[k])
    assert res["runc_id"] == cid and res["probe_attempts"] >= 1 and res["ttfr_from_restore_s"] > 0, res
    state = json.loads(runc(runc_root, "state", cid).stdout)
    assert state["pid"] == res["pid"] and state["bundle"] == str(bundle), state
    util.distriproc("migrate", "--stop", "--workdir", workdir, timeout=60)
    for k in ("pid", "daemon_pid", "server_pid"):
        assert not util.alive(res[k]), f"{k} {res[k]} alive after migrate --stop"
    assert runc_ids(runc_root) == [] and not (runc_root / cid).exists()


# ---- bad input ------------------------------------------------------------------------

@pytest.mark.time_limit(180)
def test_rootfs_that_differs_is_refused_and_nothing_starts(lab, procs, criu, runc_root, tmp_path):
    cid = "ct4"
    start_source(runc_root, tmp_path, cid)
    images = tmp_path / "images"
    checkpoint(runc_root, cid, images)
    key = tmp_path / "key"
    listen = serve(procs, images, key, tmp_path)

    # dst's /dp holds a memwalk that is not the checkpoint's (one byte more).
    other = tmp_path / "other-build"
    other.mkdir()
    shutil.copy2(util.MEMWALK, other / "memwalk")
    with open(other / "memwalk", "ab") as f:
        f.write(b"\0")
    bad = make_bundle(tmp_path, "bundle-bad", "dst", bind_dir=other)
    workdir = tmp_path / "dst-bad"
    cp = util.distriproc("restore", "--source", listen, "--key", key, "--workdir", workdir, "--host", "dst",
                         "--runc-bundle", bad, "--runc-id", cid, "--runc-root", runc_root, check=False, timeout=60)
    assert cp.returncode == 1, cp.stderr
    assert "does not hold the rootfs" in cp.stderr and "/dp/memwalk: size" in cp.stderr, cp.stderr
    assert "Nothing was restored" in cp.stderr, cp.stderr
    assert not (workdir / "lazy-pages.socket").exists()
    assert util.run(util.netns_cmd("dst", ["ss", "-ltnH", f"sport = :{MEMWALK_PORT}"])).stdout.strip() == ""
    assert_nothing_left(runc_root, cid, workdir)

    # Same size, other content: refused too.
    with open(util.MEMWALK, "rb") as f:
        data = bytearray(f.read())
    data[-1] ^= 0xff
    (other / "memwalk").write_bytes(bytes(data))
    cp = util.distriproc("restore", "--source", listen, "--key", key, "--workdir", tmp_path / "dst-bad2",
                         "--host", "dst", "--runc-bundle", bad, "--runc-id", cid, "--runc-root", runc_root,
                         check=False, timeout=60)
    assert cp.returncode == 1 and "/dp/memwalk: different content" in cp.stderr, cp.stderr

    # The right bundle restores; an ID in use is refused before anything starts.
    good = make_bundle(tmp_path, "bundle-dst", "dst")
    p, res = restore_foreground(procs, runc_root, good, cid, tmp_path / "dst", listen, key)
    procs.track(res["pid"])
    cp = util.distriproc("restore", "--source", listen, "--key", key, "--workdir", tmp_path / "dst-dup",
                         "--host", "dst", "--runc-bundle", good, "--runc-id", cid, "--runc-root", runc_root,
                         check=False, timeout=60)
    assert cp.returncode == 1 and f"a container '{cid}' already exists" in cp.stderr, cp.stderr
    assert not (tmp_path / "dst-dup" / "images").exists()
    runc(runc_root, "kill", cid, "KILL")
    assert p.wait(timeout=30) == 0


def test_unknown_container_and_missing_bundle(runc_root, tmp_path):
    images = tmp_path / "images"
    cp = util.distriproc("checkpoint", "--runc", "nosuch", "--runc-root", runc_root, "--images", images,
                         check=False)
    assert cp.returncode == 1 and "runc knows no container 'nosuch'" in cp.stderr and "list" in cp.stderr, cp.stderr
    assert not images.exists()

    workdir = tmp_path / "w"
    cp = util.distriproc("restore", "--source", "127.0.0.1:9", "--key", tmp_path / "nokey", "--workdir", workdir,
                         "--runc-bundle", tmp_path / "nobundle", "--runc-id", "x1", "--runc-root", runc_root,
                         check=False)
    assert cp.returncode == 1 and "distriproc bundle" in cp.stderr and "nobundle" in cp.stderr, cp.stderr
    assert not (workdir / "lazy-pages.socket").exists() and not (workdir / "images").exists()
    assert runc_ids(runc_root) == [] and not processes_with(str(workdir))

    # usage errors say what goes with what
    cp = util.distriproc("restore", "--source", "127.0.0.1:9", "--key", "k", "--workdir", workdir,
                         "--runc-bundle", tmp_path, check=False)
    assert cp.returncode == 2 and "--runc-id" in cp.stderr, cp.stderr
    cp = util.distriproc("checkpoint", "--runc", "x", "--pid", "1", "--images", images, check=False)
    assert cp.returncode == 2 and "no --pid" in cp.stderr, cp.stderr


@pytest.mark.parametrize("fake", ["missing", "old"])
def test_runc_missing_or_too_old(runc_root, tmp_path, fake):
    if fake == "missing":
        path = tmp_path / "no-runc"
        expect = "not an executable"
    else:
        path = tmp_path / "old-runc"
        path.write_text("#!/bin/sh\necho 'runc version 1.0.0'\necho 'spec: 1.0.2'\n")
        path.chmod(0o755)
        expect = "needs runc >= 1.1"
    env = dict(os.environ, DISTRIPROC_RUNC=str(path))
    images = tmp_path / "images"
    cp = util.run([util.DISTRIPROC, "checkpoint", "--runc", "ct", "--runc-root", runc_root, "--images", images],
                  check=False, env=env)
    assert cp.returncode == 1 and expect in cp.stderr and "DISTRIPROC_RUNC" in cp.stderr, cp.stderr
    assert not images.exists()
    bundle = tmp_path / "b"
    util.distriproc("bundle", "--dir", bundle, "--host-rootfs", "--", "/bin/true")
    workdir = tmp_path / "w"
    cp = util.run([util.DISTRIPROC, "restore", "--source", "127.0.0.1:9", "--key", tmp_path / "k", "--workdir",
                   workdir, "--runc-bundle", bundle, "--runc-id", "ct", "--runc-root", runc_root],
                  check=False, env=env)
    assert cp.returncode == 1 and expect in cp.stderr, cp.stderr
    assert not (workdir / "images").exists() and runc_ids(runc_root) == []


def test_bundle_config_is_what_runc_runs(runc_root, tmp_path):
    """The generator's config.json: own rootfs, the namespaces asked for, user
    namespace mappings, and runc accepts it (runc spec-level check: run a
    short command to completion in a new network namespace)."""
    bundle = tmp_path / "b"
    util.distriproc("bundle", "--dir", bundle, "--host-rootfs", "--uid-map", "0:100000:65536",
                    "--gid-map", "0:100000:65536", "--user", "0:0", "--env", "A=1", "--", "/bin/true")
    cfg = json.loads((bundle / "config.json").read_text())
    types = [n["type"] for n in cfg["linux"]["namespaces"]]
    assert types == ["pid", "ipc", "uts", "mount", "user", "network"], types
    assert cfg["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert "A=1" in cfg["process"]["env"] and cfg["process"]["args"] == ["/bin/true"]
    assert (bundle / "rootfs" / "usr").is_dir() and os.readlink(bundle / "rootfs" / "bin") == "usr/bin"

    bundle2 = tmp_path / "b2"
    util.distriproc("bundle", "--dir", bundle2, "--host-rootfs", "--", "/bin/sh", "-c", "echo hello-from-runc")
    r, w = os.pipe()
    cp = subprocess.run([RUNC, "--root", runc_root, "run", "--bundle", bundle2, "short"], stdin=subprocess.DEVNULL,
                        stdout=w, stderr=w, timeout=60)
    os.close(w)
    out = os.read(r, 65536).decode(errors="replace")
    os.close(r)
    assert cp.returncode == 0 and "hello-from-runc" in out, out
    runc(runc_root, "delete", "--force", "short", check=False)
    assert runc_ids(runc_root) == []


def test_bundle_names_the_real_rootfs_behind_a_symlink(runc_root, tmp_path):
    """runc refuses a rootfs path that runs through a symlink ("invalid rootfs:
    not an absolute path, or a symlink"), as a checkout whose .deps is a link
    has: the generator writes the resolved path, and runc runs it."""
    cp = subprocess.run([os.path.join(util.ROOT, "scripts", "rootfs.sh"), "--path"], capture_output=True,
                        text=True, timeout=30)
    assert cp.returncode == 0, f"the container rootfs is not built ({cp.stderr.strip()}): run 'make rootfs'"
    real = os.path.realpath(cp.stdout.strip())
    link = tmp_path / "link"
    link.symlink_to(real)
    bundle = tmp_path / "b"
    util.distriproc("bundle", "--dir", bundle, "--rootfs", link / "root", "--readonly-rootfs", "--tmpfs-tmp",
                    "--", "/bin/sh", "-c", "echo hello-through-link")
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["root"]["path"] == os.path.join(real, "root"), cfg["root"]
    r, w = os.pipe()
    cp = subprocess.run([RUNC, "--root", runc_root, "run", "--bundle", bundle, "linked"], stdin=subprocess.DEVNULL,
                        stdout=w, stderr=w, timeout=60)
    os.close(w)
    out = os.read(r, 65536).decode(errors="replace")
    os.close(r)
    runc(runc_root, "delete", "--force", "linked", check=False)
    assert cp.returncode == 0 and "hello-through-link" in out, out
    assert runc_ids(runc_root) == []


@pytest.mark.time_limit(180)
def test_guard_kills_the_container_when_the_daemon_dies(lab, procs, criu, runc_root, tmp_path):
    """As for a bare process (test_guard.py): SIGKILL of the daemon must not
    leave the container reading missing pages as zeros; the guard kills it,
    and runc sees it stopped."""
    from test_guard import assert_guard_stopped_the_tree, guard_of
    cid = "ct5"
    start_source(runc_root, tmp_path, cid)
    images = tmp_path / "images"
    checkpoint(runc_root, cid, images)
    key = tmp_path / "key"
    listen = serve(procs, images, key, tmp_path)
    workdir = tmp_path / "wd"
    bundle = make_bundle(tmp_path, "bundle-dst", "dst")
    res = json.loads(util.distriproc("restore", "--source", listen, "--key", key, "--workdir", workdir, "--host",
                                     "dst", "--runc-bundle", bundle, "--runc-id", cid, "--runc-root", runc_root,
                                     "--json", timeout=120).stdout)
    procs.track(res["daemon_pid"])
    procs.track(res["pid"])
    guard = procs.track(guard_of(res["daemon_pid"]))
    assert memwalk_on("dst")["errors"] == 0
    os.kill(res["daemon_pid"], signal.SIGKILL)
    assert_guard_stopped_the_tree(res, workdir, guard, [res["pid"]])
    util.wait_until(lambda: json.loads(runc(runc_root, "state", cid).stdout)["status"] == "stopped", 20,
                    "runc to see the container stopped")
    runc(runc_root, "delete", cid)
    assert_nothing_left(runc_root, cid, workdir)


@pytest.mark.time_limit(300)
def test_redis_container_migrated_under_budget_same_digest(lab, procs, criu, runc_root, tmp_path):
    """A real service: redis-server (the host's, through --host-rootfs) in a
    root runc container, 64 MiB of keys, migrated with `migrate --runc
    --budget`; the dataset's digest is the same on dst, and it takes writes."""
    from test_lazy_restore import redis_tool
    cid, port = "redis1", 6391
    args = ["redis-server", "--port", str(port), "--bind", "0.0.0.0", "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--daemonize", "no"]
    for name, host in (("bundle-src", "src"), ("bundle-dst", "dst")):
        util.distriproc("bundle", "--dir", tmp_path / name, "--host-rootfs", "--host", host, "--", *args)
    run_container(runc_root, tmp_path / "bundle-src", cid)
    src = ["--host", util.HOSTS["src"], "--port", str(port)]
    redis_tool("src", "probe", *src, "--timeout", "20")
    redis_tool("src", "load", *src, "--mib", "64")
    before = redis_tool("src", "digest", *src)
    assert before["keys"] > 50000, before

    workdir = tmp_path / "mig"
    probe = f"redis-cli -h {util.HOSTS['dst']} -p {port} ping | grep -qx PONG"
    res = json.loads(util.distriproc("migrate", "--runc", cid, "--runc-root", runc_root, "--runc-bundle",
                                     tmp_path / "bundle-dst", "--workdir", workdir, "--port", SERVE_PORT,
                                     "--budget", "16M", "--probe", probe, "--json", timeout=200).stdout)
    for k in ("pid", "daemon_pid", "server_pid"):
        procs.track(res[k])
    assert res["runc_id"] == cid and res["remote_fraction_at_reply"] > 0.5, res
    dst = ["--host", util.HOSTS["dst"], "--port", str(port)]
    after = redis_tool("dst", "digest", *dst)
    assert after == before, (before, after)
    b = util.lazy_stats(workdir / "dst")["budget"]
    assert b["evictions"] > 0 and b["resident_bytes"] <= 16 << 20, b
    out = util.run(util.netns_cmd("dst", ["redis-cli", "-h", util.HOSTS["dst"], "-p", port, "SET", "after", "1"]))
    assert out.stdout.strip() == "OK"
    assert redis_tool("dst", "digest", *dst)["keys"] == before["keys"] + 1
    util.distriproc("migrate", "--stop", "--workdir", workdir, timeout=60)
    assert runc_ids(runc_root) == []


@pytest.mark.time_limit(240)
def test_container_migrates_back_once_its_memory_is_local(lab, procs, criu, runc_root, tmp_path):
    """src -> dst -> src. A lazily restored container still has remote pages,
    which a checkpoint would save as zeros: checkpoint --runc refuses until the
    daemon (with --background-fetch) has everything, then the container moves
    back with every byte intact."""
    cid = "ct6"
    start_source(runc_root, tmp_path, cid)
    images = tmp_path / "images"
    checkpoint(runc_root, cid, images)
    key = tmp_path / "key"
    listen = serve(procs, images, key, tmp_path)
    workdir = tmp_path / "dst"
    p, res = restore_foreground(procs, runc_root, make_bundle(tmp_path, "bundle-dst", "dst"), cid, workdir,
                                listen, key, "--background-fetch", "8M")
    procs.track(res["pid"])
    # refused while pages are remote (nothing written, the container untouched)
    back = tmp_path / "images-back"
    # (48 MiB at 8 MB/s: the copy takes seconds, the refusal comes right after the restore)
    cp = util.distriproc("checkpoint", "--runc", cid, "--runc-root", runc_root, "--images", back, check=False)
    assert cp.returncode == 1 and "still remote" in cp.stderr and str(workdir) in cp.stderr, cp.stderr
    assert not back.exists() and util.alive(res["pid"])
    util.wait_until(lambda: util.lazy_stats(workdir)["total"]["remote_bytes"] == 0, 60, "the background copy")
    checkpoint(runc_root, cid, back)
    assert p.wait(timeout=30) == 0  # its tasks were dumped: the daemon ends cleanly

    # back to src, served from dst
    listen2 = f"{util.HOSTS['dst']}:{SERVE_PORT + 1}"
    log = open(tmp_path / "serve-back.log", "w")
    procs.spawn(util.netns_cmd("dst", [util.DISTRIPROC, "serve", "--images", back, "--listen", listen2,
                                       "--key", key]), stdout=log, stderr=log)
    util.wait_until(lambda: "listening" in (tmp_path / "serve-back.log").read_text(), 30, "the second server")
    out = util.distriproc("restore", "--source", listen2, "--key", key, "--workdir", tmp_path / "src-again",
                          "--host", "src", "--runc-bundle", tmp_path / "bundle-src", "--runc-id", cid,
                          "--runc-root", runc_root, "--json", timeout=120).stdout
    res2 = json.loads(out)
    procs.track(res2["daemon_pid"])
    procs.track(res2["pid"])
    assert util.pid_netns_inode(res2["pid"]) == util.netns_inode("src")
    v = memwalk_on("src", "VERIFY", timeout=90)
    assert v["verify_pages"] == MIB * 256 and v["verify_errors"] == 0 and v["errors"] == 0, v
    runc(runc_root, "kill", cid, "KILL")
    util.wait_gone(res2["pid"], timeout=20)
    util.wait_gone(res2["daemon_pid"], timeout=30)
    runc(runc_root, "delete", cid)
    assert_nothing_left(runc_root, cid, tmp_path / "src-again")


# ---- memory mode (issue 11): the container served from its own frozen cgroup ----------

def container_frozen(cid):
    """runc's freezer cgroup of the container (cgroup v1, no cgroupsPath: /ID) is FROZEN."""
    with open(f"/sys/fs/cgroup/freezer/{cid}/freezer.state") as f:
        return f.read().strip() == "FROZEN"


@pytest.fixture
def thaw_containers(runc_root):
    """A failing memory-mode test must not leave a frozen container behind:
    thaws every container of runc_root before runc_root's own teardown kills
    and deletes them (SIGKILL to a frozen task waits for the thaw)."""
    yield
    for cid in runc_ids(runc_root):
        path = f"/sys/fs/cgroup/freezer/{cid}/freezer.state"
        if os.path.exists(path):
            with open(path, "w") as f:
                f.write("THAWED")


@pytest.mark.time_limit(300)
def test_redis_container_migrated_from_memory_commit_and_release(lab, procs, criu, runc_root, tmp_path,
                                                                 thaw_containers):
    """`migrate --runc --from memory`: the Redis container is held in its own
    freezer cgroup (runc state: paused), its memory served from there; dst has
    the exact digest and takes writes; the source is committed (frozen, never
    runs again) and, at --stop, released: killed while frozen and deleted
    from runc."""
    from test_lazy_restore import redis_tool
    from test_live import live_state, utime
    cid = f"rmem{os.getpid()}"  # runc's cgroups are /ID, global: unique across test runs
    new, port = cid + "m", 6392
    args = ["redis-server", "--port", str(port), "--bind", "0.0.0.0", "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--daemonize", "no"]
    for name, host in (("bundle-src", "src"), ("bundle-dst", "dst")):
        util.distriproc("bundle", "--dir", tmp_path / name, "--host-rootfs", "--host", host, "--", *args)
    src_pid = run_container(runc_root, tmp_path / "bundle-src", cid)
    src = ["--host", util.HOSTS["src"], "--port", str(port)]
    redis_tool("src", "probe", *src, "--timeout", "20")
    redis_tool("src", "load", *src, "--mib", "32")
    before = redis_tool("src", "digest", *src)
    assert before["keys"] > 25000, before

    # The restored container needs its own ID: the source keeps its own until released.
    cp = util.distriproc("migrate", "--runc", cid, "--runc-root", runc_root, "--runc-bundle",
                         tmp_path / "bundle-dst", "--workdir", tmp_path / "x", "--from", "memory", check=False)
    assert cp.returncode == 2 and "--runc-id" in cp.stderr, cp.stderr

    workdir = tmp_path / "mig"
    probe = f"redis-cli -h {util.HOSTS['dst']} -p {port} ping | grep -qx PONG"
    # --warmup none: the source must stay committed (frozen) until --stop here;
    # a warm-up would release it once every page is on dst (test_warmup.py)
    res = json.loads(util.distriproc("migrate", "--runc", cid, "--runc-id", new, "--runc-root", runc_root,
                                     "--runc-bundle", tmp_path / "bundle-dst", "--workdir", workdir, "--port",
                                     SERVE_PORT, "--from", "memory", "--probe", probe, "--warmup", "none",
                                     "--json", timeout=200).stdout)
    for k in ("pid", "daemon_pid", "server_pid"):
        procs.track(res[k])
    assert res["mode"] == "memory" and res["runc_id"] == new, res
    assert res["skeleton_bytes"] < res["lazy_bytes"] / 8, res  # no page data written or sent up front
    st = live_state(workdir / "src")
    assert st["state"] == "committed" and st["runc"] == cid, st
    assert st["cgroup"] == f"/sys/fs/cgroup/freezer/{cid}", st
    assert "container-rootfs.json" in os.listdir(workdir / "src" / "images")

    # Commit: runc still knows the source, paused; it never runs again.
    assert json.loads(runc(runc_root, "state", cid).stdout)["status"] == "paused"
    assert container_frozen(cid)
    t = utime(src_pid)
    state = json.loads(runc(runc_root, "state", new).stdout)
    assert state["status"] == "running" and state["pid"] == res["pid"], state
    assert util.pid_netns_inode(res["pid"]) == util.netns_inode("dst")
    dst = ["--host", util.HOSTS["dst"], "--port", str(port)]
    assert redis_tool("dst", "digest", *dst) == before
    out = util.run(util.netns_cmd("dst", ["redis-cli", "-h", util.HOSTS["dst"], "-p", port, "SET", "after", "1"]))
    assert out.stdout.strip() == "OK"
    assert redis_tool("dst", "digest", *dst)["keys"] == before["keys"] + 1
    assert container_frozen(cid) and utime(src_pid) == t

    # Release at --stop: the restored container goes (runc delete), then serve
    # kills the frozen source and runc forgets it too.
    util.distriproc("migrate", "--stop", "--workdir", workdir, timeout=60)
    util.wait_gone(src_pid, timeout=20)
    assert live_state(workdir / "src")["state"] == "released"
    assert runc_ids(runc_root) == []
    log = (workdir / "serve.log").read_text()
    assert "killed while frozen and never ran again" in log and f"source container {cid} is removed" in log



def remove_cgroups(name):
    """rmdir of /sys/fs/cgroup/*/NAME; True once none is left."""
    left = False
    for d in glob.glob(f"/sys/fs/cgroup/*/{name}"):
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError:
            left = True
    return not left

@pytest.mark.time_limit(240)
def test_container_memory_mode_rolls_back_when_dst_criu_is_killed(lab, procs, criu, runc_root, tmp_path,
                                                                  thaw_containers):
    """`serve --runc`, SIGKILLed and restarted (re-attach); then the
    destination's criu (runc restore's criu swrk) is SIGKILLed mid-restore; the source container is thawed exactly once, runc
    state/ps see it running, every page verifies and it goes on writing.
    (Killed while it sets up the mounts, criu's half-restored root task can
    keep runc restore waiting: --restore-timeout bounds that, and the failure
    is reported either way, well before the source's --connect-timeout.)"""
    from test_live import live_state, serve_live
    cid = f"ctmem{os.getpid()}"  # runc's cgroups are /ID, global: unique across test runs
    src_pid = start_source(runc_root, tmp_path, cid)
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    workdir = tmp_path / "src"
    log = tmp_path / "serve.log"
    serve = serve_live(procs, workdir, SERVE_PORT, key, "--runc", cid, "--runc-root", runc_root, log=log)
    assert container_frozen(cid) and live_state(workdir)["state"] == "serving"
    assert json.loads(runc(runc_root, "state", cid).stdout)["status"] == "paused"
    # serve SIGKILLed before any verdict: the container stays held; a serve
    # restarted with the workdir alone re-attaches to it.
    serve.kill()
    serve.wait(timeout=10)
    assert container_frozen(cid) and live_state(workdir)["state"] == "serving"
    serve = serve_live(procs, workdir, SERVE_PORT, key, log=log)
    assert "re-attaching to the migration of pid" in log.read_text()

    wrapper = util.criu_killed_after(tmp_path, criu, "swrk")
    bundle = make_bundle(tmp_path, "bundle-dst", "dst")
    cp = util.run([util.DISTRIPROC, "restore", "--source", f"{util.HOSTS['src']}:{SERVE_PORT}", "--key", key,
                   "--workdir", tmp_path / "dst", "--host", "dst", "--runc-bundle", bundle, "--runc-id",
                   cid + "m", "--runc-root", runc_root, "--restore-timeout", "20", "--json"], timeout=120,
                  check=False,
                  env={**os.environ, "DISTRIPROC_CRIU": str(wrapper)})
    assert cp.returncode != 0, cp.stdout
    # runc never recorded the new container, so `runc delete` cannot remove
    # the cgroups it made for it: restore does, with the half-restored task
    # in them (CRIU's root task, left waiting for the killed criu: CI of
    # 8ac7ba0 found it still there 30 s after the test's own rmdir began)
    left = sorted(glob.glob(f"/sys/fs/cgroup/*/{cid}m"))
    if left:  # the test fails, but leaves nothing behind
        util.wait_until(lambda: remove_cgroups(cid + "m"), 60, f"the cgroups {cid}m to be removed")
    assert not left, f"the failed restore left the new container's cgroups {left}:\n{cp.stderr[-3000:]}"

    serve.wait(timeout=30)
    assert live_state(workdir)["state"] == "rolled-back"
    assert not container_frozen(cid)
    assert runc_ids(runc_root) == [cid]  # the failed restore left nothing in runc
    assert json.loads(runc(runc_root, "state", cid).stdout)["status"] == "running"
    assert str(src_pid) in runc(runc_root, "ps", "--format", "json", cid).stdout
    assert memwalk_on("src", "VERIFY", timeout=60)["verify_errors"] == 0
    writes = memwalk_on("src")["writes"]
    util.wait_until(lambda: memwalk_on("src")["writes"] > writes, 20, "memwalk on src to write again")
    assert "rolled back: the source container" in log.read_text()
    assert "serving -> rolled-back (restore-failed)" in log.read_text()
    assert util.run(util.netns_cmd("dst", ["ss", "-ltnH", f"sport = :{MEMWALK_PORT}"])).stdout.strip() == ""
    runc(runc_root, "kill", cid, "KILL")
    util.wait_gone(src_pid, timeout=20)
    runc(runc_root, "delete", cid)

