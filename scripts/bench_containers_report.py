#!/usr/bin/python3
"""bench_containers_report: plots (gnuplot, PNG and SVG, through
bench_report.gnuplot) and a Markdown page from the JSON of `distriproc bench
nginx` and `distriproc bench pg-ttfr` (issue 10).

  bench_containers_report.py [--nginx FILE ...] [--pg-ttfr FILE] [--loadavg FILE] [--summary FILE] [--notes FILE] --out DIR

--summary FILE, --notes FILE: hand-written Markdown (the results in short;
what the numbers mean, negative results) put first and last in containers.md.

Writes into DIR:
  nginx-throughput.{png,svg}  req/s as % of the local baseline (mean of the
                              run's two) vs the measured share of the working
                              set kept remote; the two baselines as lines
  nginx-p99.{png,svg}         P99 latency vs the same x; baselines as lines
  pg-ttfr.{png,svg}           time to first correct query, from restore and
                              from freeze, per system (median, min..max)
  containers.md               commands, tables, ratios to the same run's baselines

Exit status 1 with a message naming the file and field if a JSON lacks one."""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_report import BadInput, gnuplot, load, loadavg_line, need, NUM  # noqa: E402

PG_SYSTEMS = [("distriproc", "DistriProc (lazy, runc restore --lazy-pages)"),
              ("runc_full", "runc checkpoint + copy + runc restore"),
              ("local", "local (probe of the running source)")]


# ---- checks -----------------------------------------------------------------------

def check_nginx(doc, path):
    """The fields the tables and plots read, with the file and field named when missing."""
    for base in ("local_start", "local_end"):
        for k in ("req_per_s", "p99_us"):
            need(need(doc, base, path, dict), k, f"{path}: {base}", NUM)
    pts = need(doc, "points", path, list)
    for i, p in enumerate(pts):
        w = f"{path}: points[{i}]"
        for k in ("remote_pct_target", "remote_fraction", "working_set_remote", "vs_local"):
            need(p, k, w, NUM)
        for k in ("req_per_s", "p50_us", "p99_us"):
            need(need(p, "result", w, dict), k, w + ".result", NUM)
    return pts


def check_pg(doc, path):
    """The fields the tables and plots read, with the file and field named when missing."""
    systems = need(doc, "systems", path, dict)
    for name, _ in PG_SYSTEMS:
        s = need(systems, name, f"{path}: systems", dict)
        if need(s, "n", f"{path}: systems.{name}", int) > 0:
            for field in ("from_restore_s", "from_freeze_s"):
                for k in ("median", "min", "max"):
                    need(need(s, field, f"{path}: systems.{name}", dict), k, f"{path}: systems.{name}.{field}", NUM)
    return systems


# ---- plots ------------------------------------------------------------------------

def nginx_label(doc):
    """What tells the runs apart: process shape and warm-up."""
    w = doc["workers"]
    return f"{'1 process' if w == 0 else f'master + {w} workers'}, warm-up {doc['warmup']} s"


def plot_nginx(docs, names, outdir, tmp):
    """One series per run, each relative to its own baselines; each run's two
    local baselines drawn at x = -3 - k as 100% with whiskers start..end."""
    thr, lat = [], []
    for k, doc in enumerate(docs):
        base = (doc["local_start"]["req_per_s"] + doc["local_end"]["req_per_s"]) / 2
        dat = os.path.join(tmp, f"nginx{k}.dat")
        with open(dat, "w") as f:
            for p in doc["points"]:
                adj = p.get("vs_local_adjacent")
                f.write(f"{100 * p['working_set_remote']:.2f} {100 * p['result']['req_per_s'] / base:.2f} "
                        f"{p['result']['p99_us']} {p['remote_pct_target']} "
                        f"{'NaN' if adj is None else f'{100 * adj:.2f}'}\n")
        loc = os.path.join(tmp, f"nginx{k}-local.dat")
        s, e = (doc[b] for b in ("local_start", "local_end"))
        with open(loc, "w") as f:
            f.write(f"{-3 - k} 100 {100 * min(s['req_per_s'], e['req_per_s']) / base:.2f} "
                    f"{100 * max(s['req_per_s'], e['req_per_s']) / base:.2f} {(s['p99_us'] + e['p99_us']) / 2} "
                    f"{min(s['p99_us'], e['p99_us'])} {max(s['p99_us'], e['p99_us'])}\n")
        t = names[k]
        thr += [f"'{dat}' using 1:2 with linespoints lw 2 pt 7 lc {k + 1} title '{t}'",
                f"'{loc}' using 1:2:3:4 with yerrorbars pt 4 lc {k + 1} title '  its local (start..end)'"]
        if all(p.get("vs_local_adjacent") for p in doc["points"]):
            thr.append(f"'{dat}' using 1:5 with linespoints lw 1 dt 2 pt 6 lc {k + 1} "
                       f"title '  vs its paired local'")
        lat += [f"'{dat}' using 1:3 with linespoints lw 2 pt 7 lc {k + 1} title '{t}'",
                f"'{loc}' using 1:5:6:7 with yerrorbars pt 4 lc {k + 1} title '  its local (start..end)'"]
    gnuplot("set title 'NGINX in a runc container: throughput vs share of its working set kept remote' noenhanced\n"
            "set xlabel 'measured share of the working set not resident (%) (targets 0/10/30/50/70)'\n"
            "set ylabel '% of local throughput (mean of the run''s two baselines)'\n"
            "set yrange [0:*]\nset xrange [-8:75]\nset grid\nset key inside top right font ',9' noenhanced\n"
            f"plot {', '.join(thr)}", outdir, "nginx-throughput")
    gnuplot("set title 'NGINX in a runc container: P99 latency (wrk) vs share of its working set kept remote' "
            "noenhanced\nset xlabel 'measured share of the working set not resident (%)'\n"
            "set ylabel 'P99 latency (us)'\nset logscale y\nset xrange [-8:75]\nset grid\n"
            "set key inside bottom right font ',9' noenhanced\n"
            f"plot {', '.join(lat)}", outdir, "nginx-p99")


def plot_pg(doc, outdir, tmp):
    """Bars per system, from restore and from freeze (median, whiskers min..max), log scale."""
    dat = os.path.join(tmp, "pg.dat")
    systems = [(k, lbl) for k, lbl in PG_SYSTEMS if doc["systems"][k].get("n", 0) > 0]
    with open(dat, "w") as f:
        for field, label in (("from_restore_s", "from restore"), ("from_freeze_s", "from freeze")):
            cols = [f'"{label}"']
            for k, _ in systems:
                st = doc["systems"][k][field]
                cols += [max(st["median"], 1e-3), max(st["min"], 1e-3), max(st["max"], 1e-3)]
            f.write(" ".join(str(c) for c in cols) + "\n")
    plots = [f"'{dat}' using {2 + 3 * i}:{3 + 3 * i}:{4 + 3 * i}{':xtic(1)' if i == 0 else ''} title '{lbl}'"
             for i, (_, lbl) in enumerate(systems)]
    gnuplot(f"set title 'PostgreSQL in a runc container: time to first correct query ({doc['table_mib']} MiB "
            f"table in shared_buffers, link {doc['bandwidth']})' noenhanced\n"
            "set ylabel 'seconds (log scale; bars = median, whiskers = min..max)'\nset logscale y\n"
            "set yrange [0.001:100]\nset grid ytics\nset key top left\nset style data histogram\n"
            "set style histogram errorbars gap 2 lw 1\nset style fill solid 0.8 border -1\nset boxwidth 0.9\n"
            f"plot {', '.join(plots)}", outdir, "pg-ttfr")


# ---- Markdown -----------------------------------------------------------------------

def mib(n):
    """Bytes as MiB with one decimal, as the tables print them."""
    return f"{n / 2**20:.1f} MiB"


def heading(title, doc, path, la):
    """A section's title, exact command, data file, machine and load: the
    context every figure below it is read in."""
    return [f"## {title}", "", f"    {doc['command']}", "",
            f"Data: [{os.path.basename(path)}]({os.path.basename(path)}). Started {doc['started']}; "
            f"{doc['machine']['cpus']} CPUs, load average at start {' '.join(doc['machine']['loadavg_at_start'])}.",
            "", *([la, ""] if la else [])]


def paired(p):
    """The paired-local columns of a point (runs before they existed: dashes)."""
    a = p.get("local_adjacent")
    if not a:
        return "- | - | -"
    return f"{a['req_per_s']:.0f} | **{p['vs_local_adjacent']:.0%}** | {p['p99_vs_local_adjacent']}x"


def nginx_section(doc, path, la):
    """One run's table: baselines first and last, then every point with its measured share."""
    b0, b1 = doc["local_start"], doc["local_end"]
    base = (b0["req_per_s"] + b1["req_per_s"]) / 2
    w = doc["workers"]
    procs = "One process (master_process off)" if w == 0 else f"A master and {w} workers"
    stem = os.path.splitext(os.path.basename(path))[0]
    out = [*heading(f"NGINX {stem}: throughput and P99 vs remote share ({nginx_label(doc)})", doc, path, la),
           f"What is remote: {doc['what_is_remote']}. {doc['objects']} objects of {doc['object_bytes']} bytes "
           f"({mib(doc['content_bytes'])}); NGINX's anonymous memory measured on src: "
           f"{mib(doc['nginx_memory_kib']['Anonymous'] * 1024)}. "
           f"{procs}; wrk 1 thread, {doc['connections']} connections, zipf {doc['zipf_theta']}; "
           f"{doc['warmup']} s warm-up then {doc['seconds']} s measured for every row; link {doc['bandwidth']}; "
           f"prefetch {doc['prefetch']}.", "",
           f"Working set W (resident after the no-budget point): {mib(doc['working_set_bytes'])}. "
           "Budgets are (100 - target)% of W.", "",
           "| run | target | budget | measured remote, of W | measured remote, of lazy memory | req/s | "
           "vs local | p50 us | p99 us | p99 vs local | paired local req/s | vs paired local | "
           "p99 vs paired local | faults in measure | evictions | refaults |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
           f"| local, start | - | - | - | - | {b0['req_per_s']:.0f} | {b0['req_per_s'] / base:.0%} | "
           f"{b0['p50_us']} | {b0['p99_us']} | - | - | - | - | - | - | - |"]
    for p in doc["points"]:
        r, bs = p["result"], p.get("budget_stats") or {}
        out.append(f"| lazy restore | {p['remote_pct_target']}% | {p['budget'] or 'none'} | "
                   f"{100 * p['working_set_remote']:.1f}% | {100 * p['remote_fraction']:.1f}% | "
                   f"{r['req_per_s']:.0f} | **{p['vs_local']:.0%}** | {r['p50_us']} | {r['p99_us']} | "
                   f"{p['p99_vs_local']}x | {paired(p)} | {p['faults_during_measure']} | "
                   f"{bs.get('evictions', '-')} | {bs.get('refaults', '-')} |")
    out += [f"| local, end | - | - | - | - | {b1['req_per_s']:.0f} | {b1['req_per_s'] / base:.0%} | "
            f"{b1['p50_us']} | {b1['p99_us']} | - | - | - | - | - | - | - |", "",
            f"vs local = req/s over the mean of the two local runs ({base:.0f} req/s); their drift "
            f"({100 * doc['local_drift']:+.1f}%, end vs start) is this run's noise floor. Paired local: the "
            "source container (left running since the start) measured with the same load right after the "
            "point's measurement.", "",
            ""]
    return out


def pg_section(doc, path, la):
    """Medians with ranges and ratios to runc full, then every run's phases."""
    out = [*heading("PostgreSQL: time to first correct query (`distriproc bench pg-ttfr`)", doc, path, la),
           f"{doc['rows']} rows, table + index {mib(doc['table_bytes'])}, pg_prewarm'ed into shared_buffers "
           f"({doc['shared_buffers_mib']} MiB); link {doc['bandwidth']}; {doc['runs']} runs per system, systems "
           f"rotated per run. Probe, every {doc['interval_ms']} ms for all systems: `{doc['probe']}`, "
           f"compared with the source's answer. What is lazy: {doc['what_is_lazy']}.", "",
           "| system | n | from restore, median (min..max) | from freeze, median (min..max) | "
           "vs runc full (restore / freeze) | bytes moved (median) |",
           "|---|---:|---|---|---|---:|"]
    for k, label in PG_SYSTEMS:
        s = doc["systems"][k]
        if not s.get("n"):
            out.append(f"| {label} | 0 | - | - | - | - |")
            continue
        fr, ff = s["from_restore_s"], s["from_freeze_s"]
        bm = s.get("bytes_moved")
        out.append(f"| {label} | {s['n']} | {fr['median']:.3f} s ({fr['min']:.3f}..{fr['max']:.3f}) | "
                   f"{ff['median']:.3f} s ({ff['min']:.3f}..{ff['max']:.3f}) | "
                   f"{s.get('vs_runc_full_from_restore', '-')} / {s.get('vs_runc_full_from_freeze', '-')} | "
                   f"{mib(bm['median']) if bm else '-'} |")
    out += ["", "Per run (seconds):", "",
            "| system | run | dump (distriproc: checkpoint --runc) | transfer / skeleton pull | runc restore "
            "(distriproc: restore --runc-bundle, skeleton pull included) | from restore | from freeze |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for k, label in PG_SYSTEMS:
        for r in doc["systems"][k]["runs"]:
            out.append(f"| {k} | {r['run']} | {r.get('dump_s', '-')} | {r.get('transfer_s', r.get('pull_s', '-'))} | "
                       f"{r.get('runc_restore_s', r.get('restore_cmd_s', '-'))} | {r['from_restore_s']} | "
                       f"{r['from_freeze_s']} |")
    out += ["", "![pg ttfr](pg-ttfr.png)", ""]
    return out


def read_md(path):
    """A hand-written Markdown file, or BadInput naming it."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise BadInput(f"{path}: {e.strerror}")


def main():
    """Loads and checks every JSON before plotting: a bad file writes nothing half."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nginx", action="append", default=[], help="repeatable: one section and series per run")
    ap.add_argument("--pg-ttfr")
    ap.add_argument("--loadavg")
    ap.add_argument("--summary")
    ap.add_argument("--notes")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if not (a.nginx or a.pg_ttfr):
        ap.error("give --nginx and/or --pg-ttfr")
    if not shutil.which("gnuplot"):
        sys.exit("bench_containers_report: gnuplot is missing (make deps installs gnuplot-nox)")
    try:
        la = loadavg_line(a.loadavg) if a.loadavg else ""
        md = ["# Container benchmarks (issue 10)", "",
              "Generated by `scripts/bench_containers_report.py` from the JSON below.", "",
              *([read_md(a.summary), ""] if a.summary else [])]
        with tempfile.TemporaryDirectory() as tmp:
            if a.pg_ttfr:
                doc = load(a.pg_ttfr, "pg-ttfr")
                check_pg(doc, a.pg_ttfr)
                plot_pg(doc, a.out, tmp)
                md += pg_section(doc, a.pg_ttfr, la)
            if a.nginx:
                docs = [load(path, "nginx") for path in a.nginx]
                for doc, path in zip(docs, a.nginx):
                    check_nginx(doc, path)
                plot_nginx(docs, [os.path.splitext(os.path.basename(x))[0] for x in a.nginx], a.out, tmp)
                md += ["## NGINX (`distriproc bench nginx`): plots of every run below", "",
                       "Series named by their JSON file: " + "; ".join(
                           f"{os.path.splitext(os.path.basename(x))[0]}: {nginx_label(d)}"
                           for x, d in zip(a.nginx, docs)) + ".", "",
                       "![nginx throughput](nginx-throughput.png)", "", "![nginx p99](nginx-p99.png)", ""]
                for doc, path in zip(docs, a.nginx):
                    md += nginx_section(doc, path, la)
        if a.notes:
            md += [read_md(a.notes), ""]
    except (BadInput, KeyError, TypeError) as e:
        sys.exit(f"bench_containers_report: {e}")
    with open(os.path.join(a.out, "containers.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print(f"wrote {os.path.join(a.out, 'containers.md')}")


if __name__ == "__main__":
    main()
