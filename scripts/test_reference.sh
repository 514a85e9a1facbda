#!/usr/bin/env bash
# Runs the command conformance tests (tests/commands.rs) against a real
# redis-server, proving that every expected reply in them is what Redis
# itself answers. Needs redis-server (Debian's redis-server package).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
# kriminoDB has one keyspace (SELECT 1 must fail) and needs DEBUG DIGEST.
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
  --databases 1 --enable-debug-command yes --dir "$dir" --daemonize no \
  >"$dir/redis.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
REDIS_REFERENCE_ADDR="127.0.0.1:$port" cargo test --test commands against_redis_server -- --ignored
