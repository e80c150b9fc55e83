#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine: installs the outside
# tools the tests use (Debian packages: swaks, openssl, Net::SSLeay,
# redis-server, postfix, haproxy), then runs the Rust tests, the interop
# scripts, then the end-to-end scripts (tests/e2e: a private Postfix behind
# smtpgate, HAProxy in front). `cargo test` alone runs the Rust tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v swaks >/dev/null 2>&1 || need_pkgs+=(swaks)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# The Redis rate-limit tests start their own redis-server (no service is used).
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
# swaks needs Net::SSLeay for --tls; Debian lists it only as a Recommends.
perl -MNet::SSLeay -e1 >/dev/null 2>&1 || need_pkgs+=(libnet-ssleay-perl)
[ -x /usr/sbin/postfix ] || need_pkgs+=(postfix)
[ -x /usr/sbin/haproxy ] || need_pkgs+=(haproxy)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "== installing ${need_pkgs[*]}"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    # The tests run their own Postfix: the package must neither configure
    # nor start the system's (no configuration; no service starts while
    # installing, unless a policy-rc.d already decides that).
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        policy=/usr/sbin/policy-rc.d
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
    if [ -n "$policy" ]; then $SUDO rm -f "$policy"; fi
fi

echo "== cargo test"
cargo test

echo "== interop scripts"
passed=0
failed=0
for script in tests/interop/*.sh; do
    echo "-- $script"
    if bash "$script"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "interop: $passed passed, $failed failed"

echo "== end-to-end scripts"
for script in tests/e2e/*.sh; do
    echo "-- $script"
    if bash "$script"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "scripts: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
