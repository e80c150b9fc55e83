#!/usr/bin/env bash
# What a newcomer does on a fresh machine: start smtpgate with no config at
# all (the embedded default: 127.0.0.1:2525, mail stored in ./spool/), send a
# message with swaks, and find it in the spool. Then SIGTERM must stop it.
# Needs: swaks (apt-get install swaks). Run: bash tests/interop/newcomer.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cargo build --quiet --manifest-path "$root/Cargo.toml" --bin smtpgate
bin="$root/target/debug/smtpgate"
work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "newcomer: FAIL: $*" >&2; [ -f "$work/log" ] && tail -20 "$work/log" >&2; exit 1; }

cd "$work"
RUST_LOG=info "$bin" >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
    if (exec 3<>/dev/tcp/127.0.0.1/2525) 2>/dev/null; then break; fi
    kill -0 "$pid" 2>/dev/null || fail "smtpgate exited at startup"
    sleep 0.05
done

swaks --server 127.0.0.1:2525 --from alice@example.com --to bob@example.net \
      --header "Subject: first message" --body "Hello from swaks" >"$work/swaks.out" 2>&1 \
    || { cat "$work/swaks.out" >&2; fail "swaks could not send"; }
grep -q "<-  250 2.0.0 OK: queued as" "$work/swaks.out" || fail "no 250 queued reply"

count=$(find spool -name '*.eml' | wc -l)
[ "$count" -eq 1 ] || fail "expected 1 spooled message, found $count"
file=$(find spool -name '*.eml')
grep -q "^Subject: first message" "$file" || fail "subject missing in $file"
grep -q "Hello from swaks" "$file" || fail "body missing in $file"
head -1 "$file" | grep -q "^Received: from " || fail "no Received header first"

kill -TERM "$pid"
for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$pid" 2>/dev/null; then fail "smtpgate still running 10 s after SIGTERM"; fi
wait "$pid" || fail "smtpgate exited non-zero after SIGTERM"
pid=""
grep -q "shutdown complete\|shutting down" "$work/log" || fail "no shutdown log line"
echo "newcomer: OK (swaks message spooled as $(basename "$file"), clean SIGTERM)"
