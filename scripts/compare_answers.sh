#!/usr/bin/env bash
# Whether two release builds answer byte for byte alike: the same 30
# requests (errors of every layer, deletions, limits, balance, a refused
# key, a preflight) against a fresh database each, with times and secrets
# masked. For refactors that promise "behaviour unchanged".
#
#   scripts/compare_answers.sh /tmp/oldtarget/release target/release
set -u
run() { # bin-dir port
  local d; d=$(mktemp -d)
  TOLLGATE_ADMIN_EMAIL=admin@example.com TOLLGATE_ADMIN_PASSWORD=admin-password-1 \
    "$1/tollgate" serve --db "$d/t.db" --addr "127.0.0.1:$2" >/dev/null 2>"$d/log" &
  local pid=$!
  for _ in $(seq 100); do curl -sf "localhost:$2/readyz" >/dev/null && break; sleep 0.1; done
  local u="http://127.0.0.1:$2"
  r() { curl -s -o - -w ' [%{http_code}]\n' "$@"; }
  local t; t=$(curl -s "$u/v1/auth/login" -d '{"email":"admin@example.com","password":"admin-password-1"}' |
    sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  local a="Authorization: Bearer $t"
  r "$u/nope"
  r -X DELETE "$u/v1/me" -H "$a"
  r "$u/v1/me"
  r "$u/v1/me" -H "Authorization: Bearer bad"
  r "$u/v1/me?x=1" -H "$a"
  r "$u/v1/credits/consume" -H "$a" -d '{"amount":1,"amount":2}'
  r "$u/v1/credits/consume" -H "$a" -d '{"amount":0}'
  r "$u/v1/credits/consume" -H "$a" -d '{"amount":5}'
  r "$u/v1/credits/consume" -H "$a" -d 'nope'
  r "$u/v1/admin/users" -H "$a" -d '{"email":"ann@example.com","password":"ann-password-1"}'
  r "$u/v1/admin/users" -H "$a" -d '{"email":"ann@example.com","password":"ann-password-1"}'
  r "$u/v1/admin/users/usr_2/credits" -H "$a" -d '{"amount":100,"description":"x"}'
  local k; k=$(curl -s "$u/v1/api-keys" -H "$a" -d '{"name":"k"}' | sed 's/.*"key":"\([^"]*\)".*/\1/')
  r "$u/v1/api-keys" -H "Authorization: Bearer $k" -d '{"name":"k2"}'
  r "$u/v1/admin/audit" -H "Authorization: Bearer $k"
  r "$u/v1/limits" -H "$a"
  r -X PUT "$u/v1/admin/users/usr_2/limits" -H "$a" -d '{"rpm":5}'
  r -X DELETE "$u/v1/api-keys/key_1" -H "$a"
  r -X DELETE "$u/v1/api-keys/key_99" -H "$a"
  r -X DELETE "$u/v1/admin/users/usr_2" -H "$a"
  r "$u/v1/models/none" -H "$a"
  r "$u/v1/jobs" -H "$a" -d '{"type":"x","model":"m","input":{}}'
  r -X POST "$u/v1/jobs/job_1/cancel" -H "$a"
  r "$u/v1/credits/redeem" -H "$a" -d '{"code":"NOPE-NOPE"}'
  r "$u/v1/auth/refresh" -d '{"refresh_token":"x"}'
  r "$u/v1/auth/password-reset/confirm" -d '{"token":"x","new_password":"abcdefgh12345"}'
  r "$u/v1/chat/completions" -H "$a" -d '{"model":"none","messages":[]}'
  r -X OPTIONS "$u/v1/me" -H "Origin: https://x.example" -H "Access-Control-Request-Method: GET"
  r "$u/v1/credits/balance" -H "$a"
  r "$u/v1/credits/validate" -H "$a"
  kill $pid; wait $pid 2>/dev/null; rm -rf "$d"
}
mask() { sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z/TIME/g'; }
if diff <(run "$1" 8101 | mask) <(run "$2" 8102 | mask); then
  echo "the two builds answer alike (30 requests)"
else
  echo "the answers differ (above)"; exit 1
fi
