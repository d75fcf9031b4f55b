#!/usr/bin/env bash
# Runs the three fuzz targets one after another (never two fuzzers at once: the machine has
# 2 shared cores), each for the given number of seconds, and keeps each run's libFuzzer log
# as fuzz-<target>.log (git-ignored). Usage: fuzz/run_all.sh [v311_secs v5_secs conn_secs]
set -uo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
i=0
secs=("${1:-600}" "${2:-600}" "${3:-900}")
for t in decode_v311 decode_v5 connection; do
    echo "=== $t start $(date -u +%FT%TZ)"
    cargo fuzz run "$t" -- -max_total_time="${secs[$i]}" -jobs=1 -workers=1 -print_final_stats=1
    echo "=== $t rc=$? end $(date -u +%FT%TZ)"
    cp fuzz-0.log "fuzz-$t.log"
    grep -h DONE "fuzz-$t.log" || true
    i=$((i + 1))
done
ls artifacts/*/ 2>/dev/null
