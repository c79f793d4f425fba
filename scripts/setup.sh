#!/usr/bin/env bash
# Installs everything whisk-metrics needs on a fresh Debian machine, and nothing that is
# already there: Prometheus, promtool and the Pushgateway (Debian packages), musl for static
# action binaries, the tansu Kafka broker (crates.io, ~20 min to build once per machine) and
# kubernetes-validate (PyPI) for the offline manifest checks. Safe to run again.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }
export PATH="$HOME/.cargo/bin:$PATH"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v prometheus-pushgateway >/dev/null || need_apt+=(prometheus-pushgateway)
command -v musl-gcc >/dev/null || need_apt+=(musl-tools)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
# The offline image build (scripts/build-image.sh, tests/tests/deploy.rs): podman, and a static
# busybox for the image's HEALTHCHECK.
command -v podman >/dev/null || need_apt+=(podman)
[ -x /bin/busybox ] || need_apt+=(busybox-static)
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  log "rustup target add x86_64-unknown-linux-musl"
  rustup target add x86_64-unknown-linux-musl
fi

if ! command -v tansu >/dev/null; then
  log "cargo install tansu 0.6.0 (memory storage broker; takes ~20 min on 2 cores, once per machine)"
  cargo install tansu --version 0.6.0 --locked --features dynostore
fi

if ! command -v kubernetes-validate >/dev/null; then
  log "pip install kubernetes-validate"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
  command -v pyenv >/dev/null && pyenv rehash || true
fi

log "ready: $(prometheus --version 2>&1 | head -n1 | cut -d' ' -f1-3), pushgateway $(prometheus-pushgateway --version 2>&1 | head -n1 | cut -d' ' -f3), $(tansu --version 2>/dev/null || echo tansu), kubectl $(kubectl version --client 2>/dev/null | head -n1 | awk '{print $3}')"
