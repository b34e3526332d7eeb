#!/usr/bin/env bash
# Throughput and CPU of tallow through a relay against a plain TCP copy of
# the same bytes through one forwarding hop (socat), measured in the same
# run, on loopback and on shaped links.
#
#   scripts/bench.sh [--link LINKS] [SIZE_MIB] [SMALL_FILES] [ROUNDS]
#   BENCH_DIR=/dev/shm scripts/bench.sh                # data and output on tmpfs
#   scripts/bench.sh --link lo,100mbit,1gbit 1024 10000 3   # everything (root)
#   BASELINE=/path/to/old/tallow scripts/bench.sh      # also time another build
#
# LINKS is a comma-separated list of `lo` (127.0.0.1, the default) and
# rates in tc's syntax (`100mbit`, `1gbit`): for a rate the sender runs in a
# network namespace joined to a second one (relay and receiver) by a veth
# pair whose two ends are shaped with a `tbf` qdisc to that rate (needs root
# and iproute2). On a shaped link each dataset is cut to what the plain copy
# moves in about ten seconds.
#
# Datasets: SIZE_MIB of random (incompressible) bytes; SIZE_MIB of repeated
# text (decimal numbers, ~20x with zstd -1); a tar of the Rust crate sources
# under ~/.cargo/registry/src (a realistic tree, ~4x); on loopback also
# SMALL_FILES files of 1-8 KiB in 100 folders (`tar | socat` is the
# baseline). The plain copy is `socat` into a file (or `tar -x`) through a
# `socat` hop, then `sync -f` of the output (tallow makes its output durable
# too); tallow's figure includes the handshake, hashing, encryption,
# verification and fsync. Each time is the best of ROUNDS; CPU is user +
# system seconds of sender and receiver together (not the relay or the hop),
# per GiB of data, in the best round. Needs socat (apt-get install socat).
set -euo pipefail
cd "$(dirname "$0")/.."

links=lo
if [ "${1:-}" = "--link" ]; then
    links=$2
    shift 2
fi
size_mib=${1:-1024}
small_files=${2:-10000}
rounds=${3:-2}
command -v socat >/dev/null || { echo "bench.sh needs socat (apt-get install socat)" >&2; exit 1; }
if [ "$links" != lo ] && { [ "$(id -u)" != 0 ] || ! command -v tc >/dev/null; }; then
    echo "bench.sh: shaped links need root and iproute2 (ip, tc)" >&2
    exit 1
fi

cargo build --release --quiet
tallow=$PWD/target/release/tallow
work=$(mktemp -d -p "${BENCH_DIR:-${TMPDIR:-/tmp}}")
pids=()
netns=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for n in "${netns[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "preparing data in $work ..."
mkdir -p "$work/data"
head -c $((size_mib << 20)) /dev/urandom >"$work/data/random.bin"
{ seq 1 1000000000 || true; } | head -c $((size_mib << 20)) >"$work/data/text.bin"
registry=$(ls -d "$HOME"/.cargo/registry/src/*/ 2>/dev/null | head -1)
if [ -n "$registry" ]; then
    tar -C "$registry" -cf "$work/data/sources.tar" .
else
    echo "(no ~/.cargo/registry/src: the source-tree dataset is left out)"
fi
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

# The path under test: on loopback everything runs here; on a shaped link
# the sender runs in namespace $ns_a and reaches $far (in $ns_b, where the
# relay, the hop and both receivers run).
ns_a=() ns_b=() far=127.0.0.1
setup_link() { # rate
    local id=$$ rate=$1
    local a="tbench-a-$id" b="tbench-b-$id"
    ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true
    ip netns add "$a"; ip netns add "$b"; netns=("$a" "$b")
    ip link add "tba$id" type veth peer name "tbb$id"
    ip link set "tba$id" netns "$a"; ip link set "tbb$id" netns "$b"
    ip -n "$a" addr add 10.209.0.1/24 dev "tba$id"
    ip -n "$b" addr add 10.209.0.2/24 dev "tbb$id"
    for n in "$a" "$b"; do ip -n "$n" link set lo up; done
    ip -n "$a" link set "tba$id" up; ip -n "$b" link set "tbb$id" up
    # A bucket of about 4 ms at the rate (at least 64 KiB): enough for the
    # kernel's timer granularity without letting bursts pass unshaped.
    local bits; bits=$(tc_rate_bits "$rate")
    local burst=$(( bits / 8 / 250 )); [ "$burst" -lt 65536 ] && burst=65536
    tc -n "$a" qdisc add dev "tba$id" root tbf rate "$rate" burst "$burst" latency 100ms
    tc -n "$b" qdisc add dev "tbb$id" root tbf rate "$rate" burst "$burst" latency 100ms
    ns_a=(ip netns exec "$a") ns_b=(ip netns exec "$b") far=10.209.0.2
}
teardown_link() {
    for n in "${netns[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    netns=() ns_a=() ns_b=() far=127.0.0.1
}
tc_rate_bits() { # 100mbit -> 100000000
    python3 -c '
import re, sys
m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", sys.argv[1].lower())
if not m: sys.exit("a rate is NUMBER and kbit, mbit or gbit: " + sys.argv[1])
print(int(float(m[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2]]))' "$1"
}

start_relay() {
    local port; port=$(free_port)
    "${ns_b[@]}" "$tallow" relay --listen "0.0.0.0:$port" >"$work/relay.out" 2>/dev/null &
    relay_pid=$!
    pids+=("$relay_pid")
    for _ in $(seq 100); do grep -q listening "$work/relay.out" 2>/dev/null && break; sleep 0.05; done
    relay_port=$port
}
stop_relay() { kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; }

# "seconds cpu_seconds" for tallow (or the build $2) moving $1.
TIMEFORMAT='%U %S'
cpu_of() { awk '{ s += $1 + $2 } END { print s }' "$@"; }
tallow_once() {
    local src=$1 bin=${2:-$tallow} out="$work/out-tallow" code="4242-bench-run-$RANDOM"
    rm -rf "$out"; mkdir -p "$out"
    { time "${ns_a[@]}" "$bin" send --relay "$far:$relay_port" --no-lan --code "$code" "$src" 2>"$work/send.log"; } 2>"$work/send.cpu" &
    local spid=$!
    sleep 0.2
    local t0; t0=$(now)
    { time "${ns_b[@]}" "$bin" receive --relay "127.0.0.1:$relay_port" --no-lan --out "$out" --yes "$code" 2>"$work/recv.log"; } 2>"$work/recv.cpu"
    wait "$spid"
    local t1; t1=$(now)
    echo "$(echo "$t1 - $t0" | bc -l) $(cpu_of "$work/send.cpu" "$work/recv.cpu")"
}

# "seconds cpu_seconds" for a plain socat copy of $1 through one socat hop.
plain_once() {
    local src=$1 out="$work/out-plain"
    rm -rf "$out"; mkdir -p "$out"
    local p1 p2; p1=$(free_port); p2=$(free_port)
    if [ -d "$src" ]; then
        { time "${ns_b[@]}" sh -c "socat -u TCP-LISTEN:$p1,reuseaddr - | tar -C '$out' -xf -"; } 2>"$work/precv.cpu" &
    else
        { time "${ns_b[@]}" socat -u TCP-LISTEN:"$p1",reuseaddr OPEN:"$out/copy",creat,trunc; } 2>"$work/precv.cpu" &
    fi
    local rpid=$!
    "${ns_b[@]}" socat TCP-LISTEN:"$p2",reuseaddr TCP:127.0.0.1:"$p1" &
    local hpid=$!
    sleep 0.2
    local t0; t0=$(now)
    if [ -d "$src" ]; then
        { time "${ns_a[@]}" sh -c "tar -C '$(dirname "$src")' -cf - '$(basename "$src")' | socat -u - TCP:$far:$p2"; } 2>"$work/psend.cpu"
    else
        { time "${ns_a[@]}" socat -u OPEN:"$src" TCP:"$far":"$p2"; } 2>"$work/psend.cpu"
    fi
    wait "$rpid"
    # tallow makes what it received durable before it reports success; so
    # must the baseline.
    sync -f "$out"
    local t1; t1=$(now)
    kill "$hpid" 2>/dev/null || true; wait "$hpid" 2>/dev/null || true
    echo "$(echo "$t1 - $t0" | bc -l) $(cpu_of "$work/psend.cpu" "$work/precv.cpu")"
}

best() { # "seconds cpu" of the fastest of $rounds runs of "$@"
    local b="" line
    for _ in $(seq "$rounds"); do
        sync # start each run without the previous run's writeback pending
        line=$("$@")
        if [ -z "$b" ] || (( $(echo "${line% *} < ${b% *}" | bc -l) )); then b=$line; fi
    done
    echo "$b"
}

report() { # name bytes "plain_s plain_cpu" "tallow_s tallow_cpu" [files]
    local ps=${3% *} pc=${3#* } ts=${4% *} tc=${4#* } gib
    gib=$(echo "$2 / 1073741824" | bc -l)
    printf '%-28s %9.1f %9.1f %7.2f %9.2f %9.2f %7.2f\n' "$1" \
        "$(echo "$2 / $ps / 1000000" | bc -l)" "$(echo "$2 / $ts / 1000000" | bc -l)" \
        "$(echo "$ps / $ts" | bc -l)" \
        "$(echo "$pc / $gib" | bc -l)" "$(echo "$tc / $gib" | bc -l)" "$(echo "$tc / $pc" | bc -l)"
    if [ -n "${5:-}" ]; then
        printf '%-28s %9.0f %9.0f   (files/s)\n' "" "$(echo "$5 / $ps" | bc -l)" "$(echo "$5 / $ts" | bc -l)"
    fi
}
# With BASELINE: the other build's figure, and this build's time against it.
against_baseline() { # src "tallow_s tallow_cpu"
    [ -n "${BASELINE:-}" ] || return 0
    local b; b=$(best tallow_once "$1" "$BASELINE")
    printf '%-28s (this build / BASELINE, speed: %.2f; baseline took %.2f s)\n' "" \
        "$(echo "${b% *} / ${2% *}" | bc -l)" "${b% *}"
}

# Cut $1 to $2 bytes (a copy under $work/cut), or keep it if smaller.
cut_to() {
    local size; size=$(stat -c %s "$1")
    if [ "$size" -le "$2" ]; then echo "$1"; return; fi
    mkdir -p "$work/cut"
    head -c "$2" "$1" >"$work/cut/$(basename "$1")"
    echo "$work/cut/$(basename "$1")"
}

for link in ${links//,/ }; do
    limit=""
    if [ "$link" = lo ]; then
        echo; echo "== loopback (127.0.0.1), $(nproc) cores shared by all processes"
    else
        setup_link "$link"
        # About ten seconds of the plain copy.
        limit=$(( $(tc_rate_bits "$link") / 8 * 10 ))
        echo; echo "== shaped link: $link each way (tbf on a veth pair between two namespaces)"
    fi
    start_relay
    printf '%-28s %9s %9s %7s %9s %9s %7s\n' dataset "plain" "tallow" ratio "plain" "tallow" "ratio"
    printf '%-28s %9s %9s %7s %9s %9s %7s\n' "" "MB/s" "MB/s" speed "CPU s/GiB" "CPU s/GiB" CPU
    for name in random.bin text.bin sources.tar; do
        src="$work/data/$name"
        [ -f "$src" ] || continue
        [ -n "$limit" ] && src=$(cut_to "$src" "$limit")
        bytes=$(stat -c %s "$src")
        p=$(best plain_once "$src"); t=$(best tallow_once "$src")
        cmp "$src" "$work/out-tallow/$name"
        report "$name ($((bytes >> 20)) MiB)" "$bytes" "$p" "$t"
        against_baseline "$src" "$t"
    done
    if [ "$link" = lo ]; then
        tree_bytes=$(du -sb "$work/data/tree" | cut -f1)
        p=$(best plain_once "$work/data/tree"); t=$(best tallow_once "$work/data/tree")
        report "tree ($small_files files)" "$tree_bytes" "$p" "$t" "$small_files"
        against_baseline "$work/data/tree" "$t"
        diff -r "$work/data/tree" "$work/out-tallow/tree" >/dev/null
    fi
    stop_relay
    [ "$link" = lo ] || teardown_link
done
echo; echo "(every tallow copy verified identical to its source)"
