#!/usr/bin/env bash
# Builds and runs libFuzzer targets: scripts/fuzz.sh SECONDS fuzz/fuzz_NAME.c...
# Each target is linked with the lib/ sources compiled for fuzzing (clang,
# -fsanitize=fuzzer,address,undefined) into build-fuzz/NAME and run for SECONDS
# on the corpus build-fuzz/corpus/NAME, seeded from fuzz/seeds/NAME/
# (scripts/gen-fuzz-seeds.sh writes them). FUZZ_JOBS targets run at once
# (default 2). Prints executions, coverage and the result per target; a crash
# leaves its input in build-fuzz/artifacts/ and fails the run.
set -euo pipefail

if [ "${1:-}" = --help ]; then
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
if [ $# -lt 2 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh SECONDS fuzz/fuzz_NAME.c..." >&2
    exit 2
fi
SECS=$1
shift
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=build-fuzz
CC=${FUZZ_CC:-clang}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=gnu11 -g -O1 -D_GNU_SOURCE -fno-omit-frame-pointer -Ilib -Wall -Wextra"
LIBS="-lsodium -ljansson -lssl -lcrypto -lhiredis -lpthread -lm"

command -v "$CC" >/dev/null || { echo "fuzz: $CC not found (make deps installs clang)" >&2; exit 1; }
mkdir -p "$OUT/lib" "$OUT/corpus" "$OUT/artifacts" "$OUT/logs"

# The library, instrumented for coverage but without libFuzzer's main.
JOBS=${FUZZ_JOBS:-2}
objs=()
stale=()
for src in lib/*.c; do
    obj=$OUT/lib/$(basename "${src%.c}").o
    if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find lib -name '*.h' -newer "$obj")" ]; then
        stale+=("$src")
    fi
    objs+=("$obj")
done
if [ ${#stale[@]} -gt 0 ]; then
    printf '%s\n' "${stale[@]}" | xargs -P "$JOBS" -I{} sh -c \
        'src={}; "$0" $1 -fsanitize=fuzzer-no-link -c "$src" -o "$2/lib/$(basename "${src%.c}").o"' \
        "$CC" "$CFLAGS $SAN" "$OUT"
fi

# Builds one target and fuzzes it for SECS; writes its one-line result to
# $OUT/logs/NAME.result and returns non-zero on a finding.
run_target() {
    local target=$1 name rc log corpus execs cov
    name=$(basename "${target%.c}")
    log=$OUT/logs/$name.log
    if ! grep -q 'LLVMFuzzerTestOneInput' "$target"; then
        echo "$name: not a fuzz target (no LLVMFuzzerTestOneInput)" >"$OUT/logs/$name.result"
        return 1
    fi
    if ! "$CC" $CFLAGS $SAN -fsanitize=fuzzer "$target" "${objs[@]}" $LIBS -o "$OUT/$name" 2>"$log"; then
        echo "$name: FAILED to build; see $log" >"$OUT/logs/$name.result"
        return 1
    fi
    corpus=$OUT/corpus/$name
    mkdir -p "$corpus"
    if [ -d "fuzz/seeds/$name" ]; then
        cp -n fuzz/seeds/"$name"/* "$corpus"/ 2>/dev/null || true
    fi
    set +e
    nice -n "${FUZZ_NICE:-0}" "$OUT/$name" "$corpus" -max_total_time="$SECS" -print_final_stats=1 \
        -rss_limit_mb=2048 -timeout=20 -artifact_prefix="$OUT/artifacts/$name-" </dev/null >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    if [ $rc -eq 0 ]; then
        echo "$name: ok, ${execs:-unknown} executions in ${SECS}s, ${cov:-cov: unknown}," \
            "corpus $(ls "$corpus" | wc -l) inputs" >"$OUT/logs/$name.result"
        return 0
    fi
    echo "$name: FAILED (exit $rc) after ${execs:-unknown} executions; see $log and $OUT/artifacts/" \
        >"$OUT/logs/$name.result"
    grep -m3 -E 'ERROR|SUMMARY|runtime error' "$log" >&2 || tail -20 "$log" >&2
    return 1
}
export -f run_target
export OUT CC CFLAGS SAN LIBS SECS
export OBJS="${objs[*]}"

echo "== fuzzing $# target(s) for ${SECS}s each, $JOBS at a time"
failed=0
printf '%s\n' "$@" | xargs -P "$JOBS" -I{} bash -c 'objs=($OBJS); run_target "$1"' _ {} || failed=1

echo "== fuzz summary"
for target in "$@"; do
    cat "$OUT/logs/$(basename "${target%.c}").result"
done
exit $failed
