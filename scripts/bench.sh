#!/usr/bin/env bash
# Throughput of tallow through a local relay against a plain TCP copy of the
# same bytes through one forwarding hop (socat), measured in the same run.
#
#   scripts/bench.sh [SIZE_MIB] [SMALL_FILES] [ROUNDS]
#   BENCH_DIR=/dev/shm scripts/bench.sh      # data and output on tmpfs
#   BASELINE=/path/to/old/tallow scripts/bench.sh   # also time another build
#
# Datasets: SIZE_MIB of random (incompressible) bytes, SIZE_MIB of text-like
# compressible bytes (decimal numbers, ~20x with zstd -1), and SMALL_FILES
# files of 1-8 KiB in 100 folders. The plain copy is `socat` into a file (or
# `tar` for the tree) through a `socat` hop, then `sync -f` of the output
# (tallow makes its output durable too); tallow's figure includes the
# handshake, hashing, encryption, verification and fsync. Each figure is the
# best of ROUNDS. Needs socat (apt-get install socat). Files live under
# BENCH_DIR (default: the system temp folder); on a tmpfs the figures show
# the CPU and network path alone, on a disk they include the disk.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${1:-1024}
small_files=${2:-10000}
rounds=${3:-2}
command -v socat >/dev/null || { echo "bench.sh needs socat (apt-get install socat)" >&2; exit 1; }

cargo build --release --quiet
tallow=$PWD/target/release/tallow
work=$(mktemp -d -p "${BENCH_DIR:-${TMPDIR:-/tmp}}")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "preparing data in $work ..."
mkdir -p "$work/data"
head -c $((size_mib << 20)) /dev/urandom >"$work/data/random.bin"
{ seq 1 1000000000 || true; } | head -c $((size_mib << 20)) >"$work/data/text.bin"
python3 - "$work/data/tree" "$small_files" <<'PY'
import os, random, sys
root, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in range(count):
    d = os.path.join(root, f"dir{i % 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i:05d}.txt"), "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 8192)))
PY
tree_bytes=$(du -sb "$work/data/tree" | cut -f1)

"$tallow" relay --listen 127.0.0.1:0 >"$work/relay.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/relay.out" 2>/dev/null && break; sleep 0.05; done
relay=$(awk '/listening/ {print $NF}' "$work/relay.out")

# Seconds for tallow (or the build $2) to move $1 (file or folder).
tallow_once() {
    local src=$1 bin=${2:-$tallow} out="$work/out-tallow" code="4242-bench-run-$RANDOM"
    rm -rf "$out"; mkdir -p "$out"
    "$bin" send --relay "$relay" --code "$code" "$src" 2>"$work/send.log" &
    local spid=$!
    sleep 0.2
    local t0; t0=$(now)
    "$bin" receive --relay "$relay" --out "$out" --yes "$code" 2>"$work/recv.log"
    wait "$spid"
    local t1; t1=$(now)
    echo "$t1 - $t0" | bc -l
}

# Seconds for a plain socat copy of $1 through one socat hop.
plain_once() {
    local src=$1 out="$work/out-plain"
    rm -rf "$out"; mkdir -p "$out"
    local p1 p2; p1=$(free_port); p2=$(free_port)
    if [ -d "$src" ]; then
        (socat -u TCP-LISTEN:"$p1",reuseaddr - | tar -C "$out" -xf -) &
    else
        socat -u TCP-LISTEN:"$p1",reuseaddr OPEN:"$out/copy",creat,trunc &
    fi
    local rpid=$!
    socat TCP-LISTEN:"$p2",reuseaddr TCP:127.0.0.1:"$p1" &
    local hpid=$!
    sleep 0.2
    local t0; t0=$(now)
    if [ -d "$src" ]; then
        tar -C "$(dirname "$src")" -cf - "$(basename "$src")" | socat -u - TCP:127.0.0.1:"$p2"
    else
        socat -u OPEN:"$src" TCP:127.0.0.1:"$p2"
    fi
    wait "$rpid"
    # tallow makes what it received durable before it reports success; so
    # must the baseline.
    sync -f "$out"
    local t1; t1=$(now)
    kill "$hpid" 2>/dev/null || true; wait "$hpid" 2>/dev/null || true
    echo "$t1 - $t0" | bc -l
}

best() { # best of $rounds runs of "$@"
    local b=""
    for _ in $(seq "$rounds"); do
        sync # start each run without the previous run's writeback pending
        local t; t=$("$@")
        if [ -z "$b" ] || (( $(echo "$t < $b" | bc -l) )); then b=$t; fi
    done
    echo "$b"
}

printf '\n%-26s %12s %12s %8s\n' dataset "plain MB/s" "tallow MB/s" ratio
report() { # name bytes plain_s tallow_s [files]
    local mbp mbt ratio
    mbp=$(echo "$2 / $3 / 1000000" | bc -l); mbt=$(echo "$2 / $4 / 1000000" | bc -l)
    ratio=$(echo "$3 / $4" | bc -l)
    printf '%-26s %12.1f %12.1f %8.2f\n' "$1" "$mbp" "$mbt" "$ratio"
    if [ -n "${5:-}" ]; then
        printf '%-26s %12.0f %12.0f   (files/s)\n' "" "$(echo "$5 / $3" | bc -l)" "$(echo "$5 / $4" | bc -l)"
    fi
}
# With BASELINE: the other build's figure, and this build's time against it.
against_baseline() { # src tallow_s
    [ -n "${BASELINE:-}" ] || return 0
    local b; b=$(best tallow_once "$1" "$BASELINE")
    printf '%-26s %12s %12.2f   (this build / BASELINE, speed; baseline took %.2f s)\n' "" "" "$(echo "$b / $2" | bc -l)" "$b"
}
for name in random.bin text.bin; do
    src="$work/data/$name"
    bytes=$(stat -c %s "$src")
    p=$(best plain_once "$src"); t=$(best tallow_once "$src")
    cmp "$src" "$work/out-tallow/$name"
    report "$name ($size_mib MiB)" "$bytes" "$p" "$t"
    against_baseline "$src" "$t"
done
p=$(best plain_once "$work/data/tree"); t=$(best tallow_once "$work/data/tree")
report "tree ($small_files files)" "$tree_bytes" "$p" "$t" "$small_files"
against_baseline "$work/data/tree" "$t"
diff -r "$work/data/tree" "$work/out-tallow/tree" >/dev/null && echo "(every tallow copy verified identical)"
