#!/usr/bin/env bash
# What sender authentication costs: smtpgate with `sender_auth:` (SPF,
# DKIM with one 2048-bit RSA signature, ARC and DMARC on every message)
# against smtpgate without it, 2 KB messages, 10 sessions, one message per
# connection. A private unbound on loopback serves the records (SPF for
# 127.0.0.0/8, DMARC p=reject, the DKIM key); the gateway's resolver cache
# holds them after the first message. The key comes from opendkim-genkey,
# the signature from dkimpy's dkimsign (scripts/install-test-deps.sh).
# Prints loadgen's table, the throughput ratio and the CPU seconds per
# 1,000 messages spent on verification (the difference of the two runs).
#
# Settings (environment): MESSAGES (5000) per run, ROUNDS (3), SESSIONS (10).
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-5000}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-10}
UNBOUND=/usr/sbin/unbound
[ -x "$UNBOUND" ] || UNBOUND=unbound

echo "== building (release)" >&2
cargo build --release --quiet --bin smtpgate --example loadgen
LOADGEN=target/release/examples/loadgen

work=$(mktemp -d)
unbound_pid=""
cleanup() {
    if [ -n "$unbound_pid" ]; then kill "$unbound_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The key and the TXT record to publish.
opendkim-genkey --bits=2048 --domain=bench.test --selector=bench --directory="$work"
key_txt=$(sed -n 's/[^"]*"\([^"]*\)"[^"]*/\1/gp' "$work/bench.txt" | tr -d '\n')
# unbound wants character-strings of at most 255 bytes.
split_txt() { echo -n "$1" | fold -w 250 | sed 's/.*/"&"/' | tr '\n' ' '; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/unbound.conf" <<EOF
server:
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$work"
    pidfile: "$work/unbound.pid"
    logfile: "$work/unbound.log"
    use-syslog: no
    interface: 127.0.0.1
    port: $port
    do-ip6: no
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    do-not-query-localhost: yes
    local-zone: "." static
    local-data: 'bench.test. 300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"'
    local-data: '_dmarc.bench.test. 300 IN TXT "v=DMARC1; p=reject"'
    local-data: 'bench._domainkey.bench.test. 300 IN TXT $(split_txt "$key_txt")'
remote-control:
    control-enable: no
EOF
"$UNBOUND" -c "$work/unbound.conf" &
unbound_pid=$!
for _ in $(seq 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
        break
    fi
    sleep 0.1
done

# A 2 KB message as loadgen sends it (From loadgen@bench.test), signed.
python3 - "$work/message.eml" <<'EOF'
import sys
lines = ["Line %03d of the benchmark message, printable text to fill it up." % i for i in range(32)]
body = "\r\n".join(lines) + "\r\n"
head = ("From: Load Generator <loadgen@bench.test>\r\nTo: rcpt0@bench.test\r\n"
        "Date: Wed, 02 Dec 2026 05:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n")
open(sys.argv[1], "w", newline="").write(head + body)
EOF
dkimsign --hcanon relaxed --bcanon relaxed bench bench.test "$work/bench.private" \
    < "$work/message.eml" | sed 's/\r*$/\r/' > "$work/signed.eml"
# sed above ends every line in CRLF, dkimsign's header lines included.

cat > "$work/sender-auth.yaml" <<EOF
sender_auth: {}
dns: { servers: ["127.0.0.1:$port"], cache_size: 10000 }
EOF

# First make sure the messages really verify: a short run with an audit
# trail, whose records must say pass for SPF, DKIM and DMARC.
cat "$work/sender-auth.yaml" > "$work/check.yaml"
echo "audit: { path: \"$work/audit.jsonl\" }" >> "$work/check.yaml"
"$LOADGEN" --compare --sessions 2 --messages 20 --per-connection 1 --rounds 1 \
    --message-file "$work/signed.eml" --variant-yaml "$work/check.yaml" > /dev/null
for fact in '"spf.mailfrom":"pass"' '"dkim":"pass"' '"dmarc":"pass"'; do
    if ! grep -q "$fact" "$work/audit.jsonl"; then
        echo "the benchmark messages do not verify ($fact missing):" >&2
        head -c 2000 "$work/audit.jsonl" >&2
        exit 1
    fi
done
echo "== verification checked: SPF, DKIM and DMARC pass" >&2

echo "== loadgen: $SESSIONS sessions, $MESSAGES x 2 KB signed messages, $ROUNDS rounds" >&2
"$LOADGEN" --compare --sessions "$SESSIONS" --messages "$MESSAGES" --per-connection 1 \
    --rounds "$ROUNDS" --message-file "$work/signed.eml" --source-ips 1 \
    --variant-yaml "$work/sender-auth.yaml" --markdown > "$work/out"
grep -v '^|' "$work/out" >&2 || true

echo
echo "Machine: $(nproc) cores, $(uname -sr), load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| load | setup | msgs/s | / direct | / smtpgate | p99 ms | CPU s / 1000 msgs | peak RSS |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
grep '^|' "$work/out"
# The last two rows are plain smtpgate and smtpgate with sender_auth.
grep '^|' "$work/out" | tail -2 | awk -F'|' '
    { gsub(/ /, "", $4); gsub(/ /, "", $8); rate[NR] = $4; cpu[NR] = $8 }
    END {
        if (rate[1] > 0) printf "\nthroughput with verification: %.2fx of without\n", rate[2] / rate[1]
        printf "CPU seconds per 1,000 messages spent in verification: %.3f\n", cpu[2] - cpu[1]
    }'
