#!/usr/bin/python3
"""bench warmup: how fast a lazily restored process reaches full speed, with
and without replaying its recorded working set (issue 7).

Run by `distriproc bench warmup` (src/bench_warmup.c), as root, with the lab.
For each workload (Redis with a read workload on a tenth of its keys; ResNet-50
inference, tools/ml_infer.py):

  1. start it in a `src` container, load it, run its workload, and checkpoint
     it with --classify (the per-mapping Referenced hot set) while it works;
  2. serve the checkpoint on src;
  3. run A: restore on dst recording the first-touch trace (no replay), drive
     the workload for --seconds, measure throughput per 100 ms;
  4. run B: the same again, recording again (B's trace = the pages the next
     run touches, the ground truth for precision and recall);
  5. run C: restore with --hotset = A's trace (replay), same measurement;
     N*/C* repeat the pair without/with replay;
  6. runs S*: the same replay with --hotset-mode stage: the daemon keeps the
     replayed pages until the workload first touches each one, so the
     replay's hit rate (replayed pages used / replayed pages) is measured
     exactly, not estimated; kept apart from the time-to-90% comparison
     (installing on first touch costs a local fault per page);
  7. report: precision and recall of A's trace and of the classification
     against B's trace; the measured replay hit rate; time from the start
     of the restore to 90% of steady throughput, without (A, B) and with (C)
     replay; bytes and faults.

`client` is the measuring side, run inside dst's network namespace by the
driver; `analyze` is pure (tested on a fixture by tests/integration/
test_bench_warmup.py).
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TOOL = os.path.join(ROOT, "scripts", "redis_tool.py")
ML = os.path.join(ROOT, "tools", "ml_infer.py")
PY = "/usr/bin/python3"
SRC, DST = "10.250.0.1", "10.250.0.2"
SERVE_PORT = 7320
BUCKET = 0.1       # Redis: 100 ms buckets of GETs
LAB = os.environ.get("DISTRIPROC_LAB", "dp")  # a private lab (--lab) keeps tests' lab down/up away
ML_BUCKET = 2.0    # ML: a few inferences per second; finer buckets only show quantisation
LEAD = 2.0         # seconds the workload runs before the checkpoint starts
STOP_EARLY = 0.5   # ... and stops this long before the sample (then the dump)


# ---- analysis (pure) ---------------------------------------------------------------

def throughput_series(done_times, t_end, bucket=BUCKET):
    """Operations per second in consecutive buckets from 0 to t_end."""
    n = max(1, int(t_end / bucket + 0.5))
    counts = [0] * n
    for t in done_times:
        i = int(t / bucket)
        if 0 <= i < n:
            counts[i] += 1
    return [c / bucket for c in counts]


def analyze(series, offset_s, bucket=BUCKET, steady_frac=0.3, target=0.9, smooth=5, hold=None):
    """Steady throughput = mean of the last steady_frac of the series; the time
    to target x steady = offset_s (restore start -> first bucket) + the end of
    the first bucket whose trailing mean over `smooth` buckets reaches it and
    stays there for `hold` buckets (default: smooth). None if never."""
    hold = smooth if hold is None else hold
    if not series:
        raise ValueError("empty series")
    k = max(1, int(len(series) * steady_frac))
    steady = sum(series[-k:]) / k
    if steady <= 0:
        return {"steady_per_s": 0.0, "time_to_90_s": None}
    goal = target * steady
    means = []
    for i in range(len(series)):
        w = series[max(0, i - smooth + 1):i + 1]
        means.append(sum(w) / len(w))
    hit = None
    for i, m in enumerate(means):
        if m >= goal and all(x >= goal for x in means[i:i + hold]):
            hit = i
            break
    return {"steady_per_s": round(steady, 2),
            "time_to_90_s": None if hit is None else round(offset_s + (hit + 1) * bucket, 3)}


def time_to_level(series, offset_s, level, bucket=BUCKET, smooth=5, hold=None):
    """Like analyze, against a given level (ops/s) instead of the run's own
    steady throughput: the end of the first bucket whose trailing mean reaches
    level and stays for `hold` buckets; None if never."""
    hold = smooth if hold is None else hold
    means = []
    for i in range(len(series)):
        w = series[max(0, i - smooth + 1):i + 1]
        means.append(sum(w) / len(w))
    for i, m in enumerate(means):
        if m >= level and all(x >= level for x in means[i:i + hold]):
            return round(offset_s + (i + 1) * bucket, 3)
    return None


def ops_within(series, offset_s, seconds, bucket=BUCKET):
    """Operations completed within `seconds` of the start of the restore."""
    n = int(max(0.0, seconds - offset_s) / bucket)
    return int(round(sum(series[:n]) * bucket))


def common_reference(w):
    """The workload's steady throughput: the median of its runs' own steady
    values (the same warm process in every run; the machine's load moves
    each run's value), and each run's time to 90% of it."""
    steady = sorted(r["steady_per_s"] for r in w["runs"].values())
    ref = steady[len(steady) // 2]
    redis = w["workload"] == "redis"
    out = {"reference_per_s": ref, "time_to_90_of_reference_s": {}, "ops_first_5_s": {}}
    for tag, r in w["runs"].items():
        off = r["client"].get("start_delay_s") or 0.0
        out["time_to_90_of_reference_s"][tag] = time_to_level(r["series"], off, 0.9 * ref, bucket=r["bucket_s"],
                                                             smooth=5 if redis else 1, hold=5 if redis else 2)
        out["ops_first_5_s"][tag] = ops_within(r["series"], off, 5.0, bucket=r["bucket_s"])
    return out


def median(v):
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def summarize(w):
    """Medians over the runs without replay (A, B, N*) and with (C*), of the
    time to 90% of the common reference and of the ops in the first 5 s."""
    c = common_reference(w)
    tags = list(w["runs"])
    no = [t for t in tags if not t.startswith("C")]
    yes = [t for t in tags if t.startswith("C")]
    t90 = c["time_to_90_of_reference_s"]
    f5 = c["ops_first_5_s"]
    first = {}
    for t, r in w["runs"].items():
        lat = r["client"].get("latency_ms")
        if lat:  # ML: the first inference after the restore, from the restore's start
            first[t] = round((r["client"].get("start_delay_s") or 0.0) + lat[0] / 1000.0, 3)
    return {"reference_per_s": c["reference_per_s"],
            "runs_without": no, "runs_with": yes,
            "first_op_done_median_s": {"no_replay": median([first.get(t) for t in no]),
                                       "replay": median([first.get(t) for t in yes])},
            "time_to_90_median_s": {"no_replay": median([t90[t] for t in no]),
                                    "replay": median([t90[t] for t in yes])},
            "never_reached": {"no_replay": sum(t90[t] is None for t in no),
                              "replay": sum(t90[t] is None for t in yes)},
            "ops_first_5_s_median": {"no_replay": median([f5[t] for t in no]),
                                     "replay": median([f5[t] for t in yes])}}


# ---- report: markdown and gnuplot figures from the JSON ----------------------------------

def fmt_s(v):
    return "never" if v is None else "%.2f s" % v


def pct(v, digits=1):
    return "-" if v is None else "%.*f%%" % (digits, 100 * v)


def measured_hit_rate(stage_runs):
    """The replay's measured hit rate: the median of the S runs' own hit rates
    (run X, another key set, is not in it); None without S runs. The report
    computes it from the runs, never from a stored summary."""
    return median([r["replay"]["stage"]["hit_rate"] for t, r in stage_runs.items() if t.startswith("S")])


def stage_summary(stage, within=(1, 5, 10)):
    """From a run's replay.stage stats: the measured hit rate and, for each
    N in within, the share of the replayed pages used in the first N s."""
    delivered = stage["staged"] + stage["hits_inflight"]
    out = {"hit_rate": stage["hit_rate"], "delivered": delivered,
           "used": stage["hits"] + stage["hits_inflight"]}
    for n in within:
        used = stage["hits_within_s"].get(str(n))
        out["hit_rate_within_%d_s" % n] = None if used is None or not delivered else round(used / delivered, 4)
    return out


def stage_table(d):
    """Markdown rows for the S runs (replay with --hotset-mode stage)."""
    lines = ["", "**Replay hit rate, measured** (runs S*: the same hot set replayed with `--hotset-mode stage`: "
             "the daemon fetches the same pages in the same windows but keeps them, and installs each one when "
             "the workload first touches it, so every use is counted; the stats are read when the client's "
             "%s s end). Hit rate = replayed pages used / replayed pages (staged, plus pages a fault waited for "
             "while the replay fetched them); misses = first touches of pages with data that the replay did "
             "not bring; coverage = used / (used + misses); 'within N s': used within N s after the replay "
             "started (the end of the restore), as a share of the pages replayed. Run X (Redis) replays the same "
             "hot set while the client reads another tenth of the keys (seed + 1): the working set moved since "
             "the trace, and the measured hit rate shows it; X is not in the median." %
             d.get("params", {}).get("seconds", "?"), "",
             "| workload | run | pages replayed | used | of which waited in flight | hit rate | used within 1 s "
             "| 5 s | 10 s | misses | coverage | never used | steady (ops/s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w in d["workloads"]:
        for tag, r in w.get("stage_runs", {}).items():
            st = r["replay"]["stage"]
            sm = stage_summary(st)
            lines.append("| %s | %s | %d | %d | %d | %s | %s | %s | %s | %d | %s | %d | %.1f |" % (
                w["workload"], tag if tag != "X" else "X (other keys)", sm["delivered"], sm["used"], st["hits_inflight"],
                pct(st["hit_rate"], 2), pct(sm["hit_rate_within_1_s"]), pct(sm["hit_rate_within_5_s"]),
                pct(sm["hit_rate_within_10_s"]), st["misses"], pct(st["coverage"], 2), st["still_staged"] + st["expired"], r["steady_per_s"]))
    lines.append("")
    return lines


def report(d, outdir, cmdline):
    """Writes OUTDIR/warmup.md and, per workload, warmup-NAME.{png,svg} (throughput
    over time from the start of the restore, without and with replay). Returns
    the markdown text."""
    os.makedirs(outdir, exist_ok=True)
    lines = ["# Warm-up after a lazy restore: hot-set replay (issue 7)", "",
             "Command: `%s`" % cmdline, "", "Started %s. Runs A and B restore without a hot set and record "
             "their first-touch traces; run C replays A's trace right after the restore. Precision and "
             "recall compare a hot set with B's trace (the pages the next run touches). Times are from "
             "the start of `distriproc restore` (skeleton pull included) to 90%% of the run's steady "
             "throughput (mean of its last 30%%). Load average at the start / end: %s / %s on %s CPUs "
             "(other jobs shared the machine: throughput is noisy)." % (
                 d.get("started", "?"), d.get("loadavg_start", "?"), d.get("loadavg_end", "?"), d.get("cpus", "?")),
             ""]
    lines += ["| workload | hot set | precision | recall | pages predicted | pages touched next |",
              "|---|---|---:|---:|---:|---:|"]
    for w in d["workloads"]:
        for kind in ("trace", "classify"):
            acc = w["accuracy"][kind]
            lines.append("| %s | %s | %.1f%% | %.1f%% | %d | %d |" % (
                w["workload"], "trace of run A" if kind == "trace" else "checkpoint --classify (per mapping)",
                100 * acc["precision"], 100 * acc["recall"], acc["predicted_pages"], acc["actual_pages"]))
    measured = all(w.get("stage_runs") for w in d["workloads"])
    lines += ["", "| workload | run | replay | steady (ops/s) | time to 90%% | faults that fetched | "
              "pages replayed | replay hit rate (%s) | daemon prefetch hit rate |" % (
                  "measured: median of the S runs" if measured else "est."),
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for w in d["workloads"]:
        for tag in w["runs"]:
            r = w["runs"][tag]
            dm = r.get("daemon", {})
            rp = r.get("replay") or {}
            rate = measured_hit_rate(w["stage_runs"]) if measured else w["replay_hit_rate_est"]
            lines.append("| %s | %s | %s | %.1f | %s | %s | %s | %s | %s |" % (
                w["workload"], tag, "yes" if tag.startswith("C") else "no", r["steady_per_s"],
                fmt_s(r["time_to_90_s"]), dm.get("faults_remote", "?"), rp.get("submitted", 0),
                pct(rate, 2 if measured else 1) if tag.startswith("C") else "-",
                "%.1f%%" % (100 * dm["prefetch_hit_rate"]) if "prefetch_hit_rate" in dm else "?"))
    lines += ["", "Under load the runs' own steady values differ (the machine was shared), so the same "
              "comparison against one reference per workload (the median of its runs' steady throughput), "
              "and the work done in the first 5 s after the start of the restore:", "",
              "| workload | reference (ops/s) | run | replay | time to 90% of reference | ops in the first 5 s |",
              "|---|---:|---|---|---:|---:|"]
    for w in d["workloads"]:
        c = common_reference(w)
        for tag in w["runs"]:
            lines.append("| %s | %.1f | %s | %s | %s | %d |" % (
                w["workload"], c["reference_per_s"], tag, "yes" if tag.startswith("C") else "no",
                fmt_s(c["time_to_90_of_reference_s"][tag]), c["ops_first_5_s"][tag]))
    lines += ["", "**Summary** (medians over the runs without replay and with it; for ML also the time from "
              "the start of the restore until the first inference was answered):", "",
              "| workload | runs without / with | time to 90% without | with | ops in the first 5 s without | with "
              "| first inference without | with |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for w in d["workloads"]:
        sm = summarize(w)
        fo = sm["first_op_done_median_s"]
        lines.append("| %s | %d / %d | %s | %s | %s | %s | %s | %s |" % (
            w["workload"], len(sm["runs_without"]), len(sm["runs_with"]),
            fmt_s(sm["time_to_90_median_s"]["no_replay"]), fmt_s(sm["time_to_90_median_s"]["replay"]),
            sm["ops_first_5_s_median"]["no_replay"], sm["ops_first_5_s_median"]["replay"],
            fmt_s(fo["no_replay"]) if fo["no_replay"] is not None else "-",
            fmt_s(fo["replay"]) if fo["replay"] is not None else "-"))
    if measured:
        lines += stage_table(d)
    else:
        lines += ["", "Replay hit rate (est.): the share of replayed pages that the next run touches, i.e. the "
                  "trace's precision against run B. The daemon cannot see it directly: a replayed page that is "
                  "touched after it was installed causes no fault (no access bits are visible from outside on "
                  "this kernel), so the daemon's own prefetch hit rate counts only faults that found their page "
                  "still in flight.", ""]
    for w in d["workloads"]:
        name = w["workload"]
        dat = os.path.join(outdir, "warmup-%s.dat" % name)
        curves = [w["runs"]["A"], w["runs"]["C"]] + ([w["stage_runs"]["S"]] if "S" in w.get("stage_runs", {}) else [])
        with open(dat, "w") as f:
            for tag, r in zip(("A", "C", "S"), curves):
                off = r["client"].get("start_delay_s") or 0.0
                f.write("# run %s\n" % tag)
                for i, v in enumerate(r["series"]):
                    f.write("%.3f %.2f\n" % (off + (i + 1) * r["bucket_s"], v))
                f.write("\n\n")
        for term, ext in (("pngcairo size 900,500", "png"), ("svg size 900,500", "svg")):
            out = os.path.join(outdir, "warmup-%s.%s" % (name, ext))
            script = ("set terminal %s\nset output '%s'\nset title '%s: throughput after a lazy restore'\n"
                      "set xlabel 'seconds since the start of the restore'\nset ylabel 'ops/s'\nset key bottom right\n"
                      "set grid\nplot '%s' index 0 with lines lw 2 title 'no replay (run A)', "
                      "'' index 1 with lines lw 2 title 'hot-set replay (run C)'%s\n" % (
                          term, out, name, dat,
                          ", '' index 2 with lines lw 1 dt 2 title 'replay, stage mode: measures hits (run S)'"
                          if len(curves) > 2 else ""))
            cp = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True, timeout=60)
            if cp.returncode != 0:
                raise RuntimeError("gnuplot failed: " + cp.stderr)
        lines.append("![%s](warmup-%s.svg)" % (name, name))
        lines.append("")
    text = "\n".join(lines) + "\n"
    md = os.path.join(outdir, "warmup.md")
    # hand-written notes at the end of an earlier report are kept
    try:
        with open(md) as f:
            old = f.read()
        i = old.find("\n## Notes\n")
        if i >= 0:
            text += old[i:]
    except OSError:
        pass
    with open(md, "w") as f:
        f.write(text)
    return text


# ---- the measuring client (runs in dst's netns) ----------------------------------------

def client_redis(a):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import random
    from redis_tool import Resp
    deadline = time.monotonic() + a.connect_timeout
    while True:
        try:
            r = Resp(a.host, a.port, timeout=30)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)
    t0, t0w = time.monotonic(), time.time()
    nkeys = int(r.call("DBSIZE"))
    rng = random.Random(a.seed)
    keys = ["key:%d" % k for k in rng.sample(range(nkeys), max(1, int(nkeys * a.fraction)))]
    done, errors = [], 0
    end = t0 + a.seconds
    depth = 8
    while True:
        now = time.monotonic()
        if now >= end:
            break
        batch = [rng.choice(keys) for _ in range(depth)]
        r.send(b"".join(Resp.encode("GET", k) for k in batch))
        for _ in batch:
            if r.reply() is None:
                errors += 1
        t = time.monotonic() - t0
        done.extend([t] * depth)
    r.close()
    print(json.dumps({"start_delay_s": round(t0w - a.t_start, 4) if a.t_start else None, "ops": len(done),
                      "misses": errors, "seconds": a.seconds,
                      "series": throughput_series(done, a.seconds)}))


def ml_request(host, port, cmd, timeout):
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(cmd.encode() + b"\n")
        return json.loads(s.makefile("rb").readline())


def client_ml(a):
    deadline = time.monotonic() + a.connect_timeout
    while True:
        try:
            ml_request(a.host, a.port, "STAT", 5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    t0, t0w = time.monotonic(), time.time()
    done, lat, digests = [], [], set()
    while time.monotonic() - t0 < a.seconds:
        r = ml_request(a.host, a.port, "INFER", 120)
        done.append(time.monotonic() - t0)
        lat.append(r["latency_ms"])
        digests.add(r["digest"])
    print(json.dumps({"start_delay_s": round(t0w - a.t_start, 4) if a.t_start else None, "ops": len(done),
                      "seconds": a.seconds, "latency_ms": lat, "digests": sorted(digests),
                      "series": throughput_series(done, a.seconds, bucket=ML_BUCKET), "bucket_s": ML_BUCKET}))


# ---- the driver -----------------------------------------------------------------------

def log(msg):
    print("bench warmup: " + msg, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, a):
        self.a = a
        self.dp = a.distriproc
        self.work = a.workdir
        self.spawned = []
        self.restored = []

    def run(self, cmd, timeout=120, check=True, netns=None):
        if netns:
            cmd = ["nsenter", "--net=/run/netns/%s-%s" % (LAB, netns)] + cmd
        cp = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
        if check and cp.returncode != 0:
            raise RuntimeError("failed (exit %d): %s\n%s" % (cp.returncode, " ".join(map(str, cmd)), cp.stderr))
        return cp

    def spawn(self, cmd, netns=None, logname=None):
        if netns:
            cmd = ["nsenter", "--net=/run/netns/%s-%s" % (LAB, netns)] + cmd
        out = open(os.path.join(self.work, logname), "a") if logname else subprocess.DEVNULL
        p = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        self.spawned.append(p)
        return p

    def cleanup(self):
        for pid, daemon in self.restored:
            for p in (pid, daemon):
                try:
                    os.kill(p, signal.SIGKILL)
                except (ProcessLookupError, TypeError):
                    pass
        for p in self.spawned:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)

    def container(self, name, cmd):
        pidfile = os.path.join(self.work, name + ".pid")
        self.run([self.dp, "lab", "exec", "src", "--container", "--detach", "--pidfile", pidfile, "--"] + cmd)
        return int(open(pidfile).read().strip())

    def wait_gone(self, pid, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with open("/proc/%d/stat" % pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        return
            except OSError:
                return
            time.sleep(0.05)

    def restore(self, tag, key, listen, extra):
        wd = os.path.join(self.work, tag)
        cp = self.run([self.dp, "restore", "--source", listen, "--key", key, "--workdir", wd, "--host", "dst",
                       "--json", "--prefetch", self.a.prefetch] + extra, timeout=180)
        res = json.loads(cp.stdout)
        self.restored.append((res["pid"], res["daemon_pid"]))
        return wd, res

    def stats(self, wd):
        return json.loads(self.run([self.dp, "stats", "--workdir", wd, "--json"]).stdout)

    def stop_restored(self, res):
        os.kill(res["pid"], signal.SIGKILL)
        self.wait_gone(res["daemon_pid"], 60)

    def compare(self, images, pred, actual):
        return json.loads(self.run([self.dp, "hotset", "compare", "--images", images, pred, actual,
                                    "--json"]).stdout)

    def workload(self, name):
        a = self.a
        images = os.path.join(self.work, name, "images")
        os.makedirs(os.path.dirname(images), exist_ok=True)
        if name == "redis":
            pid = self.container("redis", ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode",
                                           "no", "--bind", "0.0.0.0", "--port", "6379"])
            self.run([PY, TOOL, "probe", "--host", SRC, "--port", 6379, "--timeout", 30], netns="src", timeout=40)
            log("redis: loading %d MiB" % a.redis_mib)
            load = json.loads(self.run([PY, TOOL, "load", "--host", SRC, "--port", 6379, "--mib", a.redis_mib],
                                       netns="src", timeout=900).stdout)
            info = {"keys": load["keys"], "used_memory": load["used_memory"], "read_fraction": a.fraction}
            workload_cmd = [PY, TOOL, "read", "--host", SRC, "--port", 6379, "--fraction", a.fraction,
                            "--seconds", LEAD + a.classify - STOP_EARLY, "--seed", a.seed]
            client = ["client", "redis", "--host", DST, "--port", 6379, "--fraction", a.fraction, "--seed", a.seed]
        else:
            pid = self.container("ml", [PY, ML, "--port", 7080, "--size", a.ml_size, "--threads", 1])
            end = time.monotonic() + 180
            while True:
                try:
                    first = self.run([PY, "-c", "import socket,sys;s=socket.create_connection(('%s',7080),5);"
                                      "s.sendall(b'INFER\\n');print(s.makefile().readline())" % SRC],
                                     netns="src", timeout=60)
                    info = json.loads(first.stdout)
                    break
                except (RuntimeError, ValueError):
                    if time.monotonic() > end:
                        raise
                    time.sleep(1)
            info = {"params": info["params"], "digest": info["digest"], "size": a.ml_size}
            workload_cmd = [PY, "-c", "import socket,time\nend=time.time()+%d\nwhile time.time()<end:\n"
                            " s=socket.create_connection(('%s',7080),60);s.sendall(b'INFER\\n');"
                            "s.makefile().readline();s.close()" % (LEAD + a.classify - 2 * STOP_EARLY, SRC)]
            client = ["client", "ml", "--host", DST, "--port", 7080]
        # The workload runs while the referenced bits are sampled and stops just
        # before the dump: its connection to src's address could not be
        # restored in dst (CRIU would need --tcp-close on both sides).
        w = self.spawn(workload_cmd, netns="src", logname=name + "-load.log")
        time.sleep(LEAD)
        log("%s: checkpoint with --classify %g" % (name, a.classify))
        ck = json.loads(self.run([self.dp, "checkpoint", "--host", "src", "--pid", pid, "--images", images,
                                  "--classify", a.classify, "--json"], timeout=600).stdout)
        if w.poll() is None:
            w.kill()
        w.wait()
        self.wait_gone(pid)
        key = os.path.join(self.work, "key")
        if not os.path.exists(key):
            self.run([self.dp, "keygen", key])
        listen = "%s:%d" % (SRC, SERVE_PORT + (name == "ml"))
        self.spawn([self.dp, "serve", "--images", images, "--listen", listen, "--key", key], netns="src",
                   logname=name + "-serve.log")
        time.sleep(1)

        runs = {}
        hot = os.path.join(self.work, name, "A", "trace.bin")
        plan = [("A", ["--record-trace", a.record]), ("B", ["--record-trace", a.record]), ("C", ["--hotset", hot])]
        for i in range(2, a.repeat + 1):  # more pairs, alternating, against the machine's noise
            plan += [("N%d" % i, ["--record-trace", "0"]), ("C%d" % i, ["--hotset", hot])]
        for i in range(1, a.stage_runs + 1):  # the replay's hit rate, measured
            plan.append(("S" if i == 1 else "S%d" % i, ["--hotset", hot, "--hotset-mode", "stage"]))
        if name == "redis" and a.stage_runs and a.shifted:
            # the same hot set while the client reads another tenth of the keys
            # (another seed): the working set moved since the trace was recorded
            plan.append(("X", ["--hotset", hot, "--hotset-mode", "stage"]))
        stage_runs = {}
        for tag, extra in plan:
            wd_tag = os.path.join(name, tag)
            log("%s: run %s (%s)" % (name, tag, " ".join(map(str, extra))))
            t_start = time.time()
            wd, res = self.restore(wd_tag, key, listen, extra)
            cl = list(client)
            if tag == "X":
                cl[cl.index("--seed") + 1] = a.seed + 1
            out = json.loads(self.run([PY, os.path.abspath(__file__)] + cl +
                                      ["--seconds", a.seconds, "--t-start", t_start], netns="dst",
                                      timeout=a.seconds + 300).stdout)
            st = self.stats(wd)
            bucket = out.get("bucket_s", BUCKET)
            an = analyze(out["series"], out["start_delay_s"] or 0.0, bucket=bucket,
                         smooth=5 if name == "redis" else 1, hold=5 if name == "redis" else 2)
            tot = st["total"]
            (stage_runs if tag[0] in "SX" else runs)[tag] = {"restore": res, "client": {k: v for k, v in out.items() if k != "series"},
                         "series": out["series"], "bucket_s": bucket, **an,
                         "daemon": {k: tot[k] for k in ("faults", "faults_remote", "pages_fetched",
                                                        "pages_prefetched", "prefetch_hits",
                                                        "prefetch_hit_rate", "bytes_on_wire")
                                    if k in tot},
                         "replay": st.get("replay")}
            if tag in ("A", "B"):
                end = time.monotonic() + a.record + 60
                while not os.path.exists(os.path.join(wd, "trace.bin")) and time.monotonic() < end:
                    time.sleep(0.2)
            self.stop_restored(res)
            if tag[0] in "SX":
                try:
                    with open(os.path.join(wd, "stats-final.json")) as f:
                        stage_runs[tag]["replay_final"] = json.load(f).get("replay")
                except (OSError, ValueError):
                    pass
                log("%s: run %s: replay hit rate %s (%s of %s replayed pages used), %s misses" % (
                    name, tag, pct(st["replay"]["stage"]["hit_rate"]),
                    st["replay"]["stage"]["hits"] + st["replay"]["stage"]["hits_inflight"],
                    st["replay"]["stage"]["staged"] + st["replay"]["stage"]["hits_inflight"],
                    st["replay"]["stage"]["misses"]))
            log("%s: run %s: steady %.1f/s, 90%% at %s s" % (name, tag, an["steady_per_s"], an["time_to_90_s"]))
        A, B = (os.path.join(self.work, name, t, "trace.bin") for t in ("A", "B"))
        cls = os.path.join(images, "distriproc-hotset.bin")
        acc = {"trace": self.compare(images, A, B), "classify": self.compare(images, cls, B)}
        c = runs["C"]
        replayed = (c["replay"] or {}).get("submitted", 0)
        w = {"workload": name, "info": info, "checkpoint": {k: ck[k] for k in ("lazy_bytes", "image_bytes")},
             "classify_summary": {k: ck["hotset"][k] for k in ("hot_pages", "lazy_data_pages", "seconds")},
             "accuracy": acc,
             "replay_hit_rate_est": acc["trace"]["precision"],
             "replay_hit_rate": measured_hit_rate(stage_runs),
             "replayed_pages": replayed,
             "runs": runs, "stage_runs": stage_runs}
        w["summary"] = summarize(w)
        return w

    def main(self):
        a = self.a
        os.makedirs(self.work, exist_ok=True)
        self.run([self.dp, "lab", "up"], timeout=60)
        out = {"bench": "warmup", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "loadavg_start": os.getloadavg(), "cpus": os.cpu_count(),
               "params": {k: v for k, v in vars(a).items() if k not in ("func",)}, "workloads": []}
        try:
            for name in a.workloads.split(","):
                out["workloads"].append(self.workload(name))
                self.cleanup()
        finally:
            self.cleanup()
            if LAB != "dp":
                self.run([self.dp, "lab", "down"], timeout=60, check=False)
        out["loadavg_end"] = os.getloadavg()
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
        for w in out["workloads"]:
            if w.get("replay_hit_rate") is not None:
                log("%s: replay hit rate %s measured (median of %d stage runs)" % (
                    w["workload"], pct(w["replay_hit_rate"]), sum(t.startswith("S") for t in w["stage_runs"])))
            t = w["summary"]["time_to_90_median_s"]
            log("%s: precision %.1f%% recall %.1f%% (trace), %.1f%%/%.1f%% (classify); 90%% of steady "
                "throughput after %s s without replay, %s s with (medians)" %
                (w["workload"], 100 * w["accuracy"]["trace"]["precision"], 100 * w["accuracy"]["trace"]["recall"],
                 100 * w["accuracy"]["classify"]["precision"], 100 * w["accuracy"]["classify"]["recall"],
                 t["no_replay"], t["replay"]))
        log("wrote " + a.json)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--json", required=True)
    r.add_argument("--distriproc", required=True)
    r.add_argument("--workdir", default="/tmp/distriproc-bench-warmup")
    r.add_argument("--workloads", default="redis,ml")
    r.add_argument("--redis-mib", type=int, default=256)
    r.add_argument("--fraction", type=float, default=0.1)
    r.add_argument("--ml-size", type=int, default=112)
    r.add_argument("--classify", type=float, default=5)
    r.add_argument("--record", type=float, default=10)
    r.add_argument("--seconds", type=float, default=20)
    r.add_argument("--seed", type=int, default=7)
    r.add_argument("--prefetch", default="none")
    r.add_argument("--repeat", type=int, default=3, help="pairs of runs without/with replay (A+B, C count as 1)")
    r.add_argument("--stage-runs", type=int, default=3, help="runs replaying with --hotset-mode stage (S*), "
                   "which measure the replay's hit rate")
    r.add_argument("--no-shifted", dest="shifted", action="store_false",
                   help="skip run X (Redis: the hot set replayed while the client reads another tenth of the keys)")
    r.add_argument("--lab", help="run in a private lab NAME-src/NAME-dst (DISTRIPROC_LAB; needs a "
                   "distriproc whose lab supports it)")
    c = sub.add_parser("client")
    c.add_argument("kind", choices=("redis", "ml"))
    c.add_argument("--host", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--fraction", type=float, default=0.1)
    c.add_argument("--seed", type=int, default=7)
    c.add_argument("--seconds", type=float, default=20)
    c.add_argument("--t-start", type=float, default=0)
    c.add_argument("--connect-timeout", type=float, default=60)
    an = sub.add_parser("analyze")
    an.add_argument("file")
    rp = sub.add_parser("report")
    rp.add_argument("file")
    rp.add_argument("--outdir", required=True)
    rp.add_argument("--command", default="distriproc bench warmup --json OUT")
    a = p.parse_args()
    if a.cmd == "client":
        (client_redis if a.kind == "redis" else client_ml)(a)
    elif a.cmd == "report":
        with open(a.file) as f:
            d = json.load(f)
        sys.stdout.write(report(d, a.outdir, a.command))
    elif a.cmd == "analyze":
        d = json.load(open(a.file))
        for w in d["workloads"]:
            for tag, run in w["runs"].items():
                print(w["workload"], tag, analyze(run["series"], run["client"]["start_delay_s"] or 0.0,
                                                  bucket=run["bucket_s"],
                                                  smooth=5 if w["workload"] == "redis" else 1,
                                                  hold=5 if w["workload"] == "redis" else 2))
    else:
        if a.lab:
            global LAB
            LAB = a.lab
            os.environ["DISTRIPROC_LAB"] = a.lab
        if os.geteuid() != 0:
            sys.exit("bench warmup: needs root (lab, criu); run as root")
        Bench(a).main()


if __name__ == "__main__":
    main()
