"""Real runc containers with their own rootfs (scripts/rootfs.sh) and a user
namespace, running services that drop privileges, migrated between the lab
hosts with `runc checkpoint` / `runc restore` through our CRIU.

The recipe (docs/containers.md, "User-namespaced containers and their
network"): container root is host uid USERNS_BASE (65536 ids, the rootfs is the
uid-shifted copy), so host root owns the user namespace and CRIU can read the
rlimits of tasks of any uid in it (root here lacks CAP_SYS_RESOURCE). The
container has a network namespace of its own, created with its user namespace;
`distriproc container-net hook`, a createRuntime hook in config.json, wires it
to the lab host: runc runs it at create and again at restore (runc always
tells CRIU to restore the network namespace empty). The container keeps its
address; the destination bundle names the destination host.

Parallel-safe: runc --root, bundles and data under each test's own
directories, container ids, veth names and addresses unique per test."""

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid

import pytest

import util

RUNC = shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin")
ROOTFS_SH = os.path.join(util.ROOT, "scripts", "rootfs.sh")
USERNS_BASE = 100000
USERNS_SIZE = 65536
PG_BIN = "/usr/lib/postgresql/15/bin"
PGDATA = "/var/lib/postgresql"
ROOTFS_EPOCH = 1700000000  # scripts/rootfs.sh's SOURCE_DATE_EPOCH: every time in the tree
# Every test's containers get their own /30 in 10.251.0.0/16: the lab host
# end is .1, the container .2 (lib/cnet's plan).
_subnets = iter(range(1, 250))


# ---- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rootfs():
    """The built rootfs (scripts/rootfs.sh --path): root/ and root-userns/."""
    cp = subprocess.run([ROOTFS_SH, "--path"], capture_output=True, text=True, timeout=30)
    if cp.returncode != 0:
        pytest.fail(f"the container rootfs is not built ({cp.stderr.strip()}): run 'make rootfs'",
                    pytrace=False)
    path = cp.stdout.strip()
    for tree in ("root", "root-userns"):
        if not os.path.isdir(os.path.join(path, tree)):
            pytest.fail(f"{path}/{tree} missing: rerun 'make rootfs'", pytrace=False)
    return path


@pytest.fixture(scope="module")
def runc():
    if RUNC is None:
        pytest.fail("runc not found: run 'make deps' (Debian 12's runc 1.1.5)", pytrace=False)
    cp = util.run([RUNC, "--version"])
    version = cp.stdout.split()[2] if cp.stdout.startswith("runc version") else "?"
    if tuple(int(x) for x in version.split("+")[0].split(".")[:2]) < (1, 1):
        pytest.fail(f"runc {version} is too old (need >= 1.1): run 'make deps'", pytrace=False)
    return RUNC


@pytest.fixture
def containers(lab, runc, criu, rootfs, tmp_path):
    c = Containers(tmp_path, runc, criu, rootfs)
    try:
        yield c
    finally:
        c.teardown()
    c.assert_rootfs_untouched()


# ---- the container harness -------------------------------------------------------

def ids_of(rootfs, user, group):
    """(uid, gid) of a user and group of the rootfs, as the container sees them."""
    uid = gid = None
    with open(os.path.join(rootfs, "root", "etc", "passwd")) as f:
        for line in f:
            p = line.split(":")
            if p[0] == user:
                uid = int(p[2])
    with open(os.path.join(rootfs, "root", "etc", "group")) as f:
        for line in f:
            p = line.split(":")
            if p[0] == group:
                gid = int(p[2])
    assert uid is not None and gid is not None, f"no {user}:{group} in the rootfs"
    return uid, gid


class Containers:
    """runc containers of one test: a runc --root per lab host, bundles and data
    in a directory the container's mapped root can traverse, every container
    killed and deleted at teardown."""

    def __init__(self, tmp_path, runc, criu, rootfs):
        self.tmp = tmp_path
        self.runc, self.criu, self.rootfs = runc, criu, rootfs
        self.roots = {h: str(tmp_path / f"runc-{h}") for h in util.HOSTS}
        # pytest's tmp_path is 0700 root: the container's root (host uid
        # USERNS_BASE) could not reach bind-mount sources there.
        self.share = tempfile.mkdtemp(prefix="dp-containers-")
        os.chmod(self.share, 0o711)
        self.tag = uuid.uuid4().hex[:6]

    def name(self, what):
        return f"{util.LAB}-{what}-{self.tag}"

    def dir(self, name, owner=None, mode=0o755):
        path = os.path.join(self.share, name)
        os.makedirs(path, exist_ok=True)
        if owner is not None:
            os.chown(path, USERNS_BASE + owner[0], USERNS_BASE + owner[1])
        os.chmod(path, mode)
        return path

    def address(self):
        """A fresh /30 for a container: its address and its lab host's end."""
        n = next(_subnets)
        return f"10.251.{n}.2/30", f"10.251.{n}.1"

    def bundle(self, cid, host, args, user, binds, addr, ifname):
        """BUNDLE/config.json from `distriproc bundle` for a user-namespaced
        container on lab host `host`: the shifted rootfs read-only, tmpfs on
        /run and /tmp, binds (SRC, DST, readonly), a new network namespace
        wired by the container-net hook (--net-hook). The process's stdio are
        moved onto a file of the container at once (a file of the host cannot
        be checkpointed: CRIU "Can't lookup mount")."""
        path = os.path.join(self.share, f"bundle-{cid}-{host}")
        maps = f"0:{USERNS_BASE}:{USERNS_SIZE}"
        cmd = [util.DISTRIPROC, "bundle", "--dir", path, "--rootfs", os.path.join(self.rootfs, "root-userns"),
               "--readonly-rootfs", "--tmpfs-tmp", "--tmpfs", "/run", "--uid-map", maps, "--gid-map", maps,
               "--user", f"{user[0]}:{user[1]}", "--hostname", cid, "--env", "LANG=C.UTF-8",
               "--net-hook", f"{host}:{ifname}:{addr}"]
        for src, dst, ro in binds:
            cmd += ["--bind", f"{src}:{dst}:{'ro' if ro else 'rw'}"]
        cmd += ["--", "/bin/sh", "-c", 'exec </dev/null >>/tmp/stdio.log 2>&1; exec "$@"', "sh", *args]
        util.run(cmd, env=dict(os.environ, DISTRIPROC_LAB=util.LAB))
        return path

    def runc_cmd(self, host, *args):
        return [self.runc, "--root", self.roots[host], *args]

    def _runc(self, host, *args, timeout=60, check=True, prefix=()):
        log = self.tmp / f"runc-{host}.log"
        with open(log, "a") as out:
            cp = subprocess.run([*prefix, *self.runc_cmd(host, *args)], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out, timeout=timeout)
        if check and cp.returncode != 0:
            with open(log) as f:
                tail = f.read()[-2000:]
            raise util.CommandError(f"runc {' '.join(map(str, args))} failed (exit {cp.returncode}):\n{tail}")
        return cp.returncode

    def run(self, host, cid, bundle):
        self._runc(host, "run", "-d", "--bundle", bundle, cid)
        return self.state(host, cid)["pid"]

    def state(self, host, cid):
        cp = util.run(self.runc_cmd(host, "state", cid))
        return json.loads(cp.stdout)

    def list(self, host):
        cp = util.run(self.runc_cmd(host, "list", "--format", "json"))
        return json.loads(cp.stdout or "null") or []

    def checkpoint(self, host, cid):
        images = str(self.tmp / f"images-{cid}")
        work = str(self.tmp / f"work-ckpt-{cid}")
        os.makedirs(images)
        os.makedirs(work)
        self._runc(host, "--criu", self.criu, "checkpoint", "--image-path", images, "--work-path", work, cid,
                   timeout=120)
        return images

    def restore(self, host, cid, bundle, images):
        work = str(self.tmp / f"work-restore-{cid}")
        os.makedirs(work)
        self._runc(host, "--criu", self.criu, "restore", "-d", "--image-path", images, "--work-path", work,
                   "--bundle", bundle, cid, timeout=120)
        return self.state(host, cid)["pid"]

    def checkpoint_dp(self, host, cid):
        """distriproc checkpoint --runc: runc checkpoint through our CRIU (from
        outside the container's own network namespace) plus the rootfs
        manifest the restore checks."""
        images = str(self.tmp / f"images-{cid}")
        out = util.distriproc("checkpoint", "--runc", cid, "--runc-root", self.roots[host], "--images", images,
                              "--json", timeout=120).stdout
        res = json.loads(out)
        assert res["runc_id"] == cid and res["tasks"] >= 1, res
        return images

    def serve(self, procs, images):
        key = str(self.tmp / "key")
        util.distriproc("keygen", key)
        listen = f"{util.HOSTS['src']}:7391"
        log = open(self.tmp / "serve.log", "w")
        procs.spawn(util.netns_cmd("src", [util.DISTRIPROC, "serve", "--images", images, "--listen", listen,
                                           "--key", key]), stdout=log, stderr=log)
        util.wait_until(lambda: "listening" in (self.tmp / "serve.log").read_text(), 30, "the page server")
        return listen, key

    def restore_dp(self, procs, host, cid, bundle, images, budget=None):
        """distriproc restore --runc-bundle: the skeleton, the rootfs check,
        runc restore --lazy-pages with DistriProc as the daemon (inside a
        uffd-window, for the user namespace). Returns (pid, daemon, workdir)."""
        listen, key = self.serve(procs, images)
        workdir = self.tmp / f"restore-{cid}"
        out = util.distriproc("restore", "--source", listen, "--key", key, "--workdir", workdir, "--host", host,
                              "--runc-bundle", bundle, "--runc-id", cid, "--runc-root", self.roots[host], "--json",
                              *(["--budget", budget, "--evict-batch", "32"] if budget else []), timeout=120).stdout
        res = json.loads(out)
        procs.track(res["daemon_pid"])
        assert res["runc_id"] == cid and res["pid"] == self.state(host, cid)["pid"], res
        return res["pid"], res["daemon_pid"], workdir

    def restore_lazy(self, procs, host, cid, bundle, images, budget=None):
        """The lazy recipe of docs/containers.md for the user's own runc
        restore: serve the images on src, DistriProc's lazy-pages
        daemon on `host` pulls the skeleton, then our own `runc restore
        --lazy-pages` (from the host's root network namespace, so that CRIU
        creates the container's new one and runc's hook wires it) inside a
        uffd-window. Returns (restored pid, daemon pid, workdir)."""
        listen, key = self.serve(procs, images)
        workdir = self.tmp / f"lazy-{cid}"
        out = util.distriproc("lazy-pages", "--source", listen, "--key", key, "--workdir", workdir, "--host", "dst",
                              "--json", *(["--budget", budget, "--evict-batch", "32"] if budget else [])).stdout
        lp = json.loads(out)
        daemon = procs.track(lp["daemon_pid"])
        # Tasks restored into the user namespace open their images themselves
        # (through CRIU's descriptor of the directory), as the container's root,
        # or, racing with the writing of the uid map (CRIU's root task reads
        # timens-0.img first), as the overflow uid: the directory must be
        # searchable by anyone. The workdir above it stays closed to others.
        os.chmod(workdir, 0o700)
        os.chmod(lp["images"], 0o711)
        self._runc(host, "--criu", self.criu, "restore", "--lazy-pages", "--work-path", workdir,
                   "--image-path", lp["images"], "--pid-file", workdir / "restored.pid", "--bundle", bundle,
                   "--detach", cid, timeout=120, prefix=(util.DISTRIPROC, "uffd-window", "--timeout", "110", "--"))
        return self.state(host, cid)["pid"], daemon, workdir

    def kill(self, host, cid):
        """runc kill KILL, wait for the init to go, runc delete."""
        pid = self.state(host, cid)["pid"]
        self._runc(host, "kill", cid, "KILL")
        util.wait_gone(pid, timeout=20)
        self._runc(host, "delete", "--force", cid, check=False)

    def assert_rootfs_untouched(self):
        """Containers share the cached tree (read-only for them); runc would
        still create a missing mount point in it, changing the cache."""
        top = os.path.join(self.rootfs, "root-userns")
        for d in (top, os.path.join(top, "var", "lib"), os.path.join(top, "srv")):
            assert os.lstat(d).st_mtime == ROOTFS_EPOCH, f"{d} was modified: a mount point created in the rootfs?"

    def teardown(self):
        for host in self.roots:
            if not os.path.isdir(self.roots[host]):
                continue
            for c in self.list(host):
                self._runc(host, "kill", c["id"], "KILL", check=False)
                self._runc(host, "delete", "--force", c["id"], check=False)
        shutil.rmtree(self.share, ignore_errors=True)


def in_host(host, cmd, timeout=30, check=True):
    return util.run(util.netns_cmd(host, cmd), timeout=timeout, check=check)


def psql(c, host, addr, sql, timeout=30):
    """psql of the rootfs (chroot), connecting over the lab host's veth."""
    cp = in_host(host, ["chroot", os.path.join(c.rootfs, "root"), "psql", "-h", addr, "-U", "postgres",
                        "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql], timeout=timeout)
    return cp.stdout.strip()


def pgrep(pattern):
    cp = util.run(["pgrep", "-f", pattern], check=False)
    return sorted(int(p) for p in cp.stdout.split())


def host_uids(pid):
    """Real uid and gid of pid as the host sees them."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def children(pid):
    cp = util.run(["pgrep", "-P", str(pid)], check=False)
    return sorted(int(p) for p in cp.stdout.split())


def host_link_exists(host, ifname):
    return in_host(host, ["ip", "link", "show", ifname], check=False).returncode == 0


def assert_nothing_left(c, cid, marker, ifname, pids):
    """After runc kill: runc lists nothing, every process of the container
    (pids, and any matching marker) is gone, and so are both veth ends."""
    for pid in pids:
        util.wait_gone(pid, timeout=20)
    for host in util.HOSTS:
        assert not [x for x in c.list(host) if x["id"] == cid], f"runc ({host}) still lists {cid}"
    util.wait_until(lambda: not pgrep(marker), 20, f"no process matching {marker!r}")
    util.wait_until(lambda: not any(host_link_exists(h, ifname) for h in util.HOSTS), 20,
                    f"veth {ifname} gone from both lab hosts")


# ---- PostgreSQL: postmaster and background workers as uid postgres ---------------

PG_DIGEST = "select count(*) || ':' || md5(string_agg(id || ':' || v, ',' order by id)) from t"


@pytest.mark.parametrize("mode", ["full", "lazy", "lazy-budget", "recipe"])
@pytest.mark.time_limit(240)
def test_postgres_userns_migrates_between_lab_hosts(containers, procs, mode):
    """full: plain runc checkpoint and restore of the whole checkpoint.
    lazy: distriproc checkpoint --runc, serve, restore --runc-bundle: every
    page served on first touch (lazy-budget: with --budget 1M, well below the
    ~3 MiB PostgreSQL touches here, so the daemon evicts: ptrace and syscall
    injection into tasks of the user namespace). recipe: the user's own runc
    restore with DistriProc's lazy-pages daemon (docs/containers.md)."""
    c = containers
    cid = c.name("pg")
    pg = ids_of(c.rootfs, "postgres", "postgres")
    data = c.dir("pgdata", owner=pg, mode=0o700)
    addr, _host_end = c.address()
    ip = addr.split("/")[0]
    ifname = f"{util.LAB[:4]}p{c.tag}"
    # cluster_name puts the container id into every PostgreSQL process title.
    # The data directory is a bind mount onto postgres's home, a directory the
    # rootfs has: runc creates a missing mount point inside the (shared) tree.
    start = (f"test -f {PGDATA}/PG_VERSION || {{ {PG_BIN}/initdb -D {PGDATA} -U postgres --auth=trust -E UTF8 "
             f"--locale=C.UTF-8 >/tmp/initdb.log 2>&1 && echo 'host all all 0.0.0.0/0 trust' >> {PGDATA}/pg_hba.conf; "
             f"}} && exec {PG_BIN}/postgres -D {PGDATA} -c listen_addresses=* -c unix_socket_directories=/tmp "
             f"-c shared_buffers=32MB -c cluster_name={cid}")
    args = ["/bin/sh", "-c", start]
    src_bundle = c.bundle(cid, "src", args, pg, [(data, PGDATA, False)], addr, ifname)
    dst_bundle = c.bundle(cid, "dst", args, pg, [(data, PGDATA, False)], addr, ifname)

    init = c.run("src", cid, src_bundle)
    util.wait_until(lambda: psql(c, "src", ip, "select 1") == "1", 90, "PostgreSQL to accept connections on src")
    # Non-root inside a user namespace: every PostgreSQL process is the
    # container's postgres, host uid USERNS_BASE + its uid; background workers run.
    tree = pgrep(f"(cluster_name=|postgres: ){cid}")
    assert init in tree and len(tree) >= 5, f"postmaster + background workers expected, got {tree}"
    for p in tree:
        assert host_uids(p) == (USERNS_BASE + pg[0], USERNS_BASE + pg[1]), f"pid {p}: {host_uids(p)}"
    with open(f"/proc/{init}/uid_map") as f:
        assert f.read().split() == ["0", str(USERNS_BASE), str(USERNS_SIZE)]

    psql(c, "src", ip, "create table t (id serial primary key, v text); "
                       "insert into t (v) select md5(i::text) from generate_series(1, 20000) i")
    before = psql(c, "src", ip, PG_DIGEST)
    assert before.startswith("20000:")

    images = c.checkpoint("src", cid) if mode in ("full", "recipe") else c.checkpoint_dp("src", cid)
    assert not c.list("src"), "the checkpoint leaves the container stopped and gone on src"
    util.wait_gone(init, timeout=20)
    # the kernel tears a netns (and its veth) down from a workqueue after its
    # last task is gone: wait for it rather than assume it is done already
    util.wait_until(lambda: not host_link_exists("src", ifname), 20, "the src veth to go with the container's netns")

    if mode == "full":
        rinit = c.restore("dst", cid, dst_bundle, images)
    elif mode == "recipe":
        rinit, daemon, workdir = c.restore_lazy(procs, "dst", cid, dst_bundle, images)
    else:
        rinit, daemon, workdir = c.restore_dp(procs, "dst", cid, dst_bundle, images,
                                              budget="1M" if mode == "lazy-budget" else None)
    if mode != "full":
        with open(workdir / "restored.pid") as f:
            assert int(f.read()) == rinit
    with open("/proc/sys/vm/unprivileged_userfaultfd") as f:
        assert f.read().strip() == "0" or mode == "full", "uffd-window put the sysctl back"
    listed = [x for x in c.list("dst") if x["id"] == cid]
    assert listed and listed[0]["status"] == "running" and listed[0]["pid"] == rinit, listed
    # The hook wired the restored container's (new, empty) netns on dst.
    assert host_link_exists("dst", ifname) and not host_link_exists("src", ifname)
    restored = sorted({rinit, *children(rinit)})
    assert len(restored) >= 5, f"postmaster + background workers restored: {restored}"
    # The process titles carry cluster_name (the container id). Lazily
    # restored, they live in argument pages that the daemon fetches once the
    # restore has finished and never evicts (docs/budget.md), so pgrep -f
    # sees them shortly after restore returns, under --budget too.
    util.wait_until(lambda: set(pgrep(f"(cluster_name=|postgres: ){cid}")) >= set(restored), 20,
                    "pgrep -f to see the restored tree")
    for p in restored:
        assert host_uids(p) == (USERNS_BASE + pg[0], USERNS_BASE + pg[1])

    assert psql(c, "dst", ip, PG_DIGEST) == before, "table digest differs after the migration"
    # New backends forked after the restore: inserts over new connections.
    for i in range(3):
        psql(c, "dst", ip, f"insert into t (v) values ('after-{i}')")
    assert psql(c, "dst", ip, "select count(*) from t") == "20003"
    assert psql(c, "dst", ip, "select string_agg(v, ',' order by id) from t where id > 20000") == \
        "after-0,after-1,after-2"
    if mode != "full":
        st = util.lazy_stats(workdir)
        assert st["total"]["pages_fetched"] > 0 and st["total"]["fetch_errors"] == 0, st["total"]
        # Each new connection is a backend forked by the restored postmaster:
        # the kernel gives it its own userfaultfd (no window needed for that).
        assert st["total"]["events"]["fork"] >= 4, st["total"]["events"]
        if mode == "lazy-budget":
            b = st["budget"]
            assert b["budget_bytes"] == 1 << 20 and b["evictions"] > 0 and b["writeback_errors"] == 0, (b, st["total"])
            # A backend forked after the restore counts against the budget:
            # while one lives, the daemon places it (finds its process) and
            # evicts its pages like the restored tasks' (issue 10, item 4).
            slow = subprocess.Popen(util.netns_cmd("dst", [
                "chroot", os.path.join(c.rootfs, "root"), "psql", "-h", ip, "-U", "postgres", "-X", "-q", "-t",
                "-A", "-c", "select count(*) from t, generate_series(1, 40) where pg_sleep(0) is not null"]),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                util.wait_until(lambda: util.lazy_stats(workdir)["budget"]["children_placed"] >= 1, 60,
                                "the daemon to place a backend forked after the restore")
            finally:
                out, err = slow.communicate(timeout=120)
            assert slow.returncode == 0 and out.strip() == "800120", (out, err)
            st = util.lazy_stats(workdir)
            placed = [t for t in st["tasks"] if t["pid"] == 0 and t["host_pid"] > 0]
            assert placed and st["budget"]["writeback_errors"] == 0, st["budget"]

    c.kill("dst", cid)
    assert_nothing_left(c, cid, f"(cluster_name=|postgres: ){cid}", ifname, restored)
    if mode != "full":
        util.wait_gone(daemon, timeout=30)
        with open(workdir / "stats-final.json") as f:
            final = json.load(f)
        assert final["tasks_alive"] == 0 and final["total"]["fetch_errors"] == 0, final


# ---- NGINX: master as container root, workers as www-data ------------------------

NGINX_CONF = """user www-data;
worker_processes 2;
pid /run/nginx.pid;
error_log /tmp/nginx-error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path /tmp/body; proxy_temp_path /tmp/proxy; fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi; scgi_temp_path /tmp/scgi;
  server {{ listen 80; root /srv/html; }}
}}
"""


def fetch(host, ip, name, out):
    in_host(host, ["curl", "-sf", "--max-time", "20", "-o", out, f"http://{ip}/{name}"])
    with open(out, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("mode", ["full", "migrate", "migrate-budget"])
@pytest.mark.time_limit(180)
def test_nginx_userns_www_data_workers_serve_identical_files(containers, procs, tmp_path, mode):
    """full: plain runc checkpoint and restore. migrate: distriproc migrate
    --runc (checkpoint, serve, lazy restore on dst, probe) and migrate --stop;
    migrate-budget: the same under --budget 128K (NGINX touches ~350 KiB of lazy memory here), the www-data workers'
    pages evicted too."""
    c = containers
    cid = c.name("ngx")
    www = ids_of(c.rootfs, "www-data", "www-data")
    srv = c.dir("srv")
    os.makedirs(os.path.join(srv, "html"))
    conf = f"nginx-{cid}.conf"
    with open(os.path.join(srv, conf), "w") as f:
        f.write(NGINX_CONF.format())
    files = {}
    for name, size in (("small.txt", 1000), ("mid.bin", 300 * 1024), ("big.bin", 3 * 1024 * 1024 + 17)):
        data = os.urandom(size)
        with open(os.path.join(srv, "html", name), "wb") as f:
            f.write(data)
        files[name] = hashlib.sha256(data).hexdigest()
    addr, _ = c.address()
    ip = addr.split("/")[0]
    ifname = f"{util.LAB[:4]}n{c.tag}"
    args = ["nginx", "-c", f"/srv/{conf}", "-g", "daemon off;"]
    marker = f"nginx -c /srv/{conf}"
    binds = [(srv, "/srv", True)]
    src_bundle = c.bundle(cid, "src", args, (0, 0), binds, addr, ifname)
    dst_bundle = c.bundle(cid, "dst", args, (0, 0), binds, addr, ifname)

    init = c.run("src", cid, src_bundle)
    util.wait_until(lambda: fetch("src", ip, "small.txt", str(tmp_path / "probe")) == files["small.txt"], 30,
                    "NGINX to serve on src")
    workers = children(init)
    assert len(workers) == 2, f"two workers expected: {workers}"
    assert host_uids(init) == (USERNS_BASE, USERNS_BASE)
    for w in workers:
        assert host_uids(w) == (USERNS_BASE + www[0], USERNS_BASE + www[1]), f"worker {w}: {host_uids(w)}"
    for name, digest in files.items():
        assert fetch("src", ip, name, str(tmp_path / f"before-{name}")) == digest

    if mode == "full":
        images = c.checkpoint("src", cid)
        util.wait_gone(init, timeout=20)
        rinit = c.restore("dst", cid, dst_bundle, images)
    else:
        # One runc --root for both lab hosts: migrate runs runc on both.
        mig = tmp_path / "mig"
        probe = f"curl -sf --max-time 5 -o /dev/null http://{ip}/small.txt"
        res = json.loads(util.distriproc("migrate", "--runc", cid, "--runc-root", c.roots["src"], "--runc-bundle",
                                         dst_bundle, "--workdir", mig, "--port", "7392", "--probe", probe,
                                         *(["--budget", "128K"] if mode == "migrate-budget" else []),
                                         "--json", timeout=200).stdout)
        for k in ("pid", "daemon_pid", "server_pid"):
            procs.track(res[k])
        assert res["runc_id"] == cid and res["probe_attempts"] >= 1 and res["ttfr_from_restore_s"] > 0, res
        c.roots["dst"] = c.roots["src"]
        rinit, daemon, workdir = res["pid"], res["daemon_pid"], mig / "dst"
        util.wait_gone(init, timeout=20)
    assert [x["status"] for x in c.list("dst") if x["id"] == cid] == ["running"]
    rworkers = children(rinit)
    assert len(rworkers) == 2
    for w in rworkers:
        assert host_uids(w) == (USERNS_BASE + www[0], USERNS_BASE + www[1])
    # The master's title keeps its command line; lazily restored, its argument
    # pages are fetched once the restore has finished (see the PostgreSQL test).
    util.wait_until(lambda: pgrep(marker) == [rinit], 20, "pgrep -f to find the restored master")
    assert set(util.run(["pgrep", "-x", "nginx"]).stdout.split()) >= {str(p) for p in [rinit, *rworkers]}
    # Byte-identical, several times (each request may land on either worker).
    for _ in range(3):
        for name, digest in files.items():
            assert fetch("dst", ip, name, str(tmp_path / f"after-{name}")) == digest

    if mode == "full":
        c.kill("dst", cid)
    else:
        st = util.lazy_stats(workdir)
        assert st["total"]["pages_fetched"] > 0 and st["total"]["fetch_errors"] == 0, st["total"]
        if mode == "migrate-budget":
            b = st["budget"]
            assert b["budget_bytes"] == 128 << 10 and b["evictions"] > 0 and b["writeback_errors"] == 0, (b, st["total"])
            evicted = {t["host_pid"] for t in st["tasks"] if t["evictions"] > 0}
            assert evicted & set(rworkers), f"no www-data worker evicted: {st['tasks']}"
        util.distriproc("migrate", "--stop", "--workdir", mig, timeout=60)
        for k in ("pid", "daemon_pid", "server_pid"):
            assert not util.alive(res[k]), f"{k} {res[k]} alive after migrate --stop"
    assert_nothing_left(c, cid, marker, ifname, [rinit, *rworkers])


# ---- Redis as a non-root user ----------------------------------------------------

@pytest.mark.time_limit(120)
def test_redis_userns_non_root_keeps_its_data(containers, procs):
    """Redis as uid redis, migrated lazily with checkpoint --runc and restore
    --runc-bundle."""
    c = containers
    cid = c.name("rds")
    redis = ids_of(c.rootfs, "redis", "redis")
    addr, _ = c.address()
    ip = addr.split("/")[0]
    ifname = f"{util.LAB[:4]}r{c.tag}"
    args = ["redis-server", "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "",
            "--appendonly", "no", "--dir", "/tmp", "--logfile", "/tmp/redis.log", "--unixsocket", f"/tmp/{cid}.sock"]
    src_bundle = c.bundle(cid, "src", args, redis, [], addr, ifname)
    dst_bundle = c.bundle(cid, "dst", args, redis, [], addr, ifname)

    def cli(host, *cmd):
        return in_host(host, ["redis-cli", "-h", ip, *cmd]).stdout.strip()

    init = c.run("src", cid, src_bundle)
    util.wait_until(lambda: cli("src", "ping") == "PONG", 30, "Redis on src")
    assert host_uids(init) == (USERNS_BASE + redis[0], USERNS_BASE + redis[1])
    value = os.urandom(16 * 1024).hex()
    cli("src", "set", "big", value)
    for i in (0, 25, 50, 75):
        cli("src", "set", f"k{i}", str(i * i))
    cli("src", "debug", "populate", "20000", "pop", "64")
    dbsize = cli("src", "dbsize")

    images = c.checkpoint_dp("src", cid)
    util.wait_gone(init, timeout=20)
    rinit, daemon, _workdir = c.restore_dp(procs, "dst", cid, dst_bundle, images)
    assert host_uids(rinit) == (USERNS_BASE + redis[0], USERNS_BASE + redis[1])
    # Lazily restored: its title (argument pages) is fetched once the restore
    # has finished (see the PostgreSQL test).
    util.wait_until(lambda: rinit in pgrep("^redis-server "), 20, "pgrep -f to find the restored redis-server")
    assert cli("dst", "get", "big") == value
    assert cli("dst", "dbsize") == dbsize
    assert cli("dst", "get", "k50") == "2500"
    assert cli("dst", "set", "after", "1") == "OK"

    c.kill("dst", cid)
    assert_nothing_left(c, cid, f"/tmp/{cid}.sock", ifname, [rinit])
    util.wait_gone(daemon, timeout=30)


# ---- bad input -------------------------------------------------------------------

@pytest.mark.time_limit(120)
def test_hook_failure_stops_the_container_and_leaves_nothing(containers):
    """A hook that cannot wire the network (its veth name is taken on the lab
    host) makes `runc run` fail: no container, no process, no new link."""
    c = containers
    cid = c.name("bad")
    addr, _ = c.address()
    taken = f"{util.LAB[:4]}x{c.tag}"
    in_host("src", ["ip", "link", "add", taken, "type", "veth", "peer", "name", taken + "p"])
    bundle = c.bundle(cid, "src", ["sleep", "600"], (0, 0), [], addr, taken)
    rc = c._runc("src", "run", "-d", "--bundle", bundle, cid, check=False)
    assert rc != 0
    with open(c.tmp / "runc-src.log") as f:
        log = f.read()
    assert "cannot create veth" in log and "File exists" in log, log
    assert not [x for x in c.list("src") if x["id"] == cid and x["status"] != "stopped"]
    c._runc("src", "delete", "--force", cid, check=False)
    assert not [x for x in c.list("src") if x["id"] == cid]
    assert not pgrep(f"sleep 600.*{cid}")
    out = in_host("src", ["ip", "-o", "link", "show"]).stdout
    assert [ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines()].count(taken) == 1


@pytest.mark.time_limit(60)
def test_hook_refuses_bad_state_and_shared_netns(lab):
    def hook(state, *extra):
        args = [util.DISTRIPROC, "container-net", "hook", "--host", "src", "--ifname", "dpbadhook",
                "--addr", "10.251.250.2/30", *extra]
        env = dict(os.environ, DISTRIPROC_LAB=util.LAB)
        return util.run(args, input=state, env=env, check=False)

    cp = hook("not json")
    assert cp.returncode == 1 and "not JSON" in cp.stderr and "createRuntime hook" in cp.stderr
    cp = hook('{"ociVersion": "1.0.2", "status": "creating"}')
    assert cp.returncode == 1 and "\"pid\"" in cp.stderr
    # This very process shares the host's network namespace: never wired.
    cp = hook(json.dumps({"ociVersion": "1.0.2", "pid": os.getpid()}))
    assert cp.returncode == 1 and "shares the network namespace runc runs in" in cp.stderr
    cp = hook("{}", "--addr", "10.251.250.0/30")
    assert cp.returncode == 2 and "network address" in cp.stderr
    assert not host_link_exists("src", "dpbadhook")


UFFD_SYSCTL = "/proc/sys/vm/unprivileged_userfaultfd"
UFFD_LOCK = "/run/distriproc-uffd-window.lock"


def settled_uffd_sysctl():
    """(sysctl value, lock file record) while no window is open: under the
    windows' own lock, so that a window of a test running in parallel (with
    the sysctl legitimately at 1) is waited for, not seen."""
    fd = os.open(UFFD_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(UFFD_SYSCTL) as f:
            value = f.read().strip()
        return value, os.pread(fd, 16, 0).decode()
    finally:
        os.close(fd)


@pytest.mark.time_limit(60)
def test_uffd_window_sets_and_restores_the_sysctl(procs):
    """uffd-window: 1 while the command runs, the old value after, whatever
    way the command ends (status, missing program, killed at --timeout), and
    after a window whose process was killed."""
    before, _ = settled_uffd_sysctl()
    cp = util.distriproc("uffd-window", "--", "sh", "-c", f"cat {UFFD_SYSCTL}; exit 7", check=False)
    assert cp.returncode == 7 and cp.stdout.strip() == "1", (cp.returncode, cp.stdout)
    assert settled_uffd_sysctl()[0] == before
    cp = util.distriproc("uffd-window", "--", "/nonexistent/program", check=False)
    assert cp.returncode == 127 and "cannot run" in cp.stderr and settled_uffd_sysctl()[0] == before
    cp = util.distriproc("uffd-window", "--timeout", "1", "--", "sleep", "30", check=False)
    assert cp.returncode == 128 + 9 and "longer than 1 s" in cp.stderr and settled_uffd_sysctl()[0] == before
    for bad in (["--timeout", "0", "--", "true"], ["true"], []):
        cp = util.distriproc("uffd-window", *bad, check=False)
        assert cp.returncode == 2, (bad, cp.stderr)
    if before != "0":
        return
    # A window whose process is killed leaves 1 behind and "open 0" in the
    # lock file; the next window notices and puts 0 back.
    p = procs.spawn([util.DISTRIPROC, "uffd-window", "--", "sh", "-c", "echo open; exec sleep 30"],
                    stdout=subprocess.PIPE)
    assert util.read_line(p.stdout, 10, "the window to open").strip() == "open"
    os.killpg(p.pid, signal.SIGKILL)  # the window's process and its command
    p.wait(timeout=10)
    value, record = settled_uffd_sysctl()
    # (a window of a parallel test may have repaired it already)
    assert (value, record) in (("1", "open 0\n"), ("0", "closed\n")), (value, record)
    cp = util.distriproc("uffd-window", "--", "true", check=False)
    assert cp.returncode == 0 and settled_uffd_sysctl() == ("0", "closed\n"), cp.stderr
    assert record == "closed\n" or "did not close" in cp.stderr, cp.stderr
