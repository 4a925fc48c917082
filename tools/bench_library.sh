#!/usr/bin/env bash
# Alternating rounds of a crate on stock Burn (examples/library-bench) and the `hier` binary on
# the same config, mode and batch; prints each round's median step in milliseconds.
#   tools/bench_library.sh LIBRARY_BENCH HIER ROUNDS "CONFIG MODE BATCH" ...
# e.g. tools/bench_library.sh examples/library-bench/target/release/hier-library-bench \
#        target/release/hier 5 "tools/bench/h12.json infer 1" "tools/bench/h12.json train 4"
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n '2,6p' "$0" >&2
    exit 2
fi
library=$1 hier=$2 rounds=$3
shift 3
median() { python3 -c 'import json,sys; print(round(json.loads(sys.stdin.read().strip().splitlines()[-1])["median_ms"], 1))'; }
for spec in "$@"; do
    read -r config mode batch <<<"$spec"
    for round in $(seq "$rounds"); do
        lib=$("$library" "$config" "$mode" "$batch" 5 | median)
        cli=$("$hier" bench --config "$config" --mode "$mode" --batch "$batch" --steps 5 --warmup 1 --json 2>/dev/null | median)
        echo "$config $mode batch=$batch round=$round library_ms=$lib hier_ms=$cli"
    done
done
