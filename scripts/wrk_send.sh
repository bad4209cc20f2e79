#!/usr/bin/env bash
# Measures 16-way concurrent sends with wrk (a lighter client than bench_messages), against a
# fresh release server on a temporary data dir. Needs wrk, curl and python3 (to read the JSON answers).
#
#     cargo build --release -p homeserver --bin homeserver
#     scripts/wrk_send.sh [DURATION=10s] [CONNECTIONS=16] [THREADS=2]     # PAGES=5s also reads pages
#
# Leaves the server running while wrk runs, prints wrk's report and CPU time, the server's CPU
# time and RSS, then stops the server. Set KEEP=1 to keep it (its pid and address are printed).
set -euo pipefail
dur=${1:-10s}; conns=${2:-16}; threads=${3:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-${CARGO_TARGET_DIR:-$root/target}/release/homeserver}
dir=$(mktemp -d ${BENCH_DIR:+-p $BENCH_DIR})
# The server logs at its default level (info), as deployed; set RUST_LOG to change it.
# A tenant other than `default` admits registrations with its token (builds before the tenant
# tokens print none, and need none).
regtok=$("$bin" admin create-tenant bench --send-rate-per-s 1000000 --send-burst 1000000 --data-dir "$dir" \
  | awk '/^registration_token:/{print $2}')
"$bin" serve --listen 127.0.0.1:0 --data-dir "$dir" >"$dir/out.log" 2>&1 &
pid=$!
trap '[ -z "${KEEP:-}" ] && { kill $pid 2>/dev/null; rm -rf "$dir"; }' EXIT
for _ in $(seq 100); do grep -q "listening on" "$dir/out.log" && break; sleep 0.05; done
base=$(grep -o "listening on http://[^ ]*" "$dir/out.log" | head -1 | awk "{print \$3}")

token=$(curl -sf "$base/v1/auth/register" -H 'content-type: application/json' \
  -d "{\"username\":\"bench\",\"password\":\"bench-password\",\"tenant_id\":\"bench\",\"registration_token\":\"$regtok\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["access_token"])')
room=$(curl -sf "$base/v1/rooms" -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"room_type":"group","name":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
cat >"$dir/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"content":{"msgtype":"swp.text","body":"hello from wrk, a message of ordinary length"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
LUA
echo "server pid $pid at $base, room $room, script $dir/post.lua"
cpu0=$(awk '{print $14+$15}' /proc/$pid/stat)
TIMEFORMAT='wrk cpu user=%U s sys=%S s'
time wrk -t"$threads" -c"$conns" -d"$dur" --latency -s "$dir/post.lua" "$base/v1/rooms/$room/send"
cpu1=$(awk '{print $14+$15}' /proc/$pid/stat)
echo "server CPU during the run: $(( (cpu1 - cpu0) * 10 )) ms; RSS $(awk '/VmRSS/{print $2/1024 " MiB"}' /proc/$pid/status)"

# PAGES=DURATION: then read pages of 100 (newest first) from the room the sends filled, one
# connection at a time, as a client scrolling back does.
if [ -n "${PAGES:-}" ]; then
  cat >"$dir/page.lua" <<LUA
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer $token"
LUA
  cpu0=$(awk '{print $14+$15}' /proc/$pid/stat)
  wrk -t1 -c1 -d"$PAGES" --latency -s "$dir/page.lua" "$base/v1/rooms/$room/messages?direction=back&limit=100"
  cpu1=$(awk '{print $14+$15}' /proc/$pid/stat)
  echo "server CPU during the page run: $(( (cpu1 - cpu0) * 10 )) ms"
fi
