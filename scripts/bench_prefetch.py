#!/usr/bin/python3
"""bench prefetch: one pass of memwalk over its memory right after a lazy
restore, per prefetch policy, for access patterns whose faults interleave
(issue 13, item 3).

Run by `distriproc bench prefetch` (src/bench_prefetch.c), as root, with the
lab (its link capped with tbf at --bandwidth). For each --patterns entry:

  1. memwalk --mib N --threads T --pattern P starts in a `src` container;
     its local pass (every walker step once over its memory, all resident)
     is timed there: the local baseline of the same run;
  2. it is checkpointed (--leave-running; the source is stopped with SIGSTOP
     while the points run) and served on src;
  3. per --repeat and per policy (in turn, so the machine's load hits every
     policy alike; the order turns by one each repetition): `distriproc restore --source ... --prefetch POLICY` on dst,
     then memwalk's own timer measures one pass: it was checkpointed with its
     walkers parked, and PASS has each walker walk its own part of the memory
     once from its start, timed until the last one is done; the daemon's stats
     (remote faults, pages prefetched, inferred and in-flight hits);
  4. JSON to --json: per pattern and policy the median pass time, MB/s of the
     memory the pass covers, the ratio to local and to the link floor (the
     memory's bytes at the --bandwidth rate: a pass cannot move its data
     faster than the link), the faults per pass.

A pass: seq with T threads covers the N pages once (each thread its own
part, in order: T interleaved streams); probe:P covers the values (the pages
after the first P%) once, with a random table probe before each.
Every page read is verified by memwalk; a pass with errors fails the run.
"""
import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

from benchlab import DST, SRC, LabRunner, log, ratio

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SERVE_PORT = 7340
MEMWALK_PORT = 7073
RATES = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}


def pass_steps(pattern, pages):
    """Walker steps that cover the memory once (see the module's docstring)."""
    if pattern.startswith("probe:"):
        table = max(1, pages * int(pattern.split(":")[1]) // 100)
        return 2 * (pages - table), pages - table
    return pages, pages


def rate_bytes(text):
    for unit, mult in RATES.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * mult / 8
    raise ValueError(f"bad rate {text!r}: use e.g. 1gbit or 500mbit")


class Bench(LabRunner):
    def __init__(self, a):
        super().__init__(a.distriproc, a.lab)
        self.a = a

    def one_pass(self, host, addr):
        """Times one pass from inside memwalk: its walkers parked (HOLD; on a
        restored memwalk they are parked already: it was checkpointed so),
        then each walks its own part once from its start (PASS)."""
        h = self.memwalk(host, addr, MEMWALK_PORT, "HOLD")
        if not h.get("held"):
            raise RuntimeError(f"memwalk's walkers did not park on {host}: {h}")
        r = self.memwalk(host, addr, MEMWALK_PORT, "PASS", timeout=600)
        if not r.get("pass_done"):
            raise RuntimeError(f"memwalk did not finish a pass within 600 s on {host}: {r}")
        if r["errors"] or r["bad_bytes"]:
            raise RuntimeError(f"memwalk found {r['errors']} bad pages on {host}: {r}")
        return {"seconds": r["pass_s"], "ops": r["ops"] - h["ops"]}

    def point(self, images, key, pattern, policy, rep):
        overlay = os.path.join(images, "distriproc-overlay.log")
        if os.path.exists(overlay):
            os.unlink(overlay)
        listen = f"{SRC}:{SERVE_PORT}"
        srv = self.spawn(self.ns("src", [self.distriproc, "serve", "--images", images, "--listen", listen,
                                         "--key", key]),
                         os.path.join(self.a.workdir, f"serve-{pattern.replace(':', '')}-{policy}-{rep}.log"))
        self.wait_listen("src", SERVE_PORT)
        wd = os.path.join(self.a.workdir, f"wd-{policy.replace(':', '')}")
        subprocess.run(["rm", "-rf", wd])
        res = json.loads(self.dp("restore", "--source", listen, "--key", key, "--workdir", wd, "--host", "dst",
                                 "--json", "--prefetch", policy, timeout=300).stdout)
        try:
            p = self.one_pass("dst", DST)
            tot = json.loads(self.dp("stats", "--workdir", wd, "--json").stdout)["total"]
        finally:
            self.end_restore(res, srv)
        p.update({k: tot.get(k) for k in ("faults_remote", "pages_fetched", "pages_prefetched", "prefetch_hits",
                                           "prefetch_misses", "fetch_requests")})
        return p

    def pattern_run(self, pattern):
        a = self.a
        pidfile = os.path.join(a.workdir, "src.pid")
        cmd = [os.path.join(ROOT, "build", "memwalk"), "--mib", a.mib, "--threads", a.threads, "--pattern", pattern,
               "--port", MEMWALK_PORT, "--seed", "5"]
        self.dp("lab", "exec", "src", "--container", "--detach", "--pidfile", pidfile, "--", *cmd)
        with open(pidfile) as f:
            pid = int(f.read().strip())
        pages = a.mib * 256
        steps, covered = pass_steps(pattern, pages)
        out = {"pattern": pattern, "threads": a.threads, "pass_steps": steps, "pass_pages": covered}
        try:
            end = time.monotonic() + 60
            while True:
                try:
                    if self.memwalk("src", SRC, MEMWALK_PORT)["ops"] > 2 * steps:
                        break   # all of its memory walked (and filled) at least once
                except Exception:
                    if time.monotonic() > end:
                        raise
                if time.monotonic() > end:
                    raise RuntimeError("memwalk did not walk its memory twice within 60 s")
                time.sleep(0.2)
            local = [self.one_pass("src", SRC)["seconds"] for _ in range(a.repeat)]
            out["local_s"] = statistics.median(local)
            # A pass leaves the walkers parked: checkpointed so, every restored
            # copy starts its pass at PASS, each walker from its part's start.
            images = os.path.join(a.workdir, "images")
            subprocess.run(["rm", "-rf", images])
            os.makedirs(images)
            self.dp("checkpoint", "--host", "src", "--pid", pid, "--images", images, "--leave-running", timeout=600)
            os.kill(pid, signal.SIGSTOP)
            key = os.path.join(a.workdir, "key")
            if not os.path.exists(key):
                self.dp("keygen", key)
            runs = {pol: [] for pol in a.policies}
            for rep in range(a.repeat):
                # The order turns by one each repetition: a policy is not
                # always the one that runs first after the source's setup.
                k = rep % len(a.policies)
                for pol in a.policies[k:] + a.policies[:k]:
                    p = self.point(images, key, pattern, pol, rep)
                    log(f"{pattern}, prefetch {pol}, run {rep + 1}/{a.repeat}: pass {p['seconds']:.3f} s, "
                        f"{p['faults_remote']} remote faults, {p['pages_prefetched']} pages prefetched")
                    runs[pol].append(p)
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            end = time.monotonic() + 20   # gone, and its port free, before the next pattern's memwalk
            while time.monotonic() < end and os.path.exists(f"/proc/{pid}"):
                time.sleep(0.05)
        mb = covered * 4096 / 1e6
        floor = covered * 4096 / a.rate_bps
        out["link_floor_s"] = round(floor, 4)
        out["policies"] = {}
        for pol, rs in runs.items():
            sec = statistics.median(r["seconds"] for r in rs)
            out["policies"][pol] = {
                "pass_s": sec, "MBps": round(mb / sec, 1), "vs_local": ratio(sec, out["local_s"]),
                "vs_link_floor": ratio(sec, floor),
                "faults_remote": statistics.median(r["faults_remote"] for r in rs),
                "pages_prefetched": statistics.median(r["pages_prefetched"] for r in rs),
                "runs": rs}
        base = out["policies"].get("none")
        for pol, r in out["policies"].items():
            r["vs_none"] = ratio(r["pass_s"], base["pass_s"]) if base else None
        return out

    def go(self):
        a = self.a
        os.makedirs(a.workdir, exist_ok=True)
        self.dp("lab", "down", timeout=120, check=False)
        self.dp("lab", "up", "--bandwidth", a.bandwidth, timeout=120)
        doc = {"benchmark": "prefetch", "schema": 1,
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": a.command,
               "machine": {"uname": " ".join(platform.uname()), "cpus": os.cpu_count(),
                           "loadavg_before": open("/proc/loadavg").read().split()[:3]},
               "mib": a.mib, "threads": a.threads, "bandwidth": a.bandwidth, "repeat": a.repeat,
               "policies": a.policies, "patterns": []}
        try:
            for pat in a.patterns:
                doc["patterns"].append(self.pattern_run(pat))
                with open(a.json, "w") as fh:
                    json.dump(doc, fh, indent=1)
        finally:
            self.kill_all()
            self.dp("lab", "down", timeout=120, check=False)
        doc["machine"]["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
        with open(a.json, "w") as fh:
            json.dump(doc, fh, indent=1)
        print(f"\none pass right after a lazy restore, median of {a.repeat}; link {a.bandwidth}, "
              f"memwalk {a.mib} MiB, {a.threads} threads")
        for p in doc["patterns"]:
            print(f"\n{p['pattern']}: local {p['local_s'] * 1000:.1f} ms, link floor {p['link_floor_s']:.3f} s "
                  f"({p['pass_pages']} pages)")
            print(f"{'policy':<14} {'pass s':>8} {'MB/s':>8} {'vs floor':>9} {'vs none':>8} {'faults':>8} "
                  f"{'prefetched':>11}")
            for pol, r in p["policies"].items():
                print(f"{pol:<14} {r['pass_s']:>8.3f} {r['MBps']:>8.1f} {r['vs_link_floor']:>8.2f}x "
                      f"{r['vs_none']:>7.2f}x {r['faults_remote']:>8.0f} {r['pages_prefetched']:>11.0f}")
        log(f"wrote {a.json}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--distriproc", required=True)
    r.add_argument("--json", required=True)
    r.add_argument("--mib", type=int, default=256)
    r.add_argument("--threads", type=int, default=4)
    r.add_argument("--patterns", default="seq,probe:10,uniform")
    r.add_argument("--policies", default="none,auto,streams")
    r.add_argument("--bandwidth", default="1gbit")
    r.add_argument("--repeat", type=int, default=3)
    r.add_argument("--lab")
    r.add_argument("--workdir", default="/tmp/distriproc-bench-prefetch")
    a = p.parse_args()
    a.patterns = a.patterns.split(",")
    a.policies = a.policies.split(",")
    if not 4 <= a.mib <= 8192 or not 1 <= a.threads <= 64 or not 1 <= a.repeat <= 20:
        p.error("--mib 4..8192, --threads 1..64, --repeat 1..20")
    try:
        a.rate_bps = rate_bytes(a.bandwidth)
    except ValueError as e:
        p.error(str(e))
    a.command = "distriproc bench prefetch " + " ".join(sys.argv[4:])
    Bench(a).go()


if __name__ == "__main__":
    main()
