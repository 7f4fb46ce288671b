#!/usr/bin/env bash
# A/B of two release builds on this machine, alternating, so VM drift hits
# both alike: the HTTP floor, consume over HTTP (64 connections, 10k users),
# and chat through an instant provider (1 and 16 connections).
#
#   git worktree add /tmp/old <commit>
#   (cd /tmp/old && CARGO_TARGET_DIR=/tmp/oldtarget cargo build --release --examples --bins)
#   cargo build --release --examples --bins
#   scripts/bench_ab.sh /tmp/oldtarget/release target/release [runs]
set -u
OLD=$(realpath "$1"); NEW=$(realpath "$2"); RUNS=${3:-3}
WORK=$(mktemp -d)
trap 'pkill -f "$WORK" 2>/dev/null; kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
open_limits=(TOLLGATE_LIMITS_RPM=100000000 TOLLGATE_LIMITS_BURST=100000000 TOLLGATE_LIMITS_MAX_COST_PER_REQUEST=0)
summary() { grep -E "throughput|latency|status [^2]" | tr '\n' ' '; echo; }

consume() { # bin-dir label
  local d="$WORK/consume"; rm -rf "$d"; mkdir -p "$d"
  env "${open_limits[@]}" "$1/tollgate" serve --db "$d/tollgate.db" --addr 127.0.0.1:8080 2>"$d/log" &
  local pid=$!; sleep 1.5
  echo "== consume $2: $("$1/examples/loadgen" --url http://127.0.0.1:8080 --db "$d/tollgate.db" --users 10000 \
    --connections 64 --requests 200000 --scenario consume 2>&1 | summary) rss_kib $(ps -o rss= -p $pid)"
  kill $pid; wait $pid 2>/dev/null
}

chat() { # bin-dir label connections
  local d="$WORK/chat"; rm -rf "$d"; mkdir -p "$d"
  cat > "$d/tollgate.toml" <<'T'
[providers.fast]
kind = "openai"
base_url = "http://127.0.0.1:8090/v1"
api_key_env = "FAST_KEY"
[[models]]
name = "fast-chat"
kind = "chat"
routes = [{provider = "fast", model = "m"}]
price = {input_per_1m = 1000, output_per_1m = 1000}
T
  env FAST_KEY=x "${open_limits[@]}" "$1/tollgate" serve --config "$d/tollgate.toml" --db "$d/tollgate.db" \
    --addr 127.0.0.1:8080 2>"$d/log" &
  local pid=$!; sleep 1.5
  echo "== chat $2 c=$3: $("$1/examples/loadgen" --url http://127.0.0.1:8080 --db "$d/tollgate.db" --users 100 \
    --connections "$3" --duration 5 --scenario chat --model fast-chat 2>&1 | summary)"
  kill $pid; wait $pid 2>/dev/null
}

"$NEW/examples/bare_http" 127.0.0.1:8090 4 >/dev/null 2>&1 &
bare=$!; sleep 0.5
echo "== floor: $("$NEW/examples/loadgen" --url http://127.0.0.1:8090 --scenario get --path /x --connections 64 \
  --requests 300000 2>&1 | summary)"
kill $bare; wait $bare 2>/dev/null
for _ in $(seq "$RUNS"); do consume "$OLD" old; consume "$NEW" new; done
"$NEW/examples/bare_http" 127.0.0.1:8090 8 >/dev/null 2>&1 &
bare=$!; sleep 0.5
for c in 1 16; do
  for _ in $(seq "$RUNS"); do chat "$OLD" old "$c"; chat "$NEW" new "$c"; done
done
kill $bare
