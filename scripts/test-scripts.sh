#!/usr/bin/env bash
# Runs the shell-level tests against the real binary: every
# tests/interop/*.sh (swaks, openssl s_client, the newcomer's first
# session) and tests/e2e/*.sh (a private Postfix behind smtpgate, HAProxy
# in front; the Debian package installed, run and purged). Needs what
# scripts/install-test-deps.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
for script in tests/interop/*.sh tests/e2e/*.sh; do
    echo "-- $script"
    if bash "$script"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "scripts: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
