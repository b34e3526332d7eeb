#!/usr/bin/env bash
# The direct path's gain: the same file between two hosts behind their own
# NAT routers (scripts/nat-lab.sh), once kept on the relay (--relay-only,
# the baseline) and once by default (the relay introduces, the data goes
# directly), in the same run. The relay's link is shaped to RELAY_RATE and
# each router's to HOST_RATE (tbf), like a modest public relay between two
# well-connected homes. Prints seconds for each and the ratio. Needs root,
# iproute2 and nftables.
#
#   scripts/bench-direct.sh [SIZE_MIB] [ROUNDS] [RELAY_RATE] [HOST_RATE]
#   (defaults: 200 3 100mbit 1gbit)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-200}
rounds=${2:-3}
relay_rate=${3:-100mbit}
host_rate=${4:-1gbit}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
cargo build --release --quiet -p tallow
bin=$PWD/target/release/tallow
# Above the ids tests/nat.rs uses (0-799), so both can run at once.
id=$((900 + $$ % 90))
relay=198.51.100.10:9009
work=$(mktemp -d /dev/shm/tallow-bench-direct.XXXXXX)
relay_pid=
cleanup() {
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
    scripts/nat-lab.sh down "$id"
    rm -rf "$work"
}
trap cleanup EXIT
scripts/nat-lab.sh up "$id"
scripts/nat-lab.sh shape "$id" "$relay_rate" "$host_rate"
ip netns exec "tl${id}relay" "$bin" relay --listen "$relay" >"$work/relay.log" 2>&1 &
relay_pid=$!
sleep 0.5
head -c "$((size_mib << 20))" /dev/urandom >"$work/data.bin"

n=0
# One transfer; prints the receiver's wall seconds (pairing to verified).
transfer() { # MODE (relay|direct)
    n=$((n + 1))
    local code="$((100 + n))-abacus-zoom-yodel" flags=() out="$work/out"
    [ "$1" = relay ] && flags=(--relay-only)
    rm -rf "$out" && mkdir "$out"
    ip netns exec "tl${id}ha" "$bin" send --relay "$relay" --no-lan --code "$code" \
        --compress none "${flags[@]}" "$work/data.bin" >/dev/null 2>"$work/send.err" &
    local sender=$! start end
    sleep 0.3
    start=$(date +%s.%N)
    ip netns exec "tl${id}hb" "$bin" receive --relay "$relay" --no-lan --yes --json \
        --out "$out" "$code" >"$work/events" 2>"$work/receive.err"
    end=$(date +%s.%N)
    wait "$sender"
    cmp -s "$work/data.bin" "$out/data.bin" || { echo "received file differs" >&2; exit 1; }
    grep -q "\"event\":\"done\".*\"route\":\"$1\"" "$work/events" || {
        echo "expected route $1:" >&2; cat "$work/events" "$work/receive.err" >&2; exit 1; }
    echo "$end - $start" | bc -l
}

echo "$size_mib MiB, relay link $relay_rate, hosts $host_rate, $rounds rounds (seconds, receiver's wall time)"
best_relay= best_direct=
for round in $(seq "$rounds"); do
    r=$(transfer relay)
    d=$(transfer direct)
    printf 'round %d: relay %.2f s, direct %.2f s\n' "$round" "$r" "$d"
    if [ -z "$best_relay" ] || (($(echo "$r < $best_relay" | bc -l))); then best_relay=$r; fi
    if [ -z "$best_direct" ] || (($(echo "$d < $best_direct" | bc -l))); then best_direct=$d; fi
done
printf 'best: relay %.2f s (%.1f MiB/s), direct %.2f s (%.1f MiB/s): direct is %.2fx faster\n' \
    "$best_relay" "$(echo "$size_mib / $best_relay" | bc -l)" \
    "$best_direct" "$(echo "$size_mib / $best_direct" | bc -l)" \
    "$(echo "$best_relay / $best_direct" | bc -l)"
grep -h "pair finished" "$work/relay.log" | sed 's/.*room=[^ ]* //' | awk '{print "relay log: " $0}'
