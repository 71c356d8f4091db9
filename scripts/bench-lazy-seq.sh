#!/usr/bin/env bash
# bench-lazy-seq: time to restore and first full sequential read of forkmem's
# memory after a lazy restore, per page source and prefetch policy, on this
# host (loopback, no lab). Root; build first (make).
#   scripts/bench-lazy-seq.sh local|remote PREFETCH MIB PORT    (RTT=usec emulates a link, remote only)
# Prints one line; the workload and the server are stopped afterwards.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DP=$ROOT/build/distriproc
MODE=$1 PF=$2 MIB=$3 PORT=$4
T=$(mktemp -d /tmp/dp-bench-lazy.XXXXXX)
RPID= DPID= SP=
cleanup() {
    # a restored task whose pages are still remote needs the server to exit:
    # stop it before the server, never leave it waiting on a dead one
    [ -n "$RPID" ] && kill -9 "$RPID" 2>/dev/null
    [ -n "$DPID" ] && for _ in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    [ -n "$SP" ] && kill "$SP" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/images"
req() { /usr/bin/python3 -c '
import socket,sys
s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),timeout=120)
s.sendall(sys.argv[2].encode()+b"\n"); print(s.makefile().readline().strip())' "$PORT" "$1"; }
unshare --pid --fork setsid "$ROOT/build/forkmem" --mib "$MIB" --port "$PORT" </dev/null >/dev/null 2>&1 &
for _ in $(seq 50); do req VERIFY >/dev/null 2>&1 && break; sleep 0.1; done
UNSHARE=$!
PID=$(pgrep -P "$(pgrep -P $UNSHARE | head -1)" 2>/dev/null || pgrep -P $UNSHARE)
"$DP" checkpoint --pid "$PID" --images "$T/images" >/dev/null
if [ "$MODE" = remote ]; then
    "$DP" keygen "$T/key" >/dev/null
    "$DP" serve --images "$T/images" --listen 127.0.0.1:$((PORT + 100)) --key "$T/key" ${RTT:+--emulate-rtt $RTT} 2>"$T/serve.log" &
    SP=$!
    sleep 0.3
    SRC=(--source 127.0.0.1:$((PORT + 100)) --key "$T/key")
else
    SRC=(--images "$T/images")
fi
R=$("$DP" restore "${SRC[@]}" --workdir "$T/wd" --prefetch "$PF" --json)
RPID=$(echo "$R" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
DPID=$(echo "$R" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["daemon_pid"])')
t0=$(date +%s.%N); V=$(req VERIFY); t1=$(date +%s.%N)
S=$("$DP" stats --workdir "$T/wd" --json)
req QUIT >/dev/null
/usr/bin/python3 - "$MODE" "$PF" "$MIB" "$t0" "$t1" "$V" "$S" "$R" "${RTT:-0}" <<'PY'
import json, sys
mode, pf, mib, t0, t1, v, s, r, rtt = sys.argv[1:]
s = json.loads(s)["total"]; r = json.loads(r); v = json.loads(v); dt = float(t1) - float(t0)
print(f"{mode:6} rtt={rtt:>3}us {pf:8} {mib} MiB: restore {r['restore_s']*1000:6.1f} ms | first full read "
      f"{dt*1000:7.1f} ms = {int(mib)/dt:6.1f} MiB/s | faults {s['faults']:6} p50 {s['latency']['p50_us']:6.1f} "
      f"p99 {s['latency']['p99_us']:7.1f} mean {s['latency']['mean_us']:6.1f} us | prefetched {s['pages_prefetched']:6} "
      f"hits {s['prefetch_hits']:6} | verify errors {v['errors']}")
PY
