#!/usr/bin/env bash
# Run a four-node kriminodb cluster in this terminal (behind `make cluster`).
#
#   bash scripts/cluster.sh [path/to/kriminodb]
#
# nodeN listens for clients on 127.0.0.1:(2999+N) and for peers on
# 127.0.0.1:(3999+N); node2..node4 join node1's peer port. Every output line
# is prefixed with the node's name. Ctrl-C (or TERM) stops all four; if one
# node exits by itself, the others are stopped too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-$ROOT/target/release/kriminodb}"
[[ -x "$BIN" ]] || { echo "cluster: $BIN not found; run 'make build' first" >&2; exit 1; }

PIDS=()

# shellcheck disable=SC2317  # called from the traps below
stop_all() {
  trap - INT TERM EXIT
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Give them a moment to shut down cleanly, then make sure.
  for _ in {1..50}; do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'echo "cluster: stopping" >&2; stop_all; exit 130' INT TERM
trap stop_all EXIT

# start_node N [extra flags...]: the node itself is the background job (so its
# pid is the server's), its output goes through a line-buffered sed that
# prefixes the name. sed ignores Ctrl-C so that it still relays what the nodes
# print while they shut down, and ends when they close their output.
start_node() {
  local n=$1
  shift
  "$BIN" --bind 127.0.0.1 --port $((2999 + n)) --peer-port $((3999 + n)) \
    --name "node$n" "$@" > >(trap '' INT && exec sed -u "s/^/[node$n] /") 2>&1 &
  PIDS+=($!)
}

start_node 1
sleep 0.5 # let the seed bind its peer port before the others join
for n in 2 3 4; do start_node "$n" --join 127.0.0.1:4000; done
echo "cluster: node1..node4 on client ports 3000-3003, peer ports 4000-4003; Ctrl-C stops them" >&2

# Return as soon as any node exits (crash, port in use...), then stop the rest.
# `wait -n` is interrupted by Ctrl-C, which runs the trap above.
rc=0
wait -n "${PIDS[@]}" || rc=$?
echo "cluster: a node exited (status $rc); stopping the others" >&2
exit "$rc"
