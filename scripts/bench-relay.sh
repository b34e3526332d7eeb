#!/usr/bin/env bash
# Relay forwarding throughput against a plain TCP forwarder (socat), on the
# same bytes in the same run, on 127.0.0.1.
#
#   scripts/bench-relay.sh [SIZE_MIB] [ROUNDS]
#
# A Python client pair moves SIZE_MIB through `tallow relay` (after the
# 39-byte hello and the relay's status bytes) and, as the baseline, through
# `socat -b 65536 TCP-LISTEN … TCP:…` (the relay's own buffer size). Prints MB/s
# for each and the ratio. Needs socat.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-2048}
rounds=${2:-3}
command -v socat >/dev/null || { echo "needs socat (apt-get install socat)" >&2; exit 1; }
cargo build --release --quiet -p tallow
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/pair.py" <<'PY'
import socket, sys, threading, time, hashlib
mode, addr, size = sys.argv[1], sys.argv[2], int(sys.argv[3]) << 20
host, port = addr.rsplit(":", 1)
def hello(role):
    room = hashlib.sha256(b"bench").digest()
    return b"TLWR\x02" + bytes([role]) + room + b"\x00"
def connect(role):
    s = socket.create_connection((host, int(port)))
    if mode == "relay":
        s.sendall(hello(role))
        while True:
            head = s.recv(3, socket.MSG_WAITALL)
            text = s.recv(int.from_bytes(head[1:3], "big"), socket.MSG_WAITALL) if head[1:3] != b"\x00\x00" else b""
            if head[0:1] == b"P": return s
            if head[0:1] == b"E": raise SystemExit(text.decode())
    return s
if mode == "relay":
    # Both sides must be connected for the relay to pair them.
    held = {}
    ts = [threading.Thread(target=lambda r=r: held.setdefault(r, connect(r))) for r in (1, 2)]
    for t in ts: t.start()
    for t in ts: t.join()
    a, b = held[1], held[2]
else:
    a = connect(1); b = None
received = [0]
def sink(conn):
    buf = bytearray(1 << 20); view = memoryview(buf)
    while True:
        n = conn.recv_into(view)
        if n == 0: break
        received[0] += n
if mode == "relay":
    r = threading.Thread(target=sink, args=(b,)); r.start()
chunk = b"\xab" * (1 << 20)
start = time.time()
sent = 0
while sent < size:
    a.sendall(chunk); sent += len(chunk)
a.shutdown(socket.SHUT_WR)
if mode == "relay":
    r.join()
else:
    a.recv(1)
elapsed = time.time() - start
print(f"{elapsed:.3f}")
PY

# Baseline: a listener that counts bytes, behind a socat forwarder.
cat >"$work/sinkd.py" <<'PY'
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(1)
while True:
    c, _ = l.accept()
    buf = bytearray(1 << 20); view = memoryview(buf)
    while c.recv_into(view): pass
    c.sendall(b"x"); c.close()
PY
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

target/release/tallow relay --listen 127.0.0.1:0 >"$work/relay.out" 2>/dev/null &
pids+=($!)
sp=$(free_port); fp=$(free_port)
python3 "$work/sinkd.py" "$sp" & pids+=($!)
socat -b 65536 TCP-LISTEN:"$fp",reuseaddr,fork TCP:127.0.0.1:"$sp" & pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/relay.out" 2>/dev/null && break; sleep 0.05; done
relay=$(awk '/listening/ {print $NF}' "$work/relay.out")
sleep 0.3

best() { local b=""; for _ in $(seq "$rounds"); do t=$("$@"); if [ -z "$b" ] || (( $(echo "$t < $b" | bc -l) )); then b=$t; fi; done; echo "$b"; }
t_relay=$(best python3 "$work/pair.py" relay "$relay" "$size_mib")
t_plain=$(best python3 "$work/pair.py" plain "127.0.0.1:$fp" "$size_mib")
mb=$(( size_mib * 1048576 ))
printf '%-22s %10s\n' forwarder "MB/s"
printf '%-22s %10.0f\n' "socat (plain TCP)" "$(echo "$mb / $t_plain / 1000000" | bc -l)"
printf '%-22s %10.0f\n' "tallow relay" "$(echo "$mb / $t_relay / 1000000" | bc -l)"
printf 'ratio relay/socat: %.2f\n' "$(echo "$t_plain / $t_relay" | bc -l)"
