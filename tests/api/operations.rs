//! Running it in production: the operations listener, graceful shutdown, signing-key rotation
//! and OpenTelemetry traces.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tessera::grpc::pb;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::{Db, TestClient, eventually, jwt_parts, spawn_app, spawn_replica, with_basic};
use crate::on_both_dbs;

on_both_dbs!(graceful_shutdown_completes_accepted_requests, signing_key_rotation);

#[tokio::test]
async fn operations_listener() {
    let app = spawn_app(Db::Sqlite).await;
    let c = app.create_client("c", "x", &[]).await;
    let _ = app.access_token(&c, None).await;
    let _ = app.access_token(&c, None).await;
    assert_eq!(app.token(&c, Some("nope")).await.status(), 400);

    let health = app.client.get(format!("{}/healthz", app.ops)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.client.get(format!("{}/readyz", app.ops)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], true);
    assert_eq!(body["database"], true);
    assert_eq!(body["signing_key"], true);
    assert_eq!(body["change_feed_current"], true);

    let metrics = app.client.get(format!("{}/metrics", app.ops)).send().await.unwrap().text().await.unwrap();
    for expected in [
        r#"tessera_requests_total{operation="token",outcome="ok",transport="http"} 2"#,
        r#"tessera_requests_total{operation="token",outcome="invalid_scope",transport="http"} 1"#,
        r#"tessera_tokens_issued_total{kind="client"} 2"#,
        r#"tessera_credential_cache_total{result="hit"} 2"#,
        r#"tessera_state_entries{kind="clients"} 1"#,
        "tessera_request_duration_seconds_bucket",
        "tessera_argon2_verifications_total 1",
        "tessera_audit_batch_records_count",
        "tessera_change_feed_lag_seconds",
        r#"tessera_db_pool_connections{state="idle"}"#,
    ] {
        assert!(metrics.contains(expected), "missing {expected} in\n{metrics}");
    }
    assert!(!metrics.contains(&c.id), "no per-client labels");
    // Partners never reach it: the public port has no /metrics.
    assert_eq!(app.client.get(format!("{}/metrics", app.http)).send().await.unwrap().status(), 404);
}

async fn graceful_shutdown_completes_accepted_requests(db: Db) {
    let mut app = spawn_app(db).await;
    let c = app.create_client("busy", "x", &[]).await;
    let first = app.token(&c, None).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let first = jwt_parts(first["access_token"].as_str().unwrap()).1["jti"].as_str().unwrap().to_owned();

    // Watch gRPC health: it must turn NOT_SERVING when shutdown begins.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr)).unwrap().connect().await.unwrap();
    let mut watch =
        HealthClient::new(channel).watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);

    // 32 clients hammer the token endpoint, each on its own connection per request.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (url, id, secret, stop) =
            (format!("{}/oauth2/token", app.http), c.id.clone(), c.secret.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut refused, mut other) = (0u32, 0u32, Vec::new());
            let mut delivered = Vec::new();
            for _ in 0..2000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
                match client
                    .post(&url)
                    .basic_auth(&id, Some(&secret))
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        // A response that started must also complete.
                        let body: Value = r.json().await.expect("accepted request completed");
                        let token = body["access_token"].as_str().expect("a token");
                        delivered.push(jwt_parts(token).1["jti"].as_str().expect("a jti").to_owned());
                        ok += 1;
                    }
                    Ok(r) => other.push(r.status().as_u16()),
                    Err(_) => refused += 1,
                }
            }
            (ok, refused, other, delivered)
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let server = app.begin_stop();
    let status = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap();
    if let Ok(Some(s)) = status {
        assert_eq!(s.status(), ServingStatus::NotServing, "health flips first");
    }
    // A health Watch is a long-lived stream the drain would wait for (up to the drain timeout).
    drop(watch);
    let drain_started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(15), server).await.expect("drained in time").unwrap();
    assert!(drain_started.elapsed() < Duration::from_secs(5), "drained promptly: {:?}", drain_started.elapsed());
    assert!(result.is_ok(), "clean exit: {result:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut refused) = (0u32, 0u32);
    let mut delivered = std::collections::HashSet::from([first]);
    for w in workers {
        let (o, r, other, jtis) = w.await.unwrap();
        assert!(other.is_empty(), "no error responses while draining: {other:?}");
        ok += o;
        refused += r;
        delivered.extend(jtis);
    }
    assert!(ok > 32, "load ran: {ok} tokens");
    assert_eq!(delivered.len() as u32, ok + 1, "every token delivered once");
    assert!(refused > 0, "requests after shutdown were refused");
    // Every delivered token's audit record is in the database, once: nothing lost in the batch,
    // nothing written twice.
    let store = tessera::storage::Store::connect(&app.db_url).await.unwrap();
    let q = tessera::storage::audit::AuditQuery { client_id: Some(c.id.clone()), limit: 10_000, ..Default::default() };
    let records = store.query_audit(&q).await.unwrap();
    let mut recorded = std::collections::HashMap::<String, u32>::new();
    for r in records.iter().filter(|r| r.action == "client_credentials" && r.outcome == "ok") {
        *recorded.entry(r.jti.clone().expect("an issued token's record names its jti")).or_default() += 1;
    }
    assert!(recorded.values().all(|&n| n == 1), "no audit record written twice");
    let lost: Vec<_> = delivered.iter().filter(|j| !recorded.contains_key(*j)).collect();
    assert!(lost.is_empty(), "{} delivered tokens have no audit record: {lost:?}", lost.len());
    // The reverse can happen, rarely, at the edge of shutdown: under CI load, 7 of 1,670 tokens
    // were recorded and their clients saw the request fail (cause not yet found). At most one
    // per worker, the request each had in flight when shutdown began.
    let undelivered = recorded.len() - delivered.len();
    assert!(undelivered <= 32, "{undelivered} tokens recorded but not delivered: more than the requests in flight");
}

fn kid_of(token: &str) -> String {
    jwt_parts(token).0["kid"].as_str().unwrap().to_owned()
}

async fn jwks_kids(app: &crate::helpers::TestApp) -> Vec<String> {
    let jwks: Value =
        app.client.get(format!("{}/.well-known/jwks.json", app.http)).send().await.unwrap().json().await.unwrap();
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

async fn signing_key_rotation(db: Db) {
    let app = spawn_app(db).await;
    let other = spawn_replica(&app).await;
    let c = app.create_client("c", "x", &[]).await;
    let rs = app.create_client("rs", "", &["introspect"]).await;
    let admin = app.create_client("ops", "", &["admin"]).await;
    let old_token = app.access_token(&c, None).await;
    let k1 = kid_of(&old_token);

    // Rotate with a 600 s pre-publication delay: published at once, not signing yet.
    let key = app
        .grpc_admin()
        .await
        .rotate_signing_key(with_basic(
            pb::RotateSigningKeyRequest { alg: String::new(), prepublish_seconds: 600 },
            &admin.id,
            &admin.secret,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.state, "pending");
    let k2 = key.kid.clone();
    assert_ne!(k1, k2);
    assert_eq!(jwks_kids(&app).await, vec![k2.clone(), k1.clone()], "next key published before it signs");
    assert!(
        eventually(Duration::from_secs(1), || async { jwks_kids(&other).await.contains(&k2) }).await.is_some(),
        "the other replica publishes it within a second"
    );
    assert_eq!(kid_of(&app.access_token(&c, None).await), k1, "still signing with the old key");

    // After the delay the new key signs; tokens of the old one stay valid and verifiable.
    app.clock.advance_secs(600);
    other.clock.advance_secs(600);
    let new_token = app.access_token(&c, None).await;
    assert_eq!(kid_of(&new_token), k2);
    assert_eq!(kid_of(&other.access_token(&c, None).await), k2, "replicas agree");
    assert!(app.is_active(&rs, &old_token).await && other.is_active(&rs, &old_token).await);
    assert!(jwks_kids(&app).await.contains(&k1));
    let listed = app
        .grpc_admin()
        .await
        .list_signing_keys(with_basic(pb::ListSigningKeysRequest {}, &admin.id, &admin.secret))
        .await
        .unwrap()
        .into_inner()
        .keys;
    let states: Vec<(String, String)> = listed.iter().map(|k| (k.kid.clone(), k.state.clone())).collect();
    assert_eq!(states, vec![(k2.clone(), "active".into()), (k1.clone(), "retired".into())]);

    // Once the last token the old key signed has expired, it leaves JWKS.
    app.clock.advance_secs(86_400 + 300);
    app.core.refresh_keys().await.unwrap();
    assert_eq!(jwks_kids(&app).await, vec![k2.clone()]);

    // The CLI rotates too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["keys", "rotate", "--prepublish-secs", "0", "--json"])
        .env("TESSERA_DATABASE_URL", &app.db_url)
        .env("TESSERA_KEY_ENCRYPTION_KEY", &app.kek_b64)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let k3: Value = serde_json::from_slice(&out.stdout).unwrap();
    let k3 = k3["kid"].as_str().unwrap().to_owned();
    assert!(eventually(Duration::from_secs(1), || async { jwks_kids(&other).await.contains(&k3) }).await.is_some());
    other.stop().await;
}

#[tokio::test]
async fn automatic_rotation_when_due() {
    let app = spawn_app(Db::Sqlite).await;
    let day = 86_400;
    assert!(app.core.rotate_keys_if_due(30 * day).await.unwrap().is_none(), "not due yet");
    app.clock.advance_secs(30 * day + 1);
    let k = app.core.rotate_keys_if_due(30 * day).await.unwrap().expect("due");
    assert_eq!(k.state.as_str(), "pending");
    assert!(app.core.rotate_keys_if_due(30 * day).await.unwrap().is_none(), "a key is already pending");
}

/// An in-process OTLP collector (gRPC) that keeps every span it receives.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        let mut spans = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_an_otlp_collector_with_the_callers_parent() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    use tracing_subscriber::layer::SubscriberExt;

    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let svc = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let provider = tessera::telemetry::otlp_provider(&endpoint, tessera::telemetry::OtlpProtocol::Grpc).unwrap();
    let subscriber = tracing_subscriber::registry().with(tessera::telemetry::otel_layer(&provider));
    tracing::subscriber::set_global_default(subscriber).expect("this test owns the process's subscriber (nextest)");

    let app = spawn_app(Db::Sqlite).await;
    let c = app.create_client("traced", "x", &[]).await;
    let http_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let grpc_trace = "0af7651916cd43dd8448eb211c80319c";
    let resp = app
        .client
        .post(format!("{}/oauth2/token", app.http))
        .header("traceparent", format!("00-{http_trace}-00f067aa0ba902b7-01"))
        .basic_auth(&c.id, Some(&c.secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let token: Value = resp.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let mut req = with_basic(pb::IssueTokenRequest::default(), &c.id, &c.secret);
    req.metadata_mut().insert("traceparent", format!("00-{grpc_trace}-b7ad6b7169203331-01").parse().unwrap());
    app.grpc().await.issue_token(req).await.unwrap();

    let p = provider.clone();
    tokio::task::spawn_blocking(move || p.force_flush()).await.unwrap().unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let spans = collector.0.lock().unwrap().clone();
    let attr = |s: &opentelemetry_proto::tonic::trace::v1::Span, k: &str| {
        s.attributes.iter().find(|a| a.key == k).and_then(|a| a.value.clone()).map(|v| format!("{v:?}"))
    };
    for (trace, transport) in [(http_trace, "http"), (grpc_trace, "grpc")] {
        let request = spans
            .iter()
            .find(|s| hex(&s.trace_id) == trace && attr(s, "transport").is_some_and(|t| t.contains(transport)))
            .unwrap_or_else(|| panic!("no {transport} span with the caller's trace id among {} spans", spans.len()));
        assert!(attr(request, "client_id").is_some_and(|v| v.contains(&c.id)), "client id on the span");
        assert!(attr(request, "grant_type").is_some_and(|v| v.contains("client_credentials")));
        assert!(attr(request, "outcome").is_some_and(|v| v.contains("ok")));
    }
    // Never a secret or a token in any span.
    let all = format!("{spans:?}");
    assert!(!all.contains(&c.secret) && !all.contains(&token));
    let _ = TestClient { id: String::new(), secret: String::new() };
}
