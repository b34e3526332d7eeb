#!/usr/bin/env bash
# CPU seconds per thread of the receiver during one transfer of FILE through
# a relay on 127.0.0.1 (output on tmpfs), busiest first: shows which thread
# of the receiver's pipeline limits it.
#
#   scripts/thread-cpu.sh FILE [tallow send options...]
#   scripts/thread-cpu.sh /dev/shm/text.bin --compress zstd
#   TALLOW=/path/to/other/tallow scripts/thread-cpu.sh FILE   # another build
#
# Threads are sampled from /proc/PID/task/*/stat every 50 ms; the last
# sample of each thread is printed (a thread that ends early keeps its last).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n 2,10p "$0" >&2; exit 2; }
file=$1
shift
if [ -z "${TALLOW:-}" ]; then
    cargo build --release --quiet
    TALLOW=$PWD/target/release/tallow
fi
out=$(mktemp -d -p /dev/shm)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$TALLOW" relay --listen "127.0.0.1:$port" >/dev/null 2>&1 &
relay=$!
trap 'kill $relay 2>/dev/null || true; rm -rf "$out"' EXIT
sleep 0.3
code=4242-thread-cpu-$RANDOM
"$TALLOW" send --relay "127.0.0.1:$port" --no-lan --code "$code" "$@" "$file" 2>/dev/null &
sender=$!
sleep 0.2
"$TALLOW" receive --relay "127.0.0.1:$port" --no-lan --out "$out" --yes "$code" 2>/dev/null &
receiver=$!
ticks=$(getconf CLK_TCK)
declare -A cpu
while kill -0 "$receiver" 2>/dev/null; do
    for task in /proc/"$receiver"/task/*; do
        stat=$(cat "$task/stat" 2>/dev/null) || continue
        name=$(cat "$task/comm" 2>/dev/null) || continue
        # Fields after the command name: utime and stime are the 12th and 13th.
        read -r -a fields <<<"${stat##*) }"
        cpu["${task##*/} $name"]=$((fields[11] + fields[12]))
    done
    sleep 0.05
done
wait "$receiver"
wait "$sender"
echo "receiver threads (tid name CPU-seconds), busiest first:"
for thread in "${!cpu[@]}"; do
    awk -v t="$thread" -v c="${cpu[$thread]}" -v hz="$ticks" 'BEGIN { printf "%s %.2f\n", t, c / hz }'
done | sort -k3 -g -r | head -8
