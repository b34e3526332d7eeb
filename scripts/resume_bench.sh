#!/usr/bin/env bash
# How long a resume takes: a SIZE_MIB file is sent through a local relay,
# the receiver is killed once PERCENT of it is on disk, the page cache is
# dropped (as root; otherwise the figure says "warm"), and the rerun is
# timed. The baseline, measured in the same run and cold too, is a fresh
# transfer of a file the size of the part that was missing: what a resume
# cannot do better than. The ratio is rerun / baseline.
#
#   scripts/resume_bench.sh [SIZE_MIB] [PERCENT]
#   BENCH_DIR=/var/tmp scripts/resume_bench.sh 4096 90   # on a disk
#   BASELINE=/path/to/old/tallow scripts/resume_bench.sh  # its rerun too
#   RATE=50000000 scripts/resume_bench.sh   # a 50 MB/s link (relay --max-rate)
#
# On 127.0.0.1 the missing part moves at memory speed, so the rerun is
# bound by reading what is kept (both sides read it here, from one disk);
# on a real link that reading hides behind the transfer.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${1:-4096}
percent=${2:-90}

cargo build --release --quiet
tallow=$PWD/target/release/tallow
work=$(mktemp -d -p "${BENCH_DIR:-/var/tmp}")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }

cold() {
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then
        echo 3 >/proc/sys/vm/drop_caches
        echo cold
    else
        echo warm
    fi
}

echo "preparing ${size_mib} MiB in $work ..."
head -c $((size_mib << 20)) /dev/urandom >"$work/big.bin"

"$tallow" relay --listen 127.0.0.1:0 --max-rate "${RATE:-0}" >"$work/relay.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/relay.out" 2>/dev/null && break; sleep 0.05; done
relay=$(awk '/listening/ {print $NF}' "$work/relay.out")

# Seconds for one transfer of $1 into $2 by build $4 (the receiver's
# stderr in $3).
transfer() {
    local src=$1 out=$2 log=$3 bin=$4 code="4243-resume-bench-$RANDOM"
    "$bin" send --no-lan --relay "$relay" --code "$code" --compress none "$src" >/dev/null 2>"$work/send.log" &
    local spid=$!
    sleep 0.2
    local t0; t0=$(now)
    "$bin" receive --no-lan --relay "$relay" --out "$out" --yes "$code" >/dev/null 2>"$log"
    wait "$spid"
    local t1; t1=$(now)
    echo "$t1 - $t0" | bc -l
}

# Interrupt a transfer of big.bin by build $1 into $2 at $percent; prints
# the bytes kept.
interrupt() {
    local bin=$1 out=$2 code="4244-resume-bench-$RANDOM"
    rm -rf "$out"; mkdir -p "$out"
    "$bin" send --no-lan --relay "$relay" --code "$code" --compress none "$work/big.bin" >/dev/null 2>&1 &
    local spid=$!
    sleep 0.2
    "$bin" receive --no-lan --relay "$relay" --out "$out" --yes "$code" >/dev/null 2>&1 &
    local rpid=$!
    local target=$(( (size_mib << 20) / 100 * percent )) got
    while :; do
        got=$(stat -c %s "$out/big.bin.tallow-partial" 2>/dev/null || echo 0)
        [ "$got" -ge "$target" ] && break
        kill -0 "$rpid" 2>/dev/null || { echo "the receiver ended before ${percent}%" >&2; exit 1; }
        sleep 0.05
    done
    kill -KILL "$rpid"; wait "$rpid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    stat -c %s "$out/big.bin.tallow-partial"
}

# Interrupt, drop the cache, time the rerun of build $1.
resumed() {
    local bin=$1 out="$work/out"
    interrupt "$bin" "$out" >"$work/kept"
    state=$(cold)
    local t; t=$(transfer "$work/big.bin" "$out" "$work/rerun.log" "$bin")
    cmp "$work/big.bin" "$out/big.bin"
    grep -q "Resuming" "$work/rerun.log" || { echo "the rerun did not resume:" >&2; cat "$work/rerun.log" >&2; exit 1; }
    echo "$t"
}

rerun=$(resumed "$tallow")
kept=$(cat "$work/kept")
# The baseline: the missing part as a file of its own, sent fresh.
missing=$(( (size_mib << 20) - kept ))
head -c "$missing" "$work/big.bin" >"$work/missing.bin"
mkdir -p "$work/out-missing"
state=$(cold)
base=$(transfer "$work/missing.bin" "$work/out-missing" "$work/base.log" "$tallow")

printf '%s MiB, killed at %s MiB kept (%s page cache, relay rate %s B/s, 0 = no cap)\n' \
    "$size_mib" $((kept >> 20)) "$state" "${RATE:-0}"
printf 'fresh transfer of the missing %s MiB: %6.2f s\n' $((missing >> 20)) "$base"
printf 'rerun (resume):                   %6.2f s\n' "$rerun"
printf 'ratio rerun / missing part:       %6.2f\n' "$(echo "$rerun / $base" | bc -l)"
if [ -n "${BASELINE:-}" ]; then
    old=$(resumed "$BASELINE")
    printf 'rerun by BASELINE:                %6.2f s (killed at %s MiB; ratio %.2f)\n' \
        "$old" $(( $(cat "$work/kept") >> 20 )) "$(echo "$old / $base" | bc -l)"
fi
echo "(every resumed file verified identical)"
