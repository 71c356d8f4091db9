"""podman 4.3.1 (Debian 12, `--runtime runc`) with DistriProc as CRIU's
lazy-pages daemon (issue 10, item 2): the recipe of docs/containers.md,
"podman 4.3.1", run as written.

A container of a local image (memwalk and its libraries, `podman import`, no
registry) runs on lab host src with the CRIU configuration file named by its
org.criu.config annotation absent. `podman container checkpoint --export`
through our CRIU (`--runtime-flag criu=...`); its images are served by
`distriproc serve`; on dst `distriproc lazy-pages` pulls the skeleton and
listens; the configuration file (lazy-pages, work-dir = the daemon's
directory) is written; `podman container restore --import` of the export with
the skeleton in place of its checkpoint/ starts it at once, every page coming
from the page server. podman ps sees it running, every byte is verified,
`podman rm -f` ends it and the daemon exits 0 with nothing left behind.

Both lab hosts share one podman storage (as test_runc shares one runc
root): podman 4.3.1's `restore --import` keeps the source's conmon pidfile
path from the archive's config.dump, so the destination's --runroot must be
the source's path (true of two hosts with the defaults; two different
runroots on one machine fail: "Failed to write conmon pidfile"). Each podman
command runs in its host's network namespace (nsenter --net only) with
--network host, so the container lives in the lab namespace and CRIU runs
there (no network namespace dumped, as for `distriproc checkpoint --runc`).
Everything podman writes is under a private directory: storage (vfs, no
mounts), run and tmp directories, and a private containers.conf
(CONTAINERS_CONF: cgroupfs, no events log, the CNI backend with its
configuration there); the host's /etc/containers/networks, /run/containers
and /var/lib/containers are not left behind. Parallel-safe: lab namespaces
and every directory are this test's own."""

import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

import util

PODMAN = shutil.which("podman", path="/usr/bin:/usr/sbin:/bin:/sbin")
RUNC = shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin")
SERVE_PORT = 7331
MEMWALK_PORT = 7070
MIB = 48
IMAGE = "localhost/dp-memwalk:1"
# Host directories podman writes by default; none may appear because of us.
HOST_DIRS = ("/etc/containers/networks", "/run/containers", "/var/lib/containers", "/run/libpod")


# ---- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def podman():
    """podman and runc from `make deps`, or a failure saying to run it."""
    if PODMAN is None:
        pytest.fail("podman not found: run 'make deps' (Debian 12's podman 4.3.1)", pytrace=False)
    if RUNC is None:
        pytest.fail("runc not found: run 'make deps' (Debian 12's runc 1.1.5)", pytrace=False)
    out = util.run([PODMAN, "--version"]).stdout.split()
    version = out[2] if len(out) == 3 else "?"
    if not version[:1].isdigit() or int(version.split(".")[0]) < 4:
        pytest.fail(f"podman {version} is too old (need 4.x): run 'make deps'", pytrace=False)
    return PODMAN


class Podman:
    """podman with storage, run and tmp directories under a private
    directory, our CRIU given to runc (--runtime-flag criu=) and found on PATH
    by podman's own version check ("checkpoint/restore requires at least CRIU
    31100" otherwise); every command runs in a lab host's network namespace."""

    def __init__(self, criu):
        # A short path: conmon's attach socket lives under the run directory
        # (sun_path holds 108 bytes).
        self.dir = tempfile.mkdtemp(prefix="dp-pm-")
        self.criu = criu
        self.conf = os.path.join(self.dir, "containers.conf")
        with open(self.conf, "w") as f:
            f.write("[engine]\n"
                    'cgroup_manager = "cgroupfs"\n'
                    'events_logger = "none"\n'
                    f'tmp_dir = "{self.dir}/tmp"\n'
                    "[network]\n"
                    # netavark keeps its state in /run/containers/networks for
                    # root whatever the configuration; CNI, in network_config_dir
                    # (and with --network host, nowhere).
                    'network_backend = "cni"\n'
                    f'network_config_dir = "{self.dir}/net"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=self.conf,
                        PATH=f"{os.path.dirname(criu)}:{os.environ.get('PATH', '/usr/bin:/bin')}")

    def cmd(self, host, *args):
        """The podman command line for lab host `host` (its network namespace)."""
        base = [PODMAN, "--root", f"{self.dir}/root", "--runroot", f"{self.dir}/run",
                "--storage-driver", "vfs", "--runtime", RUNC, "--runtime-flag", f"criu={self.criu}"]
        return util.netns_cmd(host, [*base, *args])

    def run(self, host, *args, check=True, timeout=120):
        """Runs podman with our private configuration; raises with its output on failure."""
        return util.run(self.cmd(host, *args), check=check, timeout=timeout, env=self.env)

    def containers(self, host):
        """`podman ps -a` as a list of dicts (Names, State, Pid, ...)."""
        return json.loads(self.run(host, "ps", "-a", "--format", "json").stdout or "[]")

    def teardown(self):
        """Removes every container and image, then the private directory: a
        failed test leaves no container, mount or storage behind."""
        if os.path.isdir(f"{self.dir}/root"):
            self.run("dst", "rm", "-a", "-f", "-t", "0", check=False)
            self.run("dst", "rmi", "-a", "-f", check=False)
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if self.dir in line.split()[4]]
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        assert not mounts, f"podman left mounts behind: {mounts}"


@pytest.fixture
def pm(lab, podman, criu):
    """A private podman for the test, torn down after it; fails if podman left
    anything in the host's own podman directories."""
    before = {d for d in HOST_DIRS if os.path.exists(d)}
    p = Podman(criu)
    try:
        yield p
    finally:
        p.teardown()
    # The one file no option moves: containers/image's blob-info cache for
    # root (/var/lib/containers/cache), written by `podman import`. Removed if
    # this test made it.
    if "/var/lib/containers" not in before and os.path.isdir("/var/lib/containers"):
        found = sorted(os.path.relpath(os.path.join(d, f), "/var/lib/containers")
                       for d, _, fs in os.walk("/var/lib/containers") for f in fs)
        if found == ["cache/blob-info-cache-v1.boltdb"]:
            shutil.rmtree("/var/lib/containers")
    made = {d for d in HOST_DIRS if os.path.exists(d)} - before
    assert not made, f"podman wrote into the host's directories: {sorted(made)}"


# ---- helpers ----------------------------------------------------------------------

def image_tar(path):
    """A rootfs tarball of memwalk (/dp/memwalk) and the libraries it loads,
    each at the path the dynamic loader looks for it."""
    files = {util.MEMWALK: "dp/memwalk"}
    for line in util.run(["ldd", util.MEMWALK]).stdout.splitlines():
        parts = line.split()
        lib = parts[2] if "=>" in parts and len(parts) > 2 and parts[2].startswith("/") else parts[0]
        if lib.startswith("/"):
            files[os.path.realpath(lib)] = (parts[0] if parts[0].startswith("/") else lib).lstrip("/")
    with tarfile.open(path, "w") as tar:
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(tmp)
        for src, dst in files.items():
            tar.add(src, arcname=dst)
    return path


def memwalk_on(host, command="STAT", timeout=30):
    return util.memwalk_request(util.HOSTS[host], MEMWALK_PORT, command, host=host, timeout=timeout)


# ---- the recipe -------------------------------------------------------------------

@pytest.mark.time_limit(240)
def test_podman_restore_with_distriproc_as_lazy_pages_daemon(pm, procs, tmp_path):
    """The recipe of docs/containers.md, step by step, checked at each step."""
    pm.run("src", "import", "-q", image_tar(tmp_path / "image.tar"), IMAGE)
    conf = os.path.join(pm.dir, "dp-web.conf")  # on the source it does not exist

    # Root lacks CAP_SYS_RESOURCE here: podman's default rlimits (nofile and
    # nproc at 1048576) cannot be set, so the container gets lower ones.
    pm.run("src", "run", "-d", "--name", "web", "--network", "host", "--ulimit", "nofile=1024:1024",
           "--ulimit", "nproc=4096:4096", "--annotation", f"org.criu.config={conf}", IMAGE,
           "/dp/memwalk", "--mib", MIB, "--threads", "2", "--write-ratio", "0.3", "--seed", "5",
           "--port", MEMWALK_PORT)
    util.wait_until(lambda: memwalk_on("src")["writes"] > 20000, 60, "memwalk to do 20000 writes on src")

    export = tmp_path / "web.tar"
    pm.run("src", "container", "checkpoint", "--export", export, "--compress", "none", "web")
    assert pm.containers("src")[0]["State"] == "exited"
    exported = tmp_path / "export"
    with tarfile.open(export) as t:
        t.extractall(exported)
    images = exported / "checkpoint"
    assert not list(images.glob("netns-*.img")) and (images / "descriptors.json").exists()
    # CRIU writes the whole dump eager when a thread's stack pointer is page
    # aligned at the freeze (is_stack; docs/containers.md, podman): repaired here
    plan = json.loads(util.distriproc("images", "--images", images, "--mark-lazy", "--json").stdout)
    assert plan["skeleton"]["send_bytes"] < (MIB << 20) / 16, (
        f"the container's memory is not lazy (skeleton {plan['skeleton']['send_bytes']} bytes, "
        f"{plan['marked_lazy_bytes']} bytes marked lazy by --mark-lazy)")

    # Source: the page server over the checkpoint. Destination: our daemon.
    key = tmp_path / "key"
    util.distriproc("keygen", key)
    listen = util.serve_images(procs, images, key, SERVE_PORT)
    workdir = tmp_path / "lazy"
    daemon_log = open(tmp_path / "lazy-pages.log", "w")
    lp_proc = procs.spawn([util.DISTRIPROC, "lazy-pages", "--source", listen, "--key", key, "--workdir",
                           workdir, "--host", "dst", "--foreground", "--json"],
                          stdout=subprocess.PIPE, stderr=daemon_log)
    lp = json.loads(util.read_line(lp_proc.stdout, 60, "lazy-pages' JSON line"))
    procs.track(lp["daemon_pid"])
    skeleton = lp["images"]

    # The archive podman imports: the export with the skeleton (sparse: lazy
    # memory left out) as its checkpoint/.
    moved = tmp_path / "to-dst"
    shutil.copytree(exported, moved, ignore=lambda d, names: ["checkpoint"] if d == str(exported) else [])
    util.run(["cp", "-a", "--sparse=always", skeleton, moved / "checkpoint"])
    archive = tmp_path / "web-lazy.tar.gz"
    util.run(["tar", "-C", moved, "--format=pax", "--sparse", "-czf", archive, "."])
    assert os.path.getsize(archive) < (MIB << 20) / 16, os.path.getsize(archive)

    with open(conf, "w") as f:
        f.write(f"lazy-pages\nwork-dir {workdir}\n")
    pm.run("src", "rm", "web")  # the source host's copy is gone, as after a move
    pm.run("dst", "container", "restore", "--import", archive)

    # podman sees it running, in dst's network namespace; CRIU worked in our directory.
    (ct,) = pm.containers("dst")
    assert ct["Names"] == ["web"] and ct["State"] == "running", ct
    pid = procs.track(ct["Pid"])
    assert util.pid_netns_inode(pid) == util.netns_inode("dst")
    assert (workdir / "restore.log").exists()

    # Every page arrives intact, the written ones included; all from the page server.
    v = memwalk_on("dst", "VERIFY", timeout=90)
    assert v["verify_pages"] == MIB * 256 and v["verify_errors"] == 0 and v["errors"] == 0, v
    assert util.lazy_stats(workdir)["total"]["pages_fetched"] >= MIB * 256

    # podman rm -f ends it; the daemon exits 0 by itself; nothing is left.
    pm.run("dst", "rm", "-f", "-t", "0", "web")
    util.wait_gone(pid, timeout=20)
    assert lp_proc.wait(timeout=30) == 0, (tmp_path / "lazy-pages.log").read_text()[-3000:]
    final = json.loads((workdir / "stats-final.json").read_text())
    assert final["tasks_alive"] == 0 and final["total"]["fetch_errors"] == 0, final
    assert pm.containers("dst") == []
    assert not util.alive(lp["daemon_pid"])
