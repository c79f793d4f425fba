# Sourced by scripts/test.sh, scripts/test-times.sh, scripts/stress-test.sh and .ci/run: what the
# test suite builds, in one place, so that clippy, cargo doc, the build and the test runs share
# every unit.
#
# The suite is built once, for static musl and with the collector's `kafka-tls`: the tests run
# those binaries, and the image tests (tests/tests/deploy.rs) ship the same ones, which are
# static. A host build for the tests plus a second, static one for the images cost the suite
# twice the CPU (docs/benchmarks.md, "CI and the suite"). Plain `cargo test` on the host still
# works: its image tests then run scripts/build-*-static.sh themselves. Each setting can be
# overridden from the environment.
suite_target=x86_64-unknown-linux-musl
export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"
# The C libraries behind the build scripts (OpenSSL, librdkafka, ring's C) without optimiser or
# debug info: the suite checks behaviour, not their speed (OpenSSL alone: 210 CPU-s instead of
# 326).
export CFLAGS_x86_64_unknown_linux_musl="${CFLAGS_x86_64_unknown_linux_musl:--O0 -g0}"
# Linked by the toolchain's own LLD (as the host target is by default) instead of GNU ld, and
# with line tables only: backtraces keep their files and lines.
sysroot="$(rustc --print sysroot)"
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="${CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS:--C link-arg=-fuse-ld=lld -C link-arg=-B$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
# shellcheck disable=SC2034 # read by the scripts that source this file
suite_cargo_args=(--locked --workspace --target "$suite_target" --features whisk-collector/kafka-tls)
