#!/usr/bin/env bash
# What a newcomer does on a fresh machine (README, "A first session by
# hand"): start smtpgate from a checkout with nothing configured (mail
# stored in ./spool/, the example rules of ./rules/ live), send a message
# with swaks, and find it in the spool, marked by the example rules. Then
# SIGTERM must stop it.
#
# The one difference from the README: the README's gateway listens on
# 127.0.0.1:2525, and one may still be running from a first session by
# hand. So this one gets a free port, through a configuration file that is
# the embedded default but for that port (a configuration file names its
# rules directory: `rules_dir: rules`, as the embedded default finds it).
#
# Needs: swaks (apt-get install swaks). Run: bash tests/interop/newcomer.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
command -v swaks >/dev/null 2>&1 || {
    echo "newcomer: swaks is not installed (Debian: apt-get install -y swaks)" >&2
    exit 2
}
cargo build --quiet --manifest-path "$root/Cargo.toml" --bin smtpgate
bin="$root/target/debug/smtpgate"
work="$(mktemp -d -t smtpgate-newcomer.XXXXXX)"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "newcomer: FAIL: $*" >&2
    if [ -s "$work/log" ]; then
        echo "newcomer: the last lines of smtpgate's log:" >&2
        tail -20 "$work/log" | sed 's/^/    | /' >&2
    fi
    exit 1
}

# A loopback port nothing answers on, below the ephemeral range (32768+),
# so no outgoing connection holds it either.
port=""
for _ in $(seq 1 100); do
    p=$((10000 + RANDOM % 22000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || fail "found no free loopback port in 10000-31999"

cd "$work"
cp -r "$root/rules" rules
cat >gateway.yaml <<EOF
listen: [{ addr: "127.0.0.1:$port" }]
rules_dir: rules
EOF
RUST_LOG=info "$bin" --config gateway.yaml >"$work/log" 2>&1 &
pid=$!
# Ready when *this* process says it listens (not when something answers).
for _ in $(seq 1 400); do
    grep -q "listening on 127.0.0.1:$port" "$work/log" && break
    kill -0 "$pid" 2>/dev/null || fail "smtpgate exited at start-up (is port $port taken?)"
    sleep 0.05
done
grep -q "listening on 127.0.0.1:$port" "$work/log" ||
    fail "smtpgate did not log 'listening on 127.0.0.1:$port' within 20 s"
grep -q "rules: [0-9]* loaded from rules" "$work/log" || fail "the example rules were not loaded"

swaks --server "127.0.0.1:$port" --from alice@example.com --to bob@example.net \
      --header "Subject: first message" --body "Hello from swaks" >"$work/swaks.out" 2>&1 || {
    sed 's/^/    | /' "$work/swaks.out" >&2
    fail "swaks could not send to 127.0.0.1:$port (its dialogue is above)"
}
grep -q "<-  250 2.0.0 OK: queued as" "$work/swaks.out" || {
    sed 's/^/    | /' "$work/swaks.out" >&2
    fail "no '250 2.0.0 OK: queued as' reply to the message (swaks's dialogue is above)"
}

[ -d spool ] || fail "no spool/ directory in $work after a 250: the message was not stored here"
count=$(find spool -name '*.eml' | wc -l)
[ "$count" -eq 1 ] || fail "expected 1 message in spool/, found $count: $(ls -A spool)"
file=$(find spool -name '*.eml')
grep -q "^Subject: first message" "$file" || fail "the Subject is missing in $file"
grep -q "Hello from swaks" "$file" || fail "the body is missing in $file"
head -1 "$file" | grep -q "^Received: from " ||
    fail "the first line of $file is not smtpgate's Received: header: $(head -1 "$file")"
# What the README says the example rules add to a plain message from
# alice@example.com (our-domain-unauthenticated: +3; rules/30-content.yaml).
grep -q "^X-Smtpgate-Checked: score=3" "$file" ||
    fail "no 'X-Smtpgate-Checked: score=3' header in $file: $(grep -i '^X-Smtpgate' "$file" || echo none)"
grep -q " disposition=spool " "$work/log" || fail "the transaction's log line does not say disposition=spool"

kill -TERM "$pid"
for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$pid" 2>/dev/null; then fail "smtpgate still running 10 s after SIGTERM"; fi
status=0
wait "$pid" || status=$?
pid=""
[ "$status" -eq 0 ] || fail "smtpgate exited with status $status after SIGTERM (want 0)"
grep -q "shutdown complete\|shutting down" "$work/log" || fail "no shutdown line in the log"
echo "newcomer: OK (swaks message on port $port spooled as $(basename "$file"), clean SIGTERM)"
