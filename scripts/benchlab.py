"""benchlab: what the lab benchmarks written in Python share -- commands run
inside a lab host's network namespace, the distriproc binary, memwalk's STAT
and WAIT requests, background processes and a wait for a listener.

Imported by scripts/bench_remote_fraction.py and scripts/bench_prefetch.py
(run by `distriproc bench ...`, as root, with the lab)."""
import json
import os
import signal
import subprocess
import sys
import time

PY = "/usr/bin/python3"
SRC, DST = "10.250.0.1", "10.250.0.2"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ratio(x, base, minus=0):
    """x / base (- minus), rounded; None without a base."""
    return round(x / base - minus, 3) if base else None


class LabRunner:
    """Runs commands in the lab named by --lab or DISTRIPROC_LAB (default dp);
    keeps every background process it starts, to kill them at the end."""

    def __init__(self, distriproc, lab=None):
        self.distriproc = distriproc
        self.lab = lab or os.environ.get("DISTRIPROC_LAB", "dp")
        self.env = dict(os.environ, DISTRIPROC_LAB=self.lab)
        self.procs = []

    def ns(self, host, cmd):
        return ["nsenter", f"--net=/run/netns/{self.lab}-{host}", *[str(c) for c in cmd]]

    def run(self, cmd, timeout=300, check=True):
        cp = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and cp.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({cp.returncode}): {cp.stderr.strip()[-2000:]}")
        return cp

    def dp(self, *args, timeout=300, check=True):
        return self.run([self.distriproc, *args], timeout=timeout, check=check)

    def memwalk(self, host, addr, port, command="STAT", timeout=90):
        """One request to memwalk's listener from inside host: its JSON reply."""
        code = ("import socket,sys\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=float(sys.argv[4]))\n"
                "s.sendall(sys.argv[3].encode()+b'\\n')\nsys.stdout.write(s.makefile('rb').readline().decode())\n")
        cp = self.run(self.ns(host, [PY, "-c", code, addr, port, command, timeout]), timeout=timeout + 30)
        return json.loads(cp.stdout)

    def spawn(self, cmd, log_path):
        f = open(log_path, "w")
        p = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=self.env)
        self.procs.append(p)
        return p

    def wait_listen(self, host, port, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.run(self.ns(host, ["ss", "-ltnH", f"sport = :{port}"]), check=False).stdout.strip():
                return
            time.sleep(0.1)
        raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s")

    def end_restore(self, res, srv):
        """Ends one point: the restored tree (res: restore's JSON) killed, its
        daemon waited for (at most 30 s), then the page server srv stopped."""
        try:
            os.kill(res["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
        end = time.monotonic() + 30
        while time.monotonic() < end and os.path.exists(f"/proc/{res['daemon_pid']}"):
            time.sleep(0.1)
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
