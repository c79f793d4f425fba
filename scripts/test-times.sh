#!/usr/bin/env bash
# Where the suite's time goes, on stable Rust: runs every test binary of the workspace the way
# `cargo test --workspace` does (one binary after the other, from its package's directory,
# libtest's default threads) with libtest's per-test timing (`--report-time`, allowed on a stable
# toolchain by RUSTC_BOOTSTRAP=1 in the test binary's environment only: nothing is rebuilt), then
# prints each binary's wall time and the N slowest tests (default 10). Doc tests are not run.
#
#   scripts/test-times.sh [N]          (builds the tests first: scripts/run-test-binaries.py --list)
#
# The raw output is in target/test-times/. The binaries need what scripts/test.sh prepares
# (scripts/setup.sh, the suite's build of scripts/suite-build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
top="${1:-10}"
source scripts/suite-build.sh
out="${CARGO_TARGET_DIR:-target}/test-times"
rm -rf "$out" && mkdir -p "$out"
scripts/run-test-binaries.py --list -- "${suite_cargo_args[@]}" 2>/dev/null | tr '\t' ' ' >"$out/binaries"
# RUSTC_BOOTSTRAP=1 must reach the test binaries only: a cargo they start (the image tests of a
# host build run the static builds) would see it, rerun thiserror's build script and rebuild ~130 units. So the
# binaries find a `cargo` first on PATH that drops it.
shim="$(cd "$out" && pwd)/shim"
mkdir -p "$shim"
printf '#!/bin/sh\nexec env -u RUSTC_BOOTSTRAP %s "$@"\n' "$(command -v cargo)" >"$shim/cargo"
chmod +x "$shim/cargo"
status=0
while read -r dir name exe; do
  start=$(date +%s.%N)
  if (cd "$dir" && PATH="$shim:$PATH" RUSTC_BOOTSTRAP=1 "$exe" -Z unstable-options --report-time) >"$out/$name.$(basename "$exe").log" 2>&1; then r=ok; else r=FAILED; status=1; fi
  printf '%8.1f s  %-6s %s (%s)\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$r" "$name" "$(basename "$dir")" | tee -a "$out/binaries.times"
done <"$out/binaries"
echo "total: $(awk '{s += $1} END {printf "%.1f s", s}' "$out/binaries.times") in $(wc -l <"$out/binaries") binaries"
echo "slowest tests:"
python3 - "$out" "$top" <<'PY'
import glob, os, re, sys
rows = []
for log in glob.glob(os.path.join(sys.argv[1], "*.log")):
    binary = os.path.basename(log).split(".")[0]
    for line in open(log, errors="replace"):
        m = re.match(r"^test (.*) \.\.\. (ok|FAILED) <([0-9.]+)s>", line)
        if m:
            rows.append((float(m.group(3)), binary, m.group(1), m.group(2)))
for secs, binary, name, result in sorted(rows, reverse=True)[: int(sys.argv[2])]:
    print(f"{secs:8.1f} s  {binary}::{name}" + ("" if result == "ok" else "  FAILED"))
PY
exit "$status"
