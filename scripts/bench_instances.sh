#!/usr/bin/env bash
# Consume over HTTP on SQLite, on PostgreSQL with one instance and with three
# instances, in one run (BENCHMARKS.md, "PostgreSQL"). Needs a release build
# (cargo build --release --examples) and a PostgreSQL server: it starts a
# throwaway one with scripts/pg-temp unless TOLLGATE_TEST_PG_URL names one.
# BIN=path runs another build (a baseline; LOADGEN=path its own load generator,
# which seeds users in that build's schema); REDIS=1 adds three instances
# sharing their limits through a throwaway Redis (scripts/redis-temp).
#   scripts/bench_instances.sh [requests per run] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-60000}"
rounds="${2:-1}"
bin="${BIN:-target/release/tollgate}"
loadgen="${LOADGEN:-target/release/examples/loadgen}"
cleanup() {
  if [ -n "${TOLLGATE_TEST_PG_DIR:-}" ]; then scripts/pg-temp stop "$TOLLGATE_TEST_PG_DIR"; fi
  if [ -n "${TOLLGATE_TEST_REDIS_DIR:-}" ]; then scripts/redis-temp stop "$TOLLGATE_TEST_REDIS_DIR"; fi
}
trap cleanup EXIT
if [ -z "${TOLLGATE_TEST_PG_URL:-}" ]; then
  eval "$(scripts/pg-temp start)"
fi
if [ "${REDIS:-0}" = 1 ] && [ -z "${TOLLGATE_TEST_REDIS_URL:-}" ]; then
  eval "$(scripts/redis-temp start)"
fi
base="${TOLLGATE_TEST_PG_URL%/*}"
work=$(mktemp -d)
export TOLLGATE_LIMITS_RPM=100000000 TOLLGATE_LIMITS_BURST=100000000 RUST_LOG=warn

serve() { # port, extra env...
  local port=$1; shift
  # The server refuses TOLLGATE_* variables it does not know.
  env -u TOLLGATE_TEST_PG_URL -u TOLLGATE_TEST_PG_DIR -u TOLLGATE_TEST_REDIS_URL -u TOLLGATE_TEST_REDIS_DIR \
    "$@" "$bin" serve --addr "127.0.0.1:$port" --db "$work/$port.db" >"$work/$port.log" 2>&1 &
  echo $!
}
wait_ready() {
  for p in "$@"; do
    until curl -sf "127.0.0.1:$p/healthz" >/dev/null; do sleep 0.2; done
  done
}
run() { # label, urls, db
  echo "== $1"
  "$loadgen" --url "$2" --db "$3" --users 10000 --connections 64 --requests "$requests" --scenario consume 2>/dev/null \
    | grep -E "throughput|p50|p99|errors|status"
}

for round in $(seq "$rounds"); do
  pid=$(serve 18090)
  wait_ready 18090
  run "SQLite, 1 instance (round $round)" "http://127.0.0.1:18090" "$work/18090.db"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$work"/18090.db*

  db="b1_$round"
  psql -q "$TOLLGATE_TEST_PG_URL" -c "CREATE DATABASE $db"
  pid=$(serve 18091 TOLLGATE_DATABASE_URL="$base/$db")
  wait_ready 18091
  run "PostgreSQL, 1 instance (round $round)" "http://127.0.0.1:18091" "$base/$db"
  kill "$pid"; wait "$pid" 2>/dev/null || true

  db="b3_$round"
  psql -q "$TOLLGATE_TEST_PG_URL" -c "CREATE DATABASE $db"
  pids=()
  for p in 18092 18093 18094; do
    pids+=("$(serve $p TOLLGATE_DATABASE_URL="$base/$db" TOLLGATE_DATABASE_INSTANCES=3)")
    wait_ready $p
  done
  run "PostgreSQL, 3 instances (round $round)" \
    "http://127.0.0.1:18092,http://127.0.0.1:18093,http://127.0.0.1:18094" "$base/$db"
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true

  if [ "${REDIS:-0}" = 1 ]; then
    db="b3r_$round"
    psql -q "$TOLLGATE_TEST_PG_URL" -c "CREATE DATABASE $db"
    pids=()
    for p in 18095 18096 18097; do
      pids+=("$(serve $p TOLLGATE_DATABASE_URL="$base/$db" TOLLGATE_REDIS_URL="$TOLLGATE_TEST_REDIS_URL")")
      wait_ready $p
    done
    run "PostgreSQL, 3 instances, limits in Redis (round $round)" \
      "http://127.0.0.1:18095,http://127.0.0.1:18096,http://127.0.0.1:18097" "$base/$db"
    kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
  fi
done
rm -rf "$work"
