#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for SECONDS each (default 30), one after the other.
#
#   scripts/fuzz.sh [SECONDS]
#
# Needs the nightly toolchain (`cargo +nightly`); without it this says so and exits 0, so the
# suite still passes on a stable-only machine. cargo-fuzz is installed with `cargo install` if
# missing. A crash stops the run with exit 1 and leaves the input in fuzz/artifacts/TARGET/;
# turn it into a regression test (fuzz/README.md says how). The corpus grows in
# fuzz/corpus/TARGET/ (not in git). VEIL_FUZZ_JOBS=N runs N targets at once.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS]" >&2
    exit 2
    ;;
esac

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "== fuzz: SKIPPED: no nightly toolchain (rustup toolchain install nightly); the fuzz targets did not run"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== fuzz: installing cargo-fuzz"
    cargo install --quiet --locked cargo-fuzz
fi

targets=$(cargo +nightly fuzz list)
echo "== fuzz: building $(echo "$targets" | wc -w) targets"
cargo +nightly fuzz build

run_one() {
    local t=$1 log
    log=$(mktemp)
    mkdir -p "fuzz/corpus/$t"
    if cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        local runs
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        echo "fuzz $t: ${runs:-?} runs in ${seconds}s, no crash"
        rm -f "$log"
    else
        echo "fuzz $t: FAILED (input in fuzz/artifacts/$t/):"
        tail -40 "$log"
        rm -f "$log"
        return 1
    fi
}

failed=0
jobs=${VEIL_FUZZ_JOBS:-1}
if [ "$jobs" -le 1 ]; then
    for t in $targets; do
        run_one "$t" || failed=1
    done
else
    pids=()
    for t in $targets; do
        run_one "$t" &
        pids+=($!)
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
    done
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
fi
exit "$failed"
