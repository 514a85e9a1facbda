# Shell helpers shared by scripts/bench.sh and scripts/bench_cluster.sh.
# Sourced, not run. The caller defines log and die, and sets LIB (path of
# bench_lib.py), REDIS_SERVER_BIN, BENCH_RUN_TIMEOUT, WORK and the PIDS
# associative array (server name -> pid); CLIENT holds a running client.

# ensure_tools: installs redis-server, redis-tools, python3 and coreutils
# from Debian where missing.
ensure_tools() {
  local need=()
  command -v "$REDIS_SERVER_BIN" >/dev/null 2>&1 || need+=(redis-server)
  { command -v redis-cli && command -v redis-benchmark; } >/dev/null 2>&1 || need+=(redis-tools)
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  command -v timeout >/dev/null 2>&1 || need+=(coreutils)
  ((${#need[@]} == 0)) && return 0
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  log "installing ${need[*]} with apt-get"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  command -v "$REDIS_SERVER_BIN" >/dev/null 2>&1 || REDIS_SERVER_BIN=/usr/bin/redis-server
}

freeport() { python3 "$LIB" freeport; }

# run_client CMD...: run a (long) client command under a timeout, in the
# background with `wait`. Why not in the foreground: bash defers a trap until
# a foreground child ends and then drops SIGINT if that child exited by
# itself, so Ctrl-C only aborted the current run; `wait` returns at once on a
# trapped signal and the trap then stops everything.
run_client() {
  timeout "$BENCH_RUN_TIMEOUT" "$@" <&0 & # <&0: keep stdin (else /dev/null)
  CLIENT=$!
  local rc=0
  wait "$CLIENT" || rc=$?
  CLIENT=""
  return "$rc"
}

# stop_server NAME: SIGTERM, then SIGKILL if it has not exited within 10 s.
stop_server() {
  local name=$1 pid=${PIDS[$1]:-} i
  [[ -n $pid ]] || return 0
  unset "PIDS[$name]"
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  log "$name did not stop within 10 s of SIGTERM: killing it"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# check_alive NAME...: dies with the tail of its log if a server is gone.
check_alive() {
  local name
  for name in "$@"; do
    kill -0 "${PIDS[$name]}" 2>/dev/null && continue
    tail -20 "$WORK/$name.log" >&2
    die "$name died during the benchmark"
  done
}
