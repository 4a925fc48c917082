#!/usr/bin/env bash
# Cached against recomputed generation as whole `hier generate` commands (start-up, prompt and
# sampling included), in alternating rounds, on a freshly initialised model:
#
#   tools/bench_generate.sh HIER [CONFIG] [ROUNDS] [OTHER_HIER]
#
# HIER: the `hier` binary; CONFIG: model config (default tools/bench/h12.json); ROUNDS: default 5;
# OTHER_HIER: a second binary (e.g. an earlier commit's) whose cached command runs in the same
# rounds. Each round: a 47-byte prompt, 384 new greedy tokens, cached then recomputed (then
# OTHER_HIER cached). Fails when the commands' tokens differ. Prints each round and the medians.
set -euo pipefail

fail() {
    echo "bench_generate: $*" >&2
    exit 1
}

[ $# -ge 1 ] || fail "usage: tools/bench_generate.sh HIER [CONFIG] [ROUNDS] [OTHER_HIER]"
hier=$1
config=${2:-$(dirname "$0")/bench/h12.json}
rounds=${3:-5}
other=${4:-}
[ -x "$hier" ] || fail "'$hier' is not an executable (build it: cargo build --release -p hier-cli)"
[ -z "$other" ] || [ -x "$other" ] || fail "'$other' is not an executable"
[ -f "$config" ] || fail "no config at '$config'"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || fail "ROUNDS must be a positive whole number, not '$rounds'"
command -v bc >/dev/null || fail "bc not found (apt-get install bc)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$hier" init --config "$config" --out "$work/model" >/dev/null
prompt="The quick brown fox jumps over the lazy dog. It"

# seconds of one whole command (NAME BINARY [FLAGS]); its tokens go to $work/NAME.out
timed() {
    local name=$1 binary=$2 start end
    shift 2
    start=$(date +%s.%N)
    "$binary" generate --model "$work/model" --prompt "$prompt" --max-new-tokens 384 \
        --temperature 0 --format ids "$@" >"$work/$name.out"
    end=$(date +%s.%N)
    printf "%.3f\n" "$(echo "$end - $start" | bc)"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

: >"$work/cached" && : >"$work/recomputed" && : >"$work/other"
for r in $(seq "$rounds"); do
    cached=$(timed cached "$hier")
    recomputed=$(timed recomputed "$hier" --no-cache)
    cmp -s "$work/cached.out" "$work/recomputed.out" || fail "round $r: cached and recomputed tokens differ"
    line="round $r: cached ${cached}s, recomputed ${recomputed}s"
    echo "$cached" >>"$work/cached" && echo "$recomputed" >>"$work/recomputed"
    if [ -n "$other" ]; then
        o=$(timed other "$other")
        cmp -s "$work/cached.out" "$work/other.out" || fail "round $r: OTHER_HIER's tokens differ"
        line="$line, other cached ${o}s"
        echo "$o" >>"$work/other"
    fi
    echo "$line"
done
c=$(median <"$work/cached")
rc=$(median <"$work/recomputed")
echo "median: cached ${c}s, recomputed ${rc}s, recomputed / cached $(echo "scale=1; $rc / $c" | bc)x"
[ -z "$other" ] || echo "median: other cached $(median <"$work/other")s"
