#!/usr/bin/env bash
# Interleaved A/B comparison of two server binaries (or one binary in two configurations), the
# method behind the "What changed" figures in benches/HISTORY.md: each run starts a fresh server on
# a new SQLite file, warms up for 2 s, then measures SECS of `wrk -t2 -cCONNS` (CONNS 64 unless
# set); A and B alternate, PAIRS times, so a drift in the machine's speed hits both alike. Server
# CPU per request comes from /proc/PID/stat (user and system apart), with the share of the audit
# writer's thread beside it, the mean audit group (records per commit, from /metrics) and, with
# DB=pg, the CPU of PostgreSQL's processes per request; the last column is the load generator's
# own CPU per request (wrk or h2load, on the same cores). Everything runs on 127.0.0.1; every run
# is bounded.
#
#   benches/ab.sh OLD_BINARY NEW_BINARY [client_credentials|introspection|exchange]
#   A_ENV="TESSERA_AUDIT=off" benches/ab.sh target/release/tessera target/release/tessera   # one binary, two settings
#   PAIRS=5 SECS=8 CONNS=16 benches/ab.sh ...
#   DB=pg benches/ab.sh OLD NEW   # a fresh PostgreSQL database on 127.0.0.1:5432 for each run
#   STREAMS=8 CONNS=8 benches/ab.sh OLD NEW grpc_issue   # gRPC through h2load (grpc_issue, grpc_introspect,
#                                                          # grpc_exchange): CONNS connections x STREAMS calls each
#   SCALE_SIDE=B benches/ab.sh BIN BIN   # SQLite: B's database also holds 100,000 clients and 1,000,000
#                                        # revoked-but-unexpired token ids (benches/scale_seed.py);
#                                        # SCALE_SIDE=AB: both sides
#   B_OP=grpc_issue B_CONNS=8 B_STREAMS=8 benches/ab.sh BIN BIN client_credentials
#                                        # one binary, two operations: REST issuance against gRPC
#                                        # IssueToken multiplexed, interleaved
#   PERF_DIR=/tmp/prof PAIRS=1 benches/ab.sh BIN BIN   # also `perf record -g` the server through
#                                        # each measurement (PERF_DIR/A1.data, ...) and print where
#                                        # its CPU went (benches/perf_buckets.py); perf slows the
#                                        # server, so compare throughput without it
set -euo pipefail
A=$(realpath "$1"); B=$(realpath "$2"); OP=${3:-client_credentials}
PAIRS=${PAIRS:-3}; SECS=${SECS:-6}; CONNS=${CONNS:-64}; STREAMS=${STREAMS:-1}; DB=${DB:-sqlite}; SCALE_SIDE=${SCALE_SIDE:-}
B_OP=${B_OP:-$OP}; B_CONNS=${B_CONNS:-$CONNS}; B_STREAMS=${B_STREAMS:-$STREAMS}
PG_DB=tessera_ab_$$
read -r -a A_ENV <<< "${A_ENV:-}"; read -r -a B_ENV <<< "${B_ENV:-}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LUA=$PWD/benches/post_form.lua
PORT_HTTP=${PORT_HTTP:-3600} PORT_GRPC=${PORT_GRPC:-3601} PORT_OPS=${PORT_OPS:-3602}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null; }
if [ -n "${PERF_DIR:-}" ]; then
  command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
  mkdir -p "$PERF_DIR"; PERF_DIR=$(realpath "$PERF_DIR"); rm -f "$PERF_DIR"/[AB]*.data
fi
WORK=$(mktemp -d)
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"
  [ "$DB" = pg ] && psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" postgres >/dev/null 2>&1 || true
}
trap cleanup EXIT
# grpc_body FILE FIELD=STRING...: one length-prefixed protobuf message of string fields.
grpc_body() {
  python3 - "$@" <<'PY'
import struct, sys
def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([b])
        out += bytes([b | 0x80])
msg = b""
for arg in sys.argv[2:]:
    field, value = arg.split("=", 1)
    value = value.encode()
    msg += bytes([int(field) << 3 | 2]) + varint(len(value)) + value
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(msg)) + msg)
PY
}
# load SECONDS: one run of wrk or h2load against the server; prints one JSON line, and leaves
# the load generator's own CPU seconds (user system) in $WORK/generator.
load() {
  local TIMEFORMAT='%U %S'
  { time generate "$1" ; } 2> "$WORK/generator"
}
generate() {
  if [ -z "$method" ]; then
    WRK_PATH=$path WRK_BODY=$body WRK_BASIC=$basic timeout $(($1 + 30)) wrk -t2 -c"$conns" -d"$1s" --latency -s "$LUA" \
      "http://127.0.0.1:$PORT_HTTP" 2>&1 | sed -n 's/^WRKJSON //p'
    return
  fi
  timeout $(($1 + 30)) h2load -t 2 -c "$conns" -m "$streams" -D "$1" -d "$WORK/body.bin" -H 'content-type: application/grpc' \
    -H 'te: trailers' -H "authorization: Basic $basic" "http://127.0.0.1:$PORT_GRPC/tessera.v1.TokenService/$method" 2>&1 \
    | python3 -c '
import json, re, sys
out = sys.stdin.read()
done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
ok = int(re.search(r"status codes: (\d+) 2xx", out).group(1))
rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
lat = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(\w+)", out)  # the mean
mx = float(lat.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[lat.group(2)] if lat else 0
print(json.dumps({"rps": rps, "requests": done, "p99_us": mx, "non2xx": done - ok, "socket_errors": 0}))'
}
json_field() { python3 -c 'import sys,json; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# run LABEL BINARY [ENV=VALUE...]: one measurement, one line of output.
run() {
  local label=$1 bin=$2; shift 2
  rm -rf "$WORK/db"; mkdir "$WORK/db"
  local url="sqlite://$WORK/db/t.db?mode=rwc"
  if [ "$DB" = pg ]; then
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB" postgres >/dev/null
    url="postgres://postgres@127.0.0.1:5432/$PG_DB"
  fi
  local -a env=(TESSERA_DATABASE_URL="$url" TESSERA_HTTP_ADDR=127.0.0.1:$PORT_HTTP
    TESSERA_GRPC_ADDR=127.0.0.1:$PORT_GRPC TESSERA_OPS_ADDR=127.0.0.1:$PORT_OPS TESSERA_ISSUER=http://127.0.0.1:$PORT_HTTP
    TESSERA_KEY_ENCRYPTION_KEY="$(head -c 32 /dev/urandom | base64)")
  env "${env[@]}" "$bin" migrate >/dev/null 2>&1
  if [ "$DB" = sqlite ] && [ -n "$SCALE_SIDE" ] && [[ "$SCALE_SIDE" == *"${label:0:1}"* ]]; then
    env "${env[@]}" "$bin" client create --name seed >/dev/null 2>&1
    python3 benches/scale_seed.py "$WORK/db/t.db"
  fi
  env "${env[@]}" "$@" "$bin" serve --no-migrate > "$WORK/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 3000); do curl -fs -o /dev/null "http://127.0.0.1:$PORT_OPS/readyz" && break; sleep 0.01; done  # at scale: seconds
  client() { env "${env[@]}" "$bin" client create --scope "api:read api:write" --json "$@" 2>/dev/null; }
  local cc rs ex id secret path body basic token method=
  cc=$(client --name bench); rs=$(client --name rs --capability introspect); ex=$(client --name shop --tenant shop --act-as tenant)
  id=$(json_field client_id <<< "$cc"); secret=$(json_field client_secret <<< "$cc")
  token=$(curl -fs -u "$id:$secret" -d grant_type=client_credentials "http://127.0.0.1:$PORT_HTTP/oauth2/token" | json_field access_token)
  local op=$OP conns=$CONNS streams=$STREAMS
  [ "${label:0:1}" = B ] && { op=$B_OP; conns=$B_CONNS; streams=$B_STREAMS; }
  case $op in
    client_credentials) path=/oauth2/token; body="grant_type=client_credentials&scope=api%3Aread" ;;
    introspection) path=/oauth2/introspect; body="token=$token&token_type_hint=access_token"; cc=$rs ;;
    exchange) path=/oauth2/token; cc=$ex
      body="grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=alice&subject_token_type=urn%3Atessera%3Aparams%3Aoauth%3Atoken-type%3Auser_id&scope=api%3Aread" ;;
    grpc_issue) method=IssueToken; grpc_body "$WORK/body.bin" 1=api:read ;;
    grpc_introspect) method=Introspect; grpc_body "$WORK/body.bin" "1=$token"; cc=$rs ;;
    grpc_exchange) method=ExchangeForUser; grpc_body "$WORK/body.bin" 1=alice 2=api:read; cc=$ex ;;
    *) echo "unknown operation $op" >&2; exit 2 ;;
  esac
  basic=$(printf '%s:%s' "$(json_field client_id <<< "$cc")" "$(json_field client_secret <<< "$cc")" | base64 -w0)
  load 2 >/dev/null || true
  local before after out groups0 groups1
  before="$(awk '{print $14, $15}' "/proc/$PID/stat") $(audit_ticks) $(postgres_ticks)"; groups0=$(audit_groups)
  local perf_pid=""
  if [ -n "${PERF_DIR:-}" ]; then
    timeout $((SECS + 30)) perf record -q -F "${PERF_FREQ:-2999}" -g -o "$PERF_DIR/$label.data" -p "$PID" -- sleep "$SECS" \
      >/dev/null 2>&1 & perf_pid=$!
  fi
  out=$(load "$SECS")
  if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
  after="$(awk '{print $14, $15}' "/proc/$PID/stat") $(audit_ticks) $(postgres_ticks)"; groups1=$(audit_groups)
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  python3 - "$label" "$out" "$before" "$after" "$(getconf CLK_TCK)" "$groups0" "$groups1" "$(cat "$WORK/generator")" <<'PY' | tee -a "$WORK/results"
import json, sys
label, w, hz = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[5])
(u0, s0, a0, p0), (u1, s1, a1, p1) = (map(int, sys.argv[i].split()) for i in (3, 4))
(c0, r0), (c1, r1) = (map(float, sys.argv[i].split()) for i in (6, 7))
n = max(w["requests"], 1)
# The shell's `time` line is the last of the generator's stderr.
generator = sum(map(float, sys.argv[8].splitlines()[-1].split())) * 1e6 / n
us = lambda ticks: ticks / hz * 1e6 / n
group = f"{(r1 - r0) / (c1 - c0):.1f}" if c1 > c0 else "-"
print(f'{label}\t{w["rps"]:.0f}\t{w["p99_us"] / 1000:.2f}\t{us(u1 - u0 + s1 - s0):.1f}\t{us(u1 - u0):.1f}\t{us(s1 - s0):.1f}\t{us(a1 - a0):.1f}\t{group}\t{us(p1 - p0):.1f}\t{generator:.1f}\t{w["non2xx"] + w["socket_errors"]}')
PY
}
# The audit writer's thread: its CPU ticks (user + system).
audit_ticks() {
  local t
  for t in /proc/"$PID"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = tessera-audit ] && { awk '{print $14 + $15}' "$t/stat"; return; }
  done
  echo 0
}
# PostgreSQL's processes (the backends and the WAL writer): their CPU ticks, 0 on SQLite.
postgres_ticks() {
  [ "$DB" = pg ] || { echo 0; return; }
  awk '$2 == "(postgres)" {t += $14 + $15} END {print t + 0}' /proc/[0-9]*/stat 2>/dev/null
}
# The audit writer's group commits and the records in them so far, from /metrics (0 0 if unreadable).
audit_groups() {
  { curl -fs "http://127.0.0.1:$PORT_OPS/metrics" || true; } | awk '/^tessera_audit_batch_records_count/ {c=$2} /^tessera_audit_batch_records_sum/ {s=$2} END {print c+0, s+0}'
}

echo -e "run\treq/s\tp99 ms (h2load: mean)\tCPU µs/req\tuser\tsystem\taudit writer\taudit group\tPostgreSQL\tgenerator\terrors"
for i in $(seq 1 "$PAIRS"); do
  run "A$i" "$A" "${A_ENV[@]}"
  run "B$i" "$B" "${B_ENV[@]}"
done
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
for side in "AB":
    r = [x for x in rows if x[0].startswith(side)]
    rps = [float(x[1]) for x in r]; cpu = [float(x[3]) for x in r]; p99 = [float(x[2]) for x in r]
    audit = [float(x[6]) for x in r]; pg = [float(x[8]) for x in r]; gen = [float(x[9]) for x in r]
    print(f"{side}: median {statistics.median(rps):.0f} req/s [{min(rps):.0f}-{max(rps):.0f}], "
          f"{statistics.median(cpu):.1f} µs/req [{min(cpu):.1f}-{max(cpu):.1f}], p99 median {statistics.median(p99):.2f} ms, "
          f"audit writer {statistics.median(audit):.1f} µs/req"
          + (f", PostgreSQL {statistics.median(pg):.1f} µs/req" if any(pg) else "")
          + f", load generator {statistics.median(gen):.1f} µs/req")
PY
if [ -n "${PERF_DIR:-}" ]; then
  for f in "$PERF_DIR"/[AB]*.data; do
    # perf's own errors went to /dev/null: a run it could not record (perf_event_paranoid, say)
    # has no file, and says so rather than failing the whole comparison at the end.
    if [ -s "$f" ]; then python3 benches/perf_buckets.py "$f"; else echo "no perf profile in $f" >&2; fi
  done
fi
