#!/usr/bin/python3
"""bench remote-fraction: throughput and P99 latency against the share of the
process's memory kept remote by a local memory budget (issue 6, RQ3).

Run by `distriproc bench remote-fraction` (src/bench_remote_fraction.c), as
root, with the lab. For the workload:

  1. start it in a `src` container (Redis loaded with --redis-mib of 1000-byte
     values; or memwalk --memwalk-mib, zipf 0.99 over its pages, 2 threads,
     5% writes; --memwalk-pattern uniform for random pages), warm it up for --warmup seconds exactly as every remote point
     is warmed up, and measure it there: local execution, the baseline of the
     same run (Redis: each mix for --seconds; memwalk: its ops/s);
  2. checkpoint it (--leave-running: the source stays, stopped with SIGSTOP
     while the points run) and serve the checkpoint on src;
  3. for each remote fraction f: a fresh page server (the write-back overlay
     of the previous point removed), `distriproc restore --budget (100-f)%`
     on dst (f = 0: no budget), --warmup seconds of the workload so the
     budget is reached and the hot set settles, then each mix measured for
     --seconds; the daemon's stats (steady remote fraction, evictions,
     write-backs, re-faults, victim-buffer hits, stop time per batch);
  4. the local baseline again, at the end (SIGCONT, the same warm-up, the
     same measurement): the drift between the two baselines is the run's
     noise floor; a point's ratio to local is only meaningful beyond it;
     with --paired, also before every point but the first (A/B/A/B...), and
     each point is compared with the mean of the baselines right before and
     right after it (vs_local_paired, p99_vs_local_paired): on a machine
     whose load drifts, the ratio to a baseline minutes away says little;
  5. JSON to --json: per point and mix, ops/s, P50/P99 (Redis: per request,
     one request at a time) and the ratio to both baselines (vs_local: the
     one at the start; vs_local_end: the one at the end); per mix the drift
     local_end / local - 1; memwalk: per point the analytic bound
     (measured miss rate x the run's fault cost, see memwalk_bounds) and
     bound / measured.

Redis mixes: zipfian keys (theta 0.99), 95% GET / 5% SET and 50/50.
"""
import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time

from benchlab import DST, PY, SRC, LabRunner, log, ratio

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TOOL = os.path.join(ROOT, "scripts", "redis_tool.py")
SERVE_PORT = 7330
REDIS_PORT = 6391
MEMWALK_PORT = 7072
MIXES = [("95/5", 0.95), ("50/50", 0.5)]
MEMWALK_THREADS = 2


def bucket_quantile(edges, counts, q):
    """Upper edge of the bucket holding quantile q (None past the last edge:
    longer than every edge); 0 when nothing was counted."""
    total = sum(counts)
    if not total:
        return 0
    seen = 0
    for i, c in enumerate(counts):
        seen += c
        if seen >= q * total:
            return edges[i] if i < len(edges) else None
    return None


def tick_delta(t0, t1):
    """memwalk --tick-us between two STATs: how late the bystander thread
    woke and wrote its page (p50/p99 as bucket upper edges, in us)."""
    if not t0 or not t1:
        return None
    counts = [b - a for a, b in zip(t0["counts"], t1["counts"])]
    n = sum(counts)
    late = sum(c for e, c in zip(t0["edges_us"] + [None], counts) if e is None or e > 1000)
    return {"ticks": n, "p50_us": bucket_quantile(t0["edges_us"], counts, 0.5),
            "p99_us": bucket_quantile(t0["edges_us"], counts, 0.99),
            "over_1ms": late, "max_us_since_start": t1["max_us"]}


def eviction_stall(b0, b1, m):
    """Issue 13's metric over the measurement window: each eviction batch
    stalls the application threads for its stop (stop path) or not at all
    (helper: no thread stopped). p99 over the window's batches, from the
    stop histogram's buckets and the helper's batch count; plus the bystander
    thread's lateness (memwalk --tick-us), which also holds faults on evicted
    pages, write-protect faults and CPU waits."""
    if not b0 or not b1:
        return None
    stops = b1["batches"] - b0["batches"]
    helper = b1.get("no_stop", {}).get("helper_batches", 0) - b0.get("no_stop", {}).get("helper_batches", 0)
    before = dict((e, c) for e, c in b0["stop_buckets_us"])
    buckets = [(e, c - before.get(e, 0)) for e, c in b1["stop_buckets_us"]]
    edges = [0] + [e for e, c in buckets if c > 0]
    counts = [helper] + [c for e, c in buckets if c > 0]
    tick = (m.get("memwalk") or {}).get("tick")
    return {"batches": stops + helper, "stop_batches": stops, "helper_batches": helper,
            "stall_p50_us": bucket_quantile(edges, counts, 0.5), "stall_p99_us": bucket_quantile(edges, counts, 0.99),
            "stall_max_us": max([e for e, c in buckets if c > 0], default=0),
            "stopped_ms": round(sum(e * c for e, c in buckets if c > 0) / 1e3, 1),
            "bystander_tick": tick}


class Bench(LabRunner):
    def __init__(self, a):
        super().__init__(a.distriproc, a.lab)
        self.a = a

    def tool(self, host, *args, timeout=600):
        cp = self.run(self.ns(host, [PY, TOOL, *args]), timeout=timeout)
        return json.loads(cp.stdout.strip().splitlines()[-1])

    def memwalk_stat(self, host, addr):
        return self.memwalk(host, addr, MEMWALK_PORT)

    # ---- the workload ---------------------------------------------------------

    def start_workload(self):
        pidfile = os.path.join(self.a.workdir, "src.pid")
        if self.a.workload == "redis":
            cmd = ["redis-server", "--port", REDIS_PORT, "--bind", "0.0.0.0", "--save", "", "--appendonly", "no",
                   "--daemonize", "no", "--protected-mode", "no", "--dir", self.a.workdir]
        else:
            cmd = [os.path.join(ROOT, "build", "memwalk"), "--mib", self.a.memwalk_mib, "--threads", MEMWALK_THREADS,
                   "--pattern", self.a.memwalk_pattern, "--write-ratio", "0.05", "--port", MEMWALK_PORT, "--seed", "7",
                   "--tick-us", "1000"]
        self.dp("lab", "exec", "src", "--container", "--detach", "--pidfile", pidfile, "--", *cmd)
        with open(pidfile) as f:
            pid = int(f.read().strip())
        if self.a.workload == "redis":
            self.tool("src", "probe", "--host", SRC, "--port", REDIS_PORT, "--timeout", "30")
            log(f"loading {self.a.redis_mib} MiB into Redis")
            self.tool("src", "load", "--host", SRC, "--port", REDIS_PORT, "--mib", self.a.redis_mib, timeout=1800)
        else:
            end = time.monotonic() + 60
            while time.monotonic() < end:
                try:
                    if self.memwalk_stat("src", SRC)["ops"] > 0:
                        break
                except Exception:
                    pass
                time.sleep(0.5)
        return pid

    def measure(self, host, addr, seconds):
        """{mix: {...}} for Redis; {"memwalk": {...}} for memwalk."""
        out = {}
        if self.a.workload == "redis":
            for name, rr in MIXES:
                out[name] = self.tool(host, "zipf", "--host", addr, "--port", REDIS_PORT, "--theta", "0.99",
                                      "--read-ratio", rr, "--seconds", seconds, "--seed", "3",
                                      timeout=seconds + 120)
        else:
            s0 = self.memwalk_stat(host, addr)
            t0 = time.monotonic()
            time.sleep(seconds)
            s1 = self.memwalk_stat(host, addr)
            dt = time.monotonic() - t0
            out["memwalk"] = {"ops": s1["ops"] - s0["ops"], "seconds": round(dt, 3),
                              "ops_per_s": round((s1["ops"] - s0["ops"]) / dt, 1),
                              "errors": s1["errors"], "p50_us": None, "p99_us": None,
                              "tick": tick_delta(s0.get("tick"), s1.get("tick"))}
        return out

    def warm(self, host, addr, seconds):
        if seconds <= 0:
            return
        if self.a.workload == "redis":
            self.tool(host, "zipf", "--host", addr, "--port", REDIS_PORT, "--theta", "0.99", "--read-ratio", "0.95",
                      "--seconds", seconds, "--seed", "11", timeout=seconds + 120)
        else:
            time.sleep(seconds)

    def baseline(self, when):
        """The local baseline: the source process in src, warmed up exactly as
        every remote point is (--warmup s of the same warm-up load)."""
        log(f"local baseline ({when} of the run): {self.a.workload} in src, {self.a.warmup} s warm-up, "
            f"{self.a.seconds} s per mix")
        self.warm("src", SRC, self.a.warmup)
        return self.measure("src", SRC, self.a.seconds)

    # ---- the run --------------------------------------------------------------

    def point(self, images, key, f):
        overlay = os.path.join(images, "distriproc-overlay.log")
        if os.path.exists(overlay):
            os.unlink(overlay)   # each point starts from the checkpoint
        listen = f"{SRC}:{SERVE_PORT}"
        srv = self.spawn(self.ns("src", [self.a.distriproc, "serve", "--images", images, "--listen", listen,
                                         "--key", key]), os.path.join(self.a.workdir, f"serve-{f}.log"))
        self.wait_listen("src", SERVE_PORT)
        wd = os.path.join(self.a.workdir, f"wd-{f}")
        args = ["restore", "--source", listen, "--key", key, "--workdir", wd, "--host", "dst", "--json",
                "--prefetch", self.a.prefetch]
        if f > 0:
            args += ["--budget", f"{100 - f}%"]
        res = json.loads(self.dp(*args, timeout=300).stdout)
        try:
            addr = DST
            if self.a.workload == "redis":
                self.tool("dst", "probe", "--host", addr, "--port", REDIS_PORT, "--timeout", "30")
            log(f"remote {f}%: restored (pid {res['pid']}), warming up {self.a.warmup} s")
            self.warm("dst", addr, self.a.warmup)
            st0 = json.loads(self.dp("stats", "--workdir", wd, "--json").stdout)
            m = self.measure("dst", addr, self.a.seconds)
            st = json.loads(self.dp("stats", "--workdir", wd, "--json").stdout)
        finally:
            self.end_restore(res, srv)
        tot, b = st["total"], st.get("budget")
        return {"remote_pct": f, "budget": f"{100 - f}%" if f else None, "results": m,
                "remote_fraction": tot["remote_fraction"], "resident_bytes": tot["resident_bytes"],
                "remote_bytes": tot["remote_bytes"],
                "faults_during_measure": tot["faults"] - st0["total"]["faults"],
                "pages_prefetched": tot["pages_prefetched"], "pages_fetched": tot["pages_fetched"],
                "budget_stats": ({k: b[k] for k in ("budget_bytes", "max_resident_bytes", "batches", "evictions",
                                                    "writebacks", "refaults", "victim_buffer_hits",
                                                    "writeback_errors")}
                                 | {"stop_p50_us": b["stop"]["p50_us"], "stop_p99_us": b["stop"]["p99_us"]}
                                 # issue 13: evictions that stopped no thread (helper), dirty tracking
                                 | ({"no_stop": b["no_stop"]} if "no_stop" in b else {}))
                if b else None,
                "eviction_stall": eviction_stall(st0.get("budget"), b, m),
                "fault_latency": {k: tot["latency"][k] for k in ("count", "mean_us", "p50_us", "p99_us")}}

    def memwalk_bounds(self, doc):
        """memwalk: each point's analytic bound (issue 13): a walker's operation
        costs its local time plus, on a miss, one fault. With the measured miss
        rate m (remote faults / operations during the measurement) and the
        fault cost c (the daemon's mean fault latency at the run's 0% point,
        where nothing is evicted: what a fetch costs on this link and load;
        the point's own mean when the run has no 0% point), T threads give at
        most T / (T / local_ops_per_s + m * c) ops/s. The ratio bound /
        measured says how far eviction (stops, write-backs, thrash) and
        everything else not in the bound put the point below it."""
        zero = next((p for p in doc["points"] if p["remote_pct"] == 0), None)
        for p in doc["points"]:
            local = (p.get("local_paired") or doc["local"])["memwalk"]["ops_per_s"]
            r = p["results"]["memwalk"]
            src = zero if zero and zero["fault_latency"]["count"] else p
            cost_us = src["fault_latency"]["mean_us"]
            miss = p["faults_during_measure"] / r["ops"] if r["ops"] else None
            if miss is None or not cost_us or not local:
                p["bound"] = None
                continue
            bound = MEMWALK_THREADS / (MEMWALK_THREADS / local + miss * cost_us / 1e6)
            # the same with the median fault: how much of the ratio the tail
            # of the fault latency (a loaded machine's) carries
            p50 = src["fault_latency"]["p50_us"]
            bound_p50 = MEMWALK_THREADS / (MEMWALK_THREADS / local + miss * p50 / 1e6)
            p["bound"] = {"miss_rate": round(miss, 4), "fault_cost_us": cost_us,
                          "fault_cost_from": "0% point" if src is zero else "this point",
                          "ops_per_s": round(bound, 1), "vs_measured": ratio(bound, r["ops_per_s"]),
                          "fault_p50_us": p50, "ops_per_s_p50": round(bound_p50, 1),
                          "vs_measured_p50": ratio(bound_p50, r["ops_per_s"])}
            log(f"remote {p['remote_pct']}%: miss rate {miss:.1%}, fault cost {cost_us} us ({p['bound']['fault_cost_from']}): "
                f"bound {bound:.0f} ops/s, measured {r['ops_per_s']:.0f}: bound / measured {p['bound']['vs_measured']}")

    def go(self):
        a = self.a
        os.makedirs(a.workdir, exist_ok=True)
        self.dp("lab", "down", timeout=120, check=False)
        self.dp("lab", "up", timeout=120)
        doc = {"benchmark": "remote-fraction", "schema": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                       time.gmtime()),
               "command": a.command, "machine": {"uname": " ".join(platform.uname()),
                                                  "cpus": os.cpu_count()},
               "workload": a.workload, "seconds": a.seconds,
               **({"memwalk_pattern": a.memwalk_pattern, "memwalk_threads": MEMWALK_THREADS}
                  if a.workload == "memwalk" else {}), "warmup": a.warmup, "prefetch": a.prefetch,
               "points": []}
        pid = None
        try:
            pid = self.start_workload()
            doc["local"] = self.baseline("start")
            doc["local_warmup"] = a.warmup
            images = os.path.join(a.workdir, "images")
            subprocess.run(["rm", "-rf", images])
            os.makedirs(images)
            self.dp("checkpoint", "--host", "src", "--pid", pid, "--images", images, "--leave-running",
                    timeout=600)
            os.kill(pid, signal.SIGSTOP)   # idle while the points run: no CPU, no port answered
            key = os.path.join(a.workdir, "key")
            self.dp("keygen", key, check=False)
            for i, f in enumerate(a.fractions):
                if a.paired and i > 0:
                    # A/B/A: the local baseline again right before this point,
                    # so each point sits between two baselines of its own
                    os.kill(pid, signal.SIGCONT)
                    local_before = self.baseline(f"before the {f}% point")
                    os.kill(pid, signal.SIGSTOP)
                else:
                    local_before = doc["local"]
                p = self.point(images, key, f)
                p["local_before"] = local_before
                for mix, r in p["results"].items():
                    r["vs_local"] = ratio(r["ops_per_s"], doc["local"][mix]["ops_per_s"])
                log(f"remote {f}%: " + ", ".join(f"{m} {r['ops_per_s']:.0f} ops/s ({r['vs_local']:.0%} of local), "
                                                 f"p99 {r['p99_us']} us" for m, r in p["results"].items()) +
                    f"; steady remote fraction {p['remote_fraction']:.1%}")
                doc["points"].append(p)
                with open(a.json, "w") as fh:
                    json.dump(doc, fh, indent=1)
            os.kill(pid, signal.SIGCONT)
            doc["local_end"] = self.baseline("end")
            doc["local_drift"] = {mix: ratio(doc["local_end"][mix]["ops_per_s"], loc["ops_per_s"], minus=1)
                                  for mix, loc in doc["local"].items()}
            for i, p in enumerate(doc["points"]):
                after = doc["points"][i + 1]["local_before"] if i + 1 < len(doc["points"]) else doc["local_end"]
                p["local_paired"] = {}
                for mix, r in p["results"].items():
                    r["vs_local_end"] = ratio(r["ops_per_s"], doc["local_end"][mix]["ops_per_s"])
                    if a.paired:
                        # the mean of the baselines right before and right after
                        # the point: the machine's load drifts less in between
                        loc = (p["local_before"][mix]["ops_per_s"] + after[mix]["ops_per_s"]) / 2
                        p99 = [x[mix]["p99_us"] for x in (p["local_before"], after) if x[mix]["p99_us"]]
                        p["local_paired"][mix] = {"ops_per_s": round(loc, 1),
                                                  "p99_us": round(sum(p99) / len(p99), 1) if p99 else None}
                        r["vs_local_paired"] = ratio(r["ops_per_s"], loc)
                        r["p99_vs_local_paired"] = (ratio(r["p99_us"], p["local_paired"][mix]["p99_us"])
                                                    if r["p99_us"] and p99 else None)
                        log(f"remote {p['remote_pct']}% {mix}: {r['vs_local_paired']:.0%} of the local baselines "
                            f"around it, p99 {r['p99_vs_local_paired']}x theirs")
            if a.workload == "memwalk":
                self.memwalk_bounds(doc)
            log("local baseline drift (end / start - 1): " +
                ", ".join(f"{m} {d:+.1%}" for m, d in doc["local_drift"].items() if d is not None))
        finally:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)   # the source, left running by the checkpoint
                except ProcessLookupError:
                    pass
            self.kill_all()
            self.dp("lab", "down", timeout=120, check=False)
        with open(a.json, "w") as fh:
            json.dump(doc, fh, indent=1)
        log(f"wrote {a.json}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--distriproc", required=True)
    r.add_argument("--workload", choices=("redis", "memwalk"), required=True)
    r.add_argument("--fractions", default="0,10,30,50,70")
    r.add_argument("--json", required=True)
    r.add_argument("--seconds", type=int, default=20)
    r.add_argument("--warmup", type=int, default=20)
    r.add_argument("--redis-mib", type=int, default=256)
    r.add_argument("--memwalk-mib", type=int, default=256)
    r.add_argument("--memwalk-pattern", default="zipf:0.99")
    r.add_argument("--paired", action="store_true",
                   help="measure the local baseline again before every point (A/B/A/B...)")
    r.add_argument("--prefetch", default="none")
    r.add_argument("--lab")
    r.add_argument("--workdir", default="/tmp/distriproc-bench-remote-fraction")
    a = p.parse_args()
    a.fractions = [int(x) for x in a.fractions.split(",")]
    if any(f < 0 or f > 95 for f in a.fractions):
        p.error("--fractions are percentages in 0..95")
    if not 1 <= a.seconds <= 600 or not 0 <= a.warmup <= 600:
        p.error("--seconds 1..600, --warmup 0..600")
    a.command = "distriproc bench remote-fraction " + " ".join(sys.argv[4:])
    Bench(a).go()


if __name__ == "__main__":
    main()
