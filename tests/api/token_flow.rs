//! issue → introspect → revoke → inactive, on both transports; scopes; who may see what.
use serde_json::Value;

use crate::helpers::{Db, spawn_app};
use crate::on_both_dbs;

on_both_dbs!(
    rest_issue_introspect_revoke,
    grpc_issue_introspect_revoke,
    scope_subset_rules,
    introspecting_another_clients_token,
    revoking_another_clients_token,
    expiry_follows_the_clock,
);

async fn rest_issue_introspect_revoke(db: Db) {
    let app = spawn_app(db).await;
    let partner = app.create_client_in("shop", Some("acme"), "api:read api:write", &[]).await;

    let resp = app.token(&partner, Some("api:read")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "api:read");
    assert_eq!(body["expires_in"], 3600);
    assert!(body.get("refresh_token").is_none(), "client credentials issue no refresh token");
    let token = body["access_token"].as_str().unwrap();

    let info = app.introspect(&partner, token).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["sub"], partner.id.as_str());
    assert_eq!(info["client_id"], partner.id.as_str());
    assert_eq!(info["scope"], "api:read");
    assert_eq!(info["tenant"], "acme");
    assert_eq!(info["iss"], app.core.settings.issuer.as_str());
    assert_eq!(info["token_type"], "Bearer");
    assert!(info["exp"].as_i64().unwrap() > info["iat"].as_i64().unwrap());

    let resp = app.revoke(&partner, token).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.introspect(&partner, token).await, serde_json::json!({"active": false}));
    // RFC 7009 §2.2: revoking again, or an unknown token, is still 200.
    assert_eq!(app.revoke(&partner, token).await.status(), 200);
    assert_eq!(app.revoke(&partner, "not-a-token").await.status(), 200);
    // Durable: the revocation is in the database, not only in this replica's memory.
    let store = tessera::storage::Store::connect(&app.db_url).await.unwrap();
    let jti = info["jti"].as_str().unwrap();
    assert!(store.load_revocation(jti).await.unwrap().is_some());
}

async fn grpc_issue_introspect_revoke(db: Db) {
    let app = spawn_app(db).await;
    let partner = app.create_client("svc", "orders:read orders:write", &[]).await;

    let t = app.grpc_token(&partner, &["orders:read"]).await.unwrap();
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.scope, vec!["orders:read"]);
    assert_eq!(t.issued_token_type, "urn:ietf:params:oauth:token-type:access_token");
    assert!(t.expires_in > 0);

    let info = app.grpc_introspect(&partner, &t.access_token).await.unwrap();
    assert!(info.active);
    assert_eq!(info.sub, partner.id);
    assert_eq!(info.client_id, partner.id);
    assert_eq!(info.scope, vec!["orders:read"]);
    assert_eq!(info.tenant, "default");
    assert_eq!(info.token_type, "Bearer");
    assert!(!info.jti.is_empty());
    assert_eq!(info.aud, vec![app.core.settings.issuer.clone()]);

    app.grpc_revoke(&partner, &t.access_token).await.unwrap();
    let info = app.grpc_introspect(&partner, &t.access_token).await.unwrap();
    assert!(!info.active);
    assert!(info.sub.is_empty() && info.client_id.is_empty(), "inactive says nothing more");

    // The transports share one state: a REST token revoked over gRPC is inactive over REST.
    let token = app.access_token(&partner, None).await;
    app.grpc_revoke(&partner, &token).await.unwrap();
    assert!(!app.is_active(&partner, &token).await);
}

async fn scope_subset_rules(db: Db) {
    let app = spawn_app(db).await;
    let c = app.create_client("c", "a b c", &[]).await;

    let body: Value = app.token(&c, None).await.json().await.unwrap();
    assert_eq!(body["scope"], "a b c", "no scope requested: all allowed scopes");

    let body: Value = app.token(&c, Some("c a")).await.json().await.unwrap();
    assert_eq!(body["scope"], "a c");

    let resp = app.token(&c, Some("a d")).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_scope");

    let err = app.grpc_token(&c, &["a", "d"]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("invalid_scope"));
    let t = app.grpc_token(&c, &["b c"]).await.unwrap();
    assert_eq!(t.scope, vec!["b", "c"]);
}

async fn introspecting_another_clients_token(db: Db) {
    let app = spawn_app(db).await;
    let a = app.create_client("a", "x", &[]).await;
    let b = app.create_client("b", "x", &[]).await;
    let rs = app.create_client("resource-server", "", &["introspect"]).await;
    let token = app.access_token(&a, None).await;

    assert_eq!(app.introspect(&b, &token).await, serde_json::json!({"active": false}));
    assert!(!app.grpc_introspect(&b, &token).await.unwrap().active);
    let info = app.introspect(&rs, &token).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], a.id.as_str());
    assert!(app.grpc_introspect(&rs, &token).await.unwrap().active);
}

async fn revoking_another_clients_token(db: Db) {
    let app = spawn_app(db).await;
    let a = app.create_client("a", "x", &[]).await;
    let b = app.create_client("b", "x", &[]).await;
    let admin = app.create_client("revoker", "", &["revoke"]).await;
    let token = app.access_token(&a, None).await;

    let resp = app.revoke(&b, &token).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "unauthorized_client");
    assert_eq!(app.grpc_revoke(&b, &token).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    assert!(app.is_active(&a, &token).await, "refused revocation changes nothing");

    assert_eq!(app.revoke(&admin, &token).await.status(), 200);
    assert!(!app.is_active(&a, &token).await);
}

async fn expiry_follows_the_clock(db: Db) {
    let app = spawn_app(db).await;
    let c = app.create_client("c", "x", &[]).await;
    let token = app.access_token(&c, None).await;
    app.clock.advance_secs(3599);
    assert!(app.is_active(&c, &token).await);
    app.clock.advance_secs(1);
    assert!(!app.is_active(&c, &token).await, "expired exactly at exp");
    assert!(!app.grpc_introspect(&c, &token).await.unwrap().active);
}
