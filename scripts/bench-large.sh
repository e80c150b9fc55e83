#!/usr/bin/env bash
# Large messages with Postfix's own load tools: smtp-source -> smtpgate ->
# smtp-sink against smtp-source -> smtp-sink directly, in alternating
# rounds of one run. Prints messages per second (median of the rounds),
# the ratio to direct, and smtpgate's CPU seconds per 1,000 messages.
# Needs postfix (smtp-source, smtp-sink), which scripts/install-test-deps.sh
# installs. Loopback only; everything it starts it stops by PID.
#
#   scripts/bench-large.sh [MESSAGES (200)] [SESSIONS (4)] [BYTES (1000000)] [ROUNDS (3)]
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-200}
SESSIONS=${2:-4}
SIZE=${3:-1000000}
ROUNDS=${4:-3}

cargo build --release --bin smtpgate >&2
BIN=target/release/smtpgate
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

SINK=$(free_port)
GATE=$(free_port)
as_user=()
[ "$(id -u)" = 0 ] && as_user=(-u nobody)
smtp-sink "${as_user[@]}" "127.0.0.1:$SINK" 256 &
pids+=($!)
cat >"$work/gateway.yaml" <<EOF
hostname: bench.test
listen: [ { addr: "127.0.0.1:$GATE" } ]
relay: { trusted_networks: ["127.0.0.0/8"] }
upstream: { addr: "127.0.0.1:$SINK" }
spool_dir: "$work/spool"
EOF
RUST_LOG=warn "$BIN" --config "$work/gateway.yaml" 2>"$work/gate.log" &
GATE_PID=$!
pids+=("$GATE_PID")
wait_port "$SINK"
wait_port "$GATE"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$GATE_PID/stat"; }
# One round to PORT: prints messages per second.
round() {
    local start end
    start=$(date +%s.%N)
    smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" \
        -f bench@example.com -t sink@example.net "127.0.0.1:$1" >"$work/source.log" 2>&1 || {
        cat "$work/source.log" >&2
        return 1
    }
    end=$(date +%s.%N)
    awk -v n="$MESSAGES" -v s="$start" -v e="$end" 'BEGIN { printf "%.1f\n", n / (e - s) }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

: >"$work/direct"
: >"$work/gate"
ticks=0
for r in $(seq "$ROUNDS"); do
    round "$SINK" >>"$work/direct"
    before=$(cpu_ticks)
    round "$GATE" >>"$work/gate"
    ticks=$((ticks + $(cpu_ticks) - before))
    echo "round $r: direct $(tail -n 1 "$work/direct") msgs/s, smtpgate $(tail -n 1 "$work/gate") msgs/s" >&2
done
direct=$(median <"$work/direct")
gate=$(median <"$work/gate")
hz=$(getconf CLK_TCK)
echo "Machine: $(nproc) cores, load average before the last round: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "smtp-source -s $SESSIONS -m $MESSAGES -l $SIZE (one message per connection); medians of $ROUNDS rounds."
echo
echo "| setup | msgs/s | / direct | CPU s / 1000 msgs |"
echo "| --- | ---: | ---: | ---: |"
echo "| direct (smtp-source -> smtp-sink) | $direct | 1.00 | - |"
awk -v g="$gate" -v d="$direct" -v t="$ticks" -v hz="$hz" -v n="$MESSAGES" -v r="$ROUNDS" 'BEGIN {
    printf "| smtpgate | %s | %.2f | %.3f |\n", g, g / d, t / hz / (n * r) * 1000 }'
