#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine: installs the Debian
# packages the tests use when missing, runs the Rust tests (`cargo test`),
# then the interop and end-to-end scripts. `cargo test` alone runs the
# Rust tests. .ci/run runs these same three steps.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
echo "== cargo test"
cargo test
echo "== interop and end-to-end scripts"
bash scripts/test-scripts.sh
