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
     bytes of the pages the pass needs at the --bandwidth rate: a pass cannot
     move its data faster than the link; probe:P needs its table too), the faults per pass, the pages the pass moved
     over the link against the pages it covers (moved_vs_needed: 1.0 when
     every page crossed once) and its fetch requests (round trips).

With --budget (restore --budget, e.g. 30%) the pass streams through a local
memory budget smaller than the data (issue 13: a sequential read of 330 MiB
through a budget of 30% of it): eviction runs during the pass, and a page
prefetched but evicted before use crosses the link twice.

A pass: seq with T threads covers the N pages once (each thread its own
part, in order: T interleaved streams); probe:P covers the values (the pages
after the first P%) once, with a random table probe before each (it needs
the table too); uniform takes N random steps, reading 63% of the pages (1 -
1/e): the link floor counts the pages a pass needs.
Every page read is verified by memwalk; a pass with errors fails the run.
"""
import argparse
import json
import math
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
    """Walker steps that cover the memory once (see the module's docstring),
    the pages they cover in order, and the pages the pass needs over the link:
    probe:P also reads table pages at random, one before each value, so a
    pass of V values over a table of T pages leaves a table page unread with
    probability (1 - 1/T)^V (e^-9 at 10%): it needs the table too."""
    if pattern.startswith("probe:"):
        table = max(1, pages * int(pattern.split(":")[1]) // 100)
        return 2 * (pages - table), pages - table, pages
    if pattern == "uniform":
        # N random pages of N: each is read with probability 1 - (1 - 1/N)^N
        return pages, pages, round(pages * (1 - math.exp(-1)))
    return pages, pages, pages


def cpu_s(pid):
    """CPU seconds (user + system, all threads) process pid has used, or None
    once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
        budget = ["--budget", self.a.budget] if self.a.budget else []
        res = json.loads(self.dp("restore", "--source", listen, "--key", key, "--workdir", wd, "--host", "dst",
                                 "--json", "--prefetch", policy, *budget, timeout=300).stdout)
        try:
            st0 = json.loads(self.dp("stats", "--workdir", wd, "--json").stdout)
            who = {"daemon": res["daemon_pid"], "server": srv.pid, "workload": res["pid"]}
            c0 = {k: cpu_s(v) for k, v in who.items()}
            p = self.one_pass("dst", DST)
            c1 = {k: cpu_s(v) for k, v in who.items()}
            st = json.loads(self.dp("stats", "--workdir", wd, "--json").stdout)
            # where the CPU of the pass went (2 shared cores: a pass that
            # needs more CPU than the link time leaves is CPU-bound)
            p["pass_cpu_s"] = {k: round(c1[k] - c0[k], 2) if c0[k] is not None and c1[k] is not None else None
                               for k in who}
        finally:
            self.end_restore(res, srv)
        tot, tot0 = st["total"], st0["total"]
        p.update({k: tot.get(k) for k in ("faults_remote", "pages_fetched", "pages_prefetched", "prefetch_hits",
                                           "prefetch_misses", "fetch_requests")})
        # What the pass itself moved over the link (pages asked for on demand
        # and prefetched, counted from the start of the pass), in round trips
        # (fetch requests) and pages: a pass of a pattern that covers its
        # pages once should move each of them once.
        p["pass_pages_moved"] = sum(tot[k] - tot0[k] for k in ("pages_fetched", "pages_prefetched"))
        p["pass_fetch_requests"] = tot["fetch_requests"] - tot0["fetch_requests"]
        p["fault_mean_us"] = tot["latency"]["mean_us"]
        b, b0 = st.get("budget"), st0.get("budget")
        if b:
            p["pass_evictions"] = b["evictions"] - b0["evictions"]
            p["pass_writebacks"] = b["writebacks"] - b0["writebacks"]
            p["refaults"] = b["refaults"]
            p["stop_p99_us"] = b["stop"]["p99_us"]
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
        steps, covered, needed = pass_steps(pattern, pages)
        out = {"pattern": pattern, "threads": a.threads, "pass_steps": steps, "pass_pages": covered,
               "needed_pages": needed}
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
        floor = needed * 4096 / a.rate_bps   # every page the pass needs, once, at the link's rate
        out["link_floor_s"] = round(floor, 4)
        out["policies"] = {}
        for pol, rs in runs.items():
            sec = statistics.median(r["seconds"] for r in rs)
            out["policies"][pol] = {
                "pass_s": sec, "MBps": round(mb / sec, 1), "vs_local": ratio(sec, out["local_s"]),
                "vs_link_floor": ratio(sec, floor),
                "faults_remote": statistics.median(r["faults_remote"] for r in rs),
                "pages_prefetched": statistics.median(r["pages_prefetched"] for r in rs),
                "pass_pages_moved": statistics.median(r["pass_pages_moved"] for r in rs),
                "moved_vs_needed": ratio(statistics.median(r["pass_pages_moved"] for r in rs), needed),
                "pass_fetch_requests": statistics.median(r["pass_fetch_requests"] for r in rs),
                "runs": rs}
        base = out["policies"].get("none")
        for pol, r in out["policies"].items():
            r["vs_none"] = ratio(r["pass_s"], base["pass_s"]) if base else None
            # each repetition's pass against none's of the same repetition
            # (they ran back to back): the machine's drift cancels pair by pair
            r["vs_none_by_rep"] = ([ratio(x["seconds"], y["seconds"]) for x, y in zip(r["runs"], base["runs"])]
                                   if base else None)
            r["vs_none_paired"] = statistics.median(r["vs_none_by_rep"]) if base else None
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
               "mib": a.mib, "threads": a.threads, "bandwidth": a.bandwidth, "budget": a.budget, "repeat": a.repeat,
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
              f"memwalk {a.mib} MiB, {a.threads} threads, budget {a.budget or 'none'}")
        for p in doc["patterns"]:
            print(f"\n{p['pattern']}: local {p['local_s'] * 1000:.1f} ms, link floor {p['link_floor_s']:.3f} s "
                  f"({p['needed_pages']} pages needed)")
            print(f"{'policy':<14} {'pass s':>8} {'MB/s':>8} {'vs local':>9} {'vs floor':>9} {'vs none (pairs)':>16} "
                  f"{'faults':>8} {'prefetched':>11} {'moved/needed':>13} {'requests':>9}")
            for pol, r in p["policies"].items():
                vs_none = (f"{r['vs_none']:.2f}x ({r['vs_none_paired']:.2f}x)" if r["vs_none"] is not None
                           else "-")
                print(f"{pol:<14} {r['pass_s']:>8.3f} {r['MBps']:>8.1f} {r['vs_local']:>8.2f}x "
                      f"{r['vs_link_floor']:>8.2f}x {vs_none:>16} {r['faults_remote']:>8.0f} "
                      f"{r['pages_prefetched']:>11.0f} {r['moved_vs_needed']:>12.2f}x {r['pass_fetch_requests']:>9.0f}")
        log(f"wrote {a.json}")


def plot(paths, outdir, name):
    """One bar chart of the runs in paths (bench prefetch JSON): per pattern
    (and budget) and policy, the median pass over the link floor of the same
    run (1.0 = the link moved the pass's pages once at full rate), labelled
    with the pass's ratio to local. Uses bench_report's gnuplot helper."""
    import tempfile
    from bench_report import gnuplot
    rows, policies = [], []
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        for p in doc["patterns"]:
            label = p["pattern"] + (f", budget {doc['budget']}" if doc.get("budget") else "") + f", {doc['mib']} MiB"
            rows.append((label, p))
            policies += [pol for pol in p["policies"] if pol not in policies]
    with tempfile.TemporaryDirectory() as tmp:
        dat = os.path.join(tmp, "pf.dat")
        with open(dat, "w") as f:
            for label, p in rows:
                cols = []
                for pol in policies:
                    r = p["policies"].get(pol)
                    cols += [f"{r['vs_link_floor']:.3f}", f"\"{r['vs_local']:.0f}x\""] if r else ["NaN", "\"\""]
                f.write(f"\"{label}\" " + " ".join(cols) + "\n")
        n = len(policies)
        width = 0.8 / n
        lines = []
        for k, pol in enumerate(policies):
            off = (k - (n - 1) / 2) * width
            lines.append(f"'{dat}' using ($0+{off:.3f}):{2 + 2 * k}:({width:.3f}) with boxes fs solid 0.6 "
                         f"title '{pol}'")
            lines.append(f"'{dat}' using ($0+{off:.3f}):{2 + 2 * k}:{3 + 2 * k} with labels offset 0,0.7 "
                         "font ',8' notitle")
        gnuplot("set title 'One pass right after a lazy restore: pass time / link floor (labels: x local)'\n"
                "set ylabel 'pass time / link floor (1 = the pages moved once at the link rate)'\n"
                "set style fill solid 0.6\nset boxwidth 0.8 relative\nset yrange [0:*]\nset grid ytics\n"
                f"set xtics rotate by -15 font ',9'\nset key top left\nset xrange [-0.6:{len(rows) - 0.4}]\n"
                f"plot '{dat}' using 0:(NaN):xtic(1) notitle, " + ", ".join(lines) +
                ", 1 with lines dt 2 lc rgb 'gray' title 'link floor'", outdir, name)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("plot", help="bar chart of bench prefetch JSON files (PNG and SVG)")
    pl.add_argument("--json", action="append", required=True)
    pl.add_argument("--out", required=True, help="directory")
    pl.add_argument("--name", default="prefetch-passes")
    r = sub.add_parser("run")
    r.add_argument("--distriproc", required=True)
    r.add_argument("--json", required=True)
    r.add_argument("--mib", type=int, default=256)
    r.add_argument("--threads", type=int, default=4)
    r.add_argument("--patterns", default="seq,probe:10,uniform")
    r.add_argument("--policies", default="none,auto,streams")
    r.add_argument("--bandwidth", default="1gbit")
    r.add_argument("--repeat", type=int, default=3)
    r.add_argument("--budget", help="restore --budget (e.g. 30%%): the pass streams through a local budget")
    r.add_argument("--lab")
    r.add_argument("--workdir", default="/tmp/distriproc-bench-prefetch")
    a = p.parse_args()
    if a.cmd == "plot":
        plot(a.json, a.out, a.name)
        return
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
