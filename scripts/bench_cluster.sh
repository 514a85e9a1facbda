#!/usr/bin/env bash
# Cluster figures of kriminodb on this machine, against redis-server where
# there is a Redis equivalent (behind `make bench-cluster`).
#
#   make bench-cluster                # or: bash scripts/bench_cluster.sh
#   BENCH_CLUSTER_KEYS=100000 BENCH_LAG_SECONDS=2 BENCH_REQUESTS=200000 \
#     BENCH_ROUNDS=1 BENCH_IDLE_SECONDS=5 make bench-cluster   # quick smoke run
#
# 1. Replication lag: a 3-node cluster (node2 and node3 join node1); the
#    replication_lag example writes at node1 at BENCH_LAG_RATE writes/s for
#    BENCH_LAG_SECONDS and polls node2 with pipelined MGETs of the keys not
#    yet seen there (method and accuracy: examples/replication_lag.rs).
#    p50/p99/max of (seen on node2 - acknowledged by node1).
# 2. Write throughput: redis-benchmark -t set -P 16 against node1 of that
#    cluster, a single kriminodb node and a redis-server master with two
#    `replicaof` replicas, BENCH_ROUNDS rounds (order rotated each round),
#    medians; then a check that the three cluster nodes ended identical.
# 3. Join time: BENCH_CLUSTER_KEYS keys (16-byte values, redis-cli --pipe)
#    in a 2-node cluster; a third node is started with --join and timed from
#    its start until DBSIZE is complete and INFO initial_sync_done:1. Same for
#    a redis replica of a master holding the same keys (diskless sync and
#    load, no save), until master_link_status:up and DBSIZE is complete.
# 4. Idle anti-entropy: a node holding BENCH_REPAIR_SHARED keys and a node
#    that joined it, once identical: growth of peer_bytes_sent on both over
#    BENCH_IDLE_SECONDS, in bytes/s for the pair.
# 5. Repair cost, on the same pair. The divergence has to happen while the
#    push path is cut, or the writes would simply be pushed: node B is
#    frozen (SIGSTOP) until node A's failure detector declares it down and
#    A drops its link (INFO peers_linked:0), so no push is queued or
#    buffered for B; BENCH_REPAIR_KEYS of the shared keys are overwritten on
#    A with new values; B is thawed (SIGCONT), rejoins, and the new link
#    starts with a reconciliation. Reported: peer_bytes_sent growth on both
#    nodes from just before the thaw until their digests are equal (plus one
#    second for the session to finish), i.e. every anti-entropy byte the
#    repair cost; and the entries B applied (it should be BENCH_REPAIR_KEYS).
#    Why not other ways: a killed node restarts empty (that is a join, not a
#    repair); two nodes loaded separately give every key different versions;
#    a node paused without being declared down gets its writes from the TCP
#    buffers and the link queue, by the push path.
# 6. One table with every figure, its target and PASS/FAIL, and a closing
#    `verdict:` line naming the figures that failed.
#
# Environment (all optional):
#   BENCH_LAG_SECONDS     seconds of writing in the lag test (default 10)
#   BENCH_LAG_RATE        writes/s in the lag test (default 10000)
#   BENCH_REQUESTS        redis-benchmark -n of each throughput run (1000000)
#   BENCH_ROUNDS          throughput rounds (default 3)
#   BENCH_CLIENTS / BENCH_KEYSPACE / BENCH_DATA_SIZE
#                         redis-benchmark -c / -r / -d (50 / 100000 / 16); the
#                         data size is also the value size of loaded keys
#   BENCH_CLUSTER_KEYS    keys of the join test (default 1000000)
#   BENCH_REPAIR_SHARED   keys of the idle/repair pair (default 100000)
#   BENCH_REPAIR_KEYS     divergent keys of the repair test (default 10000)
#   BENCH_IDLE_SECONDS    idle measurement (default 20)
#   BENCH_RUN_TIMEOUT     seconds before one client run or wait is abandoned (600)
#   BENCH_STRICT=1        exit 3 when the verdict is FAIL (default: exit 0)
#   BENCH_KEEP=1          keep the scratch dir (logs, figures); it is always
#                         kept when the script fails
#   BENCH_MAX_LAG_P99_MS, BENCH_MIN_RPS_RATIO, BENCH_MAX_JOIN_RATIO,
#   BENCH_MAX_IDLE_BPS
#                         targets (10, 1.0, 2, 1024)
#   KRIMINODB_BIN, LAG_BIN  binaries to run (both set: skips `cargo build`)
#   REDIS_SERVER_BIN      redis-server to compare with (default: from PATH)
#
# Everything listens on and connects to 127.0.0.1 only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIB="$ROOT/scripts/bench_lib.py"
CLIB="$ROOT/scripts/bench_cluster_lib.py"
# shellcheck source=scripts/bench_common.sh
. "$ROOT/scripts/bench_common.sh"

BENCH_LAG_SECONDS="${BENCH_LAG_SECONDS:-10}"
BENCH_LAG_RATE="${BENCH_LAG_RATE:-10000}"
BENCH_REQUESTS="${BENCH_REQUESTS:-1000000}"
BENCH_ROUNDS="${BENCH_ROUNDS:-3}"
BENCH_CLIENTS="${BENCH_CLIENTS:-50}"
BENCH_KEYSPACE="${BENCH_KEYSPACE:-100000}"
BENCH_DATA_SIZE="${BENCH_DATA_SIZE:-16}"
BENCH_CLUSTER_KEYS="${BENCH_CLUSTER_KEYS:-1000000}"
BENCH_REPAIR_SHARED="${BENCH_REPAIR_SHARED:-100000}"
BENCH_REPAIR_KEYS="${BENCH_REPAIR_KEYS:-10000}"
BENCH_IDLE_SECONDS="${BENCH_IDLE_SECONDS:-20}"
BENCH_RUN_TIMEOUT="${BENCH_RUN_TIMEOUT:-600}"
REDIS_SERVER_BIN="${REDIS_SERVER_BIN:-redis-server}"

((BENCH_REPAIR_KEYS <= BENCH_REPAIR_SHARED)) ||
  { echo "BENCH_REPAIR_KEYS must be <= BENCH_REPAIR_SHARED" >&2; exit 1; }

# fd 3 = the script's stderr, so that messages (also from the signal trap)
# are seen even while a client's stderr is redirected to a file.
exec 3>&2
log() { printf '[bench-cluster] %s\n' "$*" >&3; }
die() { log "error: $*"; exit 1; }

# --- setup --------------------------------------------------------------------

# Debian's redis-server / redis-tools (redis-cli, redis-benchmark) when absent.
# Debian's package may try to start a service on 6379; we never use it.
build() {
  if [[ -n "${KRIMINODB_BIN:-}" && -n "${LAG_BIN:-}" ]]; then
    log "KRIMINODB_BIN and LAG_BIN set: not building"
  else
    log "cargo build --release --examples"
    (cd "$ROOT" && cargo build --release --quiet --bins --examples)
    KRIMINODB_BIN="${KRIMINODB_BIN:-$ROOT/target/release/kriminodb}"
    LAG_BIN="${LAG_BIN:-$ROOT/target/release/examples/replication_lag}"
  fi
  [[ -x "$KRIMINODB_BIN" ]] || die "$KRIMINODB_BIN is not executable"
  [[ -x "$LAG_BIN" ]] || die "$LAG_BIN is not executable"
}

# --- server lifecycle -------------------------------------------------------------

WORK=""             # scratch dir: server logs, CSVs, RESP files, figures
declare -A PIDS=()  # server name -> pid, for cleanup
declare -A PORTS=() # server name -> client port
declare -A PEERS=() # kriminodb name -> peer port
CLIENT=""           # pid of the running client (redis-benchmark, --pipe, ...)
STOPPED=""          # name of a server we froze with SIGSTOP, if any

# On success the scratch dir goes; on failure or Ctrl-C it stays (without the
# big RESP files) so the server logs can be read.
cleanup() {
  local rc=$? name
  if [[ -n $CLIENT ]]; then kill -TERM "$CLIENT" 2>/dev/null || true; fi
  if [[ -n $STOPPED && -n ${PIDS[$STOPPED]:-} ]]; then kill -CONT "${PIDS[$STOPPED]}" 2>/dev/null || true; fi
  for name in "${!PIDS[@]}"; do stop_server "$name"; done
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    if ((rc == 0)) && [[ ${BENCH_KEEP:-0} != 1 ]]; then
      rm -rf "$WORK"
    else
      rm -f "$WORK"/*.resp
      log "logs and raw results kept in $WORK"
    fi
  fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# wait_for PORT COND...: until every COND holds on 127.0.0.1:PORT (see
# bench_cluster_lib.py wait); prints the seconds since START (default: now).
wait_for() {
  local port=$1 start=${START:-$(date +%s.%N)}
  shift
  run_client python3 "$CLIB" wait "$port" "$BENCH_RUN_TIMEOUT" "$start" "$@"
}

field() { python3 "$CLIB" info "${PORTS[$1]}" "${@:2}"; }

# start_kriminodb NAME [SEED_NAME] [FLAGS...]: a node, joining SEED_NAME's peer
# port if given (use "" for none). Waits for PING.
# Servers run under setsid: a Ctrl-C in the terminal then reaches only this
# script, whose trap stops the servers in order.
start_kriminodb() {
  local name=$1 seed=${2:-} port peer_port join=()
  shift 2 || shift $#
  port=$(freeport)
  peer_port=$(freeport)
  while [[ $peer_port == "$port" ]]; do peer_port=$(freeport); done
  [[ -n $seed ]] && join=(--join "127.0.0.1:${PEERS[$seed]}")
  setsid "$KRIMINODB_BIN" --bind 127.0.0.1 --port "$port" --peer-port "$peer_port" \
    --name "$name" --log-level warn "${join[@]}" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS[$name]=$!
  PORTS[$name]=$port
  PEERS[$name]=$peer_port
  wait_ping "$name"
}

# start_redis NAME [FLAGS...]
start_redis() {
  local name=$1 port
  shift
  port=$(freeport)
  mkdir -p "$WORK/$name"
  setsid "$REDIS_SERVER_BIN" --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --daemonize no --dir "$WORK/$name" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS[$name]=$!
  PORTS[$name]=$port
  wait_ping "$name"
}

wait_ping() {
  local name=$1 i logf="$WORK/$1.log"
  for ((i = 0; i < 200; i++)); do
    kill -0 "${PIDS[$name]}" 2>/dev/null || { tail -20 "$logf" >&2; die "$name exited at startup"; }
    [[ $(redis-cli -h 127.0.0.1 -p "${PORTS[$name]}" ping 2>/dev/null) == PONG ]] && return 0
    sleep 0.05
  done
  tail -20 "$logf" >&2
  die "$name did not answer PING on 127.0.0.1:${PORTS[$name]} within 10 s"
}

stop_all() {
  local name
  for name in "$@"; do stop_server "$name"; done
}

# figure KEY=VALUE...: record figures for the report.
figure() { printf '%s\n' "$@" >>"$FIG"; }

# load NAME FILE: redis-cli --pipe FILE into NAME (waits for every reply).
load() {
  local out="$WORK/$1-pipe.out"
  run_client redis-cli -h 127.0.0.1 -p "${PORTS[$1]}" --pipe <"$2" >"$out" 2>&1 ||
    die "$1: redis-cli --pipe failed: $(tail -3 "$out" | tr '\n' ' ')"
  grep -q 'errors: 0' "$out" || die "$1: --pipe reported errors: $(tail -2 "$out" | tr '\n' ' ')"
}

# sum_field FIELD NAME...: sum of an INFO field over nodes.
sum_field() {
  local f=$1 total=0 name v
  shift
  for name in "$@"; do
    v=$(field "$name" "$f")
    total=$((total + v))
  done
  echo "$total"
}

# --- 1. replication lag -----------------------------------------------------------

lag() {
  log "1. replication lag: 3-node cluster c1 (seed), c2, c3"
  start_kriminodb c1 ""
  start_kriminodb c2 c1
  start_kriminodb c3 c1
  local n
  for n in c1 c2 c3; do
    wait_for "${PORTS[$n]}" peers_linked=2 initial_sync_done=1 >/dev/null ||
      die "$n did not link to both peers"
  done
  log "writing ${BENCH_LAG_RATE}/s for ${BENCH_LAG_SECONDS} s at c1, polling c2"
  local out
  if out=$(run_client "$LAG_BIN" --write "127.0.0.1:${PORTS[c1]}" --read "127.0.0.1:${PORTS[c2]}" \
    --rate "$BENCH_LAG_RATE" --seconds "$BENCH_LAG_SECONDS" 2>"$WORK/lag.err"); then
    :
  else
    log "replication_lag exited with $?: $(tail -3 "$WORK/lag.err" | tr '\n' ' ')"
  fi
  [[ -n $out ]] && echo "$out" >>"$FIG"
  log "lag: $out"
  check_alive c1 c2 c3
}

# --- 2. write throughput ----------------------------------------------------------

# bench_one ROUND TARGET NAME: one redis-benchmark run against NAME, one
# line "round target rps" appended to $RUNS (nan when it failed).
bench_one() {
  local round=$1 target=$2 name=$3 test=${4:-set} csv="$WORK/$2-$1.csv" err="$WORK/$2-$1.err" res
  if run_client redis-benchmark -h 127.0.0.1 -p "${PORTS[$name]}" -t "$test" -P 16 \
      -c "$BENCH_CLIENTS" -r "$BENCH_KEYSPACE" -d "$BENCH_DATA_SIZE" -n "$BENCH_REQUESTS" \
      --csv >"$csv" 2>"$err" && res=$(python3 "$LIB" parse-csv "$csv" 2>>"$err"); then
    log "round $round  $target: $res (rps p50 p99)"
  else
    log "round $round  $target: FAILED: $(grep -hv '^"' "$csv" "$err" | head -3 | tr '\n' ' ')"
    res="nan nan nan"
  fi
  read -r rps _ <<<"$res"
  printf '%s %s %s\n' "$round" "$target" "$rps" >>"$RUNS"
}

throughput() {
  log "2. throughput: single node s1, redis master rm + replicas rr1 rr2"
  start_kriminodb s1 ""
  # No save, and replicas served at once (redis 7 waits 5 s for more by default).
  start_redis rm --repl-diskless-sync yes --repl-diskless-sync-delay 0
  start_redis rr1 --replicaof 127.0.0.1 "${PORTS[rm]}"
  start_redis rr2 --replicaof 127.0.0.1 "${PORTS[rm]}"
  wait_for "${PORTS[rr1]}" master_link_status=up >/dev/null || die "rr1 did not sync"
  wait_for "${PORTS[rr2]}" master_link_status=up >/dev/null || die "rr2 did not sync"
  local targets=("cluster c1" "single s1" "redis_replicas rm") round i t
  for ((round = 1; round <= BENCH_ROUNDS; round++)); do
    # Rotate who goes first: a run right after another may inherit a warm
    # (or hot) CPU, or replicas still applying the previous run.
    for ((i = 0; i < 3; i++)); do
      t=${targets[$(((i + round - 1) % 3))]}
      # shellcheck disable=SC2086  # t is "target name"
      bench_one "$round" $t
      check_alive c1 c2 c3 s1 rm rr1 rr2
    done
    # Issue 13: typed writes (a hash field, a counter) on one node of the
    # cluster against redis with two replicas.
    local test
    for test in hset incr; do
      bench_one "$round" "cluster_$test" c1 "$test"
      bench_one "$round" "redis_replicas_$test" rm "$test"
      check_alive c1 c2 c3 s1 rm rr1 rr2
    done
  done
  for t in cluster single redis_replicas cluster_hset redis_replicas_hset cluster_incr \
    redis_replicas_incr; do
    figure "rps_$t=$(awk -v t="$t" '$2 == t { print $3 }' "$RUNS" |
      python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.stdin.read().split() if x!="nan"]; print(s.median(v) if v else "nan")')"
  done
  # Correctness on the side: every write reached every node.
  local conv
  if conv=$(START=$(date +%s.%N) BENCH_RUN_TIMEOUT=30 wait_for "${PORTS[c2]}" \
    "digest=@${PORTS[c1]}" "dbsize=@${PORTS[c1]}") &&
    conv2=$(START=$(date +%s.%N) BENCH_RUN_TIMEOUT=30 wait_for "${PORTS[c3]}" \
      "digest=@${PORTS[c1]}" "dbsize=@${PORTS[c1]}"); then
    figure "converged_s=$(python3 -c "print(f'{max($conv, $conv2):.2f}')")"
  else
    figure "converged_s=timeout"
  fi
  stop_all c1 c2 c3 s1 rm rr1 rr2
}

# --- 3. join time -----------------------------------------------------------------

join() {
  local keys=$BENCH_CLUSTER_KEYS resp="$WORK/sets.resp" t0 secs before after joiner
  log "3. join: generating $keys SET commands"
  python3 "$LIB" gen-sets "$keys" "$BENCH_DATA_SIZE" "$resp"
  figure "join_keys=$keys"

  log "kriminodb: j1 (seed) + j2, loading $keys keys into j1"
  start_kriminodb j1 ""
  start_kriminodb j2 j1
  wait_for "${PORTS[j2]}" peers_linked=1 initial_sync_done=1 >/dev/null || die "j2 did not link"
  load j1 "$resp"
  secs=$(wait_for "${PORTS[j2]}" "dbsize=$keys" "digest=@${PORTS[j1]}") ||
    die "j2 did not get the $keys keys"
  figure "preload_s=$secs"
  sleep 1 # let the last acks and sync rounds settle before counting bytes
  before=$(sum_field peer_bytes_sent j1 j2)
  log "starting j3 (joins j1), waiting for dbsize $keys and initial_sync_done:1"
  t0=$(date +%s.%N)
  start_kriminodb j3 j1
  secs=$(START=$t0 wait_for "${PORTS[j3]}" "dbsize=$keys" initial_sync_done=1) ||
    die "j3 did not complete its join"
  after=$(sum_field peer_bytes_sent j1 j2 j3)
  joiner=$(field j3 peer_bytes_sent)
  log "kriminodb join: $secs s, $((after - before)) peer bytes ($joiner sent by j3)"
  figure "join_kriminodb_s=$secs" "join_bytes=$((after - before))" "join_bytes_joiner=$joiner"
  check_alive j1 j2 j3
  stop_all j1 j2 j3

  log "redis: master rm loaded with $keys keys, then a fresh replica rr"
  start_redis rm --repl-diskless-sync yes --repl-diskless-sync-delay 0
  load rm "$resp"
  [[ $(field rm dbsize) == "$keys" ]] || die "rm holds $(field rm dbsize) keys, not $keys"
  t0=$(date +%s.%N)
  start_redis rr --replicaof 127.0.0.1 "${PORTS[rm]}" --repl-diskless-load swapdb
  secs=$(START=$t0 wait_for "${PORTS[rr]}" master_link_status=up "dbsize=$keys") ||
    die "rr did not complete its sync"
  log "redis replica sync: $secs s"
  figure "join_redis_s=$secs"
  stop_all rm rr
  rm -f "$resp"
}

# --- 4. idle anti-entropy and 5. repair -------------------------------------------

idle_and_repair() {
  local keys=$BENCH_REPAIR_SHARED div=$BENCH_REPAIR_KEYS b1 b2 s1 s2 e1 e2 t0 secs a1 a2
  log "4. idle anti-entropy: p1 with $keys keys, then p2 joins it"
  python3 "$CLIB" gen-sets "$keys" "$BENCH_DATA_SIZE" "$WORK/shared.resp" v
  python3 "$CLIB" gen-sets "$div" "$BENCH_DATA_SIZE" "$WORK/diverge.resp" w
  start_kriminodb p1 ""
  load p1 "$WORK/shared.resp"
  start_kriminodb p2 p1
  wait_for "${PORTS[p2]}" peers_linked=1 initial_sync_done=1 "dbsize=$keys" \
    "digest=@${PORTS[p1]}" >/dev/null || die "p2 did not complete its join"
  sleep 3 # the join's last messages, and one periodic round, before counting
  b1=$(sum_field peer_bytes_sent p1 p2)
  s1=$(sum_field syncs_completed p1 p2)
  sleep "$BENCH_IDLE_SECONDS"
  check_alive p1 p2
  b2=$(sum_field peer_bytes_sent p1 p2)
  s2=$(sum_field syncs_completed p1 p2)
  figure "idle_keys=$keys" "idle_secs=$BENCH_IDLE_SECONDS" "idle_syncs=$((s2 - s1))" \
    "idle_bps=$(python3 -c "print(($b2 - $b1) / $BENCH_IDLE_SECONDS)")"
  log "idle: $((b2 - b1)) bytes in $BENCH_IDLE_SECONDS s, $((s2 - s1)) syncs"

  log "5. repair: freezing p2 until p1 declares it down and drops the link"
  # p2's counters cannot move while it is frozen: read them now.
  b1=$(sum_field peer_bytes_sent p2)
  e1=$(field p2 entries_received)
  kill -STOP "${PIDS[p2]}"
  STOPPED=p2
  secs=$(BENCH_RUN_TIMEOUT=60 wait_for "${PORTS[p1]}" peers_linked=0) ||
    die "p1 kept its link to the frozen p2"
  log "p1 dropped p2 after $secs s; overwriting $div of the $keys keys on p1"
  load p1 "$WORK/diverge.resp"
  sleep 0.5
  a1=$(field p1 peer_bytes_sent)
  b1=$((b1 + a1))
  s1=$(field p1 syncs_completed)
  t0=$(date +%s.%N)
  kill -CONT "${PIDS[p2]}"
  STOPPED=""
  secs=$(START=$t0 wait_for "${PORTS[p2]}" "digest=@${PORTS[p1]}") ||
    die "p2 did not converge with p1"
  sleep 1 # the reconciliation's closing messages
  check_alive p1 p2
  b2=$(sum_field peer_bytes_sent p1 p2)
  a2=$(field p1 peer_bytes_sent)
  e2=$(field p2 entries_received)
  s2=$(field p1 syncs_completed)
  figure "repair_keys=$div" "repair_bytes=$((b2 - b1))" "repair_bytes_a=$((a2 - a1))" "repair_s=$secs" \
    "repair_applied=$((e2 - e1))" "repair_syncs=$((s2 - s1))"
  log "repair: $((b2 - b1)) bytes, $((e2 - e1)) entries applied on p2, converged $secs s after SIGCONT"
  stop_all p1 p2
  rm -f "$WORK"/*.resp
}

# --- main -------------------------------------------------------------------------

main() {
  # Two cores leave no headroom: a compile or test run elsewhere skews the
  # results. Read before our own build, which raises the load itself.
  local load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  ensure_tools
  build
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/kriminodb-bench-cluster.XXXXXX")
  FIG="$WORK/figures.txt" RUNS="$WORK/runs.txt"
  : >"$FIG"
  : >"$RUNS"
  log "note: $(nproc) cores, load average $load at start; nothing is pinned:" \
    "every node, redis-server and the clients share the same cores, so" \
    "numbers are noisy and a 3-node cluster competes with itself for CPU"
  log "$(redis-benchmark --version); $("$REDIS_SERVER_BIN" --version | cut -d' ' -f1-3)"

  lag
  throughput
  join
  idle_and_repair

  echo
  echo "kriminodb cluster figures, $(nproc) cores, 127.0.0.1, nothing pinned;" \
    "load average at start $load, at end $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "throughput: redis-benchmark -t set -P 16 -c $BENCH_CLIENTS -r $BENCH_KEYSPACE" \
    "-d $BENCH_DATA_SIZE -n $BENCH_REQUESTS, median of $BENCH_ROUNDS round(s)"
  local rc=0
  python3 "$CLIB" report "$FIG" || rc=$?
  ((rc == 0 || rc == 3)) || die "report failed"
  if [[ $rc == 3 && ${BENCH_STRICT:-0} == 1 ]]; then exit 3; fi
}

main "$@"
