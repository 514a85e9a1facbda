#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a while each, one process each.
#
#   make fuzz                          # 300 s per target
#   FUZZ_SECONDS=3600 FUZZ_TARGET=peer_frames make fuzz
#   make fuzz-smoke                    # 30 s per target (CI)
#   FUZZ_ARGS=-use_value_profile=1 make fuzz   # extra libFuzzer flags
#
# Usage: scripts/fuzz.sh SECONDS [TARGET...]   (no TARGET: all of them)
#
# Builds with the pinned stable toolchain: `-s none` needs no nightly (the
# crate forbids unsafe code, so a sanitizer would add little), and `-a`
# turns on debug assertions and overflow checks. Each run starts from the
# committed seeds (fuzz/seeds/T) and the regression inputs
# (fuzz/regressions/T) and grows fuzz/corpus/T (not committed). A crash
# leaves its input in fuzz/artifacts/T and fails the script; add it to
# fuzz/regressions/T with a unit test once fixed. One line per target
# reports executions, coverage and the outcome.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
seconds=${1:?usage: fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
((${#targets[@]})) || targets=(resp commands peer_frames membership)

if ! cargo fuzz --help >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing; install it with: cargo install cargo-fuzz --locked" >&2
  exit 1
fi

flags=(--sanitizer none --debug-assertions)
mkdir -p artifacts
build=(cargo fuzz build "${flags[@]}")
((${#targets[@]} == 1)) && build+=("${targets[0]}")
if ! "${build[@]}" >artifacts/build.log 2>&1; then
  tail -n 40 artifacts/build.log >&2
  echo "fuzz: the targets do not build" >&2
  exit 1
fi
failed=0
total_runs=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  dirs=("corpus/$t" "seeds/$t")
  [[ -d "regressions/$t" ]] && dirs+=("regressions/$t")
  log="artifacts/$t/last-run.log"
  rc=0
  # -timeout: an input that takes 10 s is a hang; rss limit: 2 GB.
  # FUZZ_ARGS is split into words on purpose.
  # shellcheck disable=SC2086
  cargo fuzz run "${flags[@]}" "$t" "${dirs[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
  runs=$(awk '/^stat::number_of_executed_units/ { print $2 }' "$log" | tail -n 1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -n 1 || true)
  total_runs=$((total_runs + ${runs:-0}))
  if ((rc == 0)); then
    echo "fuzz: $t: ${runs:-?} runs in ${seconds} s, ${cov:-no coverage line}, no crash"
  else
    failed=1
    echo "fuzz: $t: FAILED after ${runs:-?} runs (exit $rc); log: fuzz/$log" >&2
    grep -E -A12 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | head -n 40 >&2 || tail -n 40 "$log" >&2
  fi
done
echo "fuzz: ${#targets[@]} targets, $total_runs runs, $((seconds * ${#targets[@]})) s"
exit "$failed"
