#!/usr/bin/env bash
# make fault: the fault-injection harness by hand, against the release build.
#
#   make fault                                  # random mix, 5 nodes, 20 s
#   make fault FAULT_SCENARIO=split FAULT_NODES=5 FAULT_DURATION=30s FAULT_SEED=42
#   make fault FAULT_SCENARIO=all FAULT_RUNS=3
#
# Scenarios: isolate split one-way bridge loss kill stop skew rolling random
# (or all). Logs of every node of a failed run (and report.txt: violations,
# fault events, the whole history) stay in target/fault-logs/<run>/;
# FAULT_KEEP_LOGS=1 keeps them for good runs too. Needs root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Ctrl-C reaches the test and its nodes (one process group); the test dies
# without unwinding, so remove what it created once it is gone.
trap 'bash scripts/fault_cleanup.sh' EXIT
trap 'exit 130' INT TERM

cargo build --release
export FAULT_BIN="$PWD/target/release/kriminodb"
export FAULT_SCENARIO FAULT_NODES FAULT_DURATION FAULT_SEED FAULT_RUNS FAULT_KEEP_LOGS
cargo test --test faults -- --ignored --exact fault_by_hand --nocapture
