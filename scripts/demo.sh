#!/usr/bin/env bash
# demo: Redis with about 1 GiB of data migrated lazily from the lab host src to
# dst with `distriproc migrate`; prints the time to first request, the remote
# fraction after a read workload on a tenth of the keys, and checks that a
# digest of every key and value is the same before and after. Everything it
# starts is torn down on exit, also on failure or Ctrl-C.
#
# Run as root from a checkout: `make demo` (which runs `make deps` and builds
# first). Knobs (environment): DEMO_MIB (1024), DEMO_BANDWIDTH (1gbit; "none"
# for an uncapped link), DEMO_PREFETCH (none), DEMO_READ_SECONDS (10),
# DEMO_PORT (7070); DISTRIPROC_LAB=NAME runs it in a private lab.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DP=$ROOT/build/distriproc
PY=/usr/bin/python3
TOOL=$ROOT/scripts/redis_tool.py
MIB=${DEMO_MIB:-1024}
BANDWIDTH=${DEMO_BANDWIDTH:-1gbit}
PREFETCH=${DEMO_PREFETCH:-none}
READ_SECONDS=${DEMO_READ_SECONDS:-10}
PORT=${DEMO_PORT:-7070}
SRC=10.250.0.1
DST=10.250.0.2
REDIS_PORT=6379
WORK=$(mktemp -d /tmp/distriproc-demo.XXXXXX)
REDIS_PID=
T0=$(date +%s)

say() { printf 'demo [%4ds]: %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }
LAB=${DISTRIPROC_LAB:-dp}   # the distriproc binary honours the same variable
in_ns() { local host=$1; shift; nsenter --net=/run/netns/"$LAB"-"$host" "$@"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    say "tearing down (migration, Redis, lab, $WORK)"
    if [[ -f $WORK/mig/migrate.state ]]; then
        timeout 60 "$DP" migrate --stop --workdir "$WORK/mig" >/dev/null 2>&1 || true
    fi
    if [[ -n $REDIS_PID ]] && kill -0 "$REDIS_PID" 2>/dev/null; then
        kill -KILL "$REDIS_PID" 2>/dev/null || true
    fi
    timeout 60 "$DP" lab down >/dev/null 2>&1 || true
    rm -rf "$WORK"
    if ((rc != 0)); then
        say "the demo failed (exit status $rc); see the messages above"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) == 0 ]] || die "needs root (namespaces, CRIU): sudo make demo"
[[ -x $DP ]] || die "$DP is missing: run make first (make demo does)"
command -v redis-server >/dev/null || die "redis-server is missing: run make deps"
command -v redis-cli >/dev/null || die "redis-cli is missing: run make deps"

# Memory: Redis holds about 1.3x the data; the restored copy grows on dst as it
# is touched while the dumped images sit in the page cache.
need_kib=$((MIB * 1024 * 4))
avail_kib=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
((avail_kib > need_kib)) || die "DEMO_MIB=$MIB needs about $((need_kib / 1024)) MiB free, $((avail_kib / 1024)) MiB available"

say "1/8 lab up (link cap: $BANDWIDTH)"
if [[ $BANDWIDTH == none ]]; then
    timeout 60 "$DP" lab up >/dev/null
else
    timeout 60 "$DP" lab up --bandwidth "$BANDWIDTH" >/dev/null
fi

say "2/8 starting Redis in a src container"
REDIS_PID=$(timeout 30 "$DP" lab exec src --container --detach -- \
    redis-server --save '' --appendonly no --protected-mode no --bind 0.0.0.0 --port "$REDIS_PORT")
in_ns src timeout 40 "$PY" "$TOOL" probe --host "$SRC" --port "$REDIS_PORT" --timeout 30 >/dev/null ||
    die "Redis did not answer on src"

say "3/8 loading $MIB MiB into Redis (pid $REDIS_PID)"
in_ns src timeout 900 "$PY" "$TOOL" load --host "$SRC" --port "$REDIS_PORT" --mib "$MIB" --max-seconds 850 \
    >"$WORK/load.json" || die "loading Redis failed"
say "    $(cat "$WORK/load.json")"

say "4/8 digest of every key and value before the migration (SCAN + MGET)"
in_ns src timeout 900 "$PY" "$TOOL" digest --host "$SRC" --port "$REDIS_PORT" --max-seconds 850 \
    >"$WORK/digest-before.json" || die "digest before failed"
say "    $(cat "$WORK/digest-before.json")"

say "5/8 distriproc migrate: checkpoint on src, serve, lazy restore on dst, probe with redis-cli"
timeout 600 "$DP" migrate --pid "$REDIS_PID" --workdir "$WORK/mig" --port "$PORT" --prefetch "$PREFETCH" \
    --probe "redis-cli -h $DST -p $REDIS_PORT ping | grep -qx PONG" --probe-timeout 60 --json \
    >"$WORK/migrate.json" || die "distriproc migrate failed"
REDIS_PID=   # dumped: the source process is gone; the restored one belongs to the migration
jget() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
TTFR_R=$(jget "$WORK/migrate.json" ttfr_from_restore_s)
TTFR_F=$(jget "$WORK/migrate.json" ttfr_from_freeze_s)
say "    time to first request: $(printf '%.3f' "$TTFR_R") s from restore start, $(printf '%.3f' "$TTFR_F") s from freeze"

say "6/8 ${READ_SECONDS} s of GETs on a tenth of the keys, from dst"
in_ns dst timeout $((READ_SECONDS + 120)) "$PY" "$TOOL" read --host "$DST" --port "$REDIS_PORT" --fraction 0.1 \
    --seconds "$READ_SECONDS" >"$WORK/read.json" || die "read workload failed"
say "    $(cat "$WORK/read.json")"
timeout 30 "$DP" stats --workdir "$WORK/mig/dst" --json >"$WORK/stats.json" || die "distriproc stats failed"
REMOTE=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"]["remote_fraction"])' "$WORK/stats.json")
say "    remote fraction after the read workload: $("$PY" -c "print('%.1f %%' % ($REMOTE * 100))")"

say "7/8 digest of every key and value after the migration, from dst (touches all memory)"
in_ns dst timeout 900 "$PY" "$TOOL" digest --host "$DST" --port "$REDIS_PORT" --max-seconds 850 \
    >"$WORK/digest-after.json" || die "digest after failed"
say "    $(cat "$WORK/digest-after.json")"

say "8/8 results"
"$PY" - "$WORK" "$MIB" "$BANDWIDTH" "$PREFETCH" <<'EOF'
import json, sys
work, mib, bw, prefetch = sys.argv[1:5]
j = lambda n: json.load(open(f"{work}/{n}.json"))
m, r, s = j("migrate"), j("read"), j("stats")["total"]
before, after = j("digest-before"), j("digest-after")
same = before == after
rows = [
    ("Redis data loaded", f"{mib} MiB ({before['keys']} keys)"),
    ("link cap / prefetch", f"{bw} / {prefetch}"),
    ("dump (freeze to images)", f"{m['dump_s']:.3f} s"),
    ("time to first request, from restore", f"{m['ttfr_from_restore_s']:.3f} s"),
    ("time to first request, from freeze", f"{m['ttfr_from_freeze_s']:.3f} s"),
    ("bytes moved before the first reply", f"{m['bytes_before_reply'] / 2**20:.2f} MiB"),
    ("read workload (10% of keys)", f"{r['ops_per_s']:.0f} ops/s, {r['misses']} misses"),
    ("remote fraction after it", f"{s['remote_fraction'] * 100:.1f} %"),
    ("digest before", before["sha256"][:16]),
    ("digest after", after["sha256"][:16]),
    ("correct (digests equal)", "yes" if same else "NO"),
]
w = max(len(k) for k, _ in rows)
print("+" + "-" * (w + 2) + "+" + "-" * 32 + "+")
for k, v in rows:
    print(f"| {k:<{w}} | {v:<30} |")
print("+" + "-" * (w + 2) + "+" + "-" * 32 + "+")
sys.exit(0 if same and r["misses"] == 0 else 1)
EOF
