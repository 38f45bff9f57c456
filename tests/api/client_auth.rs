//! Client authentication: basic and post, wrong/unknown/disabled, secret rotation.
use serde_json::Value;

use crate::helpers::{Db, basic, spawn_app};
use crate::on_both_dbs;

on_both_dbs!(
    basic_and_post_authentication,
    failed_authentication,
    disabled_client_and_its_tokens,
    secret_rotation_without_downtime,
    revoke_all_tokens_of_a_client,
);

async fn basic_and_post_authentication(db: Db) {
    let app = spawn_app(db).await;
    let c = app.create_client("c", "x", &[]).await;
    let basic_resp = app.token(&c, None).await;
    assert_eq!(basic_resp.status(), 200);
    let post = app
        .post_form(
            "/oauth2/token",
            None,
            &[("grant_type", "client_credentials"), ("client_id", &c.id), ("client_secret", &c.secret)],
        )
        .await;
    assert_eq!(post.status(), 200);
    let body: Value = post.json().await.unwrap();
    assert!(body["access_token"].as_str().unwrap().len() > 100);

    // Both at once is two methods: RFC 6749 §2.3.
    let both = app
        .post_form(
            "/oauth2/token",
            Some((&c.id, &c.secret)),
            &[("grant_type", "client_credentials"), ("client_secret", &c.secret)],
        )
        .await;
    assert_eq!(both.status(), 400);
    assert_eq!(both.json::<Value>().await.unwrap()["error"], "invalid_request");
}

async fn failed_authentication(db: Db) {
    let app = spawn_app(db).await;
    let c = app.create_client("c", "x", &[]).await;
    let cases = [
        (c.id.clone(), "wrong".to_owned()),
        (c.id.clone(), format!("{}x", c.secret)),
        ("cl_000000000000000000000000".to_owned(), c.secret.clone()),
    ];
    for (id, secret) in &cases {
        let resp = app.post_form("/oauth2/token", Some((id, secret)), &[("grant_type", "client_credentials")]).await;
        assert_eq!(resp.status(), 401);
        assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
        assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_client");
        let err = app
            .grpc_token(&crate::helpers::TestClient { id: id.clone(), secret: secret.clone() }, &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
    // client_secret_post failure: 401 too, and no secret or id echoed back.
    let resp = app
        .post_form(
            "/oauth2/token",
            None,
            &[("grant_type", "client_credentials"), ("client_id", &c.id), ("client_secret", "nope")],
        )
        .await;
    assert_eq!(resp.status(), 401);
    let text = resp.text().await.unwrap();
    assert!(!text.contains("nope"));
    // No credentials at all.
    let resp = app.post_form("/oauth2/token", None, &[("grant_type", "client_credentials")]).await;
    assert_eq!(resp.status(), 401);
    let err = app.grpc().await.issue_token(tessera::grpc::pb::IssueTokenRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // Introspection and revocation require authentication as well.
    let token = app.access_token(&c, None).await;
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        let resp = app.post_form(path, None, &[("token", &token)]).await;
        assert_eq!(resp.status(), 401, "{path}");
        let resp = app.post_form(path, Some((&c.id, "bad")), &[("token", &token)]).await;
        assert_eq!(resp.status(), 401, "{path}");
    }
    assert!(app.is_active(&c, &token).await, "an unauthenticated revoke did nothing");
}

async fn disabled_client_and_its_tokens(db: Db) {
    let app = spawn_app(db).await;
    let c = app.create_client("c", "x", &[]).await;
    let rs = app.create_client("rs", "", &["introspect"]).await;
    let token = app.access_token(&c, None).await;
    app.core.admin.set_disabled("test", &c.id, true).await.unwrap();
    app.core.sync_changes().await.unwrap();

    assert_eq!(app.token(&c, None).await.status(), 401, "cached credentials must not outlive disabling");
    assert_eq!(app.grpc_token(&c, &[]).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(!app.is_active(&rs, &token).await, "a disabled client's tokens are inactive");

    app.core.admin.set_disabled("test", &c.id, false).await.unwrap();
    app.core.sync_changes().await.unwrap();
    assert_eq!(app.token(&c, None).await.status(), 200);
    assert!(app.is_active(&rs, &token).await, "enabling restores tokens that were not revoked");
}

async fn secret_rotation_without_downtime(db: Db) {
    let app = spawn_app(db).await;
    let old = app.create_client("c", "x", &[]).await;
    assert_eq!(app.token(&old, None).await.status(), 200, "old secret verified and cached");

    let added = app.core.admin.rotate_secret("test", &old.id).await.unwrap();
    app.core.sync_changes().await.unwrap();
    let new = crate::helpers::TestClient { id: old.id.clone(), secret: added.secret.to_string() };
    assert_eq!(app.token(&old, None).await.status(), 200, "old secret still valid");
    assert_eq!(app.token(&new, None).await.status(), 200, "new secret valid");

    let old_secret_id = old.secret.split('.').next().unwrap();
    let client = app.core.admin.remove_secret("test", &old.id, old_secret_id).await.unwrap();
    assert_eq!(client.secrets.len(), 1);
    app.core.sync_changes().await.unwrap();
    assert_eq!(app.token(&old, None).await.status(), 401, "removed secret fails, even though it was cached");
    assert_eq!(app.token(&new, None).await.status(), 200);
    // The last secret cannot be removed.
    let err = app.core.admin.remove_secret("test", &old.id, &added.secret_id).await.unwrap_err();
    assert_eq!(err.code(), "invalid_request");
}

async fn revoke_all_tokens_of_a_client(db: Db) {
    let app = spawn_app(db).await;
    let c = app.create_client("c", "x", &[]).await;
    let t1 = app.access_token(&c, None).await;
    let t2 = app.access_token(&c, None).await;
    app.clock.advance_ms(5);
    app.core.admin.revoke_client_tokens("test", &c.id).await.unwrap();
    app.core.sync_changes().await.unwrap();
    assert!(!app.is_active(&c, &t1).await);
    assert!(!app.is_active(&c, &t2).await);
    // Tokens issued afterwards, even within the same second, are active.
    app.clock.advance_ms(5);
    let t3 = app.access_token(&c, None).await;
    assert!(app.is_active(&c, &t3).await);
    let _ = basic(&c.id, &c.secret);
}
