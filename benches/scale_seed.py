"""Adds N clients and M revoked-but-unexpired token ids to a migrated Tessera SQLite database,
for the "state at scale" figures (benches/load.sh, and benches/ab.sh with SCALE_SIDE). The
clients reuse the hash of a client already there (they are never authenticated); the revoked
ids expire in 50 minutes.

    python3 benches/scale_seed.py DB_FILE [CLIENTS [REVOKED]]
"""
import base64
import os
import sqlite3
import sys
import time

db = sys.argv[1]
n_clients = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
n_revoked = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
c = sqlite3.connect(db)
h = c.execute("select hash from client_secrets limit 1").fetchone()[0]
now = int(time.time())
c.executemany(
    "insert into clients(client_id,name,tenant,scopes,audiences,capabilities,access_token_ttl_seconds,disabled,"
    "tokens_revoked_before_ms,created_at,updated_at,act_as,user_token_ttl_seconds) "
    "values (?,?,?,?,?,?,0,0,0,?,?,'none',0)",
    ((f"cl_scale{i:018d}", f"scale {i}", "scale", "api:read", "", "", now, now) for i in range(n_clients)),
)
c.executemany(
    "insert into client_secrets(secret_id,client_id,hash,created_at) values (?,?,?,?)",
    ((f"{i:016x}", f"cl_scale{i:018d}", h, now) for i in range(n_clients)),
)
c.executemany(
    "insert into revoked_tokens(jti,client_id,expires_at,revoked_at) values (?,?,?,?)",
    (
        (base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode(), "cl_scale", now + 3000, now)
        for _ in range(n_revoked)
    ),
)
c.commit()
