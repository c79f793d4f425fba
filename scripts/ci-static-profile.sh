# Sourced by scripts/test.sh and scripts/test-times.sh: the profile of the static musl builds
# behind the image tests (tests/tests/deploy.rs runs scripts/build-image.sh).
#
# The image tests check what the image holds (a static binary, its user, port, health check),
# not how fast that binary runs, so here the static builds use the release profile without the
# optimiser and LTO: several times less CPU for librdkafka's and the workspace's Rust code. The
# shipped images (deploy/Dockerfile*) and scripts/build-*-static.sh run on their own keep the
# full release profile. Exported for the whole suite, so that the image tests' own run of the
# build scripts finds these units built and rebuilds nothing. Set them before calling
# scripts/test.sh to test other settings (e.g. CARGO_PROFILE_RELEASE_OPT_LEVEL=3 as shipped).
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-0}"
export CARGO_PROFILE_RELEASE_LTO="${CARGO_PROFILE_RELEASE_LTO:-false}"
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS="${CARGO_PROFILE_RELEASE_CODEGEN_UNITS:-16}"
