#!/usr/bin/python3
"""The runc-container harness of `distriproc bench nginx` and `bench pg-ttfr`
(scripts/bench_nginx.py, scripts/bench_pg_ttfr.py): user-namespaced runc
containers on the real rootfs (scripts/rootfs.sh), wired to a lab host by the
container-net hook, checkpointed with runc through our CRIU and restored
either in full (`runc restore`) or lazily with DistriProc's lazy-pages daemon
(`distriproc lazy-pages` + `runc restore --lazy-pages` in a uffd-window): the
recipe of docs/containers.md and tests/integration/test_containers.py.

Also a PostgreSQL probe (`probe-pg`), run as its own process inside a lab
host's network namespace: it speaks the wire protocol's simple query itself
(no psql start-up per attempt), so every system is probed at the same cadence.
"""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CRIU = os.path.join(ROOT, ".deps", "bin", "criu")
ROOTFS_SH = os.path.join(ROOT, "scripts", "rootfs.sh")
RUNC = shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin")
LAB_ADDR = {"src": "10.250.0.1", "dst": "10.250.0.2"}
USERNS_BASE = 100000
USERNS_SIZE = 65536
PY = "/usr/bin/python3"


def log(msg):
    """Progress on stderr, timestamped: stdout of the scripts is the result."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine():
    """What the JSON records about the machine (it is shared: load included)."""
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"uname": " ".join(os.uname()), "cpus": os.cpu_count(), "loadavg_at_start": load}


def stats3(xs):
    """median/min/max of a non-empty list."""
    s = sorted(xs)
    n = len(s)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"median": round(med, 6), "min": round(s[0], 6), "max": round(s[-1], 6)}


# ---- the lab and its containers ---------------------------------------------------

class Lab:
    """One benchmark's lab (LAB-src, LAB-dst) and its runc containers: a runc
    --root per lab host under the workdir, every container killed and deleted
    at close()."""

    def __init__(self, distriproc, lab, workdir):
        """Checks what every run needs (runc, our CRIU, the rootfs) before anything starts."""
        self.distriproc, self.lab, self.workdir = distriproc, lab, workdir
        self.env = dict(os.environ, DISTRIPROC_LAB=lab)
        self.procs = []
        if RUNC is None:
            raise RuntimeError("runc not found: run 'make deps' (Debian 12's runc 1.1.5)")
        if not os.access(CRIU, os.X_OK):
            raise RuntimeError(f"{CRIU} missing: run 'make deps'")
        cp = subprocess.run([ROOTFS_SH, "--path"], capture_output=True, text=True, timeout=30)
        if cp.returncode != 0:
            raise RuntimeError(f"the container rootfs is not built ({cp.stderr.strip()}): run 'make rootfs'")
        self.rootfs = os.path.realpath(cp.stdout.strip())  # runc refuses a rootfs behind a symlink
        # The container's root (host uid USERNS_BASE) must traverse to its
        # bind-mount sources: the workdir is 0711 (and holds no secret but the
        # page server's key, which is 0600).
        os.makedirs(workdir, exist_ok=True)
        os.chmod(workdir, 0o711)
        parent = os.path.dirname(workdir)
        while parent != "/":
            if not os.stat(parent).st_mode & 0o001:
                raise RuntimeError(f"{parent} is not searchable by others (mode {os.stat(parent).st_mode & 0o777:o}): "
                                   f"the container's root (host uid {USERNS_BASE}) must reach its images and "
                                   "bind mounts under the workdir; chmod o+x it or pick another --workdir")
            parent = os.path.dirname(parent)
        self.roots = {h: os.path.join(workdir, f"runc-{h}") for h in LAB_ADDR}

    def ns(self, host, cmd):
        """CMD in lab host HOST's network namespace (nsenter: no mount namespace, as runc needs)."""
        return ["nsenter", f"--net=/run/netns/{self.lab}-{host}", *[str(c) for c in cmd]]

    def run(self, cmd, timeout=300, check=True, **kw):
        """Runs to completion; a failure raises with the command's last stderr, for the one-line error."""
        cp = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=self.env,
                            stdin=subprocess.DEVNULL, **kw)
        if check and cp.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({cp.returncode}): {cp.stderr.strip()[-2000:]}")
        return cp

    def dp(self, *args, timeout=300, check=True):
        """This checkout's distriproc, in this benchmark's lab."""
        return self.run([self.distriproc, *args], timeout=timeout, check=check)

    def spawn(self, cmd, log_path, **kw):
        """A long-lived process, logged to a file and killed at close()."""
        f = open(log_path, "w")
        p = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=self.env, **kw)
        self.procs.append(p)
        return p

    def up(self, bandwidth):
        """A fresh lab with the link cap: nothing left from an earlier run."""
        self.dp("lab", "down", timeout=120, check=False)
        self.dp("lab", "up", *(["--bandwidth", bandwidth] if bandwidth != "none" else []), timeout=120)

    def ids_of(self, user):
        """(uid, gid) of a user of the rootfs, as the container sees them."""
        with open(os.path.join(self.rootfs, "root", "etc", "passwd")) as f:
            for line in f:
                p = line.split(":")
                if p[0] == user:
                    return int(p[2]), int(p[3])
        raise RuntimeError(f"no user {user} in the rootfs {self.rootfs}")

    def dir(self, name, owner=None, mode=0o755):
        """A directory under the workdir, owned by a container user (host uid shifted by the mapping)."""
        path = os.path.join(self.workdir, name)
        os.makedirs(path, exist_ok=True)
        if owner is not None:
            os.chown(path, USERNS_BASE + owner[0], USERNS_BASE + owner[1])
        os.chmod(path, mode)
        return path

    def bundle(self, cid, host, args, user, binds, addr, ifname):
        """A user-namespaced bundle on the shifted rootfs (read-only, tmpfs on
        /run and /tmp), wired to lab host `host` by the container-net hook; the
        command's stdio moved onto a file of the container first."""
        path = os.path.join(self.workdir, f"bundle-{cid}-{host}")
        shutil.rmtree(path, ignore_errors=True)
        maps = f"0:{USERNS_BASE}:{USERNS_SIZE}"
        cmd = [self.distriproc, "bundle", "--dir", path, "--rootfs", os.path.join(self.rootfs, "root-userns"),
               "--readonly-rootfs", "--tmpfs-tmp", "--tmpfs", "/run", "--uid-map", maps, "--gid-map", maps,
               "--user", f"{user[0]}:{user[1]}", "--hostname", cid, "--env", "LANG=C.UTF-8",
               "--net-hook", f"{host}:{ifname}:{addr}"]
        for src, dst, ro in binds:
            cmd += ["--bind", f"{src}:{dst}:{'ro' if ro else 'rw'}"]
        cmd += ["--", "/bin/sh", "-c", 'exec </dev/null >>/tmp/stdio.log 2>&1; exec "$@"', "sh", *args]
        self.run(cmd)
        return path

    def runc(self, host, *args, timeout=120, check=True, prefix=()):
        """runc with this host's --root; its output appended to runc-HOST.log (quoted on failure)."""
        cmd = [*prefix, RUNC, "--root", self.roots[host], *args]
        with open(os.path.join(self.workdir, f"runc-{host}.log"), "a") as out:
            cp = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                timeout=timeout, env=self.env)
        if check and cp.returncode != 0:
            with open(os.path.join(self.workdir, f"runc-{host}.log")) as f:
                tail = f.read()[-2000:]
            raise RuntimeError(f"runc {' '.join(map(str, args))} failed (exit {cp.returncode}):\n{tail}")
        return cp.returncode

    def state(self, host, cid):
        """runc state as JSON (pid of the container's init)."""
        cp = self.run([RUNC, "--root", self.roots[host], "state", cid])
        return json.loads(cp.stdout)

    def list(self, host):
        """The containers runc knows on a host (none when its root was never made)."""
        if not os.path.isdir(self.roots[host]):
            return []
        cp = self.run([RUNC, "--root", self.roots[host], "list", "--format", "json"], check=False)
        return json.loads(cp.stdout or "null") or []

    def start(self, host, cid, bundle):
        """runc run -d; returns the init's host pid."""
        self.runc(host, "run", "-d", "--bundle", bundle, cid)
        return self.state(host, cid)["pid"]

    def checkpoint(self, host, cid, images, leave_running=False):
        """runc checkpoint through our CRIU, from the host's network namespace
        (so the container's own one is part of the dump and the restore makes
        a new one for the hook). Returns the seconds it took."""
        shutil.rmtree(images, ignore_errors=True)
        os.makedirs(images)
        work = images + "-work"
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        t0 = time.monotonic()
        self.runc(host, "--criu", CRIU, "checkpoint", *(["--leave-running"] if leave_running else []),
                  "--image-path", images, "--work-path", work, cid)
        return time.monotonic() - t0

    def restore_full(self, host, cid, bundle, images):
        """runc restore of complete images (the full-migration system)."""
        work = images + "-restore-work"
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        self.runc(host, "--criu", CRIU, "restore", "-d", "--image-path", images, "--work-path", work,
                  "--bundle", bundle, cid)
        return self.state(host, cid)["pid"]

    def serve(self, images, key, port, tag):
        """DistriProc's page server on src for `images` (its write-back overlay
        of an earlier restore removed: every restore starts from the checkpoint)."""
        overlay = os.path.join(images, "distriproc-overlay.log")
        if os.path.exists(overlay):
            os.unlink(overlay)
        listen = f"{LAB_ADDR['src']}:{port}"
        logp = os.path.join(self.workdir, f"serve-{tag}.log")
        p = self.spawn(self.ns("src", [self.distriproc, "serve", "--images", images, "--listen", listen,
                                       "--key", key]), logp)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            with open(logp) as f:
                if "listening" in f.read():
                    return p, listen
            if p.poll() is not None:
                break
            time.sleep(0.02)
        with open(logp) as f:
            raise RuntimeError(f"the page server did not start: {f.read()[-1000:]}")

    def restore_lazy(self, host, cid, bundle, listen, key, workdir, budget=None, prefetch="none"):
        """DistriProc's lazy-pages daemon on `host` (skeleton pulled from the
        page server), then runc restore --lazy-pages in a uffd-window. Returns
        (restored init pid, daemon pid, seconds of the skeleton pull + daemon
        start, seconds of runc restore)."""
        shutil.rmtree(workdir, ignore_errors=True)
        t0 = time.monotonic()
        out = self.dp("lazy-pages", "--source", listen, "--key", key, "--workdir", workdir, "--host", host,
                      "--json", "--prefetch", prefetch, *(["--budget", budget] if budget else [])).stdout
        lp = json.loads(out)
        t1 = time.monotonic()
        # Restored tasks open their images as the container's root (or, before
        # its uid map exists, as the overflow uid): the images dir must be
        # searchable by anyone; the workdir above it stays closed.
        os.chmod(workdir, 0o700)
        os.chmod(lp["images"], 0o711)
        self.runc(host, "--criu", CRIU, "restore", "--lazy-pages", "--work-path", workdir, "--image-path",
                  lp["images"], "--pid-file", os.path.join(workdir, "restored.pid"), "--bundle", bundle,
                  "--detach", cid, prefix=(self.distriproc, "uffd-window", "--timeout", "110", "--"))
        t2 = time.monotonic()
        return self.state(host, cid)["pid"], lp["daemon_pid"], t1 - t0, t2 - t1

    def checkpoint_dp(self, host, cid, images):
        """distriproc checkpoint --runc (runc checkpoint through our CRIU, plus
        the rootfs manifest the restore checks, taken before the freeze).
        Returns the seconds of the whole command."""
        shutil.rmtree(images, ignore_errors=True)
        t0 = time.monotonic()
        res = json.loads(self.dp("checkpoint", "--runc", cid, "--runc-root", self.roots[host], "--images", images,
                                 "--json").stdout)
        if res.get("runc_id") != cid:
            raise RuntimeError(f"checkpoint --runc reported {res.get('runc_id')!r}, not {cid!r}")
        return time.monotonic() - t0

    def restore_dp(self, host, cid, bundle, listen, key, workdir, budget=None):
        """distriproc restore --runc-bundle (skeleton pull, rootfs check, runc
        restore --lazy-pages with DistriProc's daemon, in a uffd-window);
        returns (restored init pid, daemon pid, seconds of the command)."""
        shutil.rmtree(workdir, ignore_errors=True)
        t0 = time.monotonic()
        res = json.loads(self.dp("restore", "--source", listen, "--key", key, "--workdir", workdir, "--host", host,
                                 "--runc-bundle", bundle, "--runc-id", cid, "--runc-root", self.roots[host], "--json",
                                 *(["--budget", budget] if budget else [])).stdout)
        return res["pid"], res["daemon_pid"], time.monotonic() - t0

    def lazy_stats(self, workdir):
        """The daemon's counters (distriproc stats --json)."""
        return json.loads(self.dp("stats", "--workdir", workdir, "--json").stdout)

    def kill(self, host, cid, daemon_pid=None):
        """runc kill KILL, runc delete; the lazy-pages daemon (if any) exits by
        itself once the container's last task is gone."""
        try:
            pid = self.state(host, cid)["pid"]
        except RuntimeError:
            pid = None
        self.runc(host, "kill", cid, "KILL", check=False)
        for p in (pid, daemon_pid):
            end = time.monotonic() + 30
            while p and time.monotonic() < end and os.path.exists(f"/proc/{p}"):
                time.sleep(0.05)
        self.runc(host, "delete", "--force", cid, check=False)

    def stop(self, proc):
        """SIGTERM, then SIGKILL after 30 s: a page server must not outlive its point."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self):
        """Every container, process and the lab gone, whatever failed."""
        for host in self.roots:
            for c in self.list(host):
                self.runc(host, "kill", c["id"], "KILL", check=False)
                self.runc(host, "delete", "--force", c["id"], check=False)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.dp("lab", "down", timeout=120, check=False)

    def copy_over_link(self, src_dir, dst_dir, port):
        """Copies src_dir (on lab host src) to dst_dir (on dst) as a tar stream
        over one TCP connection across the lab link, so the link's cap applies;
        the receiver writes the files before this returns. Returns bytes sent."""
        shutil.rmtree(dst_dir, ignore_errors=True)
        os.makedirs(dst_dir)
        recv_code = ("import socket,sys,shutil\nl=socket.socket();l.setsockopt(socket.SOL_SOCKET,"
                     "socket.SO_REUSEADDR,1)\nl.bind((sys.argv[1],int(sys.argv[2])));l.listen(1)\n"
                     "print('ready',file=sys.stderr,flush=True)\nl.settimeout(60);c,_=l.accept();c.settimeout(120)\n"
                     "shutil.copyfileobj(c.makefile('rb'),sys.stdout.buffer,1<<20)\n")
        send_code = ("import socket,sys,shutil\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),"
                     "timeout=120)\nn=0\nwhile True:\n b=sys.stdin.buffer.read(1<<20)\n if not b: break\n"
                     " s.sendall(b);n+=len(b)\ns.shutdown(socket.SHUT_WR);print(n)\n")
        addr = LAB_ADDR["dst"]
        recv = subprocess.Popen(self.ns("dst", ["sh", "-c", f'{PY} -c "$0" "$1" "$2" | tar -x -C "$3"',
                                                recv_code, addr, port, dst_dir]),
                                stderr=subprocess.PIPE, text=True, env=self.env)
        try:
            # "ready" comes on stderr: its stdout is the tar stream.
            if recv.stderr.readline().strip() != "ready":
                raise RuntimeError("the copy's receiver did not start")
            cp = self.run(self.ns("src", ["sh", "-c", f'tar -C "$0" -cf - . | {PY} -c "$1" "$2" "$3"',
                                          src_dir, send_code, addr, port]), timeout=300)
            if recv.wait(timeout=300) != 0:
                raise RuntimeError(f"the copy's receiver failed ({recv.returncode})")
            return int(cp.stdout.strip())
        finally:
            if recv.poll() is None:
                recv.kill()
                recv.wait()


# ---- PostgreSQL wire protocol probe -----------------------------------------------

def _pg_msgs(sock, buf):
    """Yields (type, body) messages read from sock; buf is the carry-over."""
    while True:
        while len(buf) >= 5:
            t, n = buf[0:1], struct.unpack("!I", buf[1:5])[0]
            if n < 4 or n > 1 << 24:
                raise ValueError(f"bad message length {n}")
            if len(buf) < 1 + n:
                break
            body, buf[:] = bytes(buf[5:1 + n]), buf[1 + n:]
            yield t, body
        d = sock.recv(65536)
        if not d:
            raise ConnectionError("server closed the connection")
        buf += d


def pg_query(addr, port, sql, timeout=2.0):
    """The first column of the first row of `sql` (simple query protocol, user
    postgres, trust authentication), or raises."""
    with socket.create_connection((addr, port), timeout=timeout) as s:
        params = b"user\0postgres\0database\0postgres\0\0"
        s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
        buf = bytearray()
        msgs = _pg_msgs(s, buf)
        for t, body in msgs:
            if t == b"E":
                raise RuntimeError(body.decode(errors="replace"))
            if t == b"R" and struct.unpack("!I", body[:4])[0] != 0:
                raise RuntimeError("server asks for a password: the probe needs trust authentication")
            if t == b"Z":
                break
        q = sql.encode() + b"\0"
        s.sendall(b"Q" + struct.pack("!I", 4 + len(q)) + q)
        value, err = None, None
        for t, body in msgs:
            if t == b"D" and value is None:
                ncol = struct.unpack("!H", body[:2])[0]
                if ncol >= 1:
                    ln = struct.unpack("!i", body[2:6])[0]
                    value = None if ln < 0 else body[6:6 + ln].decode()
            elif t == b"E":
                err = body.decode(errors="replace")
            elif t == b"Z":
                break
        s.sendall(b"X\0\0\0\4")
        if err:
            raise RuntimeError(err)
        return value


def probe_pg_main(argv):
    """probe-pg ADDR PORT SQL EXPECT INTERVAL_MS TIMEOUT_S: prints 'ready',
    waits for a line on stdin (the go), then queries every INTERVAL_MS until
    the answer equals EXPECT; prints JSON {ok, t_go, t_ok, attempts} with
    CLOCK_MONOTONIC times (comparable with the caller's time.monotonic())."""
    addr, port, sql, expect, interval, timeout = argv[0], int(argv[1]), argv[2], argv[3], float(argv[4]), float(argv[5])
    print("ready", flush=True)
    sys.stdin.readline()
    t_go = time.monotonic()
    attempts, last = 0, ""
    while time.monotonic() - t_go < timeout:
        attempts += 1
        try:
            if pg_query(addr, port, sql, timeout=max(1.0, interval / 1000)) == expect:
                print(json.dumps({"ok": True, "t_go": t_go, "t_ok": time.monotonic(), "attempts": attempts}))
                return 0
            last = "wrong answer"
        except (OSError, ValueError, RuntimeError) as e:
            last = str(e)[:200]
        time.sleep(interval / 1000)
    print(json.dumps({"ok": False, "t_go": t_go, "attempts": attempts, "last_error": last}))
    return 1


class PgProbe:
    """A probe-pg process started ahead in a lab host's namespace; go() starts
    its attempts, result() waits for its verdict."""

    def __init__(self, lab, host, addr, sql, expect, interval_ms, timeout_s):
        """Started ahead so that its own start-up is not in any measurement."""
        self.p = subprocess.Popen(lab.ns(host, [PY, os.path.abspath(__file__), "probe-pg", addr, "5432", sql,
                                                expect, interval_ms, timeout_s]),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=lab.env)
        if self.p.stdout.readline().strip() != "ready":
            raise RuntimeError("the PostgreSQL probe did not start")
        self.timeout = timeout_s

    def go(self):
        """Starts the attempts: the caller's time zero."""
        self.p.stdin.write("go\n")
        self.p.stdin.flush()

    def result(self):
        """The probe's verdict; raises when it never got the expected answer."""
        out, _ = self.p.communicate(timeout=self.timeout + 30)
        r = json.loads(out.strip().splitlines()[-1])
        if not r["ok"]:
            raise RuntimeError(f"no correct answer within {self.timeout} s ({r['attempts']} attempts, "
                               f"last: {r.get('last_error')})")
        return r


def pg_in(lab, host, addr, sql, timeout=600):
    """One query from lab host `host`'s namespace (this file's 'query'); its
    answer (first column of the first row, '' for none)."""
    cp = lab.run(lab.ns(host, [PY, os.path.abspath(__file__), "query", addr, "5432", sql, timeout]),
                 timeout=timeout + 30)
    return json.loads(cp.stdout)["value"] or ""


def dir_bytes(path, allocated=False):
    """Bytes of the regular files under path (allocated: st_blocks, for sparse
    skeletons; else apparent sizes)."""
    n = 0
    for d, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(d, f))
            n += st.st_blocks * 512 if allocated else st.st_size
    return n


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "probe-pg" and len(sys.argv) == 8:
        sys.exit(probe_pg_main(sys.argv[2:]))
    if len(sys.argv) == 6 and sys.argv[1] == "query":
        print(json.dumps({"value": pg_query(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))}))
        sys.exit(0)
    sys.exit("usage: bench_containers_lab.py probe-pg ADDR PORT SQL EXPECT INTERVAL_MS TIMEOUT_S\n"
             "       bench_containers_lab.py query ADDR PORT SQL TIMEOUT_S")
