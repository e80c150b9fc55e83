#!/usr/bin/env bash
# Installs what the tests use, when missing: cargo-deb (compiled, pinned)
# and the Debian packages: swaks (with Net::SSLeay for --tls), openssl,
# python3, redis-server (the Redis tests start their own), postfix and
# haproxy (the end-to-end test runs private instances), unbound (the DNS
# tests start their own, serving only local data), and what the package
# test uses. Postfix's package must neither configure nor start the
# system's mail server, nor unbound's a system resolver: no configuration
# is preseeded, and no service starts while installing (unless a
# policy-rc.d already decides that).
set -euo pipefail

need=()
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# swaks needs Net::SSLeay for --tls; Debian lists it only as a Recommends.
perl -MNet::SSLeay -e1 >/dev/null 2>&1 || need+=(libnet-ssleay-perl)
command -v postfix >/dev/null 2>&1 || [ -x /usr/sbin/postfix ] || need+=(postfix)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v unbound >/dev/null 2>&1 || [ -x /usr/sbin/unbound ] || need+=(unbound)
# The DKIM signing tests verify smtpgate's signatures with dkimpy and
# opendkim-testmsg, and sign with opendkim-genkey's keys.
/usr/bin/python3 -c 'import dkim' >/dev/null 2>&1 || need+=(python3-dkim)
command -v opendkim-testmsg >/dev/null 2>&1 || need+=(opendkim-tools)
# opendkim-testmsg runs in a network namespace of its own (unshare, ip).
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
# rbldnsd serves the DNS lists of the reputation tests (they start their own).
command -v rbldnsd >/dev/null 2>&1 || [ -x /usr/sbin/rbldnsd ] || need+=(rbldnsd)
# Sender authentication tests: keys from opendkim-genkey, signatures by
# dkimpy's dkimsign, SPF cross-checked with pyspf (over dnspython).
[ -x /usr/sbin/opendkim-genkey ] || need+=(opendkim-tools)
command -v dkimsign >/dev/null 2>&1 || need+=(python3-dkim)
/usr/bin/python3 -c 'import spf, dns.resolver' >/dev/null 2>&1 || need+=(python3-spf python3-dnspython)
# rspamd and clamd scan messages in the scanner tests (they start their own,
# with a config and a signature database of their own; no freshclam).
command -v rspamd >/dev/null 2>&1 || [ -x /usr/bin/rspamd ] || need+=(rspamd)
command -v clamd >/dev/null 2>&1 || [ -x /usr/sbin/clamd ] || need+=(clamav-daemon)
# The milter tests run OpenDKIM as a signing milter and pymilter's
# example milters (they start their own; opendkim's service must not).
command -v opendkim >/dev/null 2>&1 || [ -x /usr/sbin/opendkim ] || need+=(opendkim)
/usr/bin/python3 -c 'import Milter' >/dev/null 2>&1 || need+=(python3-milter)
# The AUTH backend tests start a private Dovecot (its auth service only)
# and a private slapd (its data loaded with slapadd). slapd's postinst
# would ask debconf questions and build a system directory: told not to.
[ -x /usr/sbin/dovecot ] || need+=(dovecot-core)
[ -x /usr/sbin/slapd ] || need+=(slapd)
# The package test (tests/e2e/package.sh): logrotate with the packaged
# file, systemd-analyze verify on the unit (no systemd need run), man to
# render the page, adduser for postinst, binutils for cargo-deb's strip.
command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ] || need+=(logrotate)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v man >/dev/null 2>&1 || need+=(man-db)
[ -x /usr/sbin/adduser ] || need+=(adduser)
command -v strip >/dev/null 2>&1 || need+=(binutils)

# cargo-deb builds the Debian package (scripts/build-deb.sh). Pinned, and
# compiled from crates.io only when missing (a few minutes, once per
# machine).
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    echo "== installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

[ ${#need[@]} -gt 0 ] || exit 0

echo "== installing ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections
policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    policy=/usr/sbin/policy-rc.d
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
if [ -n "$policy" ]; then $SUDO rm -f "$policy"; fi
# A package that installed but left no binary would only show up as
# skipped DNS tests; say so here instead.
[ -x /usr/sbin/unbound ] || { echo "unbound is not at /usr/sbin/unbound" >&2; exit 1; }
[ -x /usr/sbin/rbldnsd ] || { echo "rbldnsd is not at /usr/sbin/rbldnsd" >&2; exit 1; }
[ -x /usr/sbin/clamd ] || { echo "clamd is not at /usr/sbin/clamd" >&2; exit 1; }
[ -x /usr/bin/rspamd ] || { echo "rspamd is not at /usr/bin/rspamd" >&2; exit 1; }
