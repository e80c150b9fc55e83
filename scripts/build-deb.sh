#!/usr/bin/env bash
# Builds the Debian package with cargo-deb ([package.metadata.deb] in
# Cargo.toml): the binary, the packaged configuration and rules
# (conffiles), the systemd unit, the logrotate file, the man pages and the
# bash, zsh and fish completions. The last two come from the binary itself
# (`smtpgate generate`), written to target/deb-assets/ first; cargo-deb
# then packages without building (--no-build).
#
#   bash scripts/build-deb.sh          release build, for installing
#   bash scripts/build-deb.sh --dev    the debug binary `cargo test` already
#                                      built: the package test uses it, as a
#                                      release build of every dependency
#                                      would take many minutes more
#
# Needs cargo-deb (scripts/install-test-deps.sh installs the pinned
# version). Prints the path of the .deb as its last line.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

profile=release
case "${1:-}" in
    "") ;;
    --dev) profile=dev ;;
    *)
        echo "usage: $0 [--dev]" >&2
        exit 2
        ;;
esac

if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "build-deb: cargo-deb is missing; bash scripts/install-test-deps.sh installs it" >&2
    exit 1
fi

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$profile" = release ]; then
    cargo build --release --locked --bin smtpgate
    bin=$target_dir/release/smtpgate
    fast=()
else
    # Nothing to do when `cargo test` built it already.
    cargo build --locked --bin smtpgate
    bin=$target_dir/debug/smtpgate
    # A test package: quicker compression.
    fast=(--fast)
fi

assets=$ROOT/target/deb-assets
rm -rf "$assets"
"$bin" generate man --out "$assets/man" >/dev/null
for shell in bash zsh fish; do
    "$bin" generate completions "$shell" --out "$assets/completions" >/dev/null
done

# cargo-deb warns that a dev-profile package is not for release: it is not
# meant to be one.
cargo deb --no-build --locked --profile "$profile" "${fast[@]}" --output "$target_dir/debian/" | tail -n 1
