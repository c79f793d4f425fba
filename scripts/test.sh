#!/usr/bin/env bash
# The whole test suite on real services: installs what is missing (scripts/setup.sh), builds the
# binaries the end-to-end tests drive (collector, gateway, example actions), then runs every test
# of the workspace. Each test starts its own tansu / Pushgateway / Prometheus on free loopback
# ports and stops them afterwards.
#
# The two static musl builds behind the image tests (tests/tests/deploy.rs runs
# scripts/build-image.sh, whose static build is then a no-op) start first, at low priority, in
# the background: they use the CPU the debug build leaves idle and overlap the tests' waits on
# their services instead of running alone in the middle of the suite (docs/benchmarks.md, "CI
# and the suite"). cargo's lock on target/x86_64-unknown-linux-musl makes the image tests wait
# for them; their output is in target/static-builds.log.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
stamp() { printf '[test] %s (%ss)\n' "$*" "$SECONDS" >&2; }

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"

# The static builds for the image tests: release profile without the optimiser and LTO.
source scripts/ci-static-profile.sh
# Its own process group (setsid), so that an early exit stops the whole build, not only bash.
setsid bash -c '
  start=$SECONDS
  nice -n 10 scripts/build-collector-static.sh && nice -n 10 scripts/build-gateway-static.sh
  rc=$?
  echo "static builds took $((SECONDS - start)) s (exit $rc)"
  exit $rc' >"$target/static-builds.log" 2>&1 &
static_pid=$!
trap 'kill -- "-$static_pid" 2>/dev/null || true' EXIT
stamp "static musl builds started in the background (pid $static_pid)"

# Binaries and tests in one invocation: its features are the test build's (dev-dependencies
# included), so `cargo test` reuses every unit; `--bins` alone resolved nix, rustix, getrandom and
# regex-syntax with other features and cargo test rebuilt 30 units (tracing-subscriber, every
# workspace library and binary) a second time.
cargo build --locked --workspace --bins --tests
stamp "debug binaries and tests built"
cargo test --locked --workspace
stamp "tests passed"
if ! wait "$static_pid"; then
  cat "$target/static-builds.log" >&2
  echo "the static musl builds failed (above)" >&2
  exit 1
fi
trap - EXIT
stamp "$(tail -n 1 "$target/static-builds.log")"
