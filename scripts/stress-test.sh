#!/usr/bin/env bash
# The whole test suite (`cargo test` on the suite's build of scripts/suite-build.sh, the tests
# scripts/test.sh runs, one binary after the other) three times in a row while two CPU burners compete for both cores: a check that no test
# depends on timing (issue 14). Not part of CI. Prints one line per run and exits non-zero if any
# run failed; each run's output is kept in target/stress-test/run-N.log.
#
#   scripts/stress-test.sh            # 3 runs
#   RUNS=5 scripts/stress-test.sh     # more
#   scripts/stress-test.sh -p whisk-emulator   # arguments replace the suite's build (cargo test …)
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
runs="${RUNS:-3}"
# Every test binary runs even after a failure, so one red binary does not hide the others.
source scripts/suite-build.sh
selection=("${suite_cargo_args[@]}")
if [ "$#" -gt 0 ]; then selection=(--locked "$@"); fi
logs=target/stress-test
mkdir -p "$logs"

# The binaries the end-to-end tests drive and the tests, built before the burners start, in one
# invocation as scripts/test.sh does (so cargo test rebuilds nothing under the burners).
cargo build "${selection[@]}" --bins --tests || exit 1

burners=()
stop_burners() {
  for pid in "${burners[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${burners[@]}"; do wait "$pid" 2>/dev/null; done
  burners=()
}
trap stop_burners EXIT INT TERM
for _ in 1 2; do
  sha256sum /dev/zero >/dev/null &
  burners+=("$!")
done
echo "[stress] burners ${burners[*]} on $(nproc) cores; $runs runs of cargo test --no-fail-fast ${selection[*]}"

failed=0
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  if cargo test --no-fail-fast "${selection[@]}" >"$logs/run-$i.log" 2>&1; then
    verdict=PASS
  else
    verdict=FAIL
    failed=$((failed + 1))
  fi
  passed=$(grep -o '[0-9]* passed' "$logs/run-$i.log" | awk '{s+=$1} END {print s+0}')
  bad=$(grep -o '[0-9]* failed' "$logs/run-$i.log" | awk '{s+=$1} END {print s+0}')
  echo "[stress] run $i/$runs: $verdict ($passed passed, $bad failed, $(( $(date +%s) - start ))s) log: $logs/run-$i.log"
  if [ "$verdict" = FAIL ]; then
    grep -m20 -E '^(test .* FAILED|---- .* stdout ----|failures:)' "$logs/run-$i.log" || true
  fi
done
stop_burners
echo "[stress] $((runs - failed))/$runs runs green"
[ "$failed" -eq 0 ]
