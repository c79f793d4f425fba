#!/usr/bin/env bash
# Builds a whisk-metrics runtime image offline, from a locally built static binary:
#   scripts/build-image.sh collector [TAG]    (default TAG: whisk-metrics/whisk-collector:<version>)
#   scripts/build-image.sh gateway [TAG]      (default TAG: whisk-metrics/whisk-gateway:<version>)
#
# No registry is needed: deploy/Dockerfile.runtime (collector) and
# deploy/Dockerfile.gateway.runtime (gateway) are `FROM scratch` plus COPY of files this script
# lays out in a temporary build context (the static binary, the host's CA bundle and a static
# busybox for the HEALTHCHECK). The full deploy/Dockerfile (deploy/Dockerfile.gateway) builds
# the same image with its builder stages when a registry is at hand.
#
# Environment:
#   CONTAINER_ENGINE  podman (default when installed) or docker
#   BUSYBOX           static busybox to ship (default /bin/busybox; Debian: busybox-static)
#   CA_BUNDLE         CA roots to ship (default /etc/ssl/certs/ca-certificates.crt)
#   ENGINE_ARGS       global options for the engine, e.g. "--storage-driver vfs" where overlay
#                     mounts are not allowed (podman also reads CONTAINERS_STORAGE_CONF)
#   SKIP_BINARY_BUILD=1  use the binary already in target/ instead of running the static build
#   BINARY=PATH          ship this static binary instead (no build; tests/tests/deploy.rs passes
#                        the one built with a musl test suite, scripts/test.sh)
#
# Prints the image id on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

component="${1:-}"
case "$component" in
  collector)
    binary=whisk-collector
    dockerfile=deploy/Dockerfile.runtime
    build=scripts/build-collector-static.sh
    ;;
  gateway)
    binary=whisk-gateway
    dockerfile=deploy/Dockerfile.gateway.runtime
    build=scripts/build-gateway-static.sh
    ;;
  *)
    echo "usage: $0 collector|gateway [TAG]" >&2
    exit 2
    ;;
esac
version="$(sed -n 's/^version = "\(.*\)"/\1/p;T;q' Cargo.toml)"
tag="${2:-whisk-metrics/$binary:$version}"

engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v podman >/dev/null 2>&1; then engine=podman
  elif command -v docker >/dev/null 2>&1; then engine=docker
  else
    echo "error: neither podman nor docker found (Debian: apt-get install podman)" >&2
    exit 1
  fi
fi
busybox="${BUSYBOX:-/bin/busybox}"
ca="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
for f in "$busybox" "$ca"; do
  if [ ! -f "$f" ]; then
    echo "error: $f not found (Debian: apt-get install busybox-static ca-certificates)" >&2
    exit 1
  fi
done

if [ -n "${BINARY:-}" ]; then
  bin="$BINARY"
else
  if [ "${SKIP_BINARY_BUILD:-}" != 1 ]; then
    "$build" >&2
  fi
  bin="target/x86_64-unknown-linux-musl/release/$binary"
fi
if [ ! -x "$bin" ]; then
  echo "error: $bin is missing; run $build" >&2
  exit 1
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
install -m 0755 "$bin" "$context/$binary"
install -m 0755 "$busybox" "$context/busybox"
install -m 0644 "$ca" "$context/ca-certificates.crt"

read -r -a engine_args <<<"${ENGINE_ARGS:-}"
args=("${engine_args[@]}" build -f "$dockerfile" -t "$tag")
# podman writes OCI images by default, which drop HEALTHCHECK; the Docker format keeps it.
if [ "$(basename "$engine")" = podman ]; then args+=(--format docker --network none); fi
"$engine" "${args[@]}" "$context" >&2
"$engine" "${engine_args[@]}" image inspect --format '{{.Id}}' "$tag"
