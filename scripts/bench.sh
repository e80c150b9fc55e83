#!/usr/bin/env bash
# The benchmark table of docs/benchmarks.md in one run, printed as markdown:
#   - direct to a sink vs through smtpgate (no rules, the example rules in
#     rules/, clients on STARTTLS), at 10 and 100 sessions, 2 KB and 1 MB
#     messages, one message per connection: msgs/s, ratios, p99 latency,
#     smtpgate's CPU seconds per 1,000 messages and peak RSS (medians of
#     ROUNDS alternating rounds);
#   - the upstream connection pool on vs off (2 KB, 10 sessions);
#   - smtpgate's RSS per idle connection at IDLE_CONNECTIONS connections.
# Everything runs on loopback; the sink is loadgen's own. Run it on a quiet
# machine: other work on the same cores shows up in every figure.
#
# Settings (environment):
#   SMALL_MESSAGES (20000)  messages per 2 KB run
#   LARGE_MESSAGES (1000)   messages per 1 MB run
#   ROUNDS (3)              alternating rounds per table cell
#   IDLE_CONNECTIONS (5000)
#   SOURCE_IPS (250)        client source addresses 127.0.0.2.. (per-IP limits)
#   BENCH_EXTRA_YAML        a YAML file merged into every smtpgate config
#                           (e.g. to lift per-client rate limits)
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL_MESSAGES=${SMALL_MESSAGES:-20000}
LARGE_MESSAGES=${LARGE_MESSAGES:-1000}
ROUNDS=${ROUNDS:-3}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-5000}
SOURCE_IPS=${SOURCE_IPS:-250}

echo "== building (release)" >&2
cargo build --release --quiet --bin smtpgate --example loadgen
LOADGEN=target/release/examples/loadgen

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "rules_dir: \"$PWD/rules\"" > "$work/example-rules.yaml"
echo "upstream: { pool: { enabled: false } }" > "$work/pool-off.yaml"

common=(--gateway-bin target/release/smtpgate --source-ips "$SOURCE_IPS" --markdown)
if [ -n "${BENCH_EXTRA_YAML:-}" ]; then
    common+=(--gateway-extra-yaml "$BENCH_EXTRA_YAML")
fi

# Runs loadgen with the given arguments, shows its report on stderr and
# appends its markdown rows to the file named first.
run() {
    local rows=$1
    shift
    echo "== loadgen $*" >&2
    "$LOADGEN" "$@" "${common[@]}" > "$work/out"
    grep -v '^|' "$work/out" >&2 || true
    grep '^|' "$work/out" >> "$rows"
}

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

echo
echo "Machine: $(nproc) cores, $(uname -sr), load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
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
