#!/usr/bin/env bash
# The whole test suite on real services: installs what is missing (scripts/setup.sh), builds the
# binaries the end-to-end tests drive (collector, gateway, example actions) and the tests, then
# runs every test of the workspace (scripts/run-test-binaries.py). Each test starts its own
# tansu / Pushgateway / Prometheus on free loopback ports and stops them afterwards.
#
# Everything is built once, for static musl (scripts/suite-build.sh): the image tests
# (tests/tests/deploy.rs) ship the same static binaries the other tests run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
stamp() { printf '[test] %s (%ss)\n' "$*" "$SECONDS" >&2; }
source scripts/suite-build.sh

# Binaries and tests in one invocation: its features are the test build's (dev-dependencies
# included), so the test runs reuse every unit; `--bins` alone resolved nix, rustix, getrandom
# and regex-syntax with other features and the tests rebuilt 30 units a second time.
cargo build "${suite_cargo_args[@]}" --bins --tests
stamp "binaries and tests built ($suite_target)"

# Every test binary as `cargo test` would run it, but three at a time, longest first: the suite
# mostly waits on its real services, so binaries overlap (docs/benchmarks.md, "CI and the
# suite"). WHISK_TEST_JOBS=1 runs them one after the other.
scripts/run-test-binaries.py "${CARGO_TARGET_DIR:-target}/test-run" \
  --jobs "${WHISK_TEST_JOBS:-3}" -- "${suite_cargo_args[@]}"
stamp "tests passed"
