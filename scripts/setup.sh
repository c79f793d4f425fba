#!/usr/bin/env bash
# Installs what whisk-metrics needs on a fresh Debian machine, and nothing that is already
# there. Safe to run again.
#
#   scripts/setup.sh            everything the test suite needs (scripts/test.sh, .ci/run)
#   scripts/setup.sh demo       only what scripts/demo.sh needs on its embedded broker:
#                               Prometheus and the Pushgateway (Debian packages), python3
#   scripts/setup.sh demo tansu the demo plus the tansu broker (scripts/demo.sh --broker tansu)
#
# Everything (the default): the demo's packages, promtool, musl for static action and image
# binaries, podman and a static busybox for the offline image builds, the tansu Kafka broker
# with its libsql engine (crates.io: ~15-20 min to build once per machine on 2 cores, rebuilt
# only when an installed one lacks the engine), kubernetes-validate (PyPI) for the offline
# manifest checks, and OpenWhisk's Go actionloop proxy (golang-go, built into .tools/) for the
# conformance tests.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }
export PATH="$HOME/.cargo/bin:$PATH"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

want_tansu=0 want_tests=0
[ $# -gt 0 ] || set -- all
for part in "$@"; do
  case "$part" in
    demo) ;;
    tansu) want_tansu=1 ;;
    all) want_tansu=1 want_tests=1 ;;
    *) echo "setup.sh: unknown part '$part' (demo, tansu or all)" >&2; exit 2 ;;
  esac
done
if [ "$want_tests" = 1 ]; then
  log "test path: everything the suite needs (Debian packages, musl target, tansu, kubernetes-validate, actionloop proxy); building tansu when missing takes ~15-20 min on 2 cores, the rest ~1 min"
fi

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v prometheus-pushgateway >/dev/null || need_apt+=(prometheus-pushgateway)
command -v python3 >/dev/null || need_apt+=(python3)
if [ "$want_tests" = 1 ]; then
  command -v promtool >/dev/null || need_apt+=(prometheus)
  command -v victoria-metrics >/dev/null || need_apt+=(victoria-metrics)
  command -v musl-gcc >/dev/null || need_apt+=(musl-tools)
  command -v pip3 >/dev/null || python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
  command -v go >/dev/null || need_apt+=(golang-go)
  # The offline image build (scripts/build-image.sh, tests/tests/deploy.rs): podman, and a
  # static busybox for the image's HEALTHCHECK.
  command -v podman >/dev/null || need_apt+=(podman)
  [ -x /bin/busybox ] || need_apt+=(busybox-static)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ "$want_tests" = 1 ] && ! grep -qx x86_64-unknown-linux-musl <<<"$(rustup target list --installed 2>/dev/null)"; then
  log "rustup target add x86_64-unknown-linux-musl"
  rustup target add x86_64-unknown-linux-musl
fi

# tansu needs the libsql storage engine (sqlite:// URLs: a broker that keeps its data across a
# restart, for the collector's broker-restart test). Cargo records the features of every
# install in ~/.cargo/.crates2.json: rebuild only when tansu is missing or was built without it.
tansu_has_libsql() {
  command -v tansu >/dev/null || return 1
  python3 - "${CARGO_HOME:-$HOME/.cargo}/.crates2.json" <<'PY'
import json, sys
try:
    installs = json.load(open(sys.argv[1])).get("installs", {})
except (OSError, ValueError):
    sys.exit(1)
ok = any(k.startswith("tansu ") and "libsql" in v.get("features", []) for k, v in installs.items())
sys.exit(0 if ok else 1)
PY
}
if [ "$want_tansu" = 1 ] && ! tansu_has_libsql; then
  log "cargo install tansu 0.6.0 --features dynostore,libsql (memory and SQLite storage; ~15-20 min on 2 cores, once per machine)"
  cargo install tansu --version 0.6.0 --locked --force --features dynostore,libsql
fi

if [ "$want_tests" = 1 ] && ! command -v kubernetes-validate >/dev/null; then
  log "pip install kubernetes-validate"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
  command -v pyenv >/dev/null && pyenv rehash || true
fi

# OpenWhisk's actionloop proxy (tests/tests/conformance.rs), once per machine, into .tools/
# (ignored by git; its code and binary are never committed): from the upstream source next to
# the repository (../shared/third_party/openwhisk-runtime-go, or $OW_RUNTIME_GO_SRC), offline;
# else from the upstream module when the Go module proxy answers; else the conformance tests
# skip, printing the reason written to .tools/actionloop-proxy.unavailable.
root="$(cd "$(dirname "$0")/.." && pwd)"
proxy_bin="$root/.tools/actionloop-proxy"
if [ "$want_tests" = 1 ] && [ ! -x "$proxy_bin" ]; then
  mkdir -p "$root/.tools"
  rm -f "$proxy_bin.unavailable"
  src="${OW_RUNTIME_GO_SRC:-$root/../shared/third_party/openwhisk-runtime-go}"
  export GOPATH="$root/.tools/go" GOCACHE="$root/.tools/go-cache"
  if [ -f "$src/main/proxy.go" ]; then
    log "building the actionloop proxy from $src (offline)"
    work="$(mktemp -d)"
    cp -r "$src/." "$work/"   # the source may be read-only; go build writes next to go.mod
    (cd "$work" && GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local go build -o "$proxy_bin" ./main) \
      || echo "go build of $src failed" >"$proxy_bin.unavailable"
    rm -rf "$work"
  elif timeout 20 env GOTOOLCHAIN=local go list -m github.com/apache/openwhisk-runtime-go@v1.17.1 >/dev/null 2>&1; then
    log "building the actionloop proxy from the upstream module (v1.17.1)"
    GOTOOLCHAIN=local GOBIN="$root/.tools/go-bin" go install github.com/apache/openwhisk-runtime-go/main@v1.17.1 \
      && mv "$root/.tools/go-bin/main" "$proxy_bin" \
      || echo "go install github.com/apache/openwhisk-runtime-go/main@v1.17.1 failed" >"$proxy_bin.unavailable"
  else
    echo "no upstream source at $src and the Go module proxy is unreachable" >"$proxy_bin.unavailable"
  fi
  if [ -x "$proxy_bin" ]; then
    log "actionloop proxy: $("$proxy_bin" -version)"
  else
    log "actionloop proxy not built ($(cat "$proxy_bin.unavailable")); the conformance tests will skip"
  fi
fi

# Each version is read whole before its first line is cut: `cmd | head -n1` can kill cmd with
# SIGPIPE, which pipefail turns into a failed setup.
first_line() { local out; out="$("$@" 2>&1 || true)"; printf '%s' "${out%%$'\n'*}"; }
ready="$(first_line prometheus --version | cut -d' ' -f1-3), pushgateway $(first_line prometheus-pushgateway --version | cut -d' ' -f3)"
[ "$want_tansu" = 1 ] && ready="$ready, $(tansu --version 2>/dev/null || echo tansu)"
[ "$want_tests" = 1 ] && ready="$ready, kubectl $(first_line sh -c 'kubectl version --client 2>/dev/null' | awk '{print $3}')"
log "ready: $ready"
