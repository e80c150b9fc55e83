#!/usr/bin/env bash
# The benchmark tables of docs/benchmarks.md and the README in one run,
# printed as markdown. `scripts/bench.sh [all|table|scaling]` (default all):
#
# table:
#   - direct to a sink vs through smtpgate (no rules, the example rules in
#     rules/, clients on STARTTLS with full and with resumed handshakes), at
#     10 and 100 sessions, 2 KB and 1 MB messages, one message per
#     connection: msgs/s, ratios, p99 latency, smtpgate's CPU seconds per
#     1,000 messages and peak RSS (medians of ROUNDS alternating rounds);
#   - the upstream connection pool on vs off (2 KB, 10 sessions);
#   - smtpgate's RSS per idle connection at IDLE_CONNECTIONS connections.
# scaling: how smtpgate's cost grows, one dimension at a time from a base
#   of 10 sessions, 2 KB, 1 recipient, no rules, one message per connection:
#   recipients per message 1, 10, 100 (pipelined); message size 2 KB, 100 KB, 1 MB,
#   10 MB; concurrent sessions 10, 100, 1,000; body-regex rules 0, 100,
#   1,000, 10,000 (at 100 KB, all in one run so the ratios share rounds).
#   Each row: direct and smtpgate msgs/s, their ratio, smtpgate's CPU
#   seconds per 1,000 messages and per MB of message text, and peak RSS.
#
# Everything runs on loopback; the sink is loadgen's own. Run it on a quiet
# machine: other work on the same cores shows up in every figure.
#
# Settings (environment):
#   SMALL_MESSAGES (20000)  messages per 2 KB run of the table
#   LARGE_MESSAGES (1000)   messages per 1 MB run of the table
#   ROUNDS (3)              alternating rounds per table cell or scaling row
#   IDLE_CONNECTIONS (5000)
#   SOURCE_IPS (250)        client source addresses 127.0.0.2.. (per-IP limits)
#   SCALING_SECONDS (5)     about how long each scaling phase sends, at
#                           the rate a quiet 2-core machine reaches
#   BODY_RULES ("100 1000 10000")  rule counts of the scaling table
#   BENCH_EXTRA_YAML        a YAML file merged into every smtpgate config
#                           (e.g. to lift per-client rate limits)
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL_MESSAGES=${SMALL_MESSAGES:-20000}
LARGE_MESSAGES=${LARGE_MESSAGES:-1000}
ROUNDS=${ROUNDS:-3}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-5000}
SOURCE_IPS=${SOURCE_IPS:-250}
SCALING_SECONDS=${SCALING_SECONDS:-5}
BODY_RULES=${BODY_RULES:-"100 1000 10000"}
MODE=${1:-all}
case "$MODE" in
    all | table | scaling) ;;
    *)
        echo "usage: scripts/bench.sh [all|table|scaling]" >&2
        exit 2
        ;;
esac

echo "== building (release)" >&2
cargo build --release --quiet --bin smtpgate --example loadgen
LOADGEN=target/release/examples/loadgen

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "rules_dir: \"$PWD/rules\"" > "$work/example-rules.yaml"
echo "upstream: { pool: { enabled: false } }" > "$work/pool-off.yaml"
if [ -n "${BENCH_EXTRA_YAML:-}" ]; then cp "$BENCH_EXTRA_YAML" "$work/base.yaml"; else : > "$work/base.yaml"; fi
# 1,000 sessions need more than the default 1,000 connections once closing
# ones overlap new ones.
{ cat "$work/base.yaml"; echo "---"; echo "limits: { max_connections: 4000 }"; } > "$work/scaling.yaml"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# Runs loadgen with the given arguments and the gateway YAML in $extra,
# shows its report on stderr and appends its markdown rows to the file
# named first.
extra="$work/base.yaml"
run() {
    local rows=$1
    shift
    echo "== loadgen $*" >&2
    "$LOADGEN" "$@" --gateway-bin target/release/smtpgate --source-ips "$SOURCE_IPS" \
        --gateway-extra-yaml "$extra" --markdown > "$work/out"
    grep -v '^|' "$work/out" >&2 || true
    grep '^|' "$work/out" >> "$rows"
}

# The main table, the pool and idle memory.
table() {
    : > "$work/table"
    for sessions in 10 100; do
        for size in 2048 1000000; do
            if [ "$size" -gt 100000 ]; then n=$LARGE_MESSAGES; else n=$SMALL_MESSAGES; fi
            run "$work/table" --compare --sessions "$sessions" --messages "$n" --size "$size" \
                --per-connection 1 --rounds "$ROUNDS" \
                --variant-yaml "$work/example-rules.yaml" --variant-tls --tls-resume
        done
    done
    : > "$work/pool"
    run "$work/pool" --compare --sessions 10 --messages "$SMALL_MESSAGES" --size 2048 \
        --per-connection 1 --rounds "$ROUNDS" --variant-yaml "$work/pool-off.yaml"
    : > "$work/idle"
    run "$work/idle" --idle-rss "$IDLE_CONNECTIONS"
}

print_table() {
    echo
    echo "One message per connection; medians of $ROUNDS rounds; $SMALL_MESSAGES x 2 KB or $LARGE_MESSAGES x 1 MB per run."
    echo
    echo "| load | setup | msgs/s | / direct | / smtpgate | p99 ms | CPU s / 1000 msgs | peak RSS |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    cat "$work/table"
    echo
    echo "Upstream connection pool (2 KB, 10 sessions, one message per connection):"
    echo
    echo "| load | setup | msgs/s | / direct | / smtpgate (pool on) | p99 ms | CPU s / 1000 msgs | peak RSS |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    cat "$work/pool"
    echo
    echo "| idle connections | RSS before | RSS after | per connection |"
    echo "| --- | ---: | ---: | ---: |"
    cat "$work/idle"
}

# One scaling row set: runs loadgen (direct and smtpgate in ROUNDS
# alternating rounds) with the given arguments and turns its median rows
# into scaling rows labelled DIMENSION and VALUE; with body rules, each
# variant row names its own count.
scaling_run() {
    local dimension=$1 value=$2 size=$3
    shift 3
    : > "$work/rows"
    extra="$work/scaling.yaml" run "$work/rows" --compare --medians --rounds "$ROUNDS" \
        --size "$size" --per-connection 1 "$@"
    awk -F' *[|] *' -v dim="$dimension" -v val="$value" -v size="$size" '
        $3 == "direct" { direct = $4; next }
        {
            v = val
            if ($3 ~ / body-regex rules$/) { v = $3; sub(/^smtpgate [+] /, "", v); sub(/ body-regex rules$/, "", v) }
            else if (dim == "body rules") v = 0
            permb = ($8 == "-") ? "-" : sprintf("%.2f", $8 / (size / 1048576))
            printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", dim, v, direct, $4, $5, $8, permb, $9
        }' "$work/rows" >> "$work/scaling"
}

# Messages for a scaling phase of SIZE bytes and RECIPIENTS recipients:
# about SCALING_SECONDS at the rate a quiet 2-core machine reaches.
scaling_messages() {
    awk -v s="$1" -v r="${2:-1}" -v t="$SCALING_SECONDS" 'BEGIN {
        n = int(t * 2500 / (1 + s / 200000) / (1 + r / 50)); if (n < 40) n = 40; print n }'
}

# 2048 -> 2 KB, 1048576 -> 1 MB.
human() {
    awk -v b="$1" 'BEGIN { if (b >= 1048576) printf "%d MB", b / 1048576; else printf "%d KB", b / 1024 }'
}

# How smtpgate's cost grows, one dimension at a time.
scaling() {
    : > "$work/scaling"
    # Pipelined, as Postfix sends many recipients: one at a time, each
    # RCPT costs a round trip to the upstream and back.
    for r in 1 10 100; do
        scaling_run "recipients (pipelined)" "$r" 2048 --sessions 10 --recipients "$r" \
            --pipelining --messages "$(scaling_messages 2048 "$r")"
    done
    for size in 2048 102400 1048576 10485760; do
        scaling_run "message size" "$(human "$size")" "$size" --sessions 10 \
            --messages "$(scaling_messages "$size")"
    done
    for sessions in 10 100 1000; do
        # More messages at 1,000 sessions, so each session sends several.
        scaling_run sessions "$sessions" 2048 --sessions "$sessions" \
            --messages "$(($(scaling_messages 2048) * (sessions > 100 ? 3 : 1)))"
    done
    local rules=()
    for n in $BODY_RULES; do rules+=(--body-rules "$n"); done
    scaling_run "body rules" 0 102400 --sessions 10 \
        --messages "$(scaling_messages 102400)" "${rules[@]}"
}

print_scaling() {
    echo
    echo "How the cost grows (from 10 sessions, 2 KB, 1 recipient, no rules; body rules at 100 KB;"
    echo "one message per connection; medians of $ROUNDS rounds):"
    echo
    echo "| grows | value | direct msgs/s | smtpgate msgs/s | / direct | CPU s / 1000 msgs | CPU s / 1000 MB | peak RSS |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    cat "$work/scaling"
}

if [ "$MODE" != scaling ]; then table; fi
if [ "$MODE" != table ]; then scaling; fi
echo
echo "Machine: $(nproc) cores, $(uname -sr), load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)."
if [ "$MODE" != scaling ]; then print_table; fi
if [ "$MODE" != table ]; then print_scaling; fi
