#!/usr/bin/env bash
# What the scanners cost, in one run, printed as markdown: 2 KB and 100 KB
# messages (10 sessions, one message per connection) sent
#   - direct to loadgen's sink,
#   - through smtpgate with no scanner,
#   - through smtpgate asking a private rspamd and a private clamd,
# in alternating rounds (medians of ROUNDS). "CPU s / 1000 msgs" is
# smtpgate's own process (the scanners run in their own processes and are
# not counted); the p99 difference between the two smtpgate rows is the
# latency the scans add per message, the scanners' own time included.
#
# rspamd runs on the system's rules with every network module disabled and
# its resolver pointed at a closed loopback port, clamd with a database of
# one signature written here (no freshclam): nothing leaves the machine.
# Both are stopped by PID on exit.
#
# Settings (environment): MESSAGES (2000), ROUNDS (3), SIZES ("2048 102400").
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-2000}
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"2048 102400"}

for bin in /usr/bin/rspamd /usr/sbin/clamd; do
    [ -x "$bin" ] || { echo "$bin is missing: run scripts/install-test-deps.sh" >&2; exit 1; }
done

echo "== building (release)" >&2
cargo build --release --quiet --bin smtpgate --example loadgen

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 1800); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "$2 did not start:" >&2; cat "$3" >&2; exit 1
}

clamd_port=$(port)
mkdir -p "$work/clamd/db"
printf 'Smtpgate-Bench-Signature:0:*:%s\n' "$(printf 'SMTPGATE-BENCH-VIRUS' | od -An -tx1 | tr -d ' \n')" \
    > "$work/clamd/db/bench.ndb"
cat > "$work/clamd/clamd.conf" <<EOC
Foreground yes
DatabaseDirectory $work/clamd/db
TCPSocket $clamd_port
TCPAddr 127.0.0.1
StreamMaxLength 10M
EOC
/usr/sbin/clamd -c "$work/clamd/clamd.conf" > "$work/clamd/log" 2>&1 &
pids+=($!)

rspamd_port=$(port)
dead_dns=$(port)
mkdir -p "$work/rspamd/local.d"
for m in fuzzy_check rbl asn dcc spf dkim dmarc arc mx_check phishing rspamd_update hfilter \
    emails multimap reputation greylist ratelimit neural replies url_redirector history_redis dkim_signing; do
    echo "enabled = false;" > "$work/rspamd/local.d/$m.conf"
done
printf 'use = ["x-spamd-result"];\nskip_local = false;\n' > "$work/rspamd/local.d/milter_headers.conf"
cat > "$work/rspamd/rspamd.conf" <<EOC
.include "\$CONFDIR/common.conf"
options {
  pidfile = "\$RUNDIR/rspamd.pid";
  .include "\$CONFDIR/options.inc"
  dns { nameserver = ["127.0.0.1:$dead_dns"]; timeout = 1s; retransmits = 1; }
  disable_monitoring = true;
}
logging { type = "file"; filename = "\$LOGDIR/rspamd.log"; level = "warning"; }
worker "normal" {
  bind_socket = "127.0.0.1:$rspamd_port";
  .include "\$CONFDIR/worker-normal.inc"
}
EOC
r="$work/rspamd"
/usr/bin/rspamd -f -i -u "$(id -un)" -g "$(id -gn)" -c "$r/rspamd.conf" --var CONFDIR=/etc/rspamd \
    --var LOCAL_CONFDIR="$r" --var DBDIR="$r" --var RUNDIR="$r" --var LOGDIR="$r" > "$r/stdout" 2>&1 &
pids+=($!)

echo "== waiting for clamd and rspamd" >&2
wait_port "$clamd_port" clamd "$work/clamd/log"
wait_port "$rspamd_port" rspamd "$r/stdout"

cat > "$work/scanners.yaml" <<EOC
scanners:
  rspamd: { url: "http://127.0.0.1:$rspamd_port" }
  clamav: { addr: "127.0.0.1:$clamd_port" }
EOC

echo
echo "Machine: $(nproc) cores, $(uname -sr), load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "$MESSAGES messages per size, 10 sessions, one message per connection; medians of $ROUNDS alternating rounds."
for size in $SIZES; do
    target/release/examples/loadgen --compare --sessions 10 --messages "$MESSAGES" --size "$size" \
        --per-connection 1 --rounds "$ROUNDS" --gateway-bin target/release/smtpgate \
        --variant-yaml "$work/scanners.yaml" --markdown > "$work/out"
    grep -v '^|' "$work/out" >&2 || true
    echo
    echo "### $size-byte messages (the variant: rspamd and clamd on)"
    echo
    echo "| load | setup | msgs/s | / direct | / smtpgate | p99 ms | CPU s / 1000 msgs | peak RSS |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    grep '^|' "$work/out"
done
