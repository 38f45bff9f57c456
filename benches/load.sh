#!/usr/bin/env bash
# Tessera load figures beyond the side-by-side peer harness (../shared/bench/peers/run.sh):
# gRPC via h2load, resident memory under load, start-to-ready, the cost of the audit trail,
# a wrong-secret flood next to honest clients, and state at scale (100,000 clients and
# 1,000,000 revoked-but-unexpired token ids). Everything runs on 127.0.0.1; every load run is
# bounded by -d/-D and `timeout`; servers are stopped by PID.
#
#   benches/load.sh                     # SQLite
#   DB=pg benches/load.sh               # a fresh PostgreSQL database on 127.0.0.1:5432
#   DURATION=15 CONNS=64 benches/load.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
DB=${DB:-sqlite}
SCALE_CLIENTS=${SCALE_CLIENTS:-100000}
SCALE_REVOKED=${SCALE_REVOKED:-1000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release/tessera
PORT_HTTP=3500 PORT_GRPC=3501 PORT_OPS=3502
BASE=http://127.0.0.1:$PORT_HTTP
log() { echo "[load $(date -u +%H:%M:%S)] $*" >&2; }

command -v wrk >/dev/null || { log "installing wrk"; apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v h2load >/dev/null || { log "installing h2load"; apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null; }
log "cargo build --release"
cargo build --release -q --bin tessera

WORK=$(mktemp -d)
SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"; for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
cleanup() { stop_server; rm -rf "$WORK"; [ -n "${PG_DB:-}" ] && psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" postgres >/dev/null 2>&1 || true; }
trap cleanup EXIT

fresh_db() {
  if [ "$DB" = pg ]; then
    [ -n "${PG_DB:-}" ] && psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" postgres >/dev/null
    PG_DB=tessera_load_$$_$RANDOM
    psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $PG_DB" postgres >/dev/null
    export TESSERA_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$PG_DB"
  else
    rm -f "$WORK"/t.db*
    export TESSERA_DATABASE_URL="sqlite://$WORK/t.db?mode=rwc"
  fi
  "$BIN" migrate 2>/dev/null
}
export TESSERA_HTTP_ADDR=127.0.0.1:$PORT_HTTP TESSERA_GRPC_ADDR=127.0.0.1:$PORT_GRPC TESSERA_OPS_ADDR=127.0.0.1:$PORT_OPS
# The default configuration, as users run it (the log filter included: it decides which spans are built).
export TESSERA_ISSUER=$BASE
unset TESSERA_LOG RUST_LOG
export TESSERA_KEY_ENCRYPTION_KEY=${TESSERA_KEY_ENCRYPTION_KEY:-$(head -c 32 /dev/urandom | base64)}

# start_server [ENV=VALUE...] -> SERVER_PID, READY_MS (exec to /readyz 200)
start_server() {
  local t0 t1
  t0=$(date +%s%N)
  env "$@" "$BIN" serve --no-migrate > "$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 3000); do
    if curl -fs -o /dev/null "http://127.0.0.1:$PORT_OPS/readyz"; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.002
  done
  t1=$(date +%s%N)
  READY_MS=$(( (t1 - t0) / 1000000 ))
}
client() { # name args... -> "id secret"
  local name=$1; shift
  "$BIN" client create --name "$name" --scope "api:read api:write" "$@" --json 2>/dev/null \
    | python3 -c 'import sys,json; d=json.load(sys.stdin); print(d["client_id"], d["client_secret"])'
}
b64() { printf '%s:%s' "$1" "$2" | base64 -w0; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$SERVER_PID/status"; }
hwm_kib() { awk '/VmHWM/{print $2}' "/proc/$SERVER_PID/status"; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$SERVER_PID/stat"; }

RESULTS="$WORK/results.tsv"; : > "$RESULTS"
# wrk_run LABEL PATH BODY BASIC [CONNS]
wrk_run() {
  local label=$1 path=$2 body=$3 basic=$4 conns=${5:-$CONNS} out c0 c1 line
  WRK_PATH=$path WRK_BODY=$body WRK_BASIC=$basic timeout $((WARMUP + 20)) \
    wrk -t2 -c"$conns" -d"${WARMUP}s" -s benches/post_form.lua "$BASE" >/dev/null 2>&1 || true
  c0=$(cpu_ticks)
  out=$(WRK_PATH=$path WRK_BODY=$body WRK_BASIC=$basic timeout $((DURATION + 20)) \
    wrk -t2 -c"$conns" -d"${DURATION}s" --latency -s benches/post_form.lua "$BASE" 2>&1)
  c1=$(cpu_ticks)
  line=$(sed -n 's/^WRKJSON //p' <<< "$out")
  python3 - "$label" "$line" "$c0" "$c1" "$(getconf CLK_TCK)" "$(rss_kib)" >> "$RESULTS" <<'PY'
import json, sys
label, line, c0, c1, hz, rss = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
cpu_us = (c1 - c0) / hz * 1e6 / max(line["requests"], 1)
print(f'{label}\t{line["rps"]:.0f}\t{line["p50_us"]/1000:.2f}\t{line["p99_us"]/1000:.2f}\t{line["non2xx"]+line["socket_errors"]}\t{cpu_us:.1f}\t{rss/1024:.1f}')
PY
  tail -1 "$RESULTS" >&2
}
# grpc_body FILE python-expr-producing-message-bytes
grpc_frame() { python3 -c 'import sys,struct; m=bytes.fromhex(sys.argv[1]); sys.stdout.buffer.write(b"\0"+struct.pack(">I",len(m))+m)' "$1" > "$2"; }
pb_str() { python3 -c 'import sys; f=int(sys.argv[1]); s=sys.argv[2].encode()
def v(n):
  o=b""
  while True:
    b=n&0x7f; n>>=7
    if n: o+=bytes([b|0x80])
    else: return o+bytes([b])
sys.stdout.write((bytes([f<<3|2])+v(len(s))+s).hex())' "$1" "$2"; }
# h2load_run LABEL METHOD BODYFILE BASIC [CONNECTIONS STREAMS]: two client threads, like wrk -t2;
# by default one stream per connection on $CONNS connections (as REST's HTTP/1.1 must do), or
# CONNECTIONS x STREAMS concurrent calls multiplexed, as gRPC clients do over long-lived channels.
h2load_run() {
  local label=$1 method=$2 body=$3 basic=$4 conns=${5:-$CONNS} streams=${6:-1} out c0 c1
  timeout 60 h2load -t 2 -c "$conns" -m "$streams" -D "$WARMUP" -d "$body" -H 'content-type: application/grpc' -H 'te: trailers' \
    -H "authorization: Basic $basic" "http://127.0.0.1:$PORT_GRPC/tessera.v1.$method" >/dev/null 2>&1 || true
  c0=$(cpu_ticks)
  out=$(timeout $((DURATION + 30)) h2load -t 2 -c "$conns" -m "$streams" -D "$DURATION" -d "$body" -H 'content-type: application/grpc' \
    -H 'te: trailers' -H "authorization: Basic $basic" "http://127.0.0.1:$PORT_GRPC/tessera.v1.$method" 2>&1)
  c1=$(cpu_ticks)
  python3 - "$label" "$c0" "$c1" "$(getconf CLK_TCK)" "$(rss_kib)" >> "$RESULTS" <<PY
import re, sys
out = """$out"""
label, c0, c1, hz, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
ok = int(re.search(r"status codes: (\d+) 2xx", out).group(1))
lat = re.search(r"time for request:\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)", out)
unit = lambda v, u: float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
mean = unit(lat.group(5), lat.group(6)) if lat else 0
cpu_us = (c1 - c0) / hz * 1e6 / max(done, 1)
print(f"{label}\t{rps:.0f}\t{mean:.2f} (mean)\t-\t{done-ok}\t{cpu_us:.1f}\t{rss/1024:.1f}")
PY
  tail -1 "$RESULTS" >&2
}

metric() { curl -s "http://127.0.0.1:$PORT_OPS/metrics" | awk -v k="$1" '$1==k{print $2}'; }

TOKEN_BODY="grant_type=client_credentials&scope=api%3Aread"
X_BODY="grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=alice&subject_token_type=urn%3Atessera%3Aparams%3Aoauth%3Atoken-type%3Auser_id&scope=api%3Aread"

# ------------------------------------------------------------------ main run
fresh_db
read -r CC_ID CC_SECRET <<< "$(client bench)"
read -r RS_ID RS_SECRET <<< "$(client resource-server --capability introspect)"
read -r EX_ID EX_SECRET <<< "$(client shopfront --tenant shop --act-as tenant)"
for i in 1 2 3 4 5; do start_server; STARTS+=("$READY_MS"); stop_server; done
start_server
log "start to ready (ms, 5 starts, $DB, migrated): ${STARTS[*]}"
TOKEN=$(curl -s -u "$CC_ID:$CC_SECRET" -d "$TOKEN_BODY" "$BASE/oauth2/token" | python3 -c 'import sys,json; print(json.load(sys.stdin)["access_token"])')
wrk_run "REST token (client credentials)" /oauth2/token "$TOKEN_BODY" "$(b64 "$CC_ID" "$CC_SECRET")"
wrk_run "REST introspect" /oauth2/introspect "token=$TOKEN" "$(b64 "$RS_ID" "$RS_SECRET")"
wrk_run "REST token exchange" /oauth2/token "$X_BODY" "$(b64 "$EX_ID" "$EX_SECRET")"
grpc_frame "$(pb_str 1 api:read)" "$WORK/issue.bin"
grpc_frame "$(pb_str 1 "$TOKEN")" "$WORK/introspect.bin"
grpc_frame "$(pb_str 1 alice)$(pb_str 2 api:read)" "$WORK/exchange.bin"
before=$(metric 'tessera_requests_total{operation="/tessera.v1.TokenService/IssueToken",outcome="ok",transport="grpc"}')
h2load_run "gRPC IssueToken" TokenService/IssueToken "$WORK/issue.bin" "$(b64 "$CC_ID" "$CC_SECRET")"
h2load_run "gRPC Introspect" TokenService/Introspect "$WORK/introspect.bin" "$(b64 "$RS_ID" "$RS_SECRET")"
h2load_run "gRPC ExchangeForUser" TokenService/ExchangeForUser "$WORK/exchange.bin" "$(b64 "$EX_ID" "$EX_SECRET")"
MUX_CONNS=$((CONNS / 8))
h2load_run "gRPC IssueToken, $MUX_CONNS connections x 8 streams" TokenService/IssueToken "$WORK/issue.bin" "$(b64 "$CC_ID" "$CC_SECRET")" "$MUX_CONNS" 8
h2load_run "gRPC Introspect, $MUX_CONNS connections x 8 streams" TokenService/Introspect "$WORK/introspect.bin" "$(b64 "$RS_ID" "$RS_SECRET")" "$MUX_CONNS" 8
h2load_run "gRPC ExchangeForUser, $MUX_CONNS connections x 8 streams" TokenService/ExchangeForUser "$WORK/exchange.bin" "$(b64 "$EX_ID" "$EX_SECRET")" "$MUX_CONNS" 8
log "gRPC outcomes: $(curl -s "http://127.0.0.1:$PORT_OPS/metrics" | grep '^tessera_requests_total{.*transport="grpc"' | tr '\n' ' ')"
PEAK_MIB=$(( $(hwm_kib) / 1024 ))
log "peak resident memory under the load above: ${PEAK_MIB} MiB"
stop_server

# ------------------------------------------------------------------ audit off
start_server TESSERA_AUDIT=off
wrk_run "REST token, audit OFF" /oauth2/token "$TOKEN_BODY" "$(b64 "$CC_ID" "$CC_SECRET")"
stop_server

# ------------------------------------------------------------------ wrong-secret flood
start_server
half=$((CONNS / 2))
WRK_PATH=/oauth2/token WRK_BODY="$TOKEN_BODY" WRK_BASIC="$(b64 "$CC_ID" "nope.$CC_SECRET")" timeout $((DURATION + WARMUP + 20)) \
  wrk -t1 -c"$half" -d"$((DURATION + WARMUP + 2))s" -s benches/post_form.lua "$BASE" > "$WORK/flood.txt" 2>&1 &
FLOOD=$!
sleep 1
wrk_run "REST token, honest clients during a wrong-secret flood ($half + $half conns)" /oauth2/token "$TOKEN_BODY" "$(b64 "$CC_ID" "$CC_SECRET")" "$half"
wait $FLOOD || true
log "flood: $(sed -n 's/^WRKJSON //p' "$WORK/flood.txt") (non2xx are the refused wrong secrets); argon2 runs: $(metric tessera_argon2_verifications_total), throttled: $(metric tessera_throttled_total)"
stop_server

# ------------------------------------------------------------------ scale (SQLite only)
if [ "$DB" = sqlite ]; then
  log "scale: inserting $SCALE_CLIENTS clients and $SCALE_REVOKED revoked token ids"
  python3 benches/scale_seed.py "$WORK/t.db" "$SCALE_CLIENTS" "$SCALE_REVOKED"
  start_server
  log "scale: start to ready with the state above: ${READY_MS} ms; resident after load: $(( $(rss_kib) / 1024 )) MiB"
  wrk_run "REST token, $SCALE_CLIENTS clients + $SCALE_REVOKED revoked ids" /oauth2/token "$TOKEN_BODY" "$(b64 "$CC_ID" "$CC_SECRET")"
  wrk_run "REST introspect, same state" /oauth2/introspect "token=$TOKEN" "$(b64 "$RS_ID" "$RS_SECRET")"
  stop_server
fi

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; wrk/h2load share the cores with the server; DB=$DB; ${CONNS} connections, ${DURATION}s per run"
echo "start to ready (ms): ${STARTS[*]}; peak RSS under load: ${PEAK_MIB} MiB"
printf '| %s | %s | %s | %s | %s | %s | %s |\n' operation "req/s" "p50 ms" "p99 ms" errors "server CPU µs/req" "RSS MiB"
echo "|---|---:|---:|---:|---:|---:|---:|"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1,$2,$3,$4,$5,$6,$7}' "$RESULTS"
