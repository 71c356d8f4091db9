"""A strict reader of the Prometheus text exposition format 0.0.4, for the
tests (prometheus_client is not installed here). It refuses what a scraper
refuses and what the conventions forbid: a sample before its family's TYPE,
a family declared twice, HELP missing, a counter not named _total, a name
without the distriproc_ prefix, a bad escape, a non-number value, a histogram
whose buckets are not cumulative or lack +Inf, _count != the +Inf bucket."""

import math
import re

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? (\S+)$")
TYPES = ("counter", "gauge", "histogram")


class FormatError(AssertionError):
    pass


def _unescape(s):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), s)


def _value(text, line):
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", text):
        raise FormatError(f"not a number: {line!r}")
    return int(text) if re.fullmatch(r"\d+", text) else float(text)


def parse(text, prefix="distriproc_"):
    """Returns {family: {"type", "help", "samples": {(name, frozenset(labels)): value}}}."""
    if not text.endswith("\n"):
        raise FormatError("the exposition does not end with a newline")
    fams, current, help_for = {}, None, None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            if not re.fullmatch(NAME, name) or re.search(r"\\[^\\n]", help_text.replace("\\\\", "")):
                raise FormatError(f"bad HELP line: {line!r}")
            help_for = (name, _unescape(help_text))
            continue
        if line.startswith("# TYPE "):
            parts = line[7:].split(" ")
            if len(parts) != 2 or parts[1] not in TYPES or not re.fullmatch(NAME, parts[0]):
                raise FormatError(f"bad TYPE line: {line!r}")
            name, typ = parts
            if name in fams:
                raise FormatError(f"family {name} declared twice")
            if not help_for or help_for[0] != name or not help_for[1]:
                raise FormatError(f"family {name} has no HELP right before its TYPE")
            if not name.startswith(prefix):
                raise FormatError(f"{name} lacks the {prefix} prefix")
            if typ == "counter" and not name.endswith("_total"):
                raise FormatError(f"counter {name} is not named _total")
            if typ != "counter" and name.endswith("_total"):
                raise FormatError(f"{typ} {name} is named like a counter")
            fams[name] = {"type": typ, "help": help_for[1], "samples": {}}
            current, help_for = name, None
            continue
        m = SAMPLE.match(line)
        if not m:
            raise FormatError(f"not a sample line: {line!r}")
        sname = m.group(1)
        fam = fams.get(current)
        owner = current if fam and (sname == current or (fam["type"] == "histogram" and sname in (
            current + "_bucket", current + "_sum", current + "_count"))) else None
        if owner is None:
            raise FormatError(f"sample {sname} outside its family (last TYPE: {current})")
        labels = frozenset((k, _unescape(v)) for k, v in re.findall(LABEL, m.group(2) or ""))
        key = (sname, labels)
        if key in fam["samples"]:
            raise FormatError(f"duplicate sample {line!r}")
        fam["samples"][key] = _value(m.group(m.lastindex), line)
    for name, fam in fams.items():
        if not fam["samples"]:
            raise FormatError(f"family {name} has no samples")
        if fam["type"] == "histogram":
            _check_histogram(name, fam["samples"])
    return fams


def _check_histogram(name, samples):
    buckets = sorted(((float(dict(l)["le"].replace("+Inf", "inf")), v) for (s, l), v in samples.items()
                      if s == name + "_bucket"))
    if not buckets or not math.isinf(buckets[-1][0]):
        raise FormatError(f"histogram {name} has no +Inf bucket")
    if any(b[1] > a[1] for b, a in zip(buckets, buckets[1:])):
        raise FormatError(f"histogram {name} buckets are not cumulative: {buckets}")
    count = samples.get((name + "_count", frozenset()))
    if count is None or (name + "_sum", frozenset()) not in samples or count != buckets[-1][1]:
        raise FormatError(f"histogram {name}: _count {count} != +Inf bucket {buckets[-1][1]} or no _sum")


def value(fams, name, **labels):
    """The value of one sample; the family is found by name or histogram suffix."""
    for fam in fams.values():
        v = fam["samples"].get((name, frozenset(labels.items())))
        if v is not None:
            return v
    raise KeyError(f"no sample {name} {labels}")


def buckets(fams, name):
    """{le (float seconds): cumulative count} of histogram name."""
    fam = fams[name]
    return {float(dict(l)["le"].replace("+Inf", "inf")): v for (s, l), v in fam["samples"].items()
            if s == name + "_bucket"}
