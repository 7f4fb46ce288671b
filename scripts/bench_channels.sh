#!/usr/bin/env bash
# Chat through an instant provider (16 connections) with the model on one
# channel, then on three channels of equal priority (weighted choice and
# the conversation affinity table in play), alternating, one build.
#
#   cargo build --release --examples --bins
#   scripts/bench_channels.sh target/release [runs]
set -u
BIN=$(realpath "$1"); RUNS=${2:-3}
WORK=$(mktemp -d)
trap 'pkill -f "$WORK" 2>/dev/null; kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
summary() { grep -E "throughput|latency|status [^2]" | tr '\n' ' '; echo; }

chat() { # channels
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
  env FAST_KEY=x TOLLGATE_LIMITS_RPM=100000000 TOLLGATE_LIMITS_BURST=100000000 TOLLGATE_LIMITS_MAX_COST_PER_REQUEST=0 \
    TOLLGATE_ADMIN_EMAIL=bench@example.com TOLLGATE_ADMIN_PASSWORD=bench-password-1 \
    "$BIN/tollgate" serve --config "$d/tollgate.toml" --db "$d/tollgate.db" --addr 127.0.0.1:8080 2>"$d/log" &
  local pid=$!; sleep 1.5
  if [ "$1" -gt 1 ]; then
    local token
    token=$(curl -s localhost:8080/v1/auth/login -d '{"email":"bench@example.com","password":"bench-password-1"}' \
      | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
    for i in $(seq 2 "$1"); do
      curl -s -o /dev/null localhost:8080/v1/admin/channels -H "Authorization: Bearer $token" \
        -d "{\"name\":\"fast$i\",\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:8090/v1\",\"models\":[{\"model\":\"fast-chat\",\"upstream\":\"m\"}]}"
    done
  fi
  echo "== chat channels=$1 c=16: $("$BIN/examples/loadgen" --url http://127.0.0.1:8080 --db "$d/tollgate.db" --users 100 \
    --connections 16 --duration 5 --scenario chat --model fast-chat 2>&1 | summary)"
  kill $pid; wait $pid 2>/dev/null
}

"$BIN/examples/bare_http" 127.0.0.1:8090 8 >/dev/null 2>&1 &
bare=$!; sleep 0.5
for _ in $(seq "$RUNS"); do chat 1; chat 3; done
kill $bare
