#!/usr/bin/python3
"""bench warmup --push: back to full speed after a migration with the warm-up
(issue 16), against the same process run locally in the same run.

Run by `distriproc bench warmup --push` (src/bench_warmup.c), as root, with
the lab capped at --bandwidth (default 1gbit). For each workload:

  redis  redis-server loaded with SETs of --value-size bytes over K random
         keys (redis-benchmark -t set -r K), read with
         `redis-benchmark -t get -r K -P 16 -c 8` (random keys over all data)
  seq    memwalk --pattern seq (a sequential scan, like ML weights)
  zipf   memwalk --pattern zipf:0.99 (skewed)

  1. start it in a src container, load it, measure its local throughput on
     src (the baseline of this run), checkpoint it (the dump = a migration's
     images mode), serve the images on src;
  2. for each --modes entry (none, all): restore on dst with
     `--prefetch auto --warmup MODE` (what `migrate` runs), drive the
     workload from the moment the restore returns, in short passes (redis:
     K/5 GETs; memwalk: STAT every 0.2 s), until 90% of local throughput is
     reached and a full pass is done (or --max-seconds);
  3. report: throughput over the first full pass (K GETs / npages walks) as
     a share of local; time from the restore's return to the first pass at
     >= 90% of local, against the link time of the lazy memory (bytes x 8 /
     bandwidth); fault p50 during the warm-up (faults sent with warm-up in
     flight) against the fault p50 of the run without warm-up.

Throughput is a ratio to local in the same run; nothing here is timed
against a constant."""
import argparse
import json
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlab  # noqa: E402
from benchlab import DST, SRC, log, ratio  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
REDIS_PORT = 6379
MW_PORT = 7070
SERVE_PORT = 7350


# ---- analysis (pure) ---------------------------------------------------------------

def first_pass(passes, full):
    """Throughput over the first `full` operations: passes are (t0, t1, ops)
    in order; the pass that crosses `full` counts pro rata. None if short."""
    done, busy = 0, 0.0
    for t0, t1, ops in passes:
        if ops <= 0 or t1 <= t0:
            continue
        take = min(ops, full - done)
        busy += (t1 - t0) * take / ops
        done += take
        if done >= full:
            return done / busy
    return None


def time_to(passes, goal):
    """End of the first pass whose throughput reaches goal (seconds from the
    restore's return), or None."""
    for t0, t1, ops in passes:
        if t1 > t0 and ops / (t1 - t0) >= goal:
            return t1
    return None


def summarize(local, passes, full, lazy_bytes, bits_per_s):
    fp = first_pass(passes, full)
    t90 = time_to(passes, 0.9 * local)
    link_s = lazy_bytes * 8 / bits_per_s if bits_per_s else None
    return {
        "first_pass_per_s": round(fp, 1) if fp else None,
        "first_pass_vs_local": ratio(fp, local) if fp else None,
        "time_to_90_s": round(t90, 3) if t90 is not None else None,
        "link_time_s": round(link_s, 3) if link_s else None,
        "time_to_90_vs_link": ratio(t90, link_s) if t90 is not None and link_s else None,
        # a first pass that needs (nearly) all the memory cannot end before
        # the memory is here: its share of local is at most this
        "first_pass_ceiling": round(min(1.0, (full / local) / link_s), 3) if link_s and local else None,
    }


# ---- workloads ---------------------------------------------------------------------

class Redis:
    name = "redis"

    def __init__(self, lab, a):
        self.lab, self.a = lab, a
        self.keys = max(1000, a.mib * (1 << 20) // (a.value_size + 300))

    def cmd(self):
        return ["redis-server", "--port", REDIS_PORT, "--bind", "0.0.0.0", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--protected-mode", "no", "--dir", self.a.workdir]

    def ready(self, host):
        addr = SRC if host == "src" else DST
        end = time.monotonic() + 30
        while time.monotonic() < end:
            cp = self.lab.run(self.lab.ns(host, ["redis-cli", "-h", addr, "-p", REDIS_PORT, "ping"]), check=False)
            if cp.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise RuntimeError(f"redis on {host} does not answer")

    def load(self):
        self.lab.run(self.lab.ns("src", ["redis-benchmark", "-h", SRC, "-p", REDIS_PORT, "-t", "set", "-n",
                                         2 * self.keys, "-r", self.keys, "-d", self.a.value_size, "-P", 16,
                                         "-c", 8, "-q"]), timeout=600)

    def bench_pass(self, host, n):
        """One pass of n random GETs: (wall start, wall end, ops)."""
        addr = SRC if host == "src" else DST
        cp = self.lab.run(self.lab.ns(host, ["redis-benchmark", "-h", addr, "-p", REDIS_PORT, "-t", "get",
                                             "-n", n, "-r", self.keys, "-P", 16, "-c", 8, "-q"]), timeout=600)
        t1 = time.monotonic()
        m = re.search(r"GET: ([0-9.]+) requests per second", cp.stdout.replace("\r", "\n"))
        if not m:
            raise RuntimeError(f"redis-benchmark printed no GET rate: {cp.stdout[-300:]!r}")
        rps = float(m.group(1))
        # the client's own rate (without its start-up), placed at the pass's end
        return (t1 - n / rps, t1, n)

    def local(self):
        self.bench_pass("src", self.keys)  # warm
        p = self.bench_pass("src", self.keys)
        return p[2] / (p[1] - p[0])

    def full(self):
        return self.keys

    def drive(self, deadline, goal, t_zero):
        passes = []
        n = max(1000, self.keys // 5)
        while True:
            t0, t1, ops = self.bench_pass("dst", n)
            passes.append((t0 - t_zero, t1 - t_zero, ops))
            done = sum(p[2] for p in passes)
            if (done >= self.keys and ops / (t1 - t0) >= goal) or time.monotonic() > deadline:
                return passes


class Memwalk:
    def __init__(self, lab, a, pattern, name):
        self.lab, self.a, self.pattern, self.name = lab, a, pattern, name
        self.npages = a.mib * 256

    def cmd(self):
        return [self.lab.memwalk_bin, "--mib", self.a.mib, "--threads", 1, "--pattern", self.pattern,
                "--port", MW_PORT, "--seed", 7]

    def stat(self, host):
        return self.lab.memwalk(host, SRC if host == "src" else DST, MW_PORT)

    def ready(self, host):
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                self.stat(host)
                return
            except (RuntimeError, ValueError):
                time.sleep(0.1)
        raise RuntimeError(f"memwalk on {host} does not answer")

    def load(self):
        pass

    def local(self):
        a = self.stat("src")
        t0 = time.monotonic()
        time.sleep(3)
        b = self.stat("src")
        return (b["ops"] - a["ops"]) / (time.monotonic() - t0)

    def full(self):
        return self.npages

    def drive(self, deadline, goal, t_zero):
        passes = []
        last_t, last_ops = time.monotonic(), self.stat("dst")["ops"]
        done = 0
        while True:
            time.sleep(0.2)
            s = self.stat("dst")
            t = time.monotonic()
            if s["errors"] or s["bad_bytes"]:
                raise RuntimeError(f"memwalk on dst read wrong data: {s}")
            ops = s["ops"] - last_ops
            passes.append((last_t - t_zero, t - t_zero, ops))
            done += ops
            last_t, last_ops = t, s["ops"]
            if (done >= self.npages and ops / (t - passes[-1][0] - t_zero) >= goal) or t > deadline:
                return passes


class Idle(Memwalk):
    """The warm-up alone: memwalk's walkers parked (HOLD) before the
    checkpoint, so nothing faults after the restore and the point measures
    the warm-up's rate against the link and the CPU the daemon and the page
    server spend per MiB of it. No throughput, no pass."""

    def __init__(self, lab, a):
        super().__init__(lab, a, "uniform", "idle")

    def load(self):
        if not self.lab.memwalk("src", SRC, MW_PORT, "HOLD").get("held"):
            raise RuntimeError("memwalk on src did not park its walkers")

    def local(self):
        return 1.0

    def drive(self, deadline, goal, t_zero):
        return []  # run_point waits for the warm-up to end


# ---- driver ------------------------------------------------------------------------

def daemon_stats(lab, workdir):
    return json.loads(lab.dp("stats", "--workdir", workdir, "--json").stdout)


# A mode is --warmup's value, or "all-shared": the warm-up on the faults'
# connection (DISTRIPROC_WARMUP_LANE=shared), to compare with its own lane.
LANE_SHARED = "-shared"


def restore_args(mode):
    """(--warmup value, extra environment) of a --modes entry."""
    if mode.endswith(LANE_SHARED):
        return mode[:-len(LANE_SHARED)], {"DISTRIPROC_WARMUP_LANE": "shared"}
    return mode, {}


def set_link_qdisc(lab, kind):
    """Hangs a child qdisc under the lab's tbf on both ends: pfifo_fast
    (three bands by the socket's priority: the server puts the warm-up's
    connection in the last, TC_PRIO_BULK) or a flow-fair one (fq, fq_codel:
    flows share the rate fairly); "fifo" keeps tbf's own FIFO. Gone with the
    lab's namespaces."""
    if kind == "fifo":
        return
    for host in ("src", "dst"):
        netns, dev = f"{lab.lab}-{host}", f"{lab.lab}-{host}0"
        qs = json.loads(lab.run(["tc", "-n", netns, "-j", "qdisc", "show", "dev", dev]).stdout)
        tbf = [q for q in qs if q.get("kind") == "tbf"]
        if not tbf:
            raise RuntimeError(f"no tbf on {netns}/{dev}: {qs}")
        lab.run(["tc", "-n", netns, "qdisc", "replace", "dev", dev, "parent", tbf[0]["handle"] + "1", kind])


def cpu_s(pid):
    """User + system CPU seconds of process pid so far (None once gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def run_point(lab, a, wl, images, key, mode, local, bits):
    log(f"{wl.name}: restore with --warmup {mode}")
    warmup, env = restore_args(mode)
    srv = lab.spawn(lab.ns("src", [lab.distriproc, "serve", "--images", images, "--listen",
                                   f"{SRC}:{SERVE_PORT}", "--key", key]),
                    os.path.join(a.workdir, f"serve-{wl.name}-{mode}.log"))
    lab.wait_listen("src", SERVE_PORT)
    wd = os.path.join(a.workdir, f"dst-{wl.name}-{mode}")
    shutil.rmtree(wd, ignore_errors=True)
    saved = lab.env
    lab.env = dict(saved, **env)
    try:
        res = json.loads(lab.dp("restore", "--source", f"{SRC}:{SERVE_PORT}", "--key", key, "--workdir", wd,
                                "--host", "dst", "--prefetch", "auto", "--warmup", warmup, "--record-trace",
                                "0", "--json", timeout=300).stdout)
    finally:
        lab.env = saved
    t_zero = time.monotonic()
    cpu0 = {"daemon": cpu_s(res["daemon_pid"]), "server": cpu_s(srv.pid)}
    cpu = {}
    try:
        wl.ready("dst")
        passes = wl.drive(t_zero + a.max_seconds, 0.9 * local, t_zero)
        st = daemon_stats(lab, wd)
        if mode != "none":  # the rest of the warm-up, for its done time
            end = time.monotonic() + a.max_seconds
            while st["warmup"]["state"] == "running" and time.monotonic() < end:
                time.sleep(0.5)
                st = daemon_stats(lab, wd)
        # CPU from the restore's return to here: the faults, the warm-up and
        # (Redis) the passes' requests, daemon and page server apart
        cpu = {k: round(cpu_s(pid) - cpu0[k], 3) if cpu0[k] is not None and cpu_s(pid) is not None else None
               for k, pid in (("daemon", res["daemon_pid"]), ("server", srv.pid))}
    finally:
        lab.end_restore(res, srv)
    tot, w = st["total"], st["warmup"]
    tot.pop("latency_buckets_us", None)  # the CDF: p50/p90/p99 in "latency" are kept
    lazy = tot["resident_bytes"] + tot["remote_bytes"]
    out = {"mode": mode, "lane": "shared" if env else "own", "cpu_s": cpu,
           "cpu_ms_per_mib": {k: round(v * 1000 / (lazy / (1 << 20)), 3) if v is not None and lazy else None
                              for k, v in cpu.items()},
           "restore": res, "passes": [[round(x, 4) for x in p[:2]] + [p[2]] for p in passes],
           "lazy_bytes": lazy, "fault_p50_us": st["total"].get("latency", {}).get("p50_us"),
           "faults_remote": tot["faults_remote"], "warmup": w, "total": tot}
    out.update(summarize(local, passes, wl.full(), lazy, bits))
    log(f"{wl.name} {mode}: first pass {out['first_pass_vs_local']} of local, 90% after {out['time_to_90_s']} s "
        f"(link time {out['link_time_s']} s), warm-up {w['state']} {w['bytes_moved']} B")
    return out


def run_workload(lab, a, wl, bits):
    d = os.path.join(a.workdir, wl.name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "images"))
    pidfile = os.path.join(d, "src.pid")
    lab.dp("lab", "exec", "src", "--container", "--detach", "--pidfile", pidfile, "--", *map(str, wl.cmd()))
    pid = int(open(pidfile).read().strip())
    try:
        wl.ready("src")
        wl.load()
        local = wl.local()
        log(f"{wl.name}: local {local:.1f} ops/s on src")
        lab.dp("checkpoint", "--host", "src", "--pid", pid, "--images", os.path.join(d, "images"), timeout=600)
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    key = os.path.join(d, "key")
    lab.dp("keygen", key)
    points = [run_point(lab, a, wl, os.path.join(d, "images"), key, m, local, bits) for m in a.modes]
    summary = {"local_per_s": round(local, 1)}
    summary.update(compare(points))
    return {"workload": wl.name, "summary": summary, "points": points}


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    k = len(xs) // 2
    return xs[k] if len(xs) % 2 else (xs[k - 1] + xs[k]) / 2


def compare(points):
    """Each warm-up mode against --warmup none of the same run (a mode run
    more than once, as A/B/A/B pairs: the median of its runs). The "all"
    mode's figures keep their names; every other mode's (all-shared) come
    with its name as a suffix."""
    none = [p for p in points if p["mode"] == "none"]
    if not none:
        return {}
    # the same measure in both runs: a fault's fetch, sent -> data (lib/lazyd_warmup.h)
    none_p50 = median(p["warmup"]["fault_idle"]["p50_us"] for p in none if p["warmup"]["fault_idle"]["count"])
    out = {"first_pass_vs_local_none": median(p["first_pass_vs_local"] for p in none),
           "fault_p50_us_no_warmup": none_p50,
           "fault_p50_us_all_faults_none": median(p["fault_p50_us"] for p in none)}
    for mode in dict.fromkeys(p["mode"] for p in points if p["mode"] != "none"):
        ps = [p for p in points if p["mode"] == mode]
        during = median(p["warmup"]["fault_during"]["p50_us"] for p in ps if p["warmup"]["fault_during"]["count"])
        sfx = "" if mode == "all" else "_" + mode.replace("-", "_")
        out.update({
            f"first_pass_vs_local_{mode.replace('-', '_')}": median(p["first_pass_vs_local"] for p in ps),
            f"first_pass_ceiling{sfx}": median(p["first_pass_ceiling"] for p in ps),
            f"time_to_90_vs_link_{mode.replace('-', '_')}": median(p["time_to_90_vs_link"] for p in ps),
            f"fault_p50_us_during_warmup{sfx}": during,
            f"fault_p50_ratio{sfx}": ratio(during, none_p50) if during and none_p50 else None,
            f"faults_during_warmup{sfx}": median(p["warmup"]["fault_during"]["count"] for p in ps),
            f"fault_p50_us_all_faults_{mode.replace('-', '_')}": median(p["fault_p50_us"] for p in ps),
            f"warmup_rate_bytes_per_s{sfx}": median(p["warmup"]["rate_bytes_per_s"] for p in ps),
            f"runs{sfx}": len(ps),
        })
    for mode in dict.fromkeys(p["mode"] for p in points):
        ps = [p for p in points if p["mode"] == mode]
        for who in ("daemon", "server"):
            out[f"cpu_ms_per_mib_{who}_{mode.replace('-', '_')}"] = median(
                p.get("cpu_ms_per_mib", {}).get(who) for p in ps)
    return out


    return {"workload": wl.name, "summary": summary, "points": points}


def main():
    p = argparse.ArgumentParser(prog="distriproc bench warmup --push")
    p.add_argument("cmd", choices=["run"])  # src/bench_script.c: run --distriproc SELF ARGS
    p.add_argument("--push", action="store_true")
    p.add_argument("--distriproc", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--workloads", default="redis,seq,zipf")
    p.add_argument("--modes", default="none,all")
    p.add_argument("--mib", type=int, default=128)
    p.add_argument("--value-size", type=int, default=1000)
    p.add_argument("--bandwidth", default="1gbit")
    p.add_argument("--max-seconds", type=float, default=60)
    p.add_argument("--lab", default=None)
    p.add_argument("--workdir", default="/tmp/distriproc-bench-push")
    p.add_argument("--link-qdisc", choices=["fifo", "pfifo_fast", "fq", "fq_codel"], default="fifo",
                   help="under the lab's tbf: its own FIFO, the 3-band priority qdisc, or a flow-fair child "
                   "(what Linux hosts run; needs the kernel's sch_fq / sch_fq_codel)")
    a = p.parse_args()
    a.modes = a.modes.split(",")
    os.makedirs(a.workdir, exist_ok=True)
    lab = benchlab.LabRunner(a.distriproc, a.lab)
    lab.memwalk_bin = os.path.join(os.path.dirname(os.path.abspath(a.distriproc)), "memwalk")
    units = {"gbit": 1e9, "mbit": 1e6, "kbit": 1e3}
    m = re.fullmatch(r"([0-9.]+)(gbit|mbit|kbit)", a.bandwidth)
    if not m:
        sys.exit("--bandwidth takes e.g. 1gbit or 500mbit")
    bits = float(m.group(1)) * units[m.group(2)]
    lab.dp("lab", "up", "--bandwidth", a.bandwidth, timeout=120)
    set_link_qdisc(lab, a.link_qdisc)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load0 = os.getloadavg()
    results = []
    try:
        for name in a.workloads.split(","):
            wl = {"redis": lambda: Redis(lab, a), "seq": lambda: Memwalk(lab, a, "seq", "seq"),
                  "zipf": lambda: Memwalk(lab, a, "zipf:0.99", "zipf"), "idle": lambda: Idle(lab, a)}[name]()
            results.append(run_workload(lab, a, wl, bits))
    finally:
        lab.kill_all()
    doc = {"bench": "warmup-push", "started": started, "command": " ".join(sys.argv[1:]),
           "bandwidth_bits_per_s": bits, "link_qdisc": a.link_qdisc, "mib": a.mib, "loadavg_start": load0, "loadavg_end": os.getloadavg(),
           "cpus": os.cpu_count(), "results": results}
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=1)
    for r in results:
        print(r["workload"], json.dumps(r["summary"]))


if __name__ == "__main__":
    main()
