#!/usr/bin/env bash
# The reputation checks' cost in one run: S1 (2 KB messages, 10 sessions,
# one message per connection) through smtpgate without reputation checks
# and with four DNSBL zones on every connection and one domain list on
# every message (the From header's domain, and the URIBL scan of the
# decoded body), answers cached, and again with no cache (every lookup
# asks rbldnsd, which answers on loopback in well under 1 ms). Prints
# loadgen's markdown rows; the "/ smtpgate" column is the ratio to
# smtpgate without the checks, the p99 column shows the added latency.
#
# The lists are a private rbldnsd on a loopback high port, listing every
# loadgen source address (127.0.0.0/24) and the sender's domain, with a
# TTL longer than the run, so after the first lookups every answer comes
# from the gateway's resolver cache. rbldnsd is stopped by its PID on exit.
#
# Settings (environment): MESSAGES (20000), ROUNDS (3), SOURCE_IPS (250).
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-20000}
ROUNDS=${ROUNDS:-3}
SOURCE_IPS=${SOURCE_IPS:-250}
RBLDNSD=${RBLDNSD:-/usr/sbin/rbldnsd}
[ -x "$RBLDNSD" ] || { echo "rbldnsd is missing: scripts/install-test-deps.sh installs it" >&2; exit 1; }

echo "== building (release)" >&2
cargo build --release --quiet --bin smtpgate --example loadgen
LOADGEN=target/release/examples/loadgen

work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
zones=()
for i in 1 2 3 4; do
    printf ':127.0.0.%d:Listed\n127.0.0.0/24\n' "$((i + 1))" > "$work/bl$i"
    zones+=("bl$i.bench.test:ip4set:bl$i")
done
printf ':127.0.1.2:Listed domain\nbench.test\n' > "$work/dbl"
zones+=("dbl.bench.test:dnset:dbl")
# rbldnsd reads its zones after dropping root.
chmod 755 "$work"
chmod 644 "$work"/bl? "$work/dbl"
user=()
if [ "$(id -u)" -eq 0 ]; then user=(-u nobody); fi
"$RBLDNSD" -n "${user[@]}" -b "127.0.0.1/$port" -w "$work" -t 3600 -a "${zones[@]}" \
    > "$work/rbldnsd.log" 2>&1 &
pid=$!
sleep 1
kill -0 "$pid" 2>/dev/null || { cat "$work/rbldnsd.log" >&2; exit 1; }

mkdir "$work/rules"
cat > "$work/rules/reputation.yaml" <<'RULES'
rules:
  - { name: dnsbl, stage: rcpt, when: { fact: { name: dnsbl.score, min: 100 } }, action: reject }
  - { name: domains, stage: data, when: { any: [ { fact: { name: rhsbl.from.score, min: 100 } },
      { fact: { name: uribl.score, min: 100 } } ] }, action: reject }
RULES
cat > "$work/reputation.yaml" <<YAML
rules_dir: "$work/rules"
dns: { servers: ["127.0.0.1:$port"], timeout_ms: 1000, attempts: 2, cache_size: 100000 }
reputation:
  dnsbl:
    zones:
      - { name: bl1, zone: bl1.bench.test, weight: 1 }
      - { name: bl2, zone: bl2.bench.test, weight: 1 }
      - { name: bl3, zone: bl3.bench.test, weight: 1 }
      - { name: bl4, zone: bl4.bench.test, weight: 1 }
  rhsbl:
    zones:
      - { name: dbl, zone: dbl.bench.test, weight: 1, domains: [from, urls] }
YAML

# The same with no resolver cache: every lookup goes to rbldnsd, which
# answers from memory on loopback well within 1 ms.
sed -e 's/cache_size: 100000/cache_size: 0/' "$work/reputation.yaml" > "$work/reputation-uncached.yaml"

echo "== loadgen S1 with and without the reputation checks" >&2
"$LOADGEN" --compare --sessions 10 --messages "$MESSAGES" --size 2048 --per-connection 1 \
    --rounds "$ROUNDS" --variant-yaml "$work/reputation.yaml" --variant-yaml "$work/reputation-uncached.yaml" \
    --gateway-bin target/release/smtpgate --source-ips "$SOURCE_IPS" --markdown > "$work/out"
grep -v '^|' "$work/out" >&2 || true
echo
echo "Machine: $(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "S1: 2 KB, 10 sessions, one message per connection; medians of $ROUNDS rounds of $MESSAGES messages."
echo
echo "| load | setup | msgs/s | / direct | / smtpgate | p99 ms | CPU s / 1000 msgs | peak RSS |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
grep '^|' "$work/out"
