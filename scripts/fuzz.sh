#!/usr/bin/env bash
# Builds and runs libFuzzer targets: scripts/fuzz.sh SECONDS fuzz/fuzz_NAME.c...
# Each target is linked with the lib/ sources compiled for fuzzing (clang,
# -fsanitize=fuzzer,address,undefined) into build-fuzz/NAME and run for SECONDS
# on the corpus build-fuzz/corpus/NAME, seeded from fuzz/seeds/NAME/ (if any)
# and the small files of tests/fixtures. Prints executions and the result per
# target; a crash leaves its input in build-fuzz/artifacts/ and fails the run.
set -euo pipefail

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
LIBS="-lsodium -ljansson -lcrypto -lpthread -lm"

command -v "$CC" >/dev/null || { echo "fuzz: $CC not found (make deps installs clang)" >&2; exit 1; }
mkdir -p "$OUT/lib" "$OUT/corpus" "$OUT/artifacts" "$OUT/logs"

# The library, instrumented for coverage but without libFuzzer's main.
objs=()
for src in lib/*.c; do
    obj=$OUT/lib/$(basename "${src%.c}").o
    if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find lib -name '*.h' -newer "$obj")" ]; then
        "$CC" $CFLAGS $SAN -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
    fi
    objs+=("$obj")
done

failed=0
summary=()
for target in "$@"; do
    name=$(basename "${target%.c}")
    if ! grep -q 'LLVMFuzzerTestOneInput' "$target"; then
        echo "fuzz: $target does not define LLVMFuzzerTestOneInput" >&2
        summary+=("$name: not a fuzz target")
        failed=1
        continue
    fi
    echo "== $name: building"
    "$CC" $CFLAGS $SAN -fsanitize=fuzzer "$target" "${objs[@]}" $LIBS -o "$OUT/$name"

    corpus=$OUT/corpus/$name
    mkdir -p "$corpus"
    if [ -d "fuzz/seeds/$name" ]; then
        cp -n fuzz/seeds/"$name"/* "$corpus"/ 2>/dev/null || true
    fi
    if [ -d tests/fixtures ]; then
        find tests/fixtures -type f -size -64k -print0 | while IFS= read -r -d '' f; do
            cp -n "$f" "$corpus/seed-$(echo "$f" | tr '/' '_')"
        done
    fi

    echo "== $name: fuzzing for ${SECS}s (corpus $corpus)"
    log=$OUT/logs/$name.log
    set +e
    "$OUT/$name" "$corpus" -max_total_time="$SECS" -print_final_stats=1 -rss_limit_mb=2048 \
        -artifact_prefix="$OUT/artifacts/$name-" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    execs=${execs:-unknown}
    if [ $rc -eq 0 ]; then
        summary+=("$name: ok, $execs executions in ${SECS}s, corpus $(ls "$corpus" | wc -l) inputs")
    else
        summary+=("$name: FAILED (exit $rc) after $execs executions; see $log and $OUT/artifacts/")
        grep -m1 -E 'ERROR|SUMMARY|runtime error' "$log" >&2 || tail -20 "$log" >&2
        failed=1
    fi
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit $failed
