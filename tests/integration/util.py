"""Helpers shared by the integration tests: paths, bounded commands, a process
tracker, the lab, and memwalk's STAT protocol.

Everything here is plain subprocess/os code so a failing test shows the exact
command, its exit status and its output."""

import json
import os
import signal
import socket
import subprocess
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# BUILD holds the workloads (memwalk, forkmem, evicttest): they are what gets
# checkpointed, so they stay uninstrumented unless DISTRIPROC_BUILD says otherwise.
BUILD = os.environ.get("DISTRIPROC_BUILD", os.path.join(ROOT, "build"))
# DISTRIPROC_BIN=build-asan/distriproc runs our code under ASan/UBSan (make
# test): the binary and the test drivers linked with the same library
# (tests/helpers: injdrv, evictsim) come from that build.
DISTRIPROC = os.path.abspath(os.environ.get("DISTRIPROC_BIN", os.path.join(BUILD, "distriproc")))
HELPERS = os.path.join(os.path.dirname(DISTRIPROC), "tests", "helpers")
MEMWALK = os.path.join(BUILD, "memwalk")
CRIU = os.environ.get("DISTRIPROC_CRIU", os.path.join(ROOT, ".deps", "bin", "criu"))
PYTHON = "/usr/bin/python3"

NETNS_DIR = "/run/netns"
HOSTS = {"src": "10.250.0.1", "dst": "10.250.0.2"}
# DISTRIPROC_LAB=NAME runs the tests in a private lab NAME-src/NAME-dst (the
# binary honours the same variable), so a test run never tears down someone
# else's lab on the same machine.
LAB = os.environ.get("DISTRIPROC_LAB", "dp")
LAB_NAMES = (f"{LAB}-src", f"{LAB}-dst", f"{LAB}-src0", f"{LAB}-dst0")

DEFAULT_TIMEOUT = 60


class CommandError(AssertionError):
    pass


def _fmt(cmd):
    return " ".join(str(c) for c in cmd)


def run(cmd, timeout=DEFAULT_TIMEOUT, check=True, input=None, env=None):
    """Runs cmd to completion within timeout seconds; returns CompletedProcess
    with text stdout/stderr. check=True raises CommandError (with the output)
    on a non-zero exit; a timeout always raises (the command is killed)."""
    try:
        cp = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                            timeout=timeout, input=input, env=env, stdin=None if input else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise CommandError(f"command timed out after {timeout}s: {_fmt(cmd)}\n"
                           f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}") from None
    if check and cp.returncode != 0:
        raise CommandError(f"command failed (exit {cp.returncode}): {_fmt(cmd)}\n"
                           f"stdout: {cp.stdout}\nstderr: {cp.stderr}")
    return cp


def distriproc(*args, timeout=DEFAULT_TIMEOUT, check=True):
    return run([DISTRIPROC, *args], timeout=timeout, check=check)


KEY_HEADER = "distriproc-key-v1 "


def write_key(path, raw):
    """Writes raw (32 bytes) as a key file in the format `distriproc keygen`
    writes, mode 0600: the one place tests make a key without keygen."""
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(KEY_HEADER + raw.hex() + "\n")
    os.chmod(path, 0o600)


def read_key(path):
    """The 32 key bytes in a key file written by keygen or write_key."""
    return bytes.fromhex(open(path).read().split()[-1])


def netns_cmd(host, cmd):
    """cmd run inside a lab host's network namespace only (no mount namespace,
    unlike `ip netns exec`)."""
    return ["nsenter", f"--net={NETNS_DIR}/{LAB}-{host}", *[str(c) for c in cmd]]


def wait_until(predicate, timeout, what, interval=0.1, diag=None):
    """Polls predicate() until it returns a true value (returned) or timeout
    seconds pass (AssertionError naming what was awaited and the last error,
    followed by diag()'s text when diag is given: the state that explains
    the wait, e.g. stall_report)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # keep polling; report the last failure
            # (the per-test time limit and SIGTERM are BaseExceptions: they pass)
            last = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout}s waiting for {what}" + (f"; last error: {last}" if last else "")
            if diag is not None:
                try:
                    msg += "\n" + diag()
                except Exception as e:  # the report must never hide the timeout
                    msg += f"\n(no diagnostics: {e!r})"
            raise AssertionError(msg)
        time.sleep(interval)


# ---- processes ----------------------------------------------------------------

def _proc_starttime(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # Field 22 (starttime), counted after the ")" that ends the command name.
    return data[data.rindex(")") + 2:].split()[19]


def proc_state(pid):
    """'R', 'S', 'Z', ... or None if the pid does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2]


def alive(pid):
    """True if pid exists and is not a zombie."""
    st = proc_state(pid)
    return st is not None and st not in ("Z", "X")


def wait_gone(pid, timeout=10):
    def gone():
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        except ChildProcessError:
            pass
        return not alive(pid)
    wait_until(gone, timeout, f"pid {pid} to exit")


class ProcessTracker:
    """Everything a test starts, killed at teardown even when the test fails.

    spawn() starts a child in its own session (its whole group is killed);
    track(pid) adopts a process started elsewhere (a container init, a restored
    task), remembered with its start time so a reused pid is never killed."""

    def __init__(self):
        self.popens = []
        self.pids = []

    def spawn(self, cmd, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen([str(c) for c in cmd], start_new_session=True, **kw)
        self.popens.append(p)
        return p

    def track(self, pid):
        pid = int(pid)
        self.pids.append((pid, _proc_starttime(pid)))
        return pid

    def kill_all(self):
        for pid, start in reversed(self.pids):
            if start is not None and _proc_starttime(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in reversed(self.popens):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()
        for pid, start in self.pids:
            if start is not None and _proc_starttime(pid) == start:
                try:
                    wait_gone(pid, timeout=10)
                except AssertionError:
                    pass
        self.popens.clear()
        self.pids.clear()


def read_line(stream, timeout, what):
    """One line from a child's pipe, waiting at most timeout seconds."""
    import select
    deadline = time.monotonic() + timeout
    buf = b""
    fd = stream.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {buf!r}")
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError(f"EOF while waiting for {what}; got {buf!r}")
        buf += chunk
    return buf.decode()


# ---- lab ------------------------------------------------------------------------

def lab_leftovers():
    """Every lab namespace or link still visible: [] means the lab is gone."""
    left = []
    netns = run(["ip", "netns", "list"]).stdout
    left += [f"netns {line.split()[0]}" for line in netns.splitlines()
             if line.split() and line.split()[0].startswith(f"{LAB}-")]
    if os.path.isdir(NETNS_DIR):
        left += [f"file {NETNS_DIR}/{n}" for n in os.listdir(NETNS_DIR) if n.startswith(f"{LAB}-")]
    links = run(["ip", "-o", "link", "show"]).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(f"{LAB}-"):
            left.append(f"link {name}")
    return sorted(set(left))


def lab_status():
    cp = distriproc("lab", "status", "--json", check=False)
    assert cp.returncode in (0, 3), f"lab status failed: {cp.stderr}"
    return json.loads(cp.stdout)


def netns_inode(host):
    return os.stat(f"{NETNS_DIR}/{LAB}-{host}").st_ino


def pid_netns_inode(pid):
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def start_container(procs, host, cmd, pidfile):
    """Starts cmd detached as a lab container (session leader, init of a new
    pid namespace) in host; returns its host-visible pid (tracked)."""
    distriproc("lab", "exec", host, "--container", "--detach", "--pidfile", pidfile, "--", *cmd)
    with open(pidfile) as f:
        return procs.track(int(f.read().strip()))


# ---- memwalk STAT ---------------------------------------------------------------

# One request line to a workload's TCP control (memwalk, forkmem), one JSON line back.
LINE_CLIENT = (
    "import socket,sys\n"
    "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=float(sys.argv[4]))\n"
    "s.sendall(sys.argv[3].encode()+b'\\n')\n"
    "sys.stdout.write(s.makefile('rb').readline().decode())\n"
)


def memwalk_request(addr, port=7070, command="STAT", host=None, timeout=30):
    """Sends one memwalk request and returns the decoded JSON reply. With host
    ("src"/"dst") the client runs inside that lab host's network namespace."""
    if host is None:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.sendall(command.encode() + b"\n")
            line = s.makefile("rb").readline().decode()
    else:
        cp = run(netns_cmd(host, [PYTHON, "-c", LINE_CLIENT, addr, port, command, timeout]),
                 timeout=timeout + 10)
        line = cp.stdout
    if not line.strip():
        raise AssertionError(f"memwalk at {addr}:{port} sent no reply to {command}")
    return json.loads(line)


def wait_memwalk(addr, port=7070, host=None, timeout=30):
    """Waits until memwalk answers STAT with some progress; returns the reply."""
    def ready():
        st = memwalk_request(addr, port, "STAT", host=host, timeout=5)
        return st if st["ops"] > 0 else None
    return wait_until(ready, timeout, f"memwalk STAT at {addr}:{port}", interval=0.2)


def criu_killed_after(tmp_path, criu, subcommand, delay=0.05):
    """A criu wrapper (for DISTRIPROC_CRIU) whose `criu SUBCOMMAND` is
    SIGKILLed `delay` s after it starts (exit 137); every other call runs
    criu itself. Returns its path."""
    wrapper = tmp_path / f"criu-killed-{subcommand}"
    wrapper.write_text("#!/bin/sh\n"
                       f"if [ \"$1\" = {subcommand} ]; then \"{criu}\" \"$@\" & c=$!; sleep {delay}; kill -9 $c; "
                       "wait $c; exit 137; fi\n"
                       f"exec \"{criu}\" \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | 0o100)
    return wrapper


# ---- lazy migration steps shared by the tests ------------------------------------

def forkmem_request(host, command, timeout=60, port=7071):
    """One forkmem command (memwalk's line protocol) sent from inside host."""
    return memwalk_request(HOSTS[host], port, command, host=host, timeout=timeout)


def wait_forkmem(host="src", timeout=30):
    """Waits until forkmem in host is up and its memory verifies (VERIFY, 0 errors)."""
    wait_until(lambda: forkmem_request(host, "VERIFY", timeout=10)["errors"] == 0, timeout, "forkmem")


def checkpoint_container(procs, tmp_path, cmd, ready):
    """Starts cmd in a src container, waits for ready(), checkpoints it into
    tmp_path/images (the tree is gone afterwards); returns the images dir."""
    images = tmp_path / "images"
    images.mkdir()
    pid = start_container(procs, "src", cmd, tmp_path / "src.pid")
    ready()
    distriproc("checkpoint", "--host", "src", "--pid", pid, "--images", images, timeout=120)
    wait_gone(pid, timeout=20)
    return images


def restore_json(procs, workdir, *args, check=True):
    """`distriproc restore ARGS --workdir W --host dst --json`; tracks the daemon
    and the restored root, returns the JSON (or the CompletedProcess when
    check=False and restore failed)."""
    cp = distriproc("restore", *args, "--workdir", workdir, "--host", "dst", "--json", timeout=150, check=check)
    if cp.returncode != 0:
        return cp
    res = json.loads(cp.stdout)
    procs.track(res["daemon_pid"])
    procs.track(res["pid"])
    return res


def lazy_stats(workdir):
    return json.loads(distriproc("stats", "--workdir", workdir, "--json").stdout)


def serve_images(procs, images, key, port, *extra):
    """`distriproc serve` for images in src on HOSTS['src']:port (tracked, its
    output discarded); returns HOST:PORT once it listens."""
    listen = f"{HOSTS['src']}:{port}"
    procs.spawn(netns_cmd("src", [DISTRIPROC, "serve", "--images", images, "--listen", listen, "--key", key,
                                  *extra]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: run(netns_cmd("src", ["ss", "-ltnH", f"sport = :{port}"])).stdout.strip() != "",
               20, "the page server to listen")
    return listen


# ---- what a stalled wait shows ------------------------------------------------------

def _read_text(path, limit=4096):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode(errors="replace").strip()
    except OSError as e:
        return f"<{e.strerror}>"


def thread_states(pid):
    """One line per thread of pid: tid, name, state, wchan, the system call
    it is in (/proc/.../syscall: -1 = none, in user space or a page fault)
    and the top of its kernel stack (root reads it): where each thread of a
    stalled workload or daemon waits (handle_userfault = a fault no one has
    answered yet)."""
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError as e:
        return [f"pid {pid}: {e.strerror}"]
    lines = []
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        stat = _read_text(f"{base}/stat")
        state = stat[stat.rindex(")") + 2] if ")" in stat else "?"
        stack = [ln.split("]", 1)[-1].strip() for ln in _read_text(f"{base}/stack").splitlines()[:6]]
        lines.append(f"  tid {tid} {_read_text(f'{base}/comm')!r} state {state} wchan {_read_text(f'{base}/wchan')} "
                     f"syscall {_read_text(f'{base}/syscall').split(' ')[0]} stack {' < '.join(stack)}")
    return lines


def stall_report(workdir=None, pids=(), log_lines=30, memwalk_host=None):
    """Text for a wait that timed out: the daemon's stats (`stats --json`,
    the total and the budget), the last lines of its log (WORKDIR/lazyd.log),
    memwalk's counters twice a second apart (do its walkers still run?) and,
    for each of pids (name -> pid), its RssAnon and every thread's state and
    where it waits. A walker running (state R, ops growing) with few faults
    and RssAnon far above the daemon's resident_bytes is memory the restore
    copied eagerly (docs/criu-images.md, is_stack); threads in
    handle_userfault with faults_waiting > 0 are faults not answered."""
    out = []
    if workdir is not None:
        cp = distriproc("stats", "--workdir", workdir, "--json", timeout=10, check=False)
        try:
            st = json.loads(cp.stdout)
            out.append("daemon stats total: " + json.dumps(st.get("total"), sort_keys=True))
            if st.get("budget"):
                out.append("daemon stats budget: " + json.dumps(st["budget"], sort_keys=True))
            for t in st.get("tasks", [])[:8]:
                out.append("daemon stats task: " + json.dumps(
                    {k: t.get(k) for k in ("id", "pid", "host_pid", "alive", "faults", "faults_remote",
                                           "faults_waiting", "faults_spurious", "fetch_requests", "fetch_errors",
                                           "pages_fetched", "eagain_retries", "remote_bytes", "resident_bytes")}))
        except ValueError:
            out.append(f"daemon stats: exit {cp.returncode}: {cp.stdout[-500:]!r} {cp.stderr[-500:]!r}")
        log = _read_text(os.path.join(str(workdir), "lazyd.log"), 1 << 22).splitlines()
        out.append(f"last {min(log_lines, len(log))} of {len(log)} lines of lazyd.log:")
        out += ["  " + ln for ln in log[-log_lines:]]
    if memwalk_host is not None:
        for _ in range(2):
            try:
                m = memwalk_request(HOSTS[memwalk_host], host=memwalk_host, timeout=5)
                out.append("memwalk: " + json.dumps({k: m.get(k) for k in ("ops", "reads", "writes", "errors",
                                                                           "uptime_s")}))
            except Exception as e:
                out.append(f"memwalk: no STAT reply ({e})")
            time.sleep(1)
    for name, pid in dict(pids).items():
        # resident memory against the daemon's resident_bytes: far above it,
        # the restore copied what the daemon believes is remote
        rss = [ln.split(":", 1)[1].strip() for ln in _read_text(f"/proc/{pid}/status").splitlines()
               if ln.startswith("RssAnon:")]
        out.append(f"{name} (pid {pid}) RssAnon {rss[0] if rss else '?'}, threads:")
        out += thread_states(pid)
    return "\n".join(out)
