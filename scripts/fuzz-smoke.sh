#!/usr/bin/env bash
# A short fuzzing run of every target in fuzz/ (CI runs it after the tests).
# cargo-fuzz needs nightly-only compiler flags; the stable toolchain accepts
# them with RUSTC_BOOTSTRAP=1, which is what this does. A crash fails the
# run and leaves the input in fuzz/artifacts/<target>/ — add it to
# fuzz/seeds/<target>/ once fixed, so tests/fuzz_replay.rs keeps it fixed.
# Usage: scripts/fuzz-smoke.sh [seconds per target, default 20]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-${FUZZ_SECONDS:-20}}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
echo "== building fuzz targets: $(echo $targets)"
cargo fuzz build >/dev/null 2>&1 || cargo fuzz build
passed=0
failed=0
for t in $targets; do
    mkdir -p "corpus/$t"
    cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    log=$(mktemp)
    if cargo fuzz run "$t" -- -max_total_time="$seconds" >"$log" 2>&1; then
        runs=$(grep -Eo '^Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' || echo "?")
        echo "fuzz $t: ok, $runs runs in ${seconds}s"
        passed=$((passed + 1))
    else
        echo "fuzz $t: FAILED"
        grep -A20 -E "panicked|ERROR" "$log" | head -40
        failed=$((failed + 1))
    fi
    rm -f "$log"
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
