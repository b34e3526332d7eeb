#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 600) and print executions and
# findings per target. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). JOBS=2 runs two targets at a time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Seeds live in fuzz/corpus/TARGET/seed-*; what the fuzzer adds there is
# not committed. A crash leaves its input in fuzz/artifacts/TARGET/: turn it
# into a regression unit test next to the code it broke.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_decode message_decode manifest_paths offer_pages handshake resume_records transfer_machines)
jobs=${JOBS:-1}
command -v cargo-fuzz >/dev/null || { echo "needs cargo-fuzz: cargo install cargo-fuzz" >&2; exit 1; }

cargo +nightly fuzz build -O >/dev/null
logs=$(mktemp -d)
run() {
    local t=$1
    cargo +nightly fuzz run -O "$t" -- -max_total_time="$seconds" -print_final_stats=1 \
        >"$logs/$t.log" 2>&1 && echo "ok" >"$logs/$t.status" || echo "FAILED" >"$logs/$t.status"
}
running=0
for t in "${targets[@]}"; do
    run "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait

printf '%-16s %14s %10s %8s %s\n' target executions "exec/s" corpus result
status=0
for t in "${targets[@]}"; do
    execs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$logs/$t.log" | tail -1)
    rate=$(awk '/stat::average_exec_per_sec/ {print $NF}' "$logs/$t.log" | tail -1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    result=$(cat "$logs/$t.status")
    printf '%-16s %14s %10s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$result"
    if [ "$result" != ok ]; then
        status=1
        grep -E "panicked|ERROR|SUMMARY|Test unit written" "$logs/$t.log" | head -5
    fi
done
exit $status
