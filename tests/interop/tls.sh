#!/usr/bin/env bash
# Interop check of smtpgate's TLS, AUTH and relay control against
# independent clients: swaks (STARTTLS, implicit TLS, AUTH PLAIN/LOGIN)
# and openssl s_client (-starttls smtp, implicit TLS, protocol versions).
#
# It builds (or takes $SMTPGATE_BIN), makes a throw-away CA and server
# certificate with openssl, starts the real binary on three loopback ports
# (25-style STARTTLS optional, 587-style STARTTLS + AUTH required, 465-style
# implicit TLS) in spool mode, runs the checks, and cleans up its process
# and temp dir whatever happens. Exit status: 0 all passed, 1 a check
# failed, 2 a tool is missing or the gateway did not start.
#
# Needs: swaks (with Net::SSLeay, Debian: swaks libnet-ssleay-perl),
# openssl, and cargo unless $SMTPGATE_BIN is set.
#   bash tests/interop/tls.sh
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
for tool in swaks openssl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "interop: $tool is not installed (Debian: apt-get install -y swaks libnet-ssleay-perl openssl)" >&2
        exit 2
    fi
done

if ! swaks --support 2>&1 | grep -q "TLS supported"; then
    echo "interop: swaks has no TLS support (Debian: apt-get install -y libnet-ssleay-perl)" >&2
    exit 2
fi

WORK=$(mktemp -d -t smtpgate-interop.XXXXXX)
PID=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

BIN=${SMTPGATE_BIN:-}
if [ -z "$BIN" ]; then
    echo "interop: building smtpgate"
    (cd "$ROOT" && cargo build --quiet --bin smtpgate) || exit 2
    BIN="$ROOT/target/debug/smtpgate"
fi

PASSED=0
FAILED=0
ok() { PASSED=$((PASSED + 1)); echo "ok   - $1"; }
bad() {
    FAILED=$((FAILED + 1))
    echo "FAIL - $1"
    if [ -n "${2:-}" ] && [ -f "$2" ]; then sed 's/^/       | /' "$2" | tail -n 25; fi
}

cd "$WORK" || exit 2

# --- Certificates: a CA and a server certificate for localhost/127.0.0.1.
make_cert() { # $1 = file prefix, $2 = common name
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null &&
        openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 2 -out "$1.pem" -extfile <(printf '%s\n' \
                "subjectAltName=DNS:localhost,IP:127.0.0.1" \
                "basicConstraints=critical,CA:FALSE" \
                "keyUsage=critical,digitalSignature" \
                "extendedKeyUsage=serverAuth") 2>/dev/null
}
if ! openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -days 2 -subj "/CN=smtpgate interop CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
    ! make_cert server "first.interop.test"; then
    echo "interop: cannot make certificates with openssl" >&2
    exit 2
fi
cp server.pem cert.pem
cp server.key key.pem

# --- Users: alice, hashed by the binary itself.
HASH=$(printf 'interop-secret\n' | "$BIN" hash-password) || {
    echo "interop: hash-password failed" >&2
    exit 2
}
cat >users.yaml <<EOF
users:
  - name: alice
    password_hash: "$HASH"
    senders: [alice@example.com]
EOF

# --- Ports: random loopback ports that nothing answers on.
free_port() {
    local p
    while :; do
        # Below the ephemeral range (32768+), so no outgoing connection holds it.
        p=$((10000 + RANDOM % 22000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
}
P25=$(free_port)
P587=$(free_port)
P465=$(free_port)

cat >gateway.yaml <<EOF
hostname: localhost
spool_dir: $WORK/spool
tls: { cert: $WORK/cert.pem, key: $WORK/key.pem }
auth: { users_file: $WORK/users.yaml }
relay: { local_domains: [local.test], trusted_networks: [] }
listen:
  - { addr: "127.0.0.1:$P25", starttls: optional }
  - { addr: "127.0.0.1:$P587", starttls: required, auth: required }
  - { addr: "127.0.0.1:$P465", tls: implicit }
log: { level: info }
EOF

if "$BIN" --config gateway.yaml check >check.out 2>&1; then
    ok "smtpgate check accepts the TLS/AUTH configuration"
else
    bad "smtpgate check accepts the TLS/AUTH configuration" check.out
fi

"$BIN" --config gateway.yaml >gateway.log 2>&1 &
PID=$!
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$P465") 2>/dev/null; then break; fi
    if ! kill -0 "$PID" 2>/dev/null; then break; fi
    sleep 0.1
done
if ! kill -0 "$PID" 2>/dev/null; then
    echo "interop: smtpgate did not start" >&2
    cat gateway.log >&2
    exit 2
fi

SWAKS=(swaks --silent 1 --from alice@example.com --tls-verify --tls-ca-path "$WORK/ca.pem")
AUTH=(--auth-user alice --auth-password interop-secret)

# 1. Port 25 style: STARTTLS, unauthenticated, to a local domain.
if "${SWAKS[@]}" --server "127.0.0.1:$P25" --tls --to user@local.test \
    --header "Subject: interop starttls" >s1.out 2>&1; then
    ok "swaks --tls: STARTTLS delivery to a local domain"
else
    bad "swaks --tls: STARTTLS delivery to a local domain" s1.out
fi

# 2. The same without AUTH to a foreign domain: relay denied.
"${SWAKS[@]}" --silent 0 --server "127.0.0.1:$P25" --tls --to user@far.test \
    --quit-after RCPT >s2.out 2>&1
if grep -q "554 5.7.1 <user@far.test>: Relay access denied" s2.out; then
    ok "unauthenticated relay to a foreign domain is denied (554 5.7.1)"
else
    bad "unauthenticated relay to a foreign domain is denied (554 5.7.1)" s2.out
fi

# 3. Port 587 style: STARTTLS + AUTH PLAIN, relaying to a foreign domain.
if "${SWAKS[@]}" --server "127.0.0.1:$P587" --tls --auth PLAIN "${AUTH[@]}" \
    --to friend@far.test --header "Subject: interop submission plain" >s3.out 2>&1; then
    ok "swaks --tls --auth PLAIN on the submission port"
else
    bad "swaks --tls --auth PLAIN on the submission port" s3.out
fi

# 4. The same with AUTH LOGIN.
if "${SWAKS[@]}" --server "127.0.0.1:$P587" --tls --auth LOGIN "${AUTH[@]}" \
    --to friend@far.test --header "Subject: interop submission login" >s4.out 2>&1; then
    ok "swaks --tls --auth LOGIN on the submission port"
else
    bad "swaks --tls --auth LOGIN on the submission port" s4.out
fi

# 5. A wrong password: 535, and a fail2ban-style log line without the password.
"${SWAKS[@]}" --silent 0 --server "127.0.0.1:$P587" --tls --auth PLAIN \
    --auth-user alice --auth-password wrong-guess-xyz --to friend@far.test >s5.out 2>&1
sleep 0.3
if grep -q "535 5.7.8" s5.out &&
    grep -q 'auth failed: client=127.0.0.1 user="alice" mechanism=PLAIN' gateway.log &&
    ! grep -q "wrong-guess-xyz" gateway.log; then
    ok "a wrong password gets 535 5.7.8 and is logged with the client IP only"
else
    bad "a wrong password gets 535 5.7.8 and is logged with the client IP only" s5.out
fi

# 6. MAIL before STARTTLS on the submission port: 530.
swaks --server "127.0.0.1:$P587" --from alice@example.com --to friend@far.test \
    --quit-after MAIL >s6.out 2>&1
if grep -q "530 5.7.0 Must issue a STARTTLS command first" s6.out; then
    ok "MAIL before STARTTLS on a required listener gets 530 5.7.0"
else
    bad "MAIL before STARTTLS on a required listener gets 530 5.7.0" s6.out
fi

# 7. A logged-in user sending as someone else: 553.
"${SWAKS[@]}" --silent 0 --server "127.0.0.1:$P587" --tls --auth PLAIN "${AUTH[@]}" \
    --from bob@example.com --to friend@far.test --quit-after MAIL >s7.out 2>&1
if grep -q "553 5.7.1 <bob@example.com>" s7.out; then
    ok "sender/login mismatch gets 553 5.7.1"
else
    bad "sender/login mismatch gets 553 5.7.1" s7.out
fi

# 8. Port 465 style: implicit TLS with AUTH.
if "${SWAKS[@]}" --server "127.0.0.1:$P465" --tlsc --auth PLAIN "${AUTH[@]}" \
    --to friend@far.test --header "Subject: interop implicit" >s8.out 2>&1; then
    ok "swaks --tlsc (implicit TLS) with AUTH"
else
    bad "swaks --tlsc (implicit TLS) with AUTH" s8.out
fi

# 9. openssl s_client -starttls smtp verifies the chain and name.
s_client() { # extra arguments...
    timeout 20 openssl s_client -CAfile "$WORK/ca.pem" -verify_return_error \
        -verify_hostname localhost "$@" </dev/null 2>&1
}
s_client -starttls smtp -connect "127.0.0.1:$P25" >o1.out
if grep -q "Verify return code: 0 (ok)" o1.out && grep -q "New, TLSv1.3," o1.out; then
    ok "openssl s_client -starttls smtp: verified, TLS 1.3"
else
    bad "openssl s_client -starttls smtp: verified, TLS 1.3" o1.out
fi

# 10. TLS 1.2 is accepted, TLS 1.1 is not.
s_client -starttls smtp -connect "127.0.0.1:$P25" -tls1_2 >o2.out
if grep -q "Verify return code: 0 (ok)" o2.out && grep -q "New, TLSv1.2," o2.out; then
    ok "openssl s_client -tls1_2 is accepted"
else
    bad "openssl s_client -tls1_2 is accepted" o2.out
fi
# 10b. Offered AES-256 first (OpenSSL's own order), the server picks AES-128-GCM.
s_client -starttls smtp -connect "127.0.0.1:$P25" \
    -ciphersuites 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256' >o2b.out
if grep -q "New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256" o2b.out; then
    ok "the server prefers TLS_AES_128_GCM_SHA256 over the client's first choice"
else
    bad "the server prefers TLS_AES_128_GCM_SHA256 over the client's first choice" o2b.out
fi
s_client -starttls smtp -connect "127.0.0.1:$P25" -tls1_2 \
    -cipher 'ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256' >o2c.out
if grep -q "New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" o2c.out; then
    ok "over TLS 1.2 too the server prefers ECDHE-ECDSA-AES128-GCM-SHA256"
else
    bad "over TLS 1.2 too the server prefers ECDHE-ECDSA-AES128-GCM-SHA256" o2c.out
fi
s_client -connect "127.0.0.1:$P465" -tls1_1 >o3.out
if grep -Eq "New, TLSv1(\.[0-3])?, Cipher is [A-Z]" o3.out; then
    bad "openssl s_client -tls1_1 is refused" o3.out
else
    ok "openssl s_client -tls1_1 is refused"
fi

# 11. Implicit TLS with openssl: the greeting and QUIT run under TLS.
{ sleep 1; printf 'QUIT\n'; sleep 1; } |
    timeout 20 openssl s_client -CAfile "$WORK/ca.pem" -verify_return_error \
        -verify_hostname localhost -connect "127.0.0.1:$P465" -crlf -ign_eof >o4.out 2>&1
if grep -q "Verify return code: 0 (ok)" o4.out && grep -q "^220 localhost" o4.out &&
    grep -q "^221 2.0.0" o4.out; then
    ok "openssl s_client on the implicit-TLS port: verified, greeting under TLS"
else
    bad "openssl s_client on the implicit-TLS port: verified, greeting under TLS" o4.out
fi

# 12. SIGHUP reloads the certificate.
make_cert server2 "second.interop.test" && cp server2.pem cert.pem && cp server2.key key.pem
kill -HUP "$PID"
sleep 0.5
s_client -connect "127.0.0.1:$P465" >o5.out
if grep -q "second.interop.test" o5.out && grep -q "Verify return code: 0 (ok)" o5.out; then
    ok "SIGHUP reloads the certificate for new connections"
else
    bad "SIGHUP reloads the certificate for new connections" o5.out
fi

# 13. Exactly the four accepted messages are in the spool.
count=$(find "$WORK/spool" -type f -name '*.eml' 2>/dev/null | wc -l)
if [ "$count" -eq 4 ]; then
    ok "4 messages stored"
else
    bad "4 messages stored (found $count)"
fi

if ! kill -0 "$PID" 2>/dev/null; then
    bad "smtpgate still running at the end" gateway.log
fi

echo "interop: $PASSED passed, $FAILED failed"
if [ "$FAILED" -ne 0 ]; then
    echo "--- gateway log (last lines)"
    tail -n 40 gateway.log
    exit 1
fi
exit 0
