#!/usr/bin/env bash
# Regenerates the profile that release builds are optimised with (.cargo/tessera.profdata, which
# the rustc wrapper .cargo/rustc-pgo passes to `-C profile-use`): builds an instrumented server,
# runs it under the benchmark workloads of benches/ab.sh (REST and gRPC issuance, introspection
# and exchange on SQLite, issuance and exchange on PostgreSQL), and merges what it recorded. Run
# it after changes to the hot paths or to the dependencies; a stale profile still builds
# (functions it does not match are optimised without it), it only helps less. Everything runs on
# 127.0.0.1.
#
#   benches/pgo.sh            # about 10 minutes: one instrumented release build, then the loads
#   SECS=2 benches/pgo.sh     # shorter loads
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECS=${SECS:-4}
OUT=.cargo/tessera.profdata
profdata() { find "$(rustc --print sysroot)" -name llvm-profdata -type f 2>/dev/null | head -1; }
[ -n "$(profdata)" ] || rustup component add llvm-tools
RAW=$(mktemp -d)
trap 'rm -rf "$RAW"' EXIT

# The wrapper passes instrumented builds (`-C profile-generate`) through without the old profile.
# Their own target directory keeps the normal release build untouched.
RUSTFLAGS="-Cprofile-generate=$RAW" cargo build --release --locked --bin tessera \
  --target-dir target/pgo-generate
BIN=target/pgo-generate/release/tessera

# One run of each operation on each side of ab.sh (A and B are the same binary here). The
# command-line calls ab.sh makes (migrate, client create) are profiled too; they are brief.
for op in client_credentials introspection exchange grpc_issue grpc_introspect grpc_exchange; do
  PAIRS=1 SECS=$SECS benches/ab.sh "$BIN" "$BIN" "$op" | tail -2
done
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  for op in client_credentials exchange; do
    DB=pg PAIRS=1 SECS=$SECS benches/ab.sh "$BIN" "$BIN" "$op" | tail -2
  done
else
  echo "PostgreSQL is not reachable on 127.0.0.1:5432: profiling SQLite only" >&2
fi

# Only functions that ran at least KEEP times (default 1,000: per request, per audit group, per
# connection) are kept, which makes the file a tenth of the size; the functions left out (start-up,
# migrations, the command line) are optimised as without a profile.
KEEP=${KEEP:-1000}
"$(profdata)" merge --sparse --text -o "$RAW/all.proftext" "$RAW"/*.profraw
python3 - "$RAW/all.proftext" "$RAW/hot.proftext" "$KEEP" <<'PY'
import sys
source, target, keep = sys.argv[1], sys.argv[2], int(sys.argv[3])
head, marker, body = open(source).read().partition(":ir\n")
kept = []
for record in body.strip("\n").split("\n\n"):
    lines = record.split("\n")
    n = int(lines[lines.index("# Num Counters:") + 1])
    start = lines.index("# Counter Values:") + 1
    if max(map(int, lines[start:start + n]), default=0) >= keep:
        kept.append(record)
open(target, "w").write(head + marker + "\n\n".join(kept) + "\n")
print(f"kept {len(kept)} functions that ran at least {keep} times")
PY
"$(profdata)" merge -o "$OUT" "$RAW/hot.proftext"
ls -l "$OUT"
# Cargo does not track the profile as an input of the dependencies: start the release build
# afresh, so that the next one compiles every crate with the new profile.
cargo clean --release
