#!/usr/bin/env bash
# End to end with real mail software: a private Postfix instance behind
# smtpgate, and HAProxy in front of it.
#
#   swaks/python ──▶ smtpgate ──XFORWARD──▶ Postfix ──▶ Maildirs
#   swaks ──▶ HAProxy ──PROXY v1/v2──▶ smtpgate (proxy_protocol listener)
#
# Installs what is missing (Debian: postfix, swaks, haproxy, openssl,
# libnet-ssleay-perl, python3) without starting or configuring the system's
# Postfix. Starts its own Postfix (config, queue, data, mailboxes and log
# under a temp dir; smtpd on a loopback port; local delivery to Maildirs;
# XFORWARD and XCLIENT allowed from 127.0.0.1), smtpgate (debug build) in
# front of it with TLS, AUTH, a reject rule and an audit trail, a second
# smtpgate with `forward_client: xclient`, and HAProxy sending PROXY v2 and
# v1 headers. Clients connect from 127.0.0.3 (direct) and 127.0.0.2
# (through HAProxy), so every log can be checked for the real client
# rather than 127.0.0.1. Checks what landed in the Maildirs, the audit
# trail and Postfix's own log. Stops everything by PID and removes the temp
# dir (E2E_KEEP=1 keeps it).
#
# Run alone: bash tests/e2e/postfix.sh   (root, or sudo for apt-get)
# Prints "e2e: N passed, N failed"; exit status 0 only if all passed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STARTED=$SECONDS

# --- Packages ---------------------------------------------------------
bash "$ROOT/scripts/install-test-deps.sh"
PATH=$PATH:/usr/sbin:/sbin

# --- Work dir, processes, cleanup -------------------------------------
WORK=$(mktemp -d -t smtpgate-e2e.XXXXXX)
# Postfix's daemons and the delivery user must reach their parts of it.
chmod 755 "$WORK"
GATE_PID=""
GATE2_PID=""
HAPROXY_PID=""
PF_STARTED=""
stop_pid() { # $1 = pid: TERM, wait up to 5 s, then KILL
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    set +e
    stop_pid "$GATE_PID"
    stop_pid "$GATE2_PID"
    stop_pid "$HAPROXY_PID"
    if [ -n "$PF_STARTED" ]; then
        local master=""
        [ -f "$WORK/postfix/queue/pid/master.pid" ] && master=$(tr -d ' ' <"$WORK/postfix/queue/pid/master.pid")
        postfix -c "$WORK/postfix/conf" stop >/dev/null 2>&1
        # By PID if `postfix stop` did not do it.
        if [ -n "$master" ]; then
            for _ in $(seq 1 50); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
            stop_pid "$master"
        fi
    fi
    if [ "${E2E_KEEP:-0}" = 1 ]; then echo "e2e: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

PASSED=0
FAILED=0
ok() { PASSED=$((PASSED + 1)); echo "ok   - $1"; }
bad() {
    FAILED=$((FAILED + 1))
    echo "FAIL - $1"
    if [ -n "${2:-}" ] && [ -f "$2" ]; then sed 's/^/       | /' "$2" | tail -n 20; fi
}
check() { # $1 = description, rest = command; ok when it succeeds
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}
die() { echo "e2e: $*" >&2; echo "e2e: $PASSED passed, $((FAILED + 1)) failed"; exit 1; }

# $1 distinct loopback ports that nothing answers on.
free_ports() {
    local p picked=" "
    while [ "$(wc -w <<<"$picked")" -lt "$1" ]; do
        # Below the ephemeral range (32768+), so no outgoing connection holds it.
        p=$((10000 + RANDOM % 22000))
        case "$picked" in *" $p "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then picked="$picked$p "; fi
    done
    echo $picked
}
wait_port() { # $1 = port, $2 = pid to watch (optional)
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

read -r PF_PORT G_PLAIN G_SUBMIT G_PROXY G_XCLIENT H_V2 H_V1 <<<"$(free_ports 7)"

# --- smtpgate binary ----------------------------------------------------
BIN=${SMTPGATE_BIN:-}
if [ -z "$BIN" ]; then
    (cd "$ROOT" && cargo build --quiet --bin smtpgate) || die "cargo build failed"
    BIN="$ROOT/target/debug/smtpgate"
fi

# --- Postfix, private ---------------------------------------------------
PF="$WORK/postfix"
mkdir -p "$PF/conf" "$PF/queue" "$PF/data" "$PF/mail"
chown postfix "$PF/data"
chown nobody:nogroup "$PF/mail"
for user in alice bob carol dave erin; do echo "$user@e2e.test $user/"; done >"$PF/conf/mailboxes"
cat >"$PF/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.e2e.test
mydomain = e2e.test
myorigin = \$myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = $PF/postfix.log
maillog_file_prefixes = $PF
# smtpgate connects from 127.0.0.1; the test clients use 127.0.0.2/3.
smtpd_authorized_xforward_hosts = 127.0.0.1/32
smtpd_authorized_xclient_hosts = 127.0.0.1/32
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
alias_maps =
alias_database =
local_transport = error:5.1.1 no local delivery in this test instance
default_transport = error:5.7.1 no mail leaves this test instance
virtual_mailbox_domains = e2e.test
virtual_mailbox_base = $PF/mail
virtual_mailbox_maps = texthash:$PF/conf/mailboxes
virtual_uid_maps = static:$(id -u nobody)
virtual_gid_maps = static:$(getent group nogroup | cut -d: -f3)
virtual_minimum_uid = 1
smtputf8_enable = yes
biff = no
EOF
cat >"$PF/conf/master.cf" <<EOF
127.0.0.1:$PF_PORT inet n - n - - smtpd
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
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
PF_STARTED=1
postfix -c "$PF/conf" start >"$WORK/postfix-start.out" 2>&1 || {
    cat "$WORK/postfix-start.out" "$PF/postfix.log" 2>/dev/null >&2
    die "postfix did not start"
}
wait_port "$PF_PORT" || { cat "$PF/postfix.log" >&2; die "postfix does not listen on $PF_PORT"; }
echo "e2e: Postfix $(postconf -c "$PF/conf" -h mail_version) on 127.0.0.1:$PF_PORT"

# --- Certificate, users, rules, smtpgate -------------------------------
G="$WORK/gate"
mkdir -p "$G/rules"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=gate.e2e.test" -addext "subjectAltName=DNS:gate.e2e.test,DNS:localhost,IP:127.0.0.1" \
    -keyout "$G/key.pem" -out "$G/cert.pem" 2>/dev/null || die "openssl could not make a certificate"
HASH=$(printf 'e2e-secret\n' | "$BIN" hash-password) || die "hash-password failed"
cat >"$G/users.yaml" <<EOF
users:
  - { name: alice, password_hash: "$HASH", senders: [alice@e2e.test] }
EOF
cat >"$G/rules/10-e2e.yaml" <<'EOF'
rules:
  - name: e2e-reject-subject
    stage: data
    when: { header: { name: Subject, regex: 'E2E-REJECT' } }
    action: reject
    reply: { code: 550, enhanced: 5.7.1, text: "Rejected by the e2e rule" }
EOF
gateway_yaml() { # $1 = extra upstream keys, $2 = listen block, $3 = audit file, $4 = more YAML
    cat <<EOF
hostname: gate.e2e.test
listen:
$2
tls: { cert: "$G/cert.pem", key: "$G/key.pem" }
auth: { users_file: "$G/users.yaml" }
upstream: { addr: "127.0.0.1:$PF_PORT"$1 }
relay:
  local_domains: [e2e.test]
  trusted_networks: ["127.0.0.1/32"]
rules_dir: "$G/rules"
audit: { path: "$3" }
spool_dir: "$G/spool"
quarantine_dir: "$G/quarantine"
${4:-}
EOF
}
gateway_yaml "" "  - { addr: \"127.0.0.1:$G_PLAIN\" }
  - { addr: \"127.0.0.1:$G_SUBMIT\", starttls: required, auth: required }
  - { addr: \"127.0.0.1:$G_PROXY\", proxy_protocol: true }" "$G/audit.jsonl" \
    'proxy_protocol: { trusted_proxies: ["127.0.0.1"], timeout_s: 2 }' >"$G/gateway.yaml"
gateway_yaml ", forward_client: xclient" "  - { addr: \"127.0.0.1:$G_XCLIENT\" }" \
    "$G/audit-xclient.jsonl" >"$G/xclient.yaml"

if "$BIN" check --config "$G/gateway.yaml" >"$WORK/check.out" 2>&1 && grep -q "configuration OK" "$WORK/check.out"; then
    ok "smtpgate check accepts the e2e configuration"
else
    bad "smtpgate check accepts the e2e configuration" "$WORK/check.out"
fi
RUST_LOG=info "$BIN" --config "$G/gateway.yaml" >"$G/gate.log" 2>&1 &
GATE_PID=$!
RUST_LOG=info "$BIN" --config "$G/xclient.yaml" >"$G/gate-xclient.log" 2>&1 &
GATE2_PID=$!
for port in $G_PLAIN $G_SUBMIT $G_PROXY; do
    wait_port "$port" "$GATE_PID" || { cat "$G/gate.log" >&2; die "smtpgate does not listen on $port"; }
done
wait_port "$G_XCLIENT" "$GATE2_PID" || { cat "$G/gate-xclient.log" >&2; die "smtpgate (xclient) does not start"; }

# --- HAProxy --------------------------------------------------------------
cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend smtp_v2
    bind 127.0.0.1:$H_V2
    default_backend gate_v2
backend gate_v2
    server gate 127.0.0.1:$G_PROXY send-proxy-v2
frontend smtp_v1
    bind 127.0.0.1:$H_V1
    default_backend gate_v1
backend gate_v1
    server gate 127.0.0.1:$G_PROXY send-proxy
EOF
haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejects its configuration"
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
wait_port "$H_V2" "$HAPROXY_PID" && wait_port "$H_V1" "$HAPROXY_PID" || {
    cat "$WORK/haproxy.log" >&2
    die "haproxy does not start"
}
echo "e2e: $(haproxy -v | head -1 | cut -d' ' -f1-3) on 127.0.0.1:$H_V2 (v2) and :$H_V1 (v1)"

# --- Sending ----------------------------------------------------------------
NONCE=$RANDOM$RANDOM
# swaks from a given loopback address; $1 = output name, rest = swaks args.
send() {
    local name=$1
    shift
    swaks "$@" \
        >"$WORK/$name.out" 2>&1 || true
}
# The queue id Postfix gave, as relayed to the client in the final reply.
# (swaks marks replies "<-", or "<~" under TLS; failures "<**" or "<~*".)
# (Postfix's reply to BDAT LAST counts the bytes: "Ok: 568 bytes queued as".)
queue_id() { sed -n 's/^<[-~] *250 2\.0\.0 Ok: \([0-9]* bytes \)\{0,1\}queued as \([0-9A-F]*\).*/\2/p' "$WORK/$1.out" | tail -1; }
# A field of the audit record whose subject contains $2; $1 = audit file.
audit_of() { # $1 file, $2 subject part, $3 python expression on r
    python3 - "$1" "$2" "$3" <<'PY'
import json, sys
path, subject, expr = sys.argv[1:]
for line in open(path):
    r = json.loads(line)
    if r.get("type") == "transaction" and subject in (r.get("subject") or ""):
        print(eval(expr, {}, {"r": r}))
        break
PY
}

send plain --server "127.0.0.1:$G_PLAIN" --local-interface 127.0.0.3 \
    --from sender@outside.test --to alice@e2e.test --header "Subject: e2e plain $NONCE"
send starttls --server "127.0.0.1:$G_PLAIN" --local-interface 127.0.0.3 --tls \
    --from sender@outside.test --to bob@e2e.test --header "Subject: e2e starttls $NONCE"
send auth --server "127.0.0.1:$G_SUBMIT" --local-interface 127.0.0.3 --tls \
    --auth PLAIN --auth-user alice --auth-password e2e-secret \
    --from alice@e2e.test --to carol@e2e.test --header "Subject: e2e auth $NONCE"
send noauth --server "127.0.0.1:$G_SUBMIT" --local-interface 127.0.0.3 --tls \
    --from alice@e2e.test --to carol@e2e.test --header "Subject: e2e noauth $NONCE"
send pipelined --server "127.0.0.1:$G_PLAIN" --local-interface 127.0.0.3 --pipeline \
    --from sender@outside.test --to bob@e2e.test,carol@e2e.test,dave@e2e.test \
    --header "Subject: e2e pipelined $NONCE"
send rejected --server "127.0.0.1:$G_PLAIN" --local-interface 127.0.0.3 \
    --from sender@outside.test --to erin@e2e.test --header "Subject: E2E-REJECT $NONCE"
send haproxy_v2 --server "127.0.0.1:$H_V2" --local-interface 127.0.0.2 \
    --from sender@outside.test --to erin@e2e.test --header "Subject: e2e haproxy v2 $NONCE"
send haproxy_v1 --server "127.0.0.1:$H_V1" --local-interface 127.0.0.2 \
    --from sender@outside.test --to erin@e2e.test --header "Subject: e2e haproxy v1 $NONCE"
send haproxy_relay --server "127.0.0.1:$H_V2" --local-interface 127.0.0.2 \
    --from sender@outside.test --to someone@elsewhere.test --header "Subject: e2e relay $NONCE"
send xclient --server "127.0.0.1:$G_XCLIENT" --local-interface 127.0.0.3 --ehlo client.e2e.test \
    --from sender@outside.test --to alice@e2e.test --header "Subject: e2e xclient $NONCE"
# 8BITMIME: swaks cannot send BODY=8BITMIME, Python's smtplib can.
EIGHTBIT="Grüße aus Köln – ünïcødé ✓ $NONCE"
python3 - "$G_PLAIN" "$EIGHTBIT" "$NONCE" >"$WORK/eightbit.out" 2>&1 <<'PY' || true
import smtplib, sys
port, text, nonce = int(sys.argv[1]), sys.argv[2], sys.argv[3]
msg = (f"From: sender@outside.test\r\nTo: dave@e2e.test\r\nSubject: e2e 8bit {nonce}\r\n"
       f"Message-ID: <eightbit.{nonce}@e2e.test>\r\nMIME-Version: 1.0\r\n"
       f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n")
with smtplib.SMTP("127.0.0.1", port, source_address=("127.0.0.3", 0), timeout=20) as s:
    s.ehlo("eightbit.e2e.test")
    assert s.has_extn("8bitmime"), "no 8BITMIME offered"
    print(s.mail("sender@outside.test", ["BODY=8BITMIME"]))
    print(s.rcpt("dave@e2e.test"))
    code, text = s.data(msg.encode("utf-8"))
    # In swaks' format, for queue_id.
    print(f"<-  {code} {text.decode()}")
PY
# SMTPUTF8: Python's smtplib with a UTF-8 sender, relayed to Postfix
# (smtputf8_enable = yes); smtpgate offers it as Postfix did.
python3 - "$G_PLAIN" "$NONCE" >"$WORK/smtputf8.out" 2>&1 <<'PY' || true
import smtplib, sys
port, nonce = int(sys.argv[1]), sys.argv[2]
msg = (f"From: jöran@bücher.example\r\nTo: carol@e2e.test\r\nSubject: e2e smtputf8 {nonce}\r\n"
       f"Message-ID: <utf8.{nonce}@e2e.test>\r\n\r\nGrüße\r\n")
with smtplib.SMTP("127.0.0.1", port, source_address=("127.0.0.3", 0), timeout=20) as s:
    s.ehlo("utf8.e2e.test")
    assert s.has_extn("smtputf8"), "no SMTPUTF8 offered"
    print(s.mail("jöran@bücher.example", ["SMTPUTF8", "BODY=8BITMIME"]))
    print(s.rcpt("carol@e2e.test"))
    code, text = s.data(msg.encode("utf-8"))
    # In swaks' format, for queue_id.
    print(f"<-  {code} {text.decode()}")
PY
# CHUNKING: no client at hand sends BDAT, so a raw pipelined dialogue. The
# chunks hold a DATA end and a forged transaction: Postfix must get one
# message, with them as content.
python3 - "$G_PLAIN" "$NONCE" >"$WORK/bdat.out" 2>&1 <<'PY' || true
import socket, sys
port, nonce = int(sys.argv[1]), sys.argv[2]
msg = (f"From: sender@outside.test\r\nTo: alice@e2e.test\r\nSubject: e2e bdat {nonce}\r\n"
       f"Message-ID: <bdat.{nonce}@e2e.test>\r\n\r\nfirst line\r\n.\r\n"
       f"MAIL FROM:<evil@outside.test>\r\nRCPT TO:<bob@e2e.test>\r\nDATA\r\n"
       f"Subject: e2e smuggled {nonce}\r\n\r\n.\r\n").encode()
cut = msg.index(b"\r\n.\r\n") + 1  # between the CR and the LF
s = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=("127.0.0.3", 0))
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        line = f.readline().decode()
        lines.append(line.rstrip())
        if line[3:4] != "-":
            return lines
print(reply())
s.sendall(b"EHLO bdat.e2e.test\r\n")
ehlo = reply()
assert "250-CHUNKING" in ehlo or "250 CHUNKING" in ehlo, ehlo
s.sendall(b"MAIL FROM:<sender@outside.test>\r\nRCPT TO:<alice@e2e.test>\r\n"
          + b"BDAT %d\r\n" % cut + msg[:cut]
          + b"BDAT %d LAST\r\n" % (len(msg) - cut) + msg[cut:])
for _ in range(3):
    print(reply())
# In swaks' format, for queue_id.
print("<-  " + reply()[-1])
s.sendall(b"QUIT\r\n")
print(reply())
PY
# A client that skips HAProxy gets no greeting on the PROXY listener.
BYPASS=$(timeout 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$G_PROXY; printf 'EHLO sneaky\r\n' >&3; cat <&3" 2>/dev/null || true)

# --- What the clients were told ----------------------------------------------
for name in plain starttls auth pipelined eightbit smtputf8 bdat haproxy_v2 haproxy_v1 xclient; do
    if [ -n "$(queue_id "$name")" ]; then
        ok "$name: accepted with Postfix's own 250 (queue id $(queue_id "$name"))"
    else
        bad "$name: accepted with Postfix's own 250" "$WORK/$name.out"
    fi
done
# Postfix offers CHUNKING, so smtpgate relays by BDAT whatever the client used.
check "plain: smtpgate relayed the DATA message to Postfix by BDAT" grep -q -E "^<- *250 2\.0\.0 Ok: [0-9]+ bytes queued as" "$WORK/plain.out"
check "starttls: swaks negotiated TLS" grep -q "TLS started" "$WORK/starttls.out"
# Pipelined: swaks wrote MAIL, the RCPTs and DATA before reading a reply.
check "pipelined: swaks sent MAIL, 3 RCPTs and DATA in one batch" \
    awk '/^ *-> MAIL FROM/ { batch = 1 } batch && /^ *->/ { n++ } batch && /^<-/ { exit !(n >= 5) }' "$WORK/pipelined.out"
if grep -q "^<[~*]\* *530 5.7.0" "$WORK/noauth.out"; then ok "submission port: MAIL without AUTH gets 530 5.7.0"; else bad "submission port: MAIL without AUTH gets 530 5.7.0" "$WORK/noauth.out"; fi
if grep -q "^<\*\* *550 5.7.1 Rejected by the e2e rule" "$WORK/rejected.out"; then ok "rule: the E2E-REJECT subject gets 550 5.7.1"; else bad "rule: the E2E-REJECT subject gets 550 5.7.1" "$WORK/rejected.out"; fi
if grep -q "^<\*\* *554 5.7.1 <someone@elsewhere.test>: Relay access denied" "$WORK/haproxy_relay.out"; then
    ok "relay control judges the real client 127.0.0.2 behind HAProxy, not HAProxy's 127.0.0.1 (554)"
else
    bad "relay control judges the real client behind HAProxy" "$WORK/haproxy_relay.out"
fi
if [ -z "$BYPASS" ]; then ok "a client bypassing HAProxy gets no greeting"; else bad "a client bypassing HAProxy gets no greeting (got: $BYPASS)"; fi

# --- What landed in the Maildirs ---------------------------------------------
MAIL="$PF/mail"
expected_files=12 # pipelined: one per recipient
for _ in $(seq 1 150); do
    [ "$(find "$MAIL" -path '*/new/*' -type f | wc -l)" -ge "$expected_files" ] && break
    sleep 0.1
done
sleep 0.3 # anything unexpected would show up now
count=$(find "$MAIL" -path '*/new/*' -type f | wc -l)
if [ "$count" -eq "$expected_files" ]; then ok "Postfix delivered exactly $expected_files messages"; else bad "Postfix delivered exactly $expected_files messages (found $count)"; fi
# The file of mailbox $1 whose Subject is $2.
mailfile() { grep -l -F "Subject: $2" "$MAIL/$1"/new/* 2>/dev/null | head -1; }
for spec in "alice:e2e plain" "bob:e2e starttls" "carol:e2e auth" "bob:e2e pipelined" "carol:e2e pipelined" \
    "dave:e2e pipelined" "dave:e2e 8bit" "carol:e2e smtputf8" "alice:e2e bdat" "erin:e2e haproxy v2" "erin:e2e haproxy v1" "alice:e2e xclient"; do
    box=${spec%%:*}
    subject="${spec#*:} $NONCE"
    if [ -n "$(mailfile "$box" "$subject")" ]; then ok "$box got \"${spec#*:}\""; else bad "$box got \"${spec#*:}\""; fi
done
f=$(mailfile carol "e2e smtputf8 $NONCE")
check "smtputf8: Postfix got the UTF-8 envelope sender as written" grep -q -F "Return-Path: <jöran@bücher.example>" "$f"
f=$(mailfile alice "e2e bdat $NONCE")
check "bdat: the forged transaction inside the chunks arrived as content of the one message" \
    grep -q -F "MAIL FROM:<evil@outside.test>" "$f"
if grep -r -q -F "E2E-REJECT $NONCE" "$MAIL"; then bad "the rejected message reached no mailbox"; else ok "the rejected message reached no mailbox"; fi
f=$(mailfile alice "e2e plain $NONCE")
check "plain: smtpgate's Received header names the client 127.0.0.3" grep -q -E "^Received: from [^ ]+ \(\[127\.0\.0\.3\]\)" "$f"
check "plain: smtpgate's Received header says ESMTP" grep -q -E "by gate\.e2e\.test \(smtpgate\) with ESMTP id" "$f"
f=$(mailfile bob "e2e starttls $NONCE")
check "starttls: Received says ESMTPS" grep -q "(smtpgate) with ESMTPS id" "$f"
f=$(mailfile carol "e2e auth $NONCE")
check "auth: Received says ESMTPSA" grep -q "(smtpgate) with ESMTPSA id" "$f"
f=$(mailfile dave "e2e 8bit $NONCE")
check "8bitmime: the UTF-8 body arrived byte for byte" grep -q -F "$EIGHTBIT" "$f"
f=$(mailfile erin "e2e haproxy v2 $NONCE")
check "haproxy v2: smtpgate's Received header names 127.0.0.2" grep -q -E "^Received: from [^ ]+ \(\[127\.0\.0\.2\]\)" "$f"
f=$(mailfile alice "e2e xclient $NONCE")
check "xclient: Postfix's own Received header names the client 127.0.0.3 and its HELO" \
    grep -q -E "^Received: from client\.e2e\.test \(unknown \[127\.0\.0\.3\]\)" "$f"

# --- The audit trail -----------------------------------------------------------
A="$G/audit.jsonl"
for _ in $(seq 1 50); do [ "$(grep -c '"transaction"' "$A" 2>/dev/null || true)" -ge 8 ] && break; sleep 0.1; done
[ "$(audit_of "$A" "e2e plain $NONCE" 'r["client"]["ip"]')" = 127.0.0.3 ] && ok "audit: plain client is 127.0.0.3" || bad "audit: plain client is 127.0.0.3"
[ "$(audit_of "$A" "e2e auth $NONCE" 'r["auth_user"]')" = alice ] && ok "audit: auth user is alice" || bad "audit: auth user is alice"
[ "$(audit_of "$A" "e2e pipelined $NONCE" 'len(r["rcpts"])')" = 3 ] && ok "audit: pipelined message had 3 recipients" || bad "audit: pipelined message had 3 recipients"
[ "$(audit_of "$A" "e2e 8bit $NONCE" '"BODY=8BITMIME" in r["mail_params"]')" = True ] && ok "audit: BODY=8BITMIME recorded" || bad "audit: BODY=8BITMIME recorded"
[ "$(audit_of "$A" "E2E-REJECT $NONCE" 'r["verdict"] + " " + r["decided_by"]')" = "rejected e2e-reject-subject" ] \
    && ok "audit: the rule rejected E2E-REJECT" || bad "audit: the rule rejected E2E-REJECT"
for v in v2 v1; do
    [ "$(audit_of "$A" "e2e haproxy $v $NONCE" 'r["client"]["ip"]')" = 127.0.0.2 ] \
        && ok "audit: through HAProxy ($v) the client is 127.0.0.2" || bad "audit: through HAProxy ($v) the client is 127.0.0.2"
done

# --- Postfix's own log -----------------------------------------------------------
L="$PF/postfix.log"
# XFORWARD: Postfix logs the real client as orig_client and our
# transaction id as orig_queue_id on the line of its queue id.
xforwarded() { # $1 = output name, $2 = subject, $3 = client ip
    local qid tx
    qid=$(queue_id "$1")
    tx=$(audit_of "$A" "$2 $NONCE" 'r["transaction"]')
    [ -n "$qid" ] && [ -n "$tx" ] &&
        grep -q -F "$qid: client=unknown[127.0.0.1], orig_queue_id=$tx, orig_client=unknown[$3]" "$L"
}
for spec in "plain:e2e plain:127.0.0.3" "starttls:e2e starttls:127.0.0.3" "auth:e2e auth:127.0.0.3" \
    "pipelined:e2e pipelined:127.0.0.3" "eightbit:e2e 8bit:127.0.0.3" "haproxy_v2:e2e haproxy v2:127.0.0.2" "haproxy_v1:e2e haproxy v1:127.0.0.2"; do
    IFS=: read -r name subject ip <<<"$spec"
    if xforwarded "$name" "$subject" "$ip"; then
        ok "Postfix log: $name came from orig_client=[$ip] with smtpgate's transaction id (XFORWARD)"
    else
        bad "Postfix log: $name came from orig_client=[$ip] with smtpgate's transaction id (XFORWARD)" "$L"
    fi
done
qid=$(queue_id xclient)
if [ -n "$qid" ] && grep -q -F "$qid: client=unknown[127.0.0.3]" "$L"; then
    ok "Postfix log: with XCLIENT, Postfix's session itself is the client 127.0.0.3"
else
    bad "Postfix log: with XCLIENT, Postfix's session itself is the client 127.0.0.3" "$L"
fi
if grep -q "orig_client=unknown\[127.0.0.1\]" "$L"; then bad "Postfix log: no message logged as from smtpgate's own address"; else ok "Postfix log: no message logged as from smtpgate's own address"; fi

echo "e2e: took $((SECONDS - STARTED))s"
echo "e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
