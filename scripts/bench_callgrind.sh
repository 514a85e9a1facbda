#!/usr/bin/env bash
# Instructions per request, kriminodb vs redis-server, under callgrind.
#
#   bash scripts/bench_callgrind.sh                 # default workloads
#   CG_WORKLOADS="mset get" CG_REQUESTS=20000 bash scripts/bench_callgrind.sh
#
# Wall-clock throughput is noise on a shared 2-core machine; instruction
# counts are not. Each server runs under `valgrind --tool=callgrind`, gets
# CG_KEYSPACE keys first (so writes overwrite, as in `make bench` after its
# SET rows), then for every workload: counters zeroed, CG_REQUESTS requests
# from redis-benchmark (-c CG_CLIENTS -P 1 -d 16 -r CG_KEYSPACE), a dump.
# Prints user-space instructions per request for both and their ratio, and
# keeps the dumps (callgrind_annotate them for the top functions) in CG_OUT.
# Kernel time (syscalls) is not counted: this measures our code only.
#
# Environment: CG_WORKLOADS (set get mset mget; also incr hset sadd spop), CG_REQUESTS (20000),
# CG_CLIENTS (10), CG_KEYSPACE (100000), CG_OUT (a new dir under /tmp),
# KRIMINODB_BIN (target/release/kriminodb), BENCH_KRIMINODB_ARGS,
# REDIS_SERVER_BIN (redis-server).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIB="$ROOT/scripts/bench_lib.py"
CG_WORKLOADS="${CG_WORKLOADS:-set get mset mget}"
CG_REQUESTS="${CG_REQUESTS:-20000}"
CG_CLIENTS="${CG_CLIENTS:-10}"
CG_KEYSPACE="${CG_KEYSPACE:-100000}"
KRIMINODB_BIN="${KRIMINODB_BIN:-$ROOT/target/release/kriminodb}"
REDIS_SERVER_BIN="${REDIS_SERVER_BIN:-redis-server}"
CG_OUT="${CG_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/kriminodb-callgrind.XXXXXX")}"
mkdir -p "$CG_OUT"

log() { printf '[callgrind] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v valgrind >/dev/null || die "valgrind is needed (apt-get install valgrind)"
[[ -x $KRIMINODB_BIN ]] || die "$KRIMINODB_BIN missing: cargo build --release"

PID=""
cleanup() { if [[ -n $PID ]]; then kill -TERM "$PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

# The redis-benchmark arguments of a workload. redis-benchmark has no MGET
# test, so MGET of 10 keys is given as a command, like its MSET test.
workload_args() {
  case $1 in
    set | get | mset | incr | hset | sadd | spop) echo "-t $1" ;;
    mget) echo "mget$(printf ' key:__rand_int__%.0s' {1..10})" ;;
    *) die "unknown workload $1" ;;
  esac
}

# profile NAME CMD...: the server under callgrind, then every workload.
profile() {
  local name=$1 port=$2
  shift 2
  valgrind --tool=callgrind --callgrind-out-file="$CG_OUT/$name.%p" "$@" \
    >"$CG_OUT/$name.log" 2>&1 &
  PID=$!
  local i
  for ((i = 0; i < 300; i++)); do
    [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
    kill -0 "$PID" 2>/dev/null || die "$name exited: $(tail -3 "$CG_OUT/$name.log")"
    sleep 0.2
  done
  log "$name: loading $CG_KEYSPACE keys"
  redis-benchmark -p "$port" -n $((CG_KEYSPACE * 2)) -r "$CG_KEYSPACE" -d 16 -P 16 \
    -c "$CG_CLIENTS" -t set -q >/dev/null
  local w
  for w in $CG_WORKLOADS; do
    callgrind_control -z "$PID" >/dev/null 2>&1
    # shellcheck disable=SC2046  # workload_args is a list of arguments
    redis-benchmark -p "$port" -n "$CG_REQUESTS" -r "$CG_KEYSPACE" -d 16 -P 1 \
      -c "$CG_CLIENTS" $(workload_args "$w") -q >/dev/null
    callgrind_control --dump="$w" "$PID" >/dev/null 2>&1
    local dumps=()
    for ((i = 0; i < 100; i++)); do
      dumps=("$CG_OUT/$name".*.*)
      [[ -e ${dumps[0]} ]] && break
      sleep 0.1
    done
    local dump=${dumps[0]} ir
    [[ -e $dump ]] || die "$name: no callgrind dump"
    mv "$dump" "$CG_OUT/$name-$w.cg"
    ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$CG_OUT/$name-$w.cg")
    echo "$name $w $ir" >>"$CG_OUT/ir.txt"
    log "$name $w: $((ir / CG_REQUESTS)) instructions/request"
  done
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
}

: >"$CG_OUT/ir.txt"
kport=$(python3 "$LIB" freeport)
# shellcheck disable=SC2086  # BENCH_KRIMINODB_ARGS is a list of flags
profile kriminodb "$kport" "$KRIMINODB_BIN" --bind 127.0.0.1 --port "$kport" \
  --peer-port "$(python3 "$LIB" freeport)" --name callgrind --log-level warn \
  ${BENCH_KRIMINODB_ARGS:-}
rport=$(python3 "$LIB" freeport)
profile redis "$rport" "$REDIS_SERVER_BIN" --bind 127.0.0.1 --port "$rport" --save '' \
  --appendonly no --dir "$CG_OUT"

echo "instructions per request (user space, callgrind), $CG_REQUESTS requests," \
  "-c $CG_CLIENTS -P 1 -d 16 -r $CG_KEYSPACE"
printf '%-6s %12s %12s %7s\n' workload kriminodb redis ratio
for w in $CG_WORKLOADS; do
  k=$(awk -v w="$w" '$1 == "kriminodb" && $2 == w { print $3 }' "$CG_OUT/ir.txt")
  r=$(awk -v w="$w" '$1 == "redis" && $2 == w { print $3 }' "$CG_OUT/ir.txt")
  printf '%-6s %12d %12d %7.2f\n' "$w" $((k / CG_REQUESTS)) $((r / CG_REQUESTS)) \
    "$(python3 -c "print($k / $r)")"
done
echo "dumps in $CG_OUT (callgrind_annotate --inclusive=no FILE | head -40)"
