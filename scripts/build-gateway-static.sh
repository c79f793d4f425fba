#!/usr/bin/env bash
# Static (musl) release build of `whisk-gateway`.
#
# deploy/Dockerfile.gateway runs the very same command in its builder stage (tests/tests/deploy.rs
# checks that the two stay equal), and scripts/build-image.sh gateway runs this script before it
# builds deploy/Dockerfile.gateway.runtime offline.
#
# Needs: `rustup target add x86_64-unknown-linux-musl` and `musl-gcc` (Debian: musl-tools).
# mimalloc (the gateway's allocator: musl's own malloc is slow under the parser's many small
# allocations) and the TLS provider's C parts take their C compiler from
# CC_x86_64_unknown_linux_musl.
#
# Output: target/x86_64-unknown-linux-musl/release/whisk-gateway (statically linked).
set -euo pipefail

cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl

if ! grep -qx "$target" <<<"$(rustup target list --installed 2>/dev/null)"; then
    echo "error: the Rust target $target is not installed; run: rustup target add $target" >&2
    exit 1
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
    echo "error: musl-gcc not found; install it (Debian/Ubuntu: apt-get install musl-tools)" >&2
    exit 1
fi

export CC_x86_64_unknown_linux_musl=musl-gcc
cargo build --release --locked --target x86_64-unknown-linux-musl -p whisk-gateway

bin="target/$target/release/whisk-gateway"
echo "built $bin"
if command -v file >/dev/null 2>&1; then
    file "$bin"
fi
