//! Floods: failed authentication is throttled per client id and per source address, argon2 work
//! stays bounded, honest clients keep being served; connection and header limits hold.
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Db, Options, TestClient, spawn_app, spawn_app_with};

fn argon2_runs(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("tessera_argon2_verifications_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_flood_is_throttled_and_honest_clients_are_served() {
    let app = spawn_app(Db::Sqlite).await;
    let honest = app.create_client("honest", "x", &[]).await;
    assert_eq!(app.token(&honest, None).await.status(), 200, "secret verified once and cached");
    let before =
        argon2_runs(&app.client.get(format!("{}/metrics", app.ops)).send().await.unwrap().text().await.unwrap());

    // 200 wrong secrets for the honest client's id.
    let attacker = TestClient { id: honest.id.clone(), secret: "wrong.secret".into() };
    let (mut unauthorized, mut throttled) = (0, 0);
    for _ in 0..200 {
        let resp = app.token(&attacker, None).await;
        match resp.status().as_u16() {
            401 => unauthorized += 1,
            429 => {
                throttled += 1;
                let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry));
                assert_eq!(resp.json::<Value>().await.unwrap()["error"], "slow_down");
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(unauthorized, 10, "a burst of 10 failures per client id is allowed");
    assert_eq!(throttled, 190);
    // The honest client, served from the credential cache, is never throttled.
    for _ in 0..20 {
        assert_eq!(app.token(&honest, None).await.status(), 200);
    }
    let after =
        argon2_runs(&app.client.get(format!("{}/metrics", app.ops)).send().await.unwrap().text().await.unwrap());
    assert!(after - before <= 11, "argon2 ran {} times for 200 attempts", after - before);

    // Guessing across many client ids from one address: the address runs out too.
    let mut statuses = Vec::new();
    for i in 0..80 {
        let guess = TestClient { id: format!("cl_guess{i:04}"), secret: "x.y".into() };
        statuses.push(app.token(&guess, None).await.status().as_u16());
    }
    assert!(statuses.iter().filter(|s| **s == 401).count() <= 40, "per-address allowance (50 minus the 10 above)");
    assert!(statuses.contains(&429));
    assert_eq!(app.token(&honest, None).await.status(), 200);

    // gRPC says RESOURCE_EXHAUSTED, with retry-after metadata.
    let err = app.grpc_token(&attacker, &[]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.metadata().get("retry-after").is_some());
    assert!(app.grpc_token(&honest, &[]).await.is_ok());
}

/// REST served by its own threads (the default) and by the work-stealing runtime alike.
macro_rules! on_both_runtimes {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn http_threads() {
                super::$name(2).await
            }
            #[tokio::test]
            async fn work_stealing() {
                super::$name(0).await
            }
        }
    };
}

on_both_runtimes!(connection_limit_holds_new_connections_back);

async fn connection_limit_holds_new_connections_back(http_threads: usize) {
    let app = spawn_app_with(Db::Sqlite, Options { max_connections: 4, http_threads, ..Options::default() }).await;
    let addr = app.http.trim_start_matches("http://").to_owned();
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let request = b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut fifth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    fifth.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), fifth.read(&mut buf)).await;
    assert!(early.is_err(), "the fifth connection waits while four are open");
    drop(open.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut buf))
        .await
        .expect("served once a slot frees")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

/// gRPC connections are handed from the acceptor to the gRPC threads with their place in the
/// limit: one beyond it waits until another closes, whichever thread serves them.
#[tokio::test]
async fn grpc_connection_limit_holds_across_its_threads() {
    let app = spawn_app_with(Db::Sqlite, Options { max_connections: 4, ..Options::default() }).await;
    let c = app.create_client("partner", "x", &[]).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(tokio::net::TcpStream::connect(app.grpc_addr).await.unwrap());
    }
    let call = app.grpc_token(&c, &[]);
    tokio::pin!(call);
    let early = tokio::time::timeout(Duration::from_millis(500), &mut call).await;
    assert!(early.is_err(), "the fifth connection waits while four are open: {early:?}");
    drop(open.pop());
    let served = tokio::time::timeout(Duration::from_secs(5), call).await.expect("served once a slot frees");
    assert!(!served.expect("a token").access_token.is_empty());
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let app = spawn_app(Db::Sqlite).await;
    let resp = app
        .client
        .get(format!("{}/.well-known/jwks.json", app.http))
        .header("x-padding", "a".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_request");
}

#[tokio::test]
async fn a_guessing_flood_cannot_lock_out_a_real_secret_not_yet_cached() {
    let app = spawn_app(Db::Sqlite).await;
    // Created, never used: this replica has not verified (cached) its secret yet.
    let honest = app.create_client("honest", "x", &[]).await;
    let mut throttled = 0;
    for i in 0..100 {
        let guess = TestClient { id: honest.id.clone(), secret: format!("{i:016x}.guess") };
        if app.token(&guess, None).await.status() == 429 {
            throttled += 1;
        }
    }
    assert!(throttled >= 50, "the guesses were throttled ({throttled})");
    // Same client id, same address, during the flood: the real secret still gets in.
    assert_eq!(app.token(&honest, None).await.status(), 200);
    assert!(app.grpc_token(&honest, &[]).await.is_ok());
}
