//! Bad input gets the standard error (RFC 6749 §5.2 JSON), never a 5xx, HTML or a hang.
use serde_json::Value;

use crate::helpers::{Db, basic, spawn_app};

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status().as_u16(), status, "expected {code}");
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], code);
}

#[tokio::test]
async fn token_endpoint_bad_input() {
    let app = spawn_app(Db::Sqlite).await;
    let c = app.create_client("c", "x", &[]).await;
    let auth = Some((c.id.as_str(), c.secret.as_str()));
    let url = format!("{}/oauth2/token", app.http);

    expect_error(app.post_form("/oauth2/token", auth, &[]).await, 400, "invalid_request").await;
    expect_error(
        app.post_form("/oauth2/token", auth, &[("grant_type", "password")]).await,
        400,
        "unsupported_grant_type",
    )
    .await;
    expect_error(
        app.post_form(
            "/oauth2/token",
            auth,
            &[("grant_type", "client_credentials"), ("grant_type", "client_credentials")],
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        app.post_form("/oauth2/token", auth, &[("grant_type", "client_credentials"), ("scope", "x"), ("scope", "x")])
            .await,
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        app.post_form("/oauth2/token", auth, &[("grant_type", "client_credentials"), ("scope", &"s ".repeat(5000))])
            .await,
        400,
        "invalid_scope",
    )
    .await;
    expect_error(
        app.post_form(
            "/oauth2/token",
            auth,
            &[("grant_type", "client_credentials"), ("audience", "https://not-allowed")],
        )
        .await,
        400,
        "invalid_target",
    )
    .await;
    // Wrong content type.
    let resp = app
        .client
        .post(&url)
        .header("authorization", basic(&c.id, &c.secret))
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"client_credentials"}"#)
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "invalid_request").await;
    // Invalid percent-encoding and invalid UTF-8.
    for body in [&b"grant_type=client_credentials&scope=%zz"[..], &b"grant_type=client_credentials&scope=%ff%fe"[..]] {
        let resp = app
            .client
            .post(&url)
            .header("authorization", basic(&c.id, &c.secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        expect_error(resp, 400, "invalid_request").await;
    }
    // Too large.
    let resp = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=client_credentials&pad={}", "a".repeat(100_000)))
        .send()
        .await
        .unwrap();
    // The unread rest of the body ends the connection; the client is told, so it does not reuse it.
    assert_eq!(resp.headers().get("connection").map(|v| v.to_str().unwrap()), Some("close"));
    expect_error(resp, 413, "invalid_request").await;
    // Malformed Authorization headers.
    for h in ["Basic !!!", "Basic", "Bearer x", "Basic Zm9v", "Basic OnNlY3JldA=="] {
        let resp = app
            .client
            .post(&url)
            .header("authorization", h)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        expect_error(resp, 401, "invalid_client").await;
    }
    // Unknown paths and methods are JSON too.
    let resp = app.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let resp = app.client.get(format!("{}/nope", app.http)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
}

#[tokio::test]
async fn introspect_and_revoke_bad_input() {
    let app = spawn_app(Db::Sqlite).await;
    let c = app.create_client("c", "x", &[]).await;
    let auth = Some((c.id.as_str(), c.secret.as_str()));
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        expect_error(app.post_form(path, auth, &[]).await, 400, "invalid_request").await;
        expect_error(app.post_form(path, auth, &[("token", "a"), ("token", "b")]).await, 400, "invalid_request").await;
    }
    // An unknown hint is not an error (RFC 7009 §2.1, RFC 7662 §2.1).
    let token = app.access_token(&c, None).await;
    let resp =
        app.post_form("/oauth2/introspect", auth, &[("token", &token), ("token_type_hint", "refresh_token")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["active"], true);
    let resp = app.post_form("/oauth2/introspect", auth, &[("token", &"x".repeat(10_000))]).await;
    assert_eq!(resp.json::<Value>().await.unwrap(), serde_json::json!({"active": false}));
}
