#!/usr/bin/python3
"""Long run under a memory budget (issue 6, RQ1): memwalk checkpointed in a
src container, served, restored on dst with --budget, then left running for
--minutes while every --every seconds its counters (verification errors),
its RssAnon and the daemon's budget stats are recorded as JSON lines; a full
VERIFY at the end. Bounded in time; tears its private lab down.

  budget_longrun.py --distriproc BIN --minutes 60 --budget 50% --out FILE.jsonl [--lab NAME]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PY = "/usr/bin/python3"
SRC, DST = "10.250.0.1", "10.250.0.2"
PORT = 7073
SERVE = 7340
REQ = ("import socket,sys\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=600)\n"
       "s.sendall(sys.argv[3].encode()+b'\\n')\nsys.stdout.write(s.makefile('rb').readline().decode())\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--distriproc", default=os.path.join(ROOT, "build", "distriproc"))
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--budget", default="50%")
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write-ratio", default="0.3")
    p.add_argument("--pattern", default="zipf:0.99")
    p.add_argument("--every", type=float, default=30)
    p.add_argument("--out", required=True)
    p.add_argument("--lab", default="long")
    p.add_argument("--nice", action="store_true", help="renice the restored process, daemon and server to 19")
    p.add_argument("--workdir", default="/tmp/distriproc-longrun")
    a = p.parse_args()
    if not 0 < a.minutes <= 240:
        p.error("--minutes in (0, 240]")
    env = dict(os.environ, DISTRIPROC_LAB=a.lab)
    ns = lambda h, c: ["nsenter", f"--net=/run/netns/{a.lab}-{h}", *[str(x) for x in c]]

    def run(cmd, timeout=300, check=True):
        cp = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)
        if check and cp.returncode:
            raise RuntimeError(f"{cmd} failed: {cp.stderr.strip()[-1500:]}")
        return cp

    def mw(host, addr, cmd="STAT"):
        return json.loads(run(ns(host, [PY, "-c", REQ, addr, PORT, cmd]), timeout=700).stdout)

    out = open(a.out, "w")

    def rec(**kw):
        kw["t"] = time.strftime("%H:%M:%S")
        out.write(json.dumps(kw) + "\n")
        out.flush()
        print(json.dumps(kw)[:400], file=sys.stderr, flush=True)

    os.makedirs(a.workdir, exist_ok=True)
    run([a.distriproc, "lab", "down"], check=False)
    run([a.distriproc, "lab", "up"])
    procs = []
    res = None
    try:
        pidfile = os.path.join(a.workdir, "src.pid")
        run([a.distriproc, "lab", "exec", "src", "--container", "--detach", "--pidfile", pidfile, "--",
             os.path.join(ROOT, "build", "memwalk"), "--mib", a.mib, "--threads", a.threads, "--pattern", a.pattern,
             "--write-ratio", a.write_ratio, "--port", PORT, "--seed", "21"])
        pid = int(open(pidfile).read())
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if mw("src", SRC)["writes"] > 1000:
                    break
            except Exception:
                time.sleep(0.5)
        images = os.path.join(a.workdir, "images")
        run(["rm", "-rf", images])
        os.makedirs(images)
        run([a.distriproc, "checkpoint", "--host", "src", "--pid", pid, "--images", images], timeout=600)
        key = os.path.join(a.workdir, "key")
        run([a.distriproc, "keygen", key], check=False)
        listen = f"{SRC}:{SERVE}"
        procs.append(subprocess.Popen(ns("src", [a.distriproc, "serve", "--images", images, "--listen", listen,
                                                 "--key", key]), stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(a.workdir, "serve.log"), "w"), env=env))
        time.sleep(1)
        wd = os.path.join(a.workdir, "wd")
        run(["rm", "-rf", wd])
        res = json.loads(run([a.distriproc, "restore", "--source", listen, "--key", key, "--workdir", wd,
                              "--host", "dst", "--budget", a.budget, "--json"]).stdout)
        if a.nice:
            # a correctness run: let benchmarks on the same cores go first
            tids = [int(t) for t in os.listdir(f"/proc/{res['pid']}/task")]
            for x in tids + [res["daemon_pid"], procs[0].pid]:
                subprocess.run(["renice", "-n", "19", "-p", str(x)], capture_output=True)
        rec(event="restored", pid=res["pid"], budget=a.budget, mib=a.mib, threads=a.threads, pattern=a.pattern,
            write_ratio=a.write_ratio)
        t0 = time.monotonic()
        stop = t0 + a.minutes * 60
        max_rss = 0
        while time.monotonic() < stop:
            time.sleep(min(a.every, max(0.0, stop - time.monotonic())))
            st = mw("dst", DST)
            rss = 0
            with open(f"/proc/{res['pid']}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        rss = int(line.split()[1]) * 1024
            max_rss = max(max_rss, rss)
            s = json.loads(run([a.distriproc, "stats", "--workdir", wd, "--json"]).stdout)
            b = s["budget"]
            rec(event="sample", minutes=round((time.monotonic() - t0) / 60, 2), ops=st["ops"], writes=st["writes"],
                errors=st["errors"], bad_bytes=st["bad_bytes"], rss_anon=rss, max_rss_anon=max_rss,
                remote_fraction=s["total"]["remote_fraction"], evictions=b["evictions"],
                writebacks=b["writebacks"], refaults=b["refaults"], vb_hits=b["victim_buffer_hits"],
                writeback_errors=b["writeback_errors"], max_resident=b["max_resident_bytes"],
                budget_bytes=b["budget_bytes"], stop_p99_us=b["stop"]["p99_us"])
            if st["errors"]:
                break
        v = mw("dst", DST, "VERIFY")
        rec(event="verify", verify_pages=v["verify_pages"], verify_errors=v["verify_errors"], errors=v["errors"],
            minutes=round((time.monotonic() - t0) / 60, 2))
    finally:
        if res:
            try:
                os.kill(res["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(2)
        for pr in procs:
            pr.kill()
        run([a.distriproc, "lab", "down"], check=False)


if __name__ == "__main__":
    main()
