#!/usr/bin/env bash
# A/B of the job path of two release builds, alternating: creating text jobs
# over HTTP (16 connections, 100 users, the dev provider, 4 workers running
# them meanwhile), then draining a backlog: 10,000 jobs of 100 users queued
# with no worker, and the time 4 workers take to run them all after a
# restart (claims through the writer, one at a time).
#
#   scripts/bench_jobs.sh /tmp/oldtarget/release target/release [runs]
#
# Each build uses its own loadgen (it seeds users through its own library,
# so migrations match). NEW_ENV / OLD_ENV add settings to one build only:
# by default the new build's per-user queue bound is raised so that both do
# the same work (a build from before issue 35 does not know the setting).
set -u
NEW_ENV=${NEW_ENV:-TOLLGATE_JOBS_QUEUED_PER_USER_MAX=1000000}
OLD_ENV=${OLD_ENV:-}
OLD=$(realpath "$1"); NEW=$(realpath "$2"); RUNS=${3:-3}
WORK=$(mktemp -d)
trap 'pkill -f "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
open_limits=(TOLLGATE_LIMITS_RPM=100000000 TOLLGATE_LIMITS_BURST=100000000 TOLLGATE_LIMITS_MAX_COST_PER_REQUEST=0
  TOLLGATE_JOBS_QUEUE_MAX=1000000)
summary() { grep -E "throughput|latency|status [^2]" | tr '\n' ' '; echo; }

serve() { # bin-dir dir workers
  local extra=$OLD_ENV
  [ "$1" = "$NEW" ] && extra=$NEW_ENV
  # shellcheck disable=SC2086
  env "${open_limits[@]}" $extra TOLLGATE_JOBS_WORKERS="$3" \
    "$1/tollgate" serve --db "$2/tollgate.db" --addr 127.0.0.1:8080 >/dev/null 2>>"$2/log" &
  echo $! # (the server's stdout is not this function's: $(serve) returns at once)
}

# The server is not this shell's child ($(serve) runs in a subshell), so
# `wait` cannot see it: poll until it is gone and the port is free.
stop() { # pid
  kill "$1" 2>/dev/null
  while kill -0 "$1" 2>/dev/null; do sleep 0.05; done
}

live_jobs() { # dir
  sqlite3 "$1/tollgate.db" "SELECT count(*) FROM jobs WHERE status IN ('queued', 'processing')" 2>/dev/null || echo -1
}

run() { # bin-dir label
  local d="$WORK/jobs"; rm -rf "$d"; mkdir -p "$d"
  local pid; pid=$(serve "$1" "$d" 4); sleep 1.5
  echo "== create $2: $("$1/examples/loadgen" --url http://127.0.0.1:8080 --db "$d/tollgate.db" --users 100 \
    --connections 16 --requests 20000 --scenario jobs --model dev-chat 2>&1 | summary)"
  stop "$pid"
  rm -rf "$d"; mkdir -p "$d"
  pid=$(serve "$1" "$d" 0); sleep 1.5
  "$1/examples/loadgen" --url http://127.0.0.1:8080 --db "$d/tollgate.db" --users 100 --connections 16 \
    --requests 10000 --scenario jobs --model dev-chat >/dev/null 2>&1
  stop "$pid"
  local queued; queued=$(live_jobs "$d")
  local t0; t0=$(date +%s.%N)
  pid=$(serve "$1" "$d" 4)
  while [ "$(live_jobs "$d")" != 0 ]; do sleep 0.05; done
  local t1; t1=$(date +%s.%N)
  echo "== drain $2: $queued jobs in $(echo "$t1 - $t0" | bc) s (start included)"
  stop "$pid"
}

for _ in $(seq "$RUNS"); do run "$OLD" old; run "$NEW" new; done
