#!/usr/bin/env bash
# What the checks pipeline costs, in one run, printed as markdown: S1 (2 KB
# messages, 10 sessions, one message per connection) sent
#   - direct to loadgen's sink,
#   - through smtpgate with no check configured,
#   - through smtpgate built from BASELINE (default: the last commit
#     before the pipeline existed), with the same config,
#   - through smtpgate whose rules read the iprev facts (a score rule at
#     MAIL), every answer already known to the resolver,
# in alternating rounds (medians of ROUNDS). The ratios to compare are
# "no checks / baseline" (should be within noise of 1) and "iprev / no
# checks" (the issue's budget: at least 0.9).
#
# The clients come from 127.0.0.2 and up. hickory answers the reverse and
# forward lookups of loopback addresses itself (RFC 6761), so every lookup
# goes through the resolver thread and its channel as a cached answer
# does, and none leaves the machine; `dns.servers` names a closed local
# port so a lookup that did need a server would fail, not go out.
#
# Settings (environment): MESSAGES (20000), ROUNDS (3), SOURCE_IPS (250),
# BASELINE (a commit; default 924f247).
#
# Throughput on a shared machine is noisy; CALLGRIND=1 also runs each
# setup once under valgrind's callgrind (600 messages from 10 client
# addresses, 2 sessions) and prints the instructions smtpgate executed per
# message: the same figure on every run, whatever else the machine does.
# The iprev row leaves out the resolver's one-time start-up (hickory loads
# the system's CA roots), which is printed apart.
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-20000}
ROUNDS=${ROUNDS:-3}
SOURCE_IPS=${SOURCE_IPS:-250}
BASELINE=${BASELINE:-924f247}

echo "== building (release)" >&2
cargo build --release --quiet --bin smtpgate --example loadgen

work=$(mktemp -d)
cleanup() {
    git worktree remove --force "$work/baseline" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== building smtpgate at $BASELINE (release)" >&2
git worktree add --quiet --detach "$work/baseline" "$BASELINE"
# Its own target dir, kept between runs: a second run builds nothing.
CARGO_TARGET_DIR="$PWD/target/bench-baseline" \
    cargo build --release --quiet --manifest-path "$work/baseline/Cargo.toml" --bin smtpgate
baseline_bin="$PWD/target/bench-baseline/release/smtpgate"

mkdir -p "$work/rules"
cat > "$work/rules/iprev.yaml" <<'EOF'
rules:
  - name: no-reverse-dns
    stage: mail
    when: { fact: { name: iprev, is: [fail, permerror] } }
    action: score
    score: 1
EOF
cat > "$work/iprev.yaml" <<EOF
rules_dir: "$work/rules"
dns: { servers: ["127.0.0.1:9"], timeout_ms: 1000, attempts: 1 }
EOF

target/release/examples/loadgen --compare --sessions 10 --messages "$MESSAGES" --size 2048 \
    --per-connection 1 --rounds "$ROUNDS" --source-ips "$SOURCE_IPS" \
    --gateway-bin target/release/smtpgate \
    --variant-bin "smtpgate at $BASELINE=$baseline_bin" \
    --variant-yaml "$work/iprev.yaml" --markdown > "$work/out"
grep -v '^|' "$work/out" >&2 || true

if [ "${CALLGRIND:-0}" = 1 ]; then
    echo "== callgrind: instructions per message" >&2
    for v in new old; do
        if [ "$v" = new ]; then bin="$PWD/target/release/smtpgate"; else bin="$baseline_bin"; fi
        printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/%s.%%p.cg %s "$@"\n' \
            "$work" "$v" "$bin" > "$work/cg-$v"
        chmod +x "$work/cg-$v"
    done
    target/release/examples/loadgen --compare --sessions 2 --messages 600 --size 2048 \
        --per-connection 1 --rounds 1 --source-ips 10 --gateway-bin "$work/cg-new" \
        --variant-yaml "$work/iprev.yaml" --variant-bin "old=$work/cg-old" >&2
fi

echo
echo "Machine: $(nproc) cores, $(uname -sr), load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "S1: $MESSAGES x 2 KB, 10 sessions, one message per connection; medians of $ROUNDS alternating rounds."
echo
echo "| load | setup | msgs/s | / direct | / smtpgate | p99 ms | CPU s / 1000 msgs | peak RSS |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
grep '^|' "$work/out"
if [ "${CALLGRIND:-0}" = 1 ]; then
    # In start order: loadgen's first comparison, then one round of
    # smtpgate, smtpgate + iprev, and the baseline.
    mapfile -t runs < <(ls -tr "$work"/*.cg)
    count() { grep -m1 '^summary' "$1" | cut -d' ' -f2; }
    startup=$(callgrind_annotate --inclusive=yes "${runs[2]}" 2>/dev/null \
        | awk '/TlsConfig::new/ && !n {gsub(",", "", $1); print $1; n = 1}')
    echo
    echo "Instructions per message (callgrind, 600 x 2 KB from 10 client addresses):"
    echo
    echo "| setup | instructions / message |"
    echo "| --- | ---: |"
    echo "| smtpgate | $(( $(count "${runs[1]}") / 600 )) |"
    echo "| smtpgate + iprev (resolver start-up left out) | $(( ($(count "${runs[2]}") - ${startup:-0}) / 600 )) |"
    echo "| smtpgate at $BASELINE | $(( $(count "${runs[3]}") / 600 )) |"
    echo
    echo "Resolver start-up, once per process: ${startup:-?} instructions."
fi
