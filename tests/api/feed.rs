//! Changes made outside a running server (the CLI, another replica) reach it through the
//! change feed within a second.
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Db, TestClient, eventually, spawn_app, spawn_replica};
use crate::on_both_dbs;

on_both_dbs!(cli_changes_reach_a_running_server, replicas_agree_within_a_second);

fn cli(app: &crate::helpers::TestApp, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("TESSERA_DATABASE_URL", &app.db_url)
        .env("TESSERA_LOG", "warn")
        .output()
        .expect("run tessera CLI")
}

async fn cli_changes_reach_a_running_server(db: Db) {
    let app = spawn_app(db).await;
    // `client create --json`: exactly one JSON object on stdout.
    let out = cli(
        &app,
        &["client", "create", "--name", "from-cli", "--scope", "a b", "--capability", "introspect", "--json"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let c = TestClient {
        id: created["client_id"].as_str().unwrap().into(),
        secret: created["client_secret"].as_str().unwrap().into(),
    };
    // The server knows the new client at once (a miss loads it) and caches the secret.
    let token = app.access_token(&c, Some("a")).await;
    assert!(app.is_active(&c, &token).await);

    let out = cli(&app, &["client", "disable", &c.id]);
    assert!(out.status.success());
    let took = eventually(Duration::from_secs(1), || async { app.token(&c, None).await.status() == 401 }).await;
    assert!(took.is_some(), "disable through the CLI seen within 1 s");

    let out = cli(&app, &["client", "enable", &c.id]);
    assert!(out.status.success());
    assert!(eventually(Duration::from_secs(1), || async { app.token(&c, None).await.status() == 200 }).await.is_some());

    let out = cli(&app, &["client", "revoke-tokens", &c.id]);
    assert!(out.status.success());
    assert!(eventually(Duration::from_secs(1), || async { !app.is_active(&c, &token).await }).await.is_some());

    let out = cli(&app, &["client", "show", &c.id, "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["client_id"], c.id.as_str());
    assert!(shown.get("client_secret").is_none(), "secrets are shown once, at creation");
    let out = cli(&app, &["client", "show", "cl_doesnotexist"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
}

async fn replicas_agree_within_a_second(db: Db) {
    let a = spawn_app(db).await;
    let b = spawn_replica(&a).await;
    let c = a.create_client("c", "x", &[]).await;
    let rs = a.create_client("rs", "", &["introspect"]).await;

    // Both replicas use the same keys: a token from A introspects active on B.
    let token = a.access_token(&c, None).await;
    assert!(b.is_active(&rs, &token).await);

    // A revocation through A is honoured by B within a second.
    assert_eq!(a.revoke(&c, &token).await.status(), 200);
    let took = eventually(Duration::from_secs(1), || async { !b.is_active(&rs, &token).await }).await;
    assert!(took.is_some(), "revocation propagated to the other replica");

    // Disabling the client through an outside process: both replicas refuse it.
    let t2 = b.access_token(&c, None).await;
    a.outside_admin().await.set_disabled("test", &c.id, true).await.unwrap();
    for app in [&a, &b] {
        assert!(eventually(Duration::from_secs(1), || async { !app.is_active(&rs, &t2).await }).await.is_some());
        assert!(
            eventually(Duration::from_secs(1), || async { app.token(&c, None).await.status() == 401 }).await.is_some()
        );
    }
    b.stop().await;
    a.stop().await;
}
