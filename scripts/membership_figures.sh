#!/usr/bin/env bash
# Membership figures on a real five-node cluster on 127.0.0.1. Run by hand
# (not part of `make test`): it takes minutes and part (b) saturates the CPU.
#
#   cargo build --release
#   bash scripts/membership_figures.sh [kill|falsedown|all]     (default: all)
#
# (a) kill: TRIALS times (default 10), start five nodes (node1 is the seed,
#     the others --join it), wait until every node sees five alive, kill -9
#     one random non-seed node and measure how long until every remaining
#     node reports it down in CLUSTER MEMBERS (polled every ~30 ms). Prints
#     each trial, the median and the maximum. Requirement: under 5 s.
# (b) falsedown: start five nodes, saturate every core with busy loops, and
#     for DURATION seconds (default 300) poll CLUSTER MEMBERS on every node
#     once a second. Prints how many times a member was reported down (must
#     be 0) or suspect, and what the node logs say.
#
# Environment: BIN (default target/release/kriminodb), TRIALS, DURATION,
# BUSY_LOOPS (default: 2 per core), CLIENT_BASE / PEER_BASE (first ports
# tried, default 3300 / 4300; node i uses BASE + i), KEEP_LOGS=1 to keep the
# node logs (their directory is printed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release/kriminodb}"
WHAT="${1:-all}"
TRIALS="${TRIALS:-10}"
DURATION="${DURATION:-300}"
BUSY_LOOPS="${BUSY_LOOPS:-$((2 * $(nproc)))}"
CLIENT_BASE="${CLIENT_BASE:-3300}"
PEER_BASE="${PEER_BASE:-4300}"
NODES=5

[[ -x "$BIN" ]] || { echo "figures: $BIN not found; run 'cargo build --release' first" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "figures: redis-cli not found" >&2; exit 1; }
case "$WHAT" in kill | falsedown | all) ;; *) echo "usage: $0 [kill|falsedown|all]" >&2; exit 2 ;; esac

LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/membership_figures.XXXXXX")"
declare -A PID=() # node number -> pid
BUSY=()

stop_busy() {
  local pid
  for pid in "${BUSY[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${BUSY[@]}"; do wait "$pid" 2>/dev/null || true; done
  BUSY=()
}

stop_nodes() {
  local pid
  for pid in "${PID[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PID[@]}"; do wait "$pid" 2>/dev/null || true; done
  PID=()
}

# shellcheck disable=SC2317  # called from the traps below
cleanup() {
  trap - EXIT INT TERM
  stop_busy
  stop_nodes
  if [[ "${KEEP_LOGS:-0}" == 1 ]]; then
    echo "figures: node logs kept in $LOGDIR" >&2
  else
    rm -rf "$LOGDIR"
  fi
}
trap cleanup EXIT
trap 'echo "figures: interrupted" >&2; exit 130' INT TERM

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# A port is free when nothing listens on it, TCP or UDP (the peer port is
# both: UDP for membership, TCP for replication).
port_free() { ! ss -Htuln "sport = :$1" | grep -q .; }

# Moves CLIENT_BASE / PEER_BASE up until all ten ports are free.
pick_ports() {
  local tries i ok
  for ((tries = 0; tries < 50; tries++)); do
    ok=1
    for ((i = 1; i <= NODES; i++)); do
      port_free $((CLIENT_BASE + i)) && port_free $((PEER_BASE + i)) || ok=0
    done
    ((ok)) && return 0
    CLIENT_BASE=$((CLIENT_BASE + 10))
    PEER_BASE=$((PEER_BASE + 10))
  done
  echo "figures: no free ports found" >&2
  exit 1
}

start_node() {
  local n=$1
  shift
  "$BIN" --bind 127.0.0.1 --port $((CLIENT_BASE + n)) --peer-port $((PEER_BASE + n)) \
    --name "node$n" "$@" >>"$LOGDIR/node$n.log" 2>&1 &
  PID[$n]=$!
}

# "name state" for every member node N knows (RESP2 flattens each member's
# map into key and value lines).
states() {
  redis-cli -p $((CLIENT_BASE + $1)) CLUSTER MEMBERS 2>/dev/null |
    awk 'NR % 2 == 1 { key = $0; next } key == "name" { name = $0 } key == "state" { print name, $0 }'
}

start_cluster() {
  local n deadline
  pick_ports
  start_node 1
  for ((n = 2; n <= NODES; n++)); do start_node "$n" --join "127.0.0.1:$((PEER_BASE + 1))"; done
  deadline=$(($(now_ms) + 30000))
  for ((n = 1; n <= NODES; n++)); do
    until [[ "$(states "$n" | grep -c ' alive$')" -eq $NODES ]]; do
      if (($(now_ms) > deadline)); then
        echo "figures: node$n does not see $NODES alive members after 30 s; logs in $LOGDIR" >&2
        KEEP_LOGS=1
        exit 1
      fi
      sleep 0.05
    done
  done
}

# Prints the median and maximum of the numbers given as arguments.
median_max() {
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { printf "median %d ms, max %d ms\n", v[int((NR + 1) / 2)], v[NR] }'
}

kill_trials() {
  local trial victim t0 t n pending results=()
  echo "== (a) kill -9 of one of $NODES nodes: time until every other node reports it down"
  for ((trial = 1; trial <= TRIALS; trial++)); do
    start_cluster
    # A random moment relative to everyone's probe timers.
    sleep "1.$((RANDOM % 1000))"
    victim=$((2 + RANDOM % (NODES - 1)))
    pending=()
    for ((n = 1; n <= NODES; n++)); do ((n == victim)) || pending+=("$n"); done
    t0=$(now_ms)
    kill -KILL "${PID[$victim]}"
    wait "${PID[$victim]}" 2>/dev/null || true
    unset "PID[$victim]"
    local left
    while ((${#pending[@]} > 0)); do
      left=()
      for n in "${pending[@]}"; do
        states "$n" | grep -x "node$victim down" >/dev/null || left+=("$n")
      done
      pending=("${left[@]}")
      t=$(($(now_ms) - t0))
      if ((t > 30000)); then
        echo "figures: trial $trial: nodes ${pending[*]} still do not report node$victim down after 30 s" >&2
        break
      fi
      ((${#pending[@]} == 0)) || sleep 0.03
    done
    printf 'trial %2d: killed node%d, every other node reports it down after %5d ms\n' "$trial" "$victim" "$t"
    results+=("$t")
    stop_nodes
  done
  echo "kill -9 detection over $TRIALS trials: $(median_max "${results[@]}")"
}

false_down_check() {
  local i n end downs=0 suspects=0 polls=0 line
  echo "== (b) false downs: $NODES nodes, $BUSY_LOOPS busy loops on $(nproc) cores, ${DURATION} s"
  start_cluster
  for ((i = 0; i < BUSY_LOOPS; i++)); do
    sh -c 'while :; do :; done' &
    BUSY+=($!)
  done
  end=$(($(date +%s) + DURATION))
  while (($(date +%s) < end)); do
    for ((n = 1; n <= NODES; n++)); do
      while read -r line; do
        case "$line" in
          *" down") downs=$((downs + 1)); echo "  $(date +%T) node$n reports $line" ;;
          *" suspect") suspects=$((suspects + 1)) ;;
        esac
      done < <(states "$n")
    done
    polls=$((polls + 1))
    sleep 1
  done
  stop_busy
  echo "polls: $polls rounds of CLUSTER MEMBERS on $NODES nodes"
  echo "members reported down: $downs (must be 0); reported suspect: $suspects"
  echo "node logs: $(cat "$LOGDIR"/node*.log | grep -c 'member is now down') 'member is now down'," \
    "$(cat "$LOGDIR"/node*.log | grep -c 'member is now suspect') 'member is now suspect'," \
    "$(cat "$LOGDIR"/node*.log | grep -c 'member restarted') 'member restarted'," \
    "$(cat "$LOGDIR"/node*.log | grep -c 'rejoined with a new incarnation') 'rejoined with a new incarnation'"
  stop_nodes
  ((downs == 0))
}

rc=0
[[ "$WHAT" == falsedown ]] || kill_trials
[[ "$WHAT" == kill ]] || false_down_check || rc=1
exit "$rc"
