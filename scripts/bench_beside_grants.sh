#!/usr/bin/env bash
# Consume over HTTP on PostgreSQL (one instance) while an admin grants
# credits to random users at a fixed rate beside it (BENCHMARKS.md, "Fewer
# exclusive writes"): what a write that is not a charge costs the charges.
# Needs a release build (cargo build --release --examples) and python3 for
# the granting client; starts a throwaway PostgreSQL with scripts/pg-temp
# unless TOLLGATE_TEST_PG_URL names one. BIN= and LOADGEN= run another build.
#   scripts/bench_beside_grants.sh [consumes] [grants per second] [seconds of grants]
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-8000}"
rate="${2:-100}"
seconds="${3:-4}"
bin="${BIN:-target/release/tollgate}"
loadgen="${LOADGEN:-target/release/examples/loadgen}"
port=18098
cleanup() {
  if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ -n "${TOLLGATE_TEST_PG_DIR:-}" ]; then scripts/pg-temp stop "$TOLLGATE_TEST_PG_DIR"; fi
}
trap cleanup EXIT
if [ -z "${TOLLGATE_TEST_PG_URL:-}" ]; then
  eval "$(scripts/pg-temp start)"
fi
base="${TOLLGATE_TEST_PG_URL%/*}"
db="grants_$RANDOM"
psql -q "$TOLLGATE_TEST_PG_URL" -c "CREATE DATABASE $db"
work=$(mktemp -d)
env -u TOLLGATE_TEST_PG_URL -u TOLLGATE_TEST_PG_DIR TOLLGATE_LIMITS_RPM=100000000 TOLLGATE_LIMITS_BURST=100000000 \
  RUST_LOG=warn TOLLGATE_DATABASE_URL="$base/$db" \
  TOLLGATE_ADMIN_EMAIL=admin@example.com TOLLGATE_ADMIN_PASSWORD=bench-admin-password \
  "$bin" serve --addr "127.0.0.1:$port" --db "$work/x.db" >"$work/log" 2>&1 &
pid=$!
until curl -sf "127.0.0.1:$port/healthz" >/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "the server stopped; its log:" >&2
    cat "$work/log" >&2
    exit 1
  fi
  sleep 0.2
done
token=$(curl -s "127.0.0.1:$port/v1/auth/login" -H 'content-type: application/json' \
  -d '{"email":"admin@example.com","password":"bench-admin-password"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
"$loadgen" --url "http://127.0.0.1:$port" --db "$base/$db" --users 2000 --connections 16 \
  --requests "$requests" --scenario consume >"$work/loadgen" 2>/dev/null &
lg=$!
# The grants start once the load generator's users exist (it seeds first).
until [ "$(psql -Atc "SELECT count(*) FROM users WHERE email LIKE 'load%'" "$base/$db")" -ge 2000 ]; do sleep 0.2; done
sleep 1
psql -Atc "SELECT id FROM users WHERE email LIKE 'load%' LIMIT 500" "$base/$db" >"$work/ids"
python3 - "$port" "$token" "$work/ids" "$rate" "$seconds" <<'PY'
import http.client, json, sys, threading, time
port, token, ids_file, rate, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
ids = [l.strip() for l in open(ids_file) if l.strip()]
lock, took, statuses = threading.Lock(), [], {}
def grant(k, n):
    c = http.client.HTTPConnection("127.0.0.1", int(port))
    end, due, i = time.time() + secs, time.time(), k
    while time.time() < end:
        due += n / rate
        t0 = time.time()
        c.request("POST", f"/v1/admin/users/usr_{ids[i % len(ids)]}/credits",
                  json.dumps({"amount": 1, "description": "bench"}),
                  {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        with lock:
            took.append(time.time() - t0); statuses[r.status] = statuses.get(r.status, 0) + 1
        i += n
        time.sleep(max(0.0, due - time.time()))
threads = [threading.Thread(target=grant, args=(k, 4)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
took.sort()
print(f"grants: {len(took)} {statuses}  p50 {took[len(took) // 2] * 1000:.1f} ms  p99 {took[len(took) * 99 // 100] * 1000:.1f} ms")
PY
wait "$lg"
grep -E "throughput|p50|status" "$work/loadgen"
rm -rf "$work"
