#!/usr/bin/env bash
# Runs every cmocka unit-test binary given, prints each runner's own summary and a
# closing total. Exit status is non-zero if any runner failed.
set -u
passed=0 failed=0
for t in "$@"; do
    echo "== $t"
    if "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
