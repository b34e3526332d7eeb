#!/usr/bin/env bash
# Build tallow, start a relay on 127.0.0.1, send a 20 MiB sample file with a
# freshly generated code, receive it into a temporary folder and check that
# it arrived byte-identical. Everything runs on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
tallow=target/release/tallow
work=$(mktemp -d)
relay_pid=""
cleanup() {
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$tallow" relay --listen 127.0.0.1:0 >"$work/relay.out" 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 100); do
    grep -q listening "$work/relay.out" 2>/dev/null && break
    sleep 0.05
done
relay=$(awk '/listening/ {print $NF}' "$work/relay.out")
echo "relay listening on $relay"

mkdir -p "$work/src" "$work/out"
head -c $((20 * 1024 * 1024)) /dev/urandom >"$work/src/sample.bin"

"$tallow" send --relay "$relay" "$work/src/sample.bin" 2>"$work/send.log" &
send_pid=$!
code=""
for _ in $(seq 200); do
    code=$(awk '/^Code: / {print $2}' "$work/send.log")
    [ -n "$code" ] && break
    sleep 0.05
done
[ -n "$code" ] || { cat "$work/send.log"; echo "sender printed no code" >&2; exit 1; }
echo "sender's code: $code"

"$tallow" receive --relay "$relay" --out "$work/out" --yes "$code"
wait "$send_pid"
tail -n 1 "$work/send.log"

cmp "$work/src/sample.bin" "$work/out/sample.bin"
echo "OK: sample.bin arrived byte-identical through the relay"
