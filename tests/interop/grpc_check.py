#!/usr/bin/env python3
"""Drives a running Tessera's gRPC TokenService with an independent gRPC implementation (Google's
grpcio, C core), from the proto file as any internal service would compile it:
- IssueToken, Introspect (valid token and junk), ExchangeForUser (act names the partner), Revoke
  and introspection afterwards;
- the status codes the proto promises: UNAUTHENTICATED for missing, wrong or malformed
  credentials, INVALID_ARGUMENT for a malformed request, the OAuth error code first in the
  message;
- hostile input: a 1 MiB message, over the 64 KiB limit, is refused with RESOURCE_EXHAUSTED (gRPC's
  status code table), and the channel still serves afterwards.

Run by .ci/interop, which starts the server and creates the clients:
  python3 grpc_check.py HOST:PORT CLIENT_ID CLIENT_SECRET RS_ID RS_SECRET USER_ID
The partner client must have the scopes orders:read and orders:write and --act-as tenant; the
resource server the introspect capability. Prints one line per check and never a token or a
secret; exits 1 if any check failed.
"""
import atexit
import base64
import importlib
import pathlib
import shutil
import sys
import tempfile

import grpc
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_stubs():
    """tessera_pb2 and tessera_pb2_grpc, compiled from proto/ into a temporary directory."""
    out = tempfile.mkdtemp(prefix="tessera-grpc-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    proto_include = pathlib.Path(protoc.__file__).parent / "_proto"
    rc = protoc.main([
        "protoc", f"-I{ROOT / 'proto'}", f"-I{proto_include}", f"--python_out={out}",
        f"--grpc_python_out={out}", str(ROOT / "proto/tessera/v1/tessera.proto"),
    ])
    if rc != 0:
        sys.exit(f"protoc failed ({rc})")
    sys.path.insert(0, out)
    return importlib.import_module("tessera.v1.tessera_pb2"), importlib.import_module("tessera.v1.tessera_pb2_grpc")


def main():
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    target, client_id, secret, rs_id, rs_secret, user = sys.argv[1:]
    pb, rpc = load_stubs()
    failures = 0

    def check(name, cond, detail=""):
        nonlocal failures
        print(f"{'ok  ' if cond else 'FAIL'} {name}" + (f" ({detail})" if detail else ""), flush=True)
        failures += not cond

    def auth(cid, sec):
        return (("authorization", "Basic " + base64.b64encode(f"{cid}:{sec}".encode()).decode()),)

    def expect_status(name, call, code, prefix=None):
        try:
            call()
            check(name, False, "the call succeeded")
        except grpc.RpcError as e:
            ok = e.code() == code and (prefix is None or (e.details() or "").startswith(prefix))
            check(name, ok, f"{e.code().name}, message starts {(e.details() or '')[:len(prefix or '') or 20]!r}")

    partner, rs = auth(client_id, secret), auth(rs_id, rs_secret)
    with grpc.insecure_channel(target) as channel:
        stub = rpc.TokenServiceStub(channel)
        t = stub.IssueToken(pb.IssueTokenRequest(scope=["orders:read"]), metadata=partner, timeout=10)
        check("IssueToken", t.token_type == "Bearer" and list(t.scope) == ["orders:read"] and t.expires_in > 0
              and t.access_token.count(".") == 2)
        token = t.access_token

        r = stub.Introspect(pb.IntrospectRequest(token=token), metadata=rs, timeout=10)
        check("Introspect a valid token", r.active and r.client_id == client_id and list(r.scope) == ["orders:read"])
        r = stub.Introspect(pb.IntrospectRequest(token="not-a-token"), metadata=rs, timeout=10)
        check("Introspect junk: inactive, nothing else", not r.active and r.client_id == "" and not r.scope)

        u = stub.ExchangeForUser(pb.ExchangeForUserRequest(subject=user, scope=["orders:read"]), metadata=partner, timeout=10)
        check("ExchangeForUser", u.issued_token_type == "urn:ietf:params:oauth:token-type:access_token"
              and list(u.scope) == ["orders:read"])
        r = stub.Introspect(pb.IntrospectRequest(token=u.access_token), metadata=rs, timeout=10)
        check("the user token introspects with act naming the partner", r.active and r.sub == user
              and r.act.sub == client_id)

        expect_status("IssueToken without credentials: UNAUTHENTICATED",
                      lambda: stub.IssueToken(pb.IssueTokenRequest(), timeout=10), grpc.StatusCode.UNAUTHENTICATED)
        expect_status("IssueToken with a wrong secret: UNAUTHENTICATED, invalid_client",
                      lambda: stub.IssueToken(pb.IssueTokenRequest(), metadata=auth(client_id, "wrong"), timeout=10),
                      grpc.StatusCode.UNAUTHENTICATED, "invalid_client")
        expect_status("IssueToken with malformed Basic credentials: UNAUTHENTICATED",
                      lambda: stub.IssueToken(pb.IssueTokenRequest(), metadata=(("authorization", "Basic %%%"),), timeout=10),
                      grpc.StatusCode.UNAUTHENTICATED)
        expect_status("IssueToken for a scope the client does not have: invalid_scope first",
                      lambda: stub.IssueToken(pb.IssueTokenRequest(scope=["admin"]), metadata=partner, timeout=10),
                      grpc.StatusCode.INVALID_ARGUMENT, "invalid_scope")
        expect_status("ExchangeForUser with neither subject nor subject_token: INVALID_ARGUMENT",
                      lambda: stub.ExchangeForUser(pb.ExchangeForUserRequest(), metadata=partner, timeout=10),
                      grpc.StatusCode.INVALID_ARGUMENT)
        # gRPC's status code table: a message over the configured limit is RESOURCE_EXHAUSTED.
        expect_status("Introspect with a 1 MiB message (the limit is 64 KiB): RESOURCE_EXHAUSTED",
                      lambda: stub.Introspect(pb.IntrospectRequest(token="A" * (1 << 20)), metadata=rs, timeout=10),
                      grpc.StatusCode.RESOURCE_EXHAUSTED)
        r = stub.Introspect(pb.IntrospectRequest(token=token), metadata=rs, timeout=10)
        check("the same channel still serves afterwards", r.active)

        stub.Revoke(pb.RevokeRequest(token=token), metadata=partner, timeout=10)
        stub.Revoke(pb.RevokeRequest(token="never-issued"), metadata=partner, timeout=10)
        r = stub.Introspect(pb.IntrospectRequest(token=token), metadata=rs, timeout=10)
        check("Revoke, then the token introspects inactive (and revoking junk succeeds)", not r.active)

    print(f"grpc interop: {failures} failed" if failures else "grpc interop: all passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
