#!/usr/bin/python3
"""bench_report: plots (gnuplot, PNG and SVG) and REPORT.md from the JSON that
`distriproc bench ttfr` and `distriproc bench faults` write.

  bench_report.py [--ttfr FILE] [--faults FILE] [--remote-fraction FILE ...] [--notes FILE] [--loadavg FILE ...] --out DIR

--loadavg FILE (repeatable: runs taken at different times each have their
own): a sampler's log taken during the runs, one line per sample,
"HH:MM:SS L1 L5 L15 ..." (the time, then /proc/loadavg); the report gives the
1-minute load's min, median and max (the machine is shared).

Writes into DIR:
  ttfr-restore.{png,svg}  time to first reply from restore start: bars per size
                          and system (median; error bars min..max; log scale)
  ttfr-freeze.{png,svg}   the same from the freeze of the source
  fault-cdf.{png,svg}     fault service latency CDF per series and emulated RTT
  scan.{png,svg}          sequential-scan throughput per prefetch policy vs the
                          raw TCP stream, per emulated RTT
  remote-fraction-throughput.{png,svg}  throughput (% of local, same run) vs the
                          measured steady remote %, points labelled with their budget
  remote-fraction-p99.{png,svg}         P99 request latency vs the same (Redis)
  REPORT.md               machine, exact commands, tables, the issue's checks
                          computed from the numbers, and the notes file

The ttfr schema is what bench_ttfr.c writes (schema 1): top-level benchmark,
schema, started, command, machine{uname,cpu,cpus,memory}, bandwidth, repeat,
prefetch, probe, sizes[{size, bytes, keys, redis_used_memory, skipped,
loadavg_start, loadavg_end (optional), systems{NAME: {n, error,
from_restore_s{median,min,max}, from_freeze_s{..}, bytes_moved{..},
phases{freeze_s{..}, skeleton_s{..}, transfer_s{..}, restore_s{..},
first_reply_s{..}} (optional: runs before issue 11 have dump_s/transfer_s/
restore_s instead), runs[...]}}}]. A system a run did not measure is absent
from its systems (--systems); the table leaves it out.

The faults schema (schema 1; what `bench faults` is to write):
  {"benchmark": "faults", "schema": 1, "started": ISO, "command": STR,
   "machine": {...as above...},
   "runs": [{"emulate_rtt_us": 0,
             "latency": {SERIES: {"method": STR (optional), "count": N, "p50_us": X, "p90_us": X,
                                  "p99_us": X, "max_us": X,
                                  "buckets": [[upper_us, count], ...]}},
             "scan": {"bytes": N, "raw_stream_MBps": X,
                      "policies": [{"policy": "none", "MBps": X,
                                    "prefetch_hit_rate": F}, ...]}}]}
  SERIES are local_floor (our daemon serving from memory, no network),
  raw_tcp (4 KiB request/response on the same link) and distriproc (a remote
  fault), the series the issue's check uses; local_floor_daemon and
  distriproc_daemon (the daemon's own histogram of the same restores) are
  secondary: in the table, not in the check or the CDF. "method" says how a
  series was taken (e.g. first touch timed by the application, exact samples;
  daemon histogram, log2 buckets). buckets are [upper_us, count] pairs,
  cumulated here into a CDF.

Exit status 1 with a message naming the file and field if the JSON does not
have the expected shape."""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

SYSTEMS = [
    ("distriproc", "DistriProc (lazy)"),
    ("distriproc_memory", "DistriProc memory mode"),
    ("criu_lazy_remote", "CRIU lazy, remote (its page server)"),
    ("criu_full", "CRIU full migration"),
    ("criu_lazy_local", "CRIU lazy, local images"),
    ("local", "local (no migration)"),
]
# Every system's phases (bench_ttfr.h), contiguous: they add up to from_freeze_s.
PHASES = [("freeze_s", "freeze"), ("skeleton_s", "skeleton"), ("transfer_s", "transfer"),
          ("restore_s", "restore"), ("first_reply_s", "first reply")]
# Issue 11's targets, for DistriProc memory mode (medians of the same run).
TARGET_SYSTEM = "distriproc_memory"
TARGET_FREEZE_S = 0.5        # from freeze at 4 GiB
TARGET_GROWTH = 1.5          # from freeze, 4 GiB / 256 MiB
TARGET_VS_FULL = 50.0        # CRIU full / memory mode at 4 GiB
SERIES = [
    ("local_floor", "local floor (daemon, no network)"),
    ("raw_tcp", "raw 4 KiB TCP req/resp"),
    ("distriproc", "DistriProc remote fault"),
]
SECONDARY = [
    ("local_floor_daemon", "local floor, daemon's histogram"),
    ("distriproc_daemon", "DistriProc remote fault, daemon's histogram"),
]


class BadInput(Exception):
    pass


def need(obj, key, where, kind=None):
    if not isinstance(obj, dict) or key not in obj:
        raise BadInput(f"{where}: missing field '{key}'")
    v = obj[key]
    if kind is not None and not isinstance(v, kind):
        raise BadInput(f"{where}.{key}: expected {kind.__name__ if isinstance(kind, type) else kind}, "
                       f"got {type(v).__name__}")
    return v


NUM = (int, float)


def load(path, benchmark):
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise BadInput(f"{path}: {e.strerror}")
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: not JSON ({e})")
    if need(doc, "benchmark", path) != benchmark:
        raise BadInput(f"{path}: benchmark is '{doc['benchmark']}', expected '{benchmark}'")
    if need(doc, "schema", path, int) != 1:
        raise BadInput(f"{path}: schema {doc['schema']} is not supported (1 is)")
    return doc


def check_ttfr(doc, path):
    sizes = need(doc, "sizes", path, list)
    known = {k for k, _ in SYSTEMS}
    for i, z in enumerate(sizes):
        w = f"{path}: sizes[{i}]"
        need(z, "size", w, str)
        if z.get("skipped"):
            continue
        systems = need(z, "systems", w, dict)
        if not any(name in systems for name in known):
            raise BadInput(f"{w}.systems: none of the known systems ({', '.join(sorted(known))})")
        for name, _ in SYSTEMS:
            if name not in systems:
                continue
            s = need(systems, name, w + ".systems", dict)
            if need(s, "n", f"{w}.systems.{name}", int) > 0:
                for field in ("from_restore_s", "from_freeze_s", "bytes_moved"):
                    st = need(s, field, f"{w}.systems.{name}", dict)
                    for k in ("median", "min", "max"):
                        need(st, k, f"{w}.systems.{name}.{field}", NUM)
                if "phases" in s:
                    ph = need(s, "phases", f"{w}.systems.{name}", dict)
                    for field, _ in PHASES:
                        need(need(ph, field, f"{w}.systems.{name}.phases", dict), "median",
                             f"{w}.systems.{name}.phases.{field}", NUM)
    return sizes


def check_faults(doc, path):
    runs = need(doc, "runs", path, list)
    for i, r in enumerate(runs):
        w = f"{path}: runs[{i}]"
        need(r, "emulate_rtt_us", w, NUM)
        lat = need(r, "latency", w, dict)
        for name, s in lat.items():
            if "method" in s:
                need(s, "method", f"{w}.latency.{name}", str)
            for k in ("p50_us", "p99_us"):
                need(s, k, f"{w}.latency.{name}", NUM)
            for j, b in enumerate(need(s, "buckets", f"{w}.latency.{name}", list)):
                if not (isinstance(b, list) and len(b) == 2 and all(isinstance(x, NUM) for x in b)):
                    raise BadInput(f"{w}.latency.{name}.buckets[{j}]: expected [upper_us, count]")
        scan = need(r, "scan", w, dict)
        need(scan, "raw_stream_MBps", f"{w}.scan", NUM)
        for j, p in enumerate(need(scan, "policies", f"{w}.scan", list)):
            need(p, "policy", f"{w}.scan.policies[{j}]", str)
            need(p, "MBps", f"{w}.scan.policies[{j}]", NUM)
    return runs


def check_remote_fraction(doc, path):
    """Schema 1 of scripts/bench_remote_fraction.py: workload, local{MIX: {ops_per_s, p99_us}},
    points[{remote_pct, remote_fraction, results{MIX: {ops_per_s, vs_local, p50_us, p99_us}},
    budget_stats}]."""
    need(doc, "workload", path, str)
    local = need(doc, "local", path, dict)
    points = need(doc, "points", path, list)
    for i, pt in enumerate(points):
        where = f"{path}: points[{i}]"
        need(pt, "remote_pct", where)
        need(pt, "remote_fraction", where)
        for mix, r in need(pt, "results", where, dict).items():
            need(r, "ops_per_s", f"{where}.results.{mix}")
            if mix not in local:
                raise BadInput(f"{where}: mix {mix} has no local baseline")
    return points


def loadavg_line(path):
    """The 1-minute load average during the runs, from a sampler's log."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise BadInput(f"{path}: {e.strerror}")
    vals, times = [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) < 2 or len(parts[0].split(":")) != 3:
                raise ValueError
            v = float(parts[1])
        except ValueError:
            raise BadInput(f"{path}: line {i + 1}: expected 'HH:MM:SS L1 L5 L15 ...', got {line[:60]!r}")
        vals.append(v)
        times.append(parts[0])
    if not vals:
        raise BadInput(f"{path}: no load-average samples")
    srt = sorted(vals)
    med = srt[(len(srt) - 1) // 2]
    return (f"- load average (1 min) during the runs, shared machine: median {med:.2f}, min {srt[0]:.2f}, "
            f"max {srt[-1]:.2f} ({len(vals)} samples {times[0]}..{times[-1]} UTC)")


# ---- gnuplot ------------------------------------------------------------------

def gnuplot(script, outdir, name):
    """Runs one gnuplot script twice: PNG and SVG."""
    for term, ext in (("pngcairo size 1000,600 font 'sans,11'", "png"),
                      ("svg size 1000,600 dynamic font 'sans,11'", "svg")):
        full = f"set terminal {term}\nset output '{os.path.join(outdir, name + '.' + ext)}'\n{script}\n"
        cp = subprocess.run(["gnuplot"], input=full, capture_output=True, text=True, timeout=60)
        if cp.returncode != 0 and ext == "png" and "pngcairo" in cp.stderr:
            full = full.replace("pngcairo", "png")
            cp = subprocess.run(["gnuplot"], input=full, capture_output=True, text=True, timeout=60)
        if cp.returncode != 0:
            raise RuntimeError(f"gnuplot failed for {name}.{ext}: {cp.stderr.strip()}")


def plot_ttfr(sizes, field, title, outdir, tmp, name):
    rows = [z for z in sizes if not z.get("skipped")]
    if not rows:
        return False
    dat = os.path.join(tmp, name + ".dat")
    with open(dat, "w") as f:
        for z in rows:
            cols = [z["size"]]
            for key, _ in SYSTEMS:
                s = z["systems"].get(key, {})
                if s.get("n", 0) > 0:
                    st = s[field]
                    cols += [max(st["median"], 1e-4), max(st["min"], 1e-4), max(st["max"], 1e-4)]
                else:
                    cols += ["NaN", "NaN", "NaN"]
            f.write(" ".join(str(c) for c in cols) + "\n")
    plots = []
    for i, (key, label) in enumerate(SYSTEMS):
        # gnuplot refuses a histogram column without one valid point: leave out
        # a system that failed at every size (the table says why).
        if not any(z["systems"].get(key, {}).get("n", 0) > 0 for z in rows):
            continue
        c = 2 + 3 * i
        plots.append(f"'{dat}' using {c}:{c + 1}:{c + 2}{':xtic(1)' if not plots else ''} title '{label}'")
    script = f"""
set title "{title}"
set ylabel "seconds (log scale; bars = median, whiskers = min..max)"
set xlabel "Redis data size"
set logscale y
set yrange [0.001:*]
set grid ytics
set key top left
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.8 border -1
set boxwidth 0.9
plot {", ".join(plots)}
"""
    gnuplot(script, outdir, name)
    return True


def cdf_points(buckets):
    total = sum(c for _, c in buckets)
    if total == 0:
        return []
    acc, pts = 0, []
    for upper, c in sorted(buckets):
        acc += c
        pts.append((upper, acc / total))
    return pts


def plot_fault_cdf(runs, outdir, tmp):
    plots = []
    for r in runs:
        rtt = r["emulate_rtt_us"]
        for key, label in SERIES:
            s = r["latency"].get(key)
            if not s:
                continue
            pts = cdf_points(s["buckets"])
            if not pts:
                continue
            dat = os.path.join(tmp, f"cdf-{key}-{rtt}.dat")
            with open(dat, "w") as f:
                for x, y in pts:
                    f.write(f"{max(x, 0.1)} {y}\n")
            plots.append(f"'{dat}' using 1:2 with steps lw 2 title '{label}, RTT {rtt:g} us'")
    if not plots:
        return False
    script = f"""
set title "Fault service latency CDF"
set xlabel "latency (us, log scale)"
set ylabel "fraction of faults"
set logscale x
set yrange [0:1.02]
set grid
set key bottom right
plot {", ".join(plots)}
"""
    gnuplot(script, outdir, "fault-cdf")
    return True


def plot_scan(runs, outdir, tmp):
    policies = []
    for r in runs:
        for p in r["scan"]["policies"]:
            if p["policy"] not in policies:
                policies.append(p["policy"])
    if not runs or not policies:
        return False
    dat = os.path.join(tmp, "scan.dat")
    with open(dat, "w") as f:
        for r in runs:
            by = {p["policy"]: p["MBps"] for p in r["scan"]["policies"]}
            cols = [f"\"RTT {r['emulate_rtt_us']:g} us\""] + [by.get(p, "NaN") for p in policies]
            cols.append(r["scan"]["raw_stream_MBps"])
            f.write(" ".join(str(c) for c in cols) + "\n")
    plots = [f"'{dat}' using {i + 2}{':xtic(1)' if i == 0 else ''} title 'prefetch {p}'"
             for i, p in enumerate(policies)]
    plots.append(f"'{dat}' using {len(policies) + 2} title 'raw TCP stream'")
    script = f"""
set title "Sequential scan of remote memory"
set ylabel "MB/s"
set grid ytics
set key top right
set yrange [0:*]
set style data histogram
set style histogram clustered gap 2
set style fill solid 0.8 border -1
set boxwidth 0.9
plot {", ".join(plots)}
"""
    gnuplot(script, outdir, "scan")
    return True


# ---- REPORT.md ----------------------------------------------------------------

def rf_name(doc, docs):
    """A run's name: its workload, and its start when another run has the same."""
    same = sum(d["workload"] == doc["workload"] for d in docs) > 1
    return doc["workload"] + (f" ({doc.get('started', '?')})" if same else "")


def rf_series(docs):
    """[(title, local_result, [(remote_pct, result, point)])] per workload and mix."""
    out = []
    for doc in docs:
        for mix in doc["local"]:
            pts = [(pt["remote_pct"], pt["results"][mix], pt) for pt in doc["points"] if mix in pt["results"]]
            title = rf_name(doc, docs) + ("" if mix == doc["workload"] else f" {mix}")
            out.append((title, doc["local"][mix], sorted(pts, key=lambda x: x[0])))
    return out


RF_COLORS = ("#9400d3", "#009e73", "#56b4e9", "#e69f00", "#d55e00", "#0072b2", "#cc79a7", "#000000", "#999933")


def rf_color(k):
    """One colour per curve, so that several runs of one workload stay apart."""
    return RF_COLORS[k % len(RF_COLORS)]


def budget_label(pt):
    """A point's budget as a plot label: the target it was given, not what it
    measured (that is the x coordinate)."""
    return f"budget {pt['budget']}" if pt.get("budget") else "no budget"


def plot_remote_fraction(docs, outdir, tmp):
    """x = the measured steady remote fraction of each point (the daemon's, at
    the end of its measurement); each point labelled with the budget it ran
    with, since the target percentage is not what the process got (a budget
    above the touched memory leaves the untouched rest remote anyway)."""
    series = rf_series(docs)
    plots = []
    for k, (title, loc, pts) in enumerate(series):
        path = os.path.join(tmp, f"rf{k}.dat")
        with open(path, "w") as f:
            for pct, r, pt in sorted(pts, key=lambda x: x[2]["remote_fraction"]):  # a line along x
                rel = 100.0 * r["ops_per_s"] / loc["ops_per_s"] if loc["ops_per_s"] else 0
                f.write(f"{100.0 * pt['remote_fraction']:.2f} {rel:.2f} {r.get('p99_us') or 0} {pct} "
                        f"\"{budget_label(pt)}\"\n")
        plots.append((path, title, loc))
    if not plots:
        return False
    xlabel = "set xlabel 'measured steady remote share of lazy memory (%); labels: the budget each point ran with'\n"
    lines = ", ".join(f"'{p}' using 1:2 with linespoints lw 2 lc rgb '{rf_color(k)}' title '{t}', "
                      f"'{p}' using 1:2:5 with labels font ',8' offset 0,0.8 notitle"
                      for k, (p, t, _) in enumerate(plots))
    gnuplot("set title 'Throughput vs measured remote fraction (local execution = 100%, same run)'\n"
            + xlabel + "set ylabel '% of local throughput (baseline at the start of the run)'\n"
            "set yrange [0:*]\nset xrange [0:100]\nset grid\nset key below font ',8'\n"
            f"plot {lines}, 70 with lines dt 2 lc rgb 'gray' title '70% (RQ3 target)'", outdir,
            "remote-fraction-throughput")
    lat = [(p, t, loc) for p, t, loc in plots if loc.get("p99_us")]
    if lat:
        lines = ", ".join(f"'{p}' using 1:3 with linespoints lw 2 lc rgb '{rf_color(k)}' title '{t}', "
                          f"'{p}' using 1:3:5 with labels font ',8' offset 0,0.8 notitle"
                          for k, (p, t, _) in enumerate(lat))
        lines += ", " + ", ".join(f"{loc['p99_us']} with lines dt 2 lc rgb '{rf_color(k)}' title 'local {t}'"
                                  for k, (_, t, loc) in enumerate(lat))
        gnuplot("set title 'P99 request latency vs measured remote fraction'\n"
                + xlabel + "set ylabel 'P99 latency (us)'\n"
                "set logscale y\nset xrange [0:100]\nset grid\nset key below font ',8'\n"
                f"plot {lines}", outdir, "remote-fraction-p99")
    return True


def pct0(v):
    return "-" if v is None else f"{100 * v:.0f}%"


def remote_fraction_section(docs, have_plots):
    out = ["## Throughput and P99 vs remote fraction (issue 6, RQ3)", ""]
    if have_plots:
        out += ["The plots put each point at its *measured* steady remote fraction and label it with the "
                "budget it ran with.", "",
                "![throughput](remote-fraction-throughput.png)", "", "![p99](remote-fraction-p99.png)", ""]
    for doc in docs:
        end = doc.get("local_end")
        warm = doc.get("local_warmup")
        out += [f"### {rf_name(doc, docs)}", "", f"    {doc.get('command', '?')}", "",
                f"{doc.get('seconds')} s measured per point and mix after {doc.get('warmup')} s of warm-up; "
                f"prefetch {doc.get('prefetch')}. Local = the same process in the src container, same client, "
                "same run, " + (f"warmed up for {warm} s like every point, measured before the checkpoint and "
                                "again after the last point." if end is not None and warm is not None else
                                "measured once, before the checkpoint, after min(warm-up, 5) s of warm-up "
                                "(this run predates the equal warm-up and the second baseline: its ratios to "
                                "local have no measured noise floor)."), ""]
        if end is not None:
            drift = doc.get("local_drift", {})
            out += ["**Noise floor of this run**: the local baseline measured at the start and at the end, "
                    "with nothing changed in between; a point's ratio to local is only meaningful beyond this "
                    "drift.", "", "| mix | local at start (ops/s) | local at end (ops/s) | drift (end / start - 1) |"
                    " p99 at start / end (us) |", "|---|---|---|---|---|"]
            for mix, loc in doc["local"].items():
                e = end.get(mix, {})
                d = drift.get(mix)
                out.append(f"| {mix} | {loc['ops_per_s']:.0f} | {e.get('ops_per_s', float('nan')):.0f} | "
                           f"{'-' if d is None else f'{100 * d:+.1f}%'} | {loc.get('p99_us') or '-'} / "
                           f"{e.get('p99_us') or '-'} |")
            out.append("")
        cols = "| target remote % (budget) | mix | ops/s | vs local (start) |" + (
            " vs local (end) |" if end is not None else "") + " p50 us | p99 us | measured steady remote |"
        out += [cols, "|" + "---|" * (cols.count("|") - 1)]
        for mix, loc in doc["local"].items():
            out.append(f"| local (start) | {mix} | {loc['ops_per_s']:.0f} | 100% |" +
                       (f" {pct0(ratio_or_none(loc['ops_per_s'], end[mix]['ops_per_s']))} |"
                        if end is not None else "") +
                       f" {loc.get('p50_us') or '-'} | {loc.get('p99_us') or '-'} | - |")
        if end is not None:
            for mix, loc in end.items():
                out.append(f"| local (end) | {mix} | {loc['ops_per_s']:.0f} | "
                           f"{pct0(ratio_or_none(loc['ops_per_s'], doc['local'][mix]['ops_per_s']))} | 100% | "
                           f"{loc.get('p50_us') or '-'} | {loc.get('p99_us') or '-'} | - |")
        for pt in doc["points"]:
            for mix, r in pt["results"].items():
                out.append(f"| {pt['remote_pct']} ({pt.get('budget') or 'none'}) | {mix} | {r['ops_per_s']:.0f} | "
                           f"{pct0(r.get('vs_local'))} |" + (f" {pct0(r.get('vs_local_end'))} |" if end is not None
                                                             else "") +
                           f" {r.get('p50_us') or '-'} | {r.get('p99_us') or '-'} | {100 * pt['remote_fraction']:.1f}% |")
        mixes = list(doc["local"])
        out += ["", "Budget statistics, one row per point (counted by the daemon over the whole point: warm-up "
                f"and {' and '.join(mixes) if len(mixes) > 1 else 'the'} measurement{'s' if len(mixes) > 1 else ''}"
                ", not per mix):", "",
                "| target remote % (budget) | measured steady remote | evictions | write-backs | re-faults | "
                "victim-buffer hits | stop p99 us |", "|---|---|---|---|---|---|---|"]
        for pt in doc["points"]:
            b = pt.get("budget_stats") or {}
            out.append(f"| {pt['remote_pct']} ({pt.get('budget') or 'none'}) | {100 * pt['remote_fraction']:.1f}% | "
                       f"{b.get('evictions', '-')} | {b.get('writebacks', '-')} | {b.get('refaults', '-')} | "
                       f"{b.get('victim_buffer_hits', '-')} | {b.get('stop_p99_us', '-')} |")
        out.append("")
    return out


def ratio_or_none(x, base):
    return x / base if base else None


def fmt_bytes(n):
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_s(st):
    return f"{st['median']:.3f} ({st['min']:.3f}..{st['max']:.3f})"


def machine_lines(doc):
    m = doc.get("machine", {})
    return [f"- uname: `{m.get('uname', '?')}`", f"- CPU: {m.get('cpu', '?')} x {m.get('cpus', '?')}",
            f"- memory: {m.get('memory', '?')}"]


def present(z):
    """The systems of a size that this run measured, in the report's order."""
    return [(k, label) for k, label in SYSTEMS if k in z.get("systems", {})]


def med(z, system, field):
    """Median of a field (or of a phase, field 'phases.NAME') of one system at one size, or None."""
    s = z.get("systems", {}).get(system)
    if not s or s.get("n", 0) == 0:
        return None
    if field.startswith("phases."):
        ph = s.get("phases", {}).get(field[7:])
        return ph["median"] if ph else None
    return s[field]["median"]


def phases_text(z, system):
    """One system's phase medians at one size, the largest named first: where the time went."""
    vals = [(label, med(z, system, "phases." + k)) for k, label in PHASES]
    if any(v is None for _, v in vals):
        return "phases not recorded"
    big = max(vals, key=lambda x: x[1])
    total = sum(v for _, v in vals)
    parts = ", ".join(f"{label} {v:.3f} s" for label, v in vals)
    share = f"{100 * big[1] / total:.0f} %" if total > 0 else "-"
    return f"{parts}; the largest is {big[0]} ({share})"


def phase_diff(z, system, base, zb=None):
    """The phases in which system (at size z) is slower than base (at size zb, default z)."""
    out = []
    for k, label in PHASES:
        a, b = med(z, system, "phases." + k), med(zb or z, base, "phases." + k)
        if a is not None and b is not None and a > b:
            out.append(f"{label} +{a - b:.3f} s")
    return ", ".join(out) if out else "no single phase"


def by_bytes(sizes, n):
    for z in sizes:
        if z.get("bytes") == n and not z.get("skipped"):
            return z
    return None


def why_missing(z, system, label):
    s = z["systems"].get(system) if z else None
    if z is None:
        return "not measured: no such size in this run"
    if s is None:
        return f"not measured: {label} was not run"
    return f"not measured: {s.get('error') or 'no successful repetition'}"


def targets_section(sizes):
    """Issue 11's targets for DistriProc memory mode, as ratios with a pass/miss verdict; a miss names
    the phases it spent its time in."""
    name = dict(SYSTEMS)
    tm = name[TARGET_SYSTEM]
    z256, z4 = by_bytes(sizes, 256 << 20), by_bytes(sizes, 4 << 30)
    rows, notes = [], []

    def verdict(ok):
        return "**pass**" if ok else "**miss**"

    # 1. from freeze at 4 GiB
    v = med(z4, TARGET_SYSTEM, "from_freeze_s") if z4 else None
    if v is None:
        rows.append(f"| {tm} from freeze at 4 GiB <= {TARGET_FREEZE_S} s | {why_missing(z4, TARGET_SYSTEM, tm)} | | |")
    else:
        ok = v <= TARGET_FREEZE_S
        rows.append(f"| {tm} from freeze at 4 GiB <= {TARGET_FREEZE_S} s | {v:.3f} s | "
                    f"{v / TARGET_FREEZE_S:.2f}x the bound | {verdict(ok)} |")
        if not ok:
            notes.append(f"- from freeze at 4 GiB missed: {phases_text(z4, TARGET_SYSTEM)}.")
    # 2. growth 4 GiB / 256 MiB
    a = med(z256, TARGET_SYSTEM, "from_freeze_s") if z256 else None
    if a is None or v is None:
        rows.append(f"| {tm} from freeze, 4 GiB / 256 MiB <= {TARGET_GROWTH}x | "
                    f"{why_missing(z256 if a is None else z4, TARGET_SYSTEM, tm)} | | |")
    else:
        r = v / a
        rows.append(f"| {tm} from freeze, 4 GiB / 256 MiB <= {TARGET_GROWTH}x | {v:.3f} s / {a:.3f} s | "
                    f"{r:.2f}x | {verdict(r <= TARGET_GROWTH)} |")
        if r > TARGET_GROWTH:
            notes.append(f"- growth missed: grown from 256 MiB to 4 GiB: "
                         f"{phase_diff(z4, TARGET_SYSTEM, TARGET_SYSTEM, z256)} (256 MiB: "
                         f"{phases_text(z256, TARGET_SYSTEM)}; 4 GiB: {phases_text(z4, TARGET_SYSTEM)}).")
    # 3. not slower than CRIU's remote lazy migration, at every size, from freeze and from restore
    base = "criu_lazy_remote"
    for z in sizes:
        if z.get("skipped"):
            continue
        for field, what in (("from_freeze_s", "from freeze"), ("from_restore_s", "from restore")):
            x, y = med(z, TARGET_SYSTEM, field), med(z, base, field)
            label = f"| {z['size']}: {tm} / {name[base]}, {what} <= 1.0x |"
            if x is None or y is None:
                rows.append(f"{label} {why_missing(z, TARGET_SYSTEM if x is None else base, tm if x is None else name[base])} | | |")
                continue
            r = x / y
            rows.append(f"{label} {x:.3f} s / {y:.3f} s | {r:.2f}x | {verdict(r <= 1.0)} |")
            if r > 1.0:
                notes.append(f"- {z['size']} {what}: slower than CRIU's remote lazy migration in: "
                             f"{phase_diff(z, TARGET_SYSTEM, base)} ({tm}: {phases_text(z, TARGET_SYSTEM)}; "
                             f"{name[base]}: {phases_text(z, base)}).")
    # 4. >= 50x faster than CRIU full migration at 4 GiB
    for field, what in (("from_freeze_s", "from freeze"), ("from_restore_s", "from restore")):
        x = med(z4, TARGET_SYSTEM, field) if z4 else None
        y = med(z4, "criu_full", field) if z4 else None
        label = f"| 4 GiB: {name['criu_full']} / {tm}, {what} >= {TARGET_VS_FULL:.0f}x |"
        if x is None or y is None:
            rows.append(f"{label} {why_missing(z4, TARGET_SYSTEM if x is None else 'criu_full', tm if x is None else name['criu_full'])} | | |")
            continue
        r = y / x
        rows.append(f"{label} {y:.3f} s / {x:.3f} s | {r:.1f}x | {verdict(r >= TARGET_VS_FULL)} |")
        if r < TARGET_VS_FULL:
            notes.append(f"- 4 GiB {what}, vs CRIU full: {tm}: {phases_text(z4, TARGET_SYSTEM)}.")
    out = ["### Issue 11 targets (DistriProc memory mode; medians of this run)", "",
           "| target | measured | ratio | verdict |", "|---|---|---|---|"] + rows + [""]
    if notes:
        out += ["Where a target is missed, the phases say where the time went:", ""] + notes + [""]
    return out


def ttfr_section(doc, sizes, have_plots):
    out = ["## Time to first reply (Redis)", "",
           f"Run started {doc.get('started', '?')}; link cap {doc.get('bandwidth', '?')}; "
           f"{doc.get('repeat', '?')} repetitions per size and system; DistriProc prefetch "
           f"`{doc.get('prefetch', '?')}`; probe `{doc.get('probe', '?')}`, "
           + (f"a try every {doc['probe_interval_ms']} ms for every system." if "probe_interval_ms" in doc else
              "probe cadence not recorded (runs before the cadence was one constant: DistriProc's probe "
              "tried every 10 ms, the others every 5 ms).") , "",
           "Median (min..max), seconds. *From freeze*: from the start of the dump to the first correct reply of "
           "the probe. *From restore*: from the moment the source's state is captured (images written, or a lazy "
           "dump's skeleton ready to be served) to the same reply. *Bytes moved*: over the link before the first "
           "reply (CRIU lazy, remote: the src end's interface counter, TCP/IP headers included; the others: "
           "payload).", ""]
    loads = [f"{z['size']}: {z['loadavg_start']} at the start, {z.get('loadavg_end') or '?'} at the end"
             for z in sizes if z.get("loadavg_start") and not z.get("skipped")]
    if loads:
        out += ["Load average (1, 5, 15 min) of the shared machine per size: " + "; ".join(loads) + ".", ""]
    out += ["| size | system | from restore (s) | from freeze (s) | bytes moved |",
            "|---|---|---|---|---|"]
    for z in sizes:
        if z.get("skipped"):
            out.append(f"| {z['size']} | (skipped) | {z['skipped']} | | |")
            continue
        for key, label in present(z):
            s = z["systems"][key]
            if s["n"] == 0:
                out.append(f"| {z['size']} | {label} | failed: {s.get('error') or '?'} | | |")
                continue
            note = f" ({s['n']} ok; {s['error']})" if s.get("error") else ""
            out.append(f"| {z['size']} | {label}{note} | {fmt_s(s['from_restore_s'])} | "
                       f"{fmt_s(s['from_freeze_s'])} | {fmt_bytes(s['bytes_moved']['median'])} |")
    out.append("")
    if any("phases" in s for z in sizes if not z.get("skipped") for s in z["systems"].values()):
        out += ["Phases (seconds; in every run they add up to its time from freeze; shown are each phase's median, so their sum is near, not equal to, the median from freeze): *freeze* dump start to the "
                "state captured; *skeleton* the non-memory state to dst (page server start + skeleton pull, or "
                "the image copy of a lazy dump); *transfer* memory moved before the restore (CRIU full); "
                "*restore* criu restore with a lazy-pages daemon's start; *first reply* the restored tree "
                "running to the first correct reply.", "",
                "| size | system | " + " | ".join(label for _, label in PHASES) + " |",
                "|---|---|" + "---|" * len(PHASES)]
        for z in sizes:
            if z.get("skipped"):
                continue
            for key, label in present(z):
                if med(z, key, "phases.freeze_s") is None:
                    continue
                out.append(f"| {z['size']} | {label} | " +
                           " | ".join(f"{med(z, key, 'phases.' + k):.3f}" for k, _ in PHASES) + " |")
        out.append("")
    # The checks, computed.
    ok = [z for z in sizes if not z.get("skipped") and med(z, "distriproc", "from_restore_s") is not None]
    checks = []
    if len(ok) >= 2:
        first, last = ok[0], ok[-1]
        a = first["systems"]["distriproc"]["from_restore_s"]["median"]
        b = last["systems"]["distriproc"]["from_restore_s"]["median"]
        checks.append(f"- DistriProc from restore, {last['size']} vs {first['size']}: {b:.3f} s / {a:.3f} s = "
                      f"{b / a:.2f}x (target: within 2x) -> {'met' if b <= 2 * a else 'NOT met'}")
    for z in ok:
        if med(z, "criu_full", "from_restore_s") is not None:
            full = z["systems"]["criu_full"]
            r = full["from_restore_s"]["median"] / z["systems"]["distriproc"]["from_restore_s"]["median"]
            rf = full["from_freeze_s"]["median"] / z["systems"]["distriproc"]["from_freeze_s"]["median"]
            checks.append(f"- {z['size']}: CRIU full / DistriProc = {r:.1f}x from restore, {rf:.1f}x from freeze")
    if checks:
        out += ["Checks against the issue's targets (computed from the table):", ""] + checks + [""]
    if any(k in z.get("systems", {}) for z in sizes for k in (TARGET_SYSTEM, "criu_lazy_remote")):
        out += targets_section(sizes)
    if have_plots:
        out += ["![time to first reply from restore](ttfr-restore.png)", "",
                "![time to first reply from freeze](ttfr-freeze.png)", ""]
    return out


def floor_copied(runs):
    """Whether the local floor is one measurement copied into every RTT row
    (bench faults before it measured the floor per row): equal in every field."""
    floors = [r["latency"].get("local_floor") for r in runs]
    return len(floors) > 1 and all(f is not None and f == floors[0] for f in floors)


def faults_section(doc, runs, have_cdf, have_scan):
    copied = floor_copied(runs)
    out = ["## Fault latency and scan throughput", "",
           f"Run started {doc.get('started', '?')}." +
           (" **The local floor of this run is one measurement, copied into every RTT row** (the benchmark "
            "measured it once then); each row's check adds that same floor." if copied else
            " Every series, the local floor included, is measured again in each RTT row."), "",
           "| emulated RTT (us) | series | how measured | samples | p50 (us) | p90 (us) | p99 (us) | max (us) |",
           "|---|---|---|---|---|---|---|---|"]
    names = dict(SERIES + SECONDARY)
    order = [k for k, _ in SERIES + SECONDARY]
    for r in runs:
        keys = sorted(r["latency"], key=lambda k: (order.index(k) if k in order else len(order), k))
        for key in keys:
            s = r["latency"][key]
            out.append(f"| {r['emulate_rtt_us']:g} | {names.get(key, key)} | {s.get('method', '')} | "
                       f"{s.get('count', '')} | {s['p50_us']:.1f} | "
                       f"{s.get('p90_us', float('nan')):.1f} | {s['p99_us']:.1f} | {s.get('max_us', float('nan')):.1f} |")
    out += ["", "| emulated RTT (us) | scan | MB/s | prefetch hit rate |", "|---|---|---|---|"]
    for r in runs:
        for p in r["scan"]["policies"]:
            hr = p.get("prefetch_hit_rate")
            out.append(f"| {r['emulate_rtt_us']:g} | prefetch {p['policy']} | {p['MBps']:.1f} | "
                       f"{'' if hr is None else f'{hr * 100:.1f} %'} |")
        out.append(f"| {r['emulate_rtt_us']:g} | raw TCP stream | {r['scan']['raw_stream_MBps']:.1f} | |")
    out.append("")
    checks = []
    for r in runs:
        lat = r["latency"]
        if all(k in lat for k in ("local_floor", "raw_tcp", "distriproc")):
            bound = 1.3 * (lat["raw_tcp"]["p50_us"] + lat["local_floor"]["p50_us"])
            d = lat["distriproc"]["p50_us"]
            checks.append(f"- RTT {r['emulate_rtt_us']:g} us: remote fault p50 {d:.1f} us vs 1.3 x (raw "
                          f"{lat['raw_tcp']['p50_us']:.1f} + floor {lat['local_floor']['p50_us']:.1f}) = "
                          f"{bound:.1f} us -> {'met' if d <= bound else 'NOT met'}")
        pol = r["scan"]["policies"]
        none = [p["MBps"] for p in pol if p["policy"] == "none"]
        if none and pol:
            best = max(pol, key=lambda p: p["MBps"])
            raw = r["scan"]["raw_stream_MBps"]
            checks.append(f"- RTT {r['emulate_rtt_us']:g} us: best policy {best['policy']} {best['MBps']:.1f} MB/s = "
                          f"{best['MBps'] / none[0]:.1f}x no-prefetch (target 5x), "
                          f"{100 * best['MBps'] / raw:.0f} % of the raw stream (target 50 %)")
    if checks:
        out += ["Checks against the issue's targets (computed from the tables):", ""] + checks + [""]
    if have_cdf:
        out += ["![fault latency CDF](fault-cdf.png)", ""]
    if have_scan:
        out += ["![scan throughput](scan.png)", ""]
    return out


def included_section(path):
    """Another benchmark's markdown report, its headings one level deeper so it
    nests under this report's title."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError as e:
        sys.exit(f"bench_report: cannot read --section {path}: {e.strerror}")
    out = []
    for line in text.splitlines():
        out.append("#" + line if line.startswith("#") else line)
    return out + [""]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ttfr")
    p.add_argument("--faults")
    p.add_argument("--remote-fraction", action="append", default=[],
                   help="JSON of bench remote-fraction (repeatable: redis, memwalk)")
    p.add_argument("--notes", help="markdown appended as the report's notes")
    p.add_argument("--loadavg", action="append", default=[],
                   help="load-average samples taken during runs (HH:MM:SS L1 L5 L15 ...); repeatable")
    p.add_argument("--section", action="append", default=[],
                   help="a markdown report written by another benchmark (e.g. bench warmup's warmup.md), "
                        "included as a section; repeatable")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if not a.ttfr and not a.faults and not a.remote_fraction:
        p.error("give --ttfr, --faults and/or --remote-fraction")
    if not shutil.which("gnuplot"):
        sys.exit("bench_report: gnuplot is missing (make deps installs gnuplot-nox)")
    try:
        ttfr = load(a.ttfr, "ttfr") if a.ttfr else None
        sizes = check_ttfr(ttfr, a.ttfr) if ttfr else None
        faults = load(a.faults, "faults") if a.faults else None
        runs = check_faults(faults, a.faults) if faults else None
        rfs = [load(f, "remote-fraction") for f in a.remote_fraction]
        for d, f in zip(rfs, a.remote_fraction):
            check_remote_fraction(d, f)
        load_lines = [loadavg_line(f) + (f", {os.path.basename(f)}" if len(a.loadavg) > 1 else "")
                      for f in a.loadavg]
    except BadInput as e:
        sys.exit(f"bench_report: {e}")
    os.makedirs(a.out, exist_ok=True)
    report = ["# DistriProc benchmark report", ""]
    src = ttfr or faults or (rfs[0] if rfs else {})
    report += ["## Machine", ""] + machine_lines(src) + load_lines + [""]
    report += ["## Commands (exactly as run)", ""]
    for d in (ttfr, faults, *rfs):
        if d:
            lab = d.get("lab")
            env = f"DISTRIPROC_LAB={lab} " if lab and lab != "dp" else ""
            report.append(f"    {env}{d.get('command', '?')}")
    report += [f"    scripts/bench_report.py {' '.join(sys.argv[1:])}", ""]
    with tempfile.TemporaryDirectory() as tmp:
        if ttfr:
            have = plot_ttfr(sizes, "from_restore_s", "Time to first reply, from restore start", a.out, tmp,
                             "ttfr-restore")
            plot_ttfr(sizes, "from_freeze_s", "Time to first reply, from the freeze", a.out, tmp, "ttfr-freeze")
            report += ttfr_section(ttfr, sizes, have)
        if faults:
            have_cdf = plot_fault_cdf(runs, a.out, tmp)
            have_scan = plot_scan(runs, a.out, tmp)
            report += faults_section(faults, runs, have_cdf, have_scan)
        if rfs:
            report += remote_fraction_section(rfs, plot_remote_fraction(rfs, a.out, tmp))
    for path in a.section:
        report += included_section(path)
    if a.notes:
        with open(a.notes) as f:
            report += ["## Notes", "", f.read().strip(), ""]
    with open(os.path.join(a.out, "REPORT.md"), "w") as f:
        f.write("\n".join(report))
    print(f"bench_report: wrote {a.out}/REPORT.md and plots")


if __name__ == "__main__":
    main()
