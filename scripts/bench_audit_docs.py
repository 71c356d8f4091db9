#!/usr/bin/python3
"""bench_audit_docs: which measured figures quoted in the documentation have no
stored result behind them.

  bench_audit_docs.py [--results DIR] [--json] DOC...

Every number in the prose of DOC (tables included; code blocks and indented
commands skipped: their numbers are parameters) that is
written with a unit of measurement (us, ms, s, MiB, GiB, KiB, MB/s, GB/s, %,
x, M, k, pages, ops/s) is looked up among the numbers of the stored results in
DIR (default bench/results: *.json, *.jsonl, *.txt, *.log), in the units those
files use and in the conversions its unit allows (fraction -> %, us -> ms,
ms -> s, bytes -> KiB/MiB/GiB, count -> k/M), rounded to the figure's own
precision.
Figures found nowhere are printed, one per line (FILE:LINE: figure: the line),
for a person to check: a derived figure (a ratio of two stored numbers, a
range) is listed too, and it is for the reader to derive it or remove it.
Design constants (defaults, sizes in the protocol) also show up; the audit is
a list of places to look, not a verdict. Exit status 0 always.
"""
import argparse
import json
import os
import re
import sys

UNITS = r"(?:us|ms|s|MiB|GiB|KiB|MB/s|GB/s|MiB/s|%|x|M|k|pages|ops/s)"
FIGURE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?(" + UNITS + r")(?![\w/])")
DATA_EXT = (".json", ".jsonl", ".txt", ".log")


def numbers_in(obj, out):
    """Every number in a parsed JSON value."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        out.add(float(obj))
    elif isinstance(obj, dict):
        for v in obj.values():
            numbers_in(v, out)
    elif isinstance(obj, list):
        for v in obj:
            numbers_in(v, out)


def file_numbers(path):
    """The numbers of one stored result file, as floats."""
    out = set()
    with open(path, errors="replace") as f:
        text = f.read()
    if path.endswith(".json"):
        try:
            numbers_in(json.loads(text), out)
            return out
        except json.JSONDecodeError:
            pass
    if path.endswith(".jsonl"):
        for line in text.splitlines():
            try:
                numbers_in(json.loads(line), out)
            except json.JSONDecodeError:
                pass
        return out
    out.update(float(m) for m in re.findall(r"-?\d+(?:\.\d+)?", text))
    return out


def stored_numbers(results):
    """{file name: its numbers} for every stored result file."""
    return {name: file_numbers(os.path.join(results, name)) for name in sorted(os.listdir(results))
            if name.endswith(DATA_EXT) and os.path.isfile(os.path.join(results, name))}


# The conversions under which a stored number may be quoted with a unit.
CONVERSIONS = {
    "%": (1, 100), "us": (1, 1e-3), "ms": (1, 1e-3, 1e3), "s": (1, 1e-3, 1e-6, 1e-9),
    "KiB": (1, 2 ** -10), "MiB": (1, 2 ** -20), "GiB": (1, 2 ** -30), "MB/s": (1,), "GB/s": (1, 1e-3),
    "MiB/s": (1,), "M": (1e-6,), "k": (1e-3,), "x": (1,), "pages": (1,), "ops/s": (1,),
}


def rounded_index(stored, max_decimals=3):
    """Per unit and precision, the set of every stored number's conversions
    rounded to it: a figure is looked up, not compared with each number."""
    return {u: [{round(v * c, d) for v in stored for c in conv} for d in range(max_decimals + 1)]
            for u, conv in CONVERSIONS.items()}


def backed(figure, unit, index):
    """Whether some stored number, converted for the unit, rounds to the figure
    as written."""
    sets = index[unit]
    decimals = min(len(figure.split(".")[1]) if "." in figure else 0, len(sets) - 1)
    return round(float(figure), decimals) in sets[decimals]


def sections(lines):
    """(first line number, lines) per markdown section (a heading to the next)."""
    out, start, cur = [], 1, []
    for no, line in enumerate(lines, 1):
        if line.startswith("#") and cur:
            out.append((start, cur))
            start, cur = no, []
        cur.append(line)
    if cur:
        out.append((start, cur))
    return out


def audit(doc, stored, indexes):
    """A section that names stored files is checked against those files only
    (a figure of one run must not be 'backed' by another run's number); other
    sections against all of them."""
    out = []
    with open(doc) as f:
        lines = f.read().splitlines()
    for start, sec in sections(lines):
        text = "\n".join(sec)
        cited = tuple(sorted(n for n in stored if n in text))
        if cited not in indexes:
            indexes[cited] = rounded_index(set().union(*(stored[n] for n in cited)))
        index = indexes[cited]
        fenced = False
        for no, line in enumerate(sec, start):
            if line.lstrip().startswith("```"):
                fenced = not fenced
            if fenced or line.startswith("    "):
                continue  # commands and code: their numbers are parameters
            for m in FIGURE.finditer(line):
                if not backed(m.group(1), m.group(2), index):
                    out.append({"file": doc, "line": no, "figure": m.group(0), "cited": list(cited),
                                "text": line.strip()})
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "..", "bench", "results"))
    p.add_argument("--json", action="store_true", help="one JSON list instead of lines")
    p.add_argument("docs", nargs="+")
    a = p.parse_args()
    if not os.path.isdir(a.results):
        sys.exit(f"bench_audit_docs: {a.results} is not a directory (give --results DIR of stored results)")
    stored = stored_numbers(a.results)
    indexes = {(): rounded_index(set().union(*stored.values()))}
    found = []
    for d in a.docs:
        try:
            found += audit(d, stored, indexes)
        except OSError as e:
            sys.exit(f"bench_audit_docs: cannot read {d}: {e.strerror}")
    if a.json:
        json.dump(found, sys.stdout, indent=1)
        print()
    else:
        for x in found:
            print(f"{x['file']}:{x['line']}: {x['figure']}: {x['text'][:160]}")
    print(f"bench_audit_docs: {len(found)} figures without a stored number behind them", file=sys.stderr)


if __name__ == "__main__":
    main()
