#!/usr/bin/env bash
# Static (musl) release build of `whisk-collector`.
#
# deploy/Dockerfile runs the very same command in its builder stage (tests/tests/deploy.rs
# checks that the two stay equal), so a successful run of this script on a developer machine
# or in CI is the offline proof that the image builds.
#
# Needs: `rustup target add x86_64-unknown-linux-musl` and `musl-gcc` (Debian: musl-tools).
# rdkafka-sys (default features, no cmake) builds librdkafka with its own ./configure + make,
# and libz-sys builds zlib; both take their C compiler from CC_x86_64_unknown_linux_musl.
#
# Output: target/x86_64-unknown-linux-musl/release/whisk-collector (statically linked).
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
cargo build --release --locked --target x86_64-unknown-linux-musl -p whisk-collector --features kafka-tls

bin="target/$target/release/whisk-collector"
echo "built $bin"
if command -v file >/dev/null 2>&1; then
    file "$bin"
fi
