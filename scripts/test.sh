#!/usr/bin/env bash
# The whole test suite on real services: installs what is missing (scripts/setup.sh), builds the
# binaries the end-to-end tests drive (collector, example actions), then runs every test of the
# workspace. Each test starts its own tansu / Pushgateway / Prometheus on free loopback ports
# and stops them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --locked --workspace --bins
cargo test --locked --workspace
