#!/usr/bin/env bash
# Compare kriminodb with a real redis-server on this machine.
#
#   make bench                       # or: bash scripts/bench.sh
#   BENCH_REQUESTS=100000 BENCH_ROUNDS=1 make bench    # quick smoke run
#
# 1. Throughput/latency: redis-benchmark against both servers, the two runs of
#    each row back to back (order flipped every round so neither server always
#    goes first), BENCH_ROUNDS rounds, medians of rps / p50 / p99. A run with
#    an error (an error reply, a refused connection) fails its row.
# 2. Memory: a fresh instance of each server gets BENCH_MEM_KEYS distinct keys
#    with 16-byte values through `redis-cli --pipe`; RSS and INFO used_memory
#    growth per key.
# 3. One table of every row (the numbering is issue 6's; row 8, the cluster,
#    is `make bench-cluster`) with its target and PASS/FAIL, then a closing
#    `verdict:` line.
#
# Nothing is pinned: on 2 cores, the servers and redis-benchmark would have
# to share a core anyway, so both servers get the same unpinned machine and
# the table says so.
#
# Environment (all optional):
#   BENCH_REQUESTS     requests of a weight-1 row (default 1000000, ~5 s at
#                      ~180k rps); other rows scale it by their weight
#   BENCH_ROUNDS       rounds (default 3)
#   BENCH_CLIENTS      redis-benchmark -c (default 50)
#   BENCH_KEYSPACE     redis-benchmark -r (default 100000)
#   BENCH_DATA_SIZE    redis-benchmark -d and memory value size (default 16)
#   BENCH_MEM_KEYS     keys of the memory test (default 1000000; 0 skips it)
#   BENCH_RUN_TIMEOUT  seconds before one redis-benchmark run is abandoned (600)
#   BENCH_STRICT=1     exit 3 when the verdict is FAIL (default: exit 0)
#   BENCH_KEEP=1       keep the scratch dir (server logs, raw CSVs); it is
#                      always kept when the script fails
#   BENCH_MAX_MEM_RATIO  memory target, bytes/key vs redis (1.3); the
#                      throughput targets are in ROWS below
#   KRIMINODB_BIN      kriminodb binary to run (skips `cargo build`)
#   KRIMINODB_CMD      full command line instead of KRIMINODB_BIN, with
#                      {port} and {peer_port} placeholders, e.g. to try the
#                      script against a second redis-server:
#                      KRIMINODB_CMD="redis-server --port {port} --save '' --appendonly no"
#   BENCH_KRIMINODB_ARGS  extra flags for kriminodb, e.g. "--threads 1"
#   BENCH_ONLY         row ids and memory datasets to run, space-separated
#                      (e.g. "incr-p16 hset-p16 smallhashes"; "strings" for
#                      the strings memory test); default: all
#   REDIS_SERVER_BIN   redis-server to compare with (default: from PATH)
#
# Everything listens on and connects to 127.0.0.1 only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIB="$ROOT/scripts/bench_lib.py"
# shellcheck source=scripts/bench_common.sh
. "$ROOT/scripts/bench_common.sh"

BENCH_REQUESTS="${BENCH_REQUESTS:-1000000}"
BENCH_ROUNDS="${BENCH_ROUNDS:-3}"
BENCH_CLIENTS="${BENCH_CLIENTS:-50}"
BENCH_KEYSPACE="${BENCH_KEYSPACE:-100000}"
BENCH_DATA_SIZE="${BENCH_DATA_SIZE:-16}"
BENCH_MEM_KEYS="${BENCH_MEM_KEYS:-1000000}"
BENCH_RUN_TIMEOUT="${BENCH_RUN_TIMEOUT:-600}"
REDIS_SERVER_BIN="${REDIS_SERVER_BIN:-redis-server}"

# The rows of the table:
#   "issue-row  id  weight  min-rps-ratio  max-p99-ratio  redis-benchmark arguments"
# weight scales BENCH_REQUESTS so every row runs for roughly the same time
# (pipelined rows go ~6x faster; MSET/MGET handle 10 keys per request).
# max-p99-ratio "-" means no latency target. Arguments come after the common
# -c/-d/-r, so a row's own -c wins. redis-benchmark has no MGET test: the
# command is given, like its MSET test (10 random keys).
# To add a row, add a line; the id must be unique and contain no spaces.
MGET10="mget$(printf ' key:__rand_int__%.0s' {1..10})"
ROWS=(
  "1  set-p1     1    1.0  1.2  -t set -P 1"
  "2  get-p1     1    1.0  1.2  -t get -P 1"
  "3  set-p16    6    1.0  -    -t set -P 16"
  "4  get-p16    6    1.0  -    -t get -P 16"
  "5  mset-p1    0.6  1.0  -    -t mset -P 1"
  "5  mget-p1    0.6  1.0  -    -P 1 $MGET10"
  "7  get-c1000  1    0.9  -    -t get -P 1 -c 1000"
  "13 incr-p1    1    1.0  -    -t incr -P 1"
  "13 incr-p16   6    1.0  -    -t incr -P 16"
  "13 hset-p1    1    1.0  -    -t hset -P 1"
  "13 hset-p16   6    1.0  -    -t hset -P 16"
  "13 sadd-p1    1    1.0  -    -t sadd -P 1"
  "13 sadd-p16   6    1.0  -    -t sadd -P 16"
  "13 spop-p1    1    1.0  -    -t spop -P 1"
  "13 spop-p16   6    1.0  -    -t spop -P 16"
  "13 hgetall-small   1    1.0  -  -P 1 hgetall bench:hash:small"
  "13 hgetall-large   0.05 1.0  -  -P 1 hgetall bench:hash:large"
  "13 smembers-small  1    1.0  -  -P 1 smembers bench:set:small:1"
  "13 smembers-large  0.05 1.0  -  -P 1 smembers bench:set:large:1"
  "13 sinter-small    1    1.0  -  -P 1 sinter bench:set:small:1 bench:set:small:2"
  "13 sinter-large    0.1  1.0  -  -P 1 sinter bench:set:large:1 bench:set:large:2"
)
# Issue 13's memory rows: dataset, target ratio (bytes per element vs
# redis), what it holds. Loaded like row 6, into fresh instances.
TYPED_MEM=(
  "bighash      1.5  1,000,000 fields of one hash"
  "bigset       1.5  1,000,000 members of one set"
  "smallhashes  2.0  100,000 hashes of 10 fields"
)
# Elements of the small and large keys the HGETALL/SMEMBERS/SINTER rows read.
TYPED_SMALL=10
TYPED_LARGE=1000
# Row 7's 1,000 connections, plus the servers' own descriptors.
MIN_FILES=1200

# fd 3 = the script's stderr, so that messages (also from the signal trap)
# are seen even while a client's stderr is redirected to a file.
exec 3>&2
log() { printf '[bench] %s\n' "$*" >&3; }
die() { log "error: $*"; exit 1; }

# --- setup --------------------------------------------------------------------

# Debian's redis-server / redis-tools (redis-cli, redis-benchmark) when absent.
# Debian's package may try to start a service on 6379; we never use it.
build_kriminodb() {
  if [[ -n "${KRIMINODB_CMD:-}" ]]; then
    log "KRIMINODB_CMD set: not building"
  elif [[ -n "${KRIMINODB_BIN:-}" ]]; then
    log "KRIMINODB_BIN=$KRIMINODB_BIN: not building"
    [[ -x "$KRIMINODB_BIN" ]] || die "$KRIMINODB_BIN is not executable"
  else
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet --bin kriminodb)
    KRIMINODB_BIN="$ROOT/target/release/kriminodb"
  fi
}

# --- server lifecycle -------------------------------------------------------------

WORK=""            # scratch dir: server logs, CSVs, the generated RESP file
declare -A PIDS=() # server name -> pid, for cleanup
declare -A PORTS=()
CLIENT=""          # pid of the running redis-benchmark / redis-cli, if any

# On success the scratch dir goes; on failure or Ctrl-C it stays (without the
# big RESP file) so the server logs and raw CSVs can be read.
cleanup() {
  local rc=$? name
  if [[ -n $CLIENT ]]; then kill -TERM "$CLIENT" 2>/dev/null || true; fi
  for name in "${!PIDS[@]}"; do stop_server "$name"; done
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    if ((rc == 0)) && [[ ${BENCH_KEEP:-0} != 1 ]]; then
      rm -rf "$WORK"
    else
      rm -f "$WORK/sets.resp"
      log "logs and raw results kept in $WORK"
    fi
  fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# start_server NAME KIND: KIND is "kriminodb" or "redis". Waits for PING.
# Servers run under setsid: a Ctrl-C in the terminal then reaches only this
# script (and redis-benchmark), whose trap stops the servers in order, instead
# of a server vanishing mid-run and being reported as a crash.
start_server() {
  local name=$1 kind=$2 port peer_port logf="$WORK/$1.log"
  port=$(freeport)
  if [[ $kind == redis ]]; then
    # maxclients as kriminodb's default (redis lowers it to what the
    # descriptor limit allows, at least row 7's 1,000 with MIN_FILES).
    setsid "$REDIS_SERVER_BIN" --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
      --daemonize no --dir "$WORK" --maxclients 10000 >"$logf" 2>&1 &
  else
    peer_port=$(freeport)
    while [[ $peer_port == "$port" ]]; do peer_port=$(freeport); done
    if [[ -n "${KRIMINODB_CMD:-}" ]]; then
      local cmd=${KRIMINODB_CMD//\{port\}/$port}
      cmd=${cmd//\{peer_port\}/$peer_port}
      # exec so that $! is the server itself (its VmRSS is what we measure)
      setsid bash -c "exec $cmd" >"$logf" 2>&1 &
    else
      # shellcheck disable=SC2086  # BENCH_KRIMINODB_ARGS is a list of flags
      setsid "$KRIMINODB_BIN" --bind 127.0.0.1 --port "$port" --peer-port "$peer_port" \
        --name bench --log-level warn ${BENCH_KRIMINODB_ARGS:-} >"$logf" 2>&1 &
    fi
  fi
  PIDS[$name]=$!
  PORTS[$name]=$port
  local i
  for ((i = 0; i < 200; i++)); do
    kill -0 "${PIDS[$name]}" 2>/dev/null || { tail -20 "$logf" >&2; die "$name exited at startup"; }
    [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]] && return 0
    sleep 0.1
  done
  tail -20 "$logf" >&2
  die "$name did not answer PING on 127.0.0.1:$port within 20 s"
}

# --- throughput / latency ---------------------------------------------------------

# run_row ROUND SERVER ID WEIGHT ARGS...: one redis-benchmark run, one line
# appended to $RUNS. A failed run (error replies, timeout) is recorded as nan
# so the table still shows the other rows and the verdict fails.
run_row() {
  local round=$1 server=$2 id=$3 weight=$4
  shift 4
  local n csv="$WORK/$server-$id-$round.csv" err="$WORK/$server-$id-$round.err" res
  n=$(python3 -c "print(max(1, round($BENCH_REQUESTS * $weight)))")
  # the common -c/-d/-r are in the table's title; 10 keys shown as ×10
  local workload="$*" nkeys
  nkeys=$(grep -o 'key:__rand_int__' <<<"$workload" | wc -l || true)
  if ((nkeys > 1)); then workload="${workload%% key:__rand_int__*} key:__rand_int__ ×$nkeys"; fi
  workload="$workload -n $n"
  # redis-benchmark prints error replies and connection failures on stderr
  # (and usually exits 1): either fails the run.
  if run_client redis-benchmark -h 127.0.0.1 -p "${PORTS[$server]}" \
      -c "$BENCH_CLIENTS" -d "$BENCH_DATA_SIZE" -r "$BENCH_KEYSPACE" -n "$n" --csv "$@" \
      >"$csv" 2>"$err" && ! grep -qiE 'error|could not connect' "$err" &&
      res=$(python3 "$LIB" parse-csv "$csv" 2>>"$err"); then
    log "round $round  $id  $server: $res (rps p50 p99)"
  else
    log "round $round  $id  $server: FAILED: $(grep -hv '^"' "$csv" "$err" | head -3 | tr '\n' ' ')"
    res="nan nan nan"
  fi
  check_alive "$server"
  read -r rps p50 p99 <<<"$res"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$id" "$workload" "$server" \
    "$rps" "$p50" "$p99" >>"$RUNS"
}

# preload_typed SERVER: the small and large hashes and sets the read rows
# of issue 13 use (the large sets share half their members).
preload_typed() {
  local port=${PORTS[$1]} out="$WORK/$1-preload.out"
  python3 "$LIB" gen-bench-keys "$TYPED_SMALL" "$TYPED_LARGE" "$WORK/preload.resp"
  run_client redis-cli -h 127.0.0.1 -p "$port" --pipe <"$WORK/preload.resp" >"$out" 2>&1 ||
    die "$1: preloading the typed keys failed: $(tail -3 "$out" | tr '\n' ' ')"
}

throughput() {
  start_server kriminodb kriminodb
  start_server redis redis
  preload_typed kriminodb
  preload_typed redis
  log "kriminodb on 127.0.0.1:${PORTS[kriminodb]}, redis on 127.0.0.1:${PORTS[redis]}"
  local round row num id weight min_ratio max_p99 args order
  for row in "${ROWS[@]}"; do
    read -r num id weight min_ratio max_p99 args <<<"$row"
    printf '%s\t%s\t%s\t%s\n' "$id" "$num" "$min_ratio" "$max_p99" >>"$TARGETS"
  done
  for ((round = 1; round <= BENCH_ROUNDS; round++)); do
    # Flip who goes first each round: a server running right after the other
    # may inherit a warm (or hot) CPU.
    if ((round % 2)); then order=(kriminodb redis); else order=(redis kriminodb); fi
    for row in "${ROWS[@]}"; do
      read -r num id weight min_ratio max_p99 args <<<"$row"
      for server in "${order[@]}"; do
        # shellcheck disable=SC2086  # args is a list of redis-benchmark flags
        run_row "$round" "$server" "$id" "$weight" $args
      done
    done
  done
  stop_server kriminodb
  stop_server redis
}

# --- memory -----------------------------------------------------------------------

rss_bytes() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"; }

used_memory() {
  # INFO memory's used_memory; "nan" if the server does not report it.
  local v
  v=$(redis-cli -h 127.0.0.1 -p "$1" info memory 2>/dev/null | tr -d '\r' |
    awk -F: '$1 == "used_memory" { print $2 }')
  echo "${v:-nan}"
}

# mem_one SERVER: fresh instance, load $RESP, record before/after numbers.
mem_one() {
  local server=$1 port pid
  start_server "$server" "$server"
  port=${PORTS[$server]} pid=${PIDS[$server]}
  sleep 0.5 # let start-up allocations settle before the baseline
  echo "${server}_rss_before=$(rss_bytes "$pid")" >>"$MEM"
  echo "${server}_used_before=$(used_memory "$port")" >>"$MEM"
  # --pipe waits for every reply (it ends with an ECHO and waits for it).
  local out="$WORK/$server-pipe.out"
  if ! run_client redis-cli -h 127.0.0.1 -p "$port" --pipe <"$RESP" >"$out" 2>&1; then
    log "$server: redis-cli --pipe failed: $(tail -3 "$out" | tr '\n' ' ')"
  fi
  check_alive "$server"
  sleep 1 # let background work (lazy frees, rehashing) finish
  {
    echo "${server}_rss_after=$(rss_bytes "$pid")"
    echo "${server}_used_after=$(used_memory "$port")"
    echo "${server}_dbsize=$(redis-cli -h 127.0.0.1 -p "$port" dbsize 2>&1 | tr -d '\r')"
  } >>"$MEM"
  log "$server: $(tail -1 "$out" | tr -d '\r'); dbsize $(tail -1 "$MEM" | cut -d= -f2)"
  stop_server "$server"
}

# mem_typed DATASET: like mem_one for both servers, with a typed dataset
# (scripts/bench_lib.py gen-typed); lines "dataset server metric value".
mem_typed() {
  local dataset=$1 server port pid out
  RESP="$WORK/$dataset.resp"
  python3 "$LIB" gen-typed "$dataset" "$RESP"
  for server in kriminodb redis; do
    start_server "$server" "$server"
    port=${PORTS[$server]} pid=${PIDS[$server]}
    sleep 0.5
    echo "$dataset $server rss_before $(rss_bytes "$pid")" >>"$MEM_TYPED"
    echo "$dataset $server used_before $(used_memory "$port")" >>"$MEM_TYPED"
    out="$WORK/$server-$dataset.out"
    if ! run_client redis-cli -h 127.0.0.1 -p "$port" --pipe <"$RESP" >"$out" 2>&1; then
      log "$server: redis-cli --pipe failed: $(tail -3 "$out" | tr '\n' ' ')"
    fi
    check_alive "$server"
    sleep 1
    echo "$dataset $server rss_after $(rss_bytes "$pid")" >>"$MEM_TYPED"
    echo "$dataset $server used_after $(used_memory "$port")" >>"$MEM_TYPED"
    log "$server $dataset: $(tail -1 "$out" | tr -d '\r')"
    stop_server "$server"
  done
  rm -f "$RESP"
}

memory() {
  local row dataset ratio what
  for row in "${TYPED_MEM[@]}"; do
    read -r dataset ratio what <<<"$row"
    printf '%s\t%s\t%s\n' "$dataset" "$ratio" "$what" >>"$TYPED_TARGETS"
    mem_typed "$dataset"
  done
  only strings || return 0
  RESP="$WORK/sets.resp"
  log "generating $BENCH_MEM_KEYS SET commands"
  python3 "$LIB" gen-sets "$BENCH_MEM_KEYS" "$BENCH_DATA_SIZE" "$RESP"
  echo "keys=$BENCH_MEM_KEYS" >>"$MEM"
  echo "value_size=$BENCH_DATA_SIZE" >>"$MEM"
  # One at a time, so the loads do not compete for the two cores.
  mem_one kriminodb
  mem_one redis
  rm -f "$RESP"
}

# --- main -------------------------------------------------------------------------

# BENCH_ONLY: keep the rows and typed datasets it names (their first or
# second word), so one figure can be measured again without the whole run.
only() {
  [[ -z ${BENCH_ONLY:-} ]] && return 0
  local want
  for want in $BENCH_ONLY; do [[ $want == "$1" ]] && return 0; done
  return 1
}
filter_rows() {
  local row kept=() num id dataset rest
  for row in "${ROWS[@]}"; do
    read -r num id rest <<<"$row"
    if only "$id"; then kept+=("$row"); fi
  done
  ROWS=("${kept[@]}")
  kept=()
  for row in "${TYPED_MEM[@]}"; do
    read -r dataset rest <<<"$row"
    if only "$dataset"; then kept+=("$row"); fi
  done
  TYPED_MEM=("${kept[@]}")
}

main() {
  # Two cores leave no headroom: a compile or test run elsewhere skews the
  # results. Read before our own build, which raises the load itself.
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  ensure_tools
  if python3 -c "import sys; sys.exit(0 if $load > 0.5 else 1)"; then
    log "warning: load average was $load at start: other work is running," \
      "numbers will be noisy"
  fi
  build_kriminodb
  # Descriptors for row 7's 1,000 clients, in redis-benchmark and in the
  # servers (which inherit the limit): as many as allowed, up to 16,384.
  local hard files
  hard=$(ulimit -Hn)
  if [[ $hard == unlimited ]] || ((hard > 16384)); then files=16384; else files=$hard; fi
  ulimit -n "$files" 2>/dev/null || true
  if (($(ulimit -n) < MIN_FILES)); then
    log "warning: ulimit -n is $(ulimit -n) (hard limit $hard): row 7 needs $MIN_FILES"
  fi
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/kriminodb-bench.XXXXXX")
  RUNS="$WORK/runs.tsv" MEM="$WORK/mem.txt" TARGETS="$WORK/targets.tsv"
  MEM_TYPED="$WORK/mem-typed.txt" TYPED_TARGETS="$WORK/typed-targets.tsv"
  : >"$MEM_TYPED"
  : >"$TYPED_TARGETS"
  : >"$RUNS"
  : >"$MEM"
  : >"$TARGETS"

  log "note: $(nproc) cores; nothing is pinned: kriminodb (--threads 0 = one" \
    "per core unless BENCH_KRIMINODB_ARGS says otherwise), redis-server and" \
    "redis-benchmark share the same cores, so numbers are noisy and client-bound"
  log "$(redis-benchmark --version); $("$REDIS_SERVER_BIN" --version | cut -d' ' -f1-3)"
  log "rounds=$BENCH_ROUNDS requests=$BENCH_REQUESTS clients=$BENCH_CLIENTS" \
    "keyspace=$BENCH_KEYSPACE data=$BENCH_DATA_SIZE mem_keys=$BENCH_MEM_KEYS" \
    "ulimit -n=$(ulimit -n)"

  filter_rows
  throughput
  if ((BENCH_MEM_KEYS > 0)); then memory; fi

  echo
  echo "kriminodb vs redis-server, $(nproc) cores, nothing pinned (servers and" \
    "redis-benchmark share the cores), $BENCH_ROUNDS round(s);" \
    "redis-benchmark -c $BENCH_CLIENTS -d $BENCH_DATA_SIZE -r $BENCH_KEYSPACE"
  local rc=0
  python3 "$LIB" report "$RUNS" "$MEM" "$TARGETS" "$MEM_TYPED" "$TYPED_TARGETS" || rc=$?
  ((rc == 0 || rc == 3)) || die "report failed"
  if [[ $rc == 3 && ${BENCH_STRICT:-0} == 1 ]]; then exit 3; fi
}

main "$@"
