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
# Then smtpgate and Postfix, each without a scanner and with the same
# rspamd (Postfix through rspamd's milter, smtpgate over HTTP), relaying to
# one sink: the p50 latency each adds and each setup's own CPU per message.
#
# Settings (environment): MESSAGES (2000), ROUNDS (3), SIZES ("2048 102400"),
# PF_MESSAGES (1000, per setup and round in the Postfix comparison).
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
milter_port=$(port)
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
worker "rspamd_proxy" {
  bind_socket = "127.0.0.1:$milter_port";
  milter = yes;
  timeout = 120s;
  upstream "local" { default = yes; hosts = "127.0.0.1:$rspamd_port"; }
}
EOC
r="$work/rspamd"
/usr/bin/rspamd -f -i -u "$(id -un)" -g "$(id -gn)" -c "$r/rspamd.conf" --var CONFDIR=/etc/rspamd \
    --var LOCAL_CONFDIR="$r" --var DBDIR="$r" --var RUNDIR="$r" --var LOGDIR="$r" > "$r/stdout" 2>&1 &
pids+=($!)

echo "== waiting for clamd and rspamd" >&2
wait_port "$clamd_port" clamd "$work/clamd/log"
wait_port "$rspamd_port" rspamd "$r/stdout"
wait_port "$milter_port" "rspamd proxy" "$r/stdout"

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

# --- smtpgate and Postfix, each with and without the same rspamd ---------
# Postfix asks rspamd through rspamd's own milter (the proxy worker with
# `milter = yes`, passing each message to the normal worker, as Debian's
# rspamd ships it); smtpgate asks that same normal worker over HTTP. Both
# relay to one sink.
# Each setup runs in a cpuacct cgroup of its own, so "CPU s / 1000 msgs"
# is every process of that setup (all of Postfix's daemons; smtpgate's one
# process) and never the scanner's; for Postfix it is read after its queue
# has drained, so the delivery to the sink is counted too.
[ -x /usr/sbin/postfix ] || { echo "postfix is missing: run scripts/install-test-deps.sh" >&2; exit 1; }
[ -d /sys/fs/cgroup/cpuacct ] || { echo "no cpuacct cgroup: cannot count Postfix's CPU" >&2; exit 1; }
PF_MESSAGES=${PF_MESSAGES:-1000}
sink_port=$(port)
target/release/examples/loadgen --sink "127.0.0.1:$sink_port" > "$work/sink.log" 2>&1 &
pids+=($!)
wait_port "$sink_port" sink "$work/sink.log"

root=$PWD
cgroups=()
cg_new() { # NAME: a fresh cpuacct cgroup in $CG, removed on exit
    CG="/sys/fs/cgroup/cpuacct/smtpgate-bench-$$-$1"
    mkdir "$CG"
    cgroups+=("$CG")
}
cg_ns() { cat "$1/cpuacct.usage"; }
cleanup_all() {
    postfix -c "$PF/conf" stop >/dev/null 2>&1 || true
    cleanup
    for d in "${cgroups[@]}"; do
        for p in $(cat "$d/tasks" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    done
    sleep 0.5
    for d in "${cgroups[@]}"; do rmdir "$d" 2>/dev/null || true; done
}
PF="$work/postfix"
pf_plain=$(port)
pf_milter=$(port)
trap cleanup_all EXIT
chmod 755 "$work"  # Postfix's daemons run as postfix and must reach their dirs
mkdir -p "$PF/conf" "$PF/queue" "$PF/data"
chown postfix "$PF/data"
cat > "$PF/conf/main.cf" <<EOC
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = $PF/postfix.log
maillog_file_prefixes = $PF
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
alias_maps =
alias_database =
relay_domains = bench.test
relay_transport = smtp:[127.0.0.1]:$sink_port
default_transport = smtp:[127.0.0.1]:$sink_port
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_client_connection_rate_limit = 0
milter_protocol = 6
milter_default_action = tempfail
milter_mail_macros = i {mail_addr} {client_addr} {client_name} {auth_authen}
biff = no
EOC
cat > "$PF/conf/master.cf" <<EOC
127.0.0.1:$pf_plain inet n - n - - smtpd
127.0.0.1:$pf_milter inet n - n - - smtpd -o smtpd_milters=inet:127.0.0.1:$milter_port
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOC
cg_new postfix
cg_pf=$CG
sh -c "echo \$\$ > '$cg_pf/tasks'; exec postfix -c '$PF/conf' start" > "$work/postfix-start.out" 2>&1 ||
    { cat "$work/postfix-start.out" "$PF/postfix.log" >&2; exit 1; }
wait_port "$pf_plain" postfix "$PF/postfix.log"
wait_port "$pf_milter" postfix "$PF/postfix.log"

# Two smtpgate processes: without a scanner, and with the same rspamd.
sg_start() { # NAME PORT EXTRA_YAML
    local dir="$work/sg-$1"
    mkdir -p "$dir"
    printf 'hostname: bench.test\nlisten:\n  - { addr: "127.0.0.1:%s" }\nupstream: { addr: "127.0.0.1:%s" }\n%s' \
        "$2" "$sink_port" "$3" > "$dir/gateway.yaml"
    cg_new "$1"
    (cd "$dir" && exec sh -c "echo \$\$ > '$CG/tasks'; RUST_LOG=warn exec '$root/target/release/smtpgate' --config gateway.yaml" \
        > "$dir/log" 2>&1) &
    pids+=($!)
    wait_port "$2" "smtpgate $1" "$dir/log"
}
sg_plain=$(port)
sg_rspamd=$(port)
sg_start plain "$sg_plain" ""
sg_start rspamd "$sg_rspamd" "scanners: { rspamd: { url: \"http://127.0.0.1:$rspamd_port\" } }"$'\n'

pf_drain() { # waits until Postfix's queue is empty
    for _ in $(seq 1 1200); do
        [ -z "$(find "$PF/queue/incoming" "$PF/queue/active" "$PF/queue/deferred" "$PF/queue/maildrop" -type f 2>/dev/null | head -1)" ] && return 0
        sleep 0.1
    done
    echo "Postfix's queue did not drain:" >&2; tail -20 "$PF/postfix.log" >&2; exit 1
}
setups="direct:$sink_port:- postfix:$pf_plain:$cg_pf postfix+rspamd:$pf_milter:$cg_pf smtpgate:$sg_plain:${cgroups[1]} smtpgate+rspamd:$sg_rspamd:${cgroups[2]}"
echo
echo "### smtpgate and Postfix with the same rspamd ($PF_MESSAGES messages, 10 sessions, medians of $ROUNDS rounds)"
for size in $SIZES; do
    results="$work/pf-$size.jsonl"
    : > "$results"
    for round in $(seq 1 "$ROUNDS"); do
        for s in $setups; do
            IFS=: read -r name p cg <<< "$s"
            before=0 after=0
            [ "$cg" = - ] || before=$(cg_ns "$cg")
            target/release/examples/loadgen --to "127.0.0.1:$p" --sessions 10 --messages "$PF_MESSAGES" \
                --size "$size" --per-connection 1 --json > "$work/one" 2>&1 ||
                { cat "$work/one" >&2; exit 1; }
            case $name in postfix*) pf_drain ;; esac
            [ "$cg" = - ] || after=$(cg_ns "$cg")
            python3 - "$name" "$round" "$before" "$after" "$PF_MESSAGES" "$work/one" >> "$results" <<'EOP'
import json, sys
name, rnd, before, after, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
obj = [json.loads(l) for l in open(sys.argv[6]) if l.startswith("{")][-1]
if obj["replies"]["2xx"] != n:
    sys.exit(f"{name}: {obj['replies']} for {n} messages, first rejection {obj.get('first_rejection')}, first error {obj.get('first_error')}")
print(json.dumps({"setup": name, "round": rnd, "rate": obj["msgs_per_s"], "p50": obj["p50_ms"],
                  "p99": obj["p99_ms"], "cpu": (after - before) / 1e9 * 1000 / n}))
EOP
        done
    done
    python3 - "$size" "$results" <<'EOP'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[2])]
med = lambda setup, k: statistics.median(r[k] for r in rows if r["setup"] == setup)
print(f"\n#### {sys.argv[1]}-byte messages\n")
print("| setup | msgs/s | / direct | p50 ms | p99 ms | p50 added by rspamd | CPU s / 1000 msgs (setup's own processes) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
direct = med("direct", "rate")
print(f"| direct to the sink | {direct:.0f} | 1.00 | {med('direct', 'p50'):.2f} | {med('direct', 'p99'):.2f} | | - |")
for base in ("postfix", "smtpgate"):
    for setup in (base, base + "+rspamd"):
        added = "" if setup == base else f"{med(setup, 'p50') - med(base, 'p50'):+.2f} ms"
        print(f"| {setup} | {med(setup, 'rate'):.0f} | {med(setup, 'rate') / direct:.2f} | {med(setup, 'p50'):.2f} "
              f"| {med(setup, 'p99'):.2f} | {added} | {med(setup, 'cpu'):.2f} |")
EOP
done
