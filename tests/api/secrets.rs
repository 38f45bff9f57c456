//! Secrets stay secret: with logs captured at the most verbose level (TRACE, every crate), drive
//! every flow on both transports, including failures, and fail if any client secret, access
//! token (or its signature), or the key-encryption key appears in the logs, the error responses
//! or the audit records.
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tessera::grpc::pb;

use crate::helpers::{Db, TestClient, spawn_app, with_basic};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const USER_ID: &str = "urn:tessera:params:oauth:token-type:user_id";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

// current_thread: the server's tasks run on this thread, so the thread's default subscriber
// sees everything they log (and no other test's subscriber is disturbed).
#[tokio::test]
async fn no_secret_or_token_reaches_logs_errors_or_audit() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = spawn_app(Db::Sqlite).await;
    let partner = app.create_actor("shop", "shop", "a b", "tenant").await;
    let rs = app.create_client("rs", "", &["introspect"]).await;
    let admin = app.create_client("ops", "", &["admin"]).await;
    let mut secrets = vec![partner.secret.clone(), rs.secret.clone(), admin.secret.clone(), app.kek_b64.clone()];
    let mut tokens = Vec::new();
    let mut bodies = Vec::new();

    // Client credentials: basic, post, wrong secret, wrong client, throttled.
    tokens.push(app.access_token(&partner, Some("a")).await);
    let r = app
        .post_form(
            "/oauth2/token",
            None,
            &[("grant_type", "client_credentials"), ("client_id", &partner.id), ("client_secret", &partner.secret)],
        )
        .await;
    tokens.push(r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned());
    let wrong = TestClient { id: partner.id.clone(), secret: format!("{}x", partner.secret) };
    secrets.push(wrong.secret.clone());
    for _ in 0..12 {
        bodies.push(app.token(&wrong, None).await.text().await.unwrap());
    }
    bodies.push(
        app.token(&TestClient { id: "cl_unknown".into(), secret: partner.secret.clone() }, None)
            .await
            .text()
            .await
            .unwrap(),
    );
    bodies.push(app.token(&partner, Some("nope")).await.text().await.unwrap());
    // A misconfigured partner sending its secret as the client id (it looks like an id).
    let swapped = TestClient { id: partner.secret.clone(), secret: partner.id.clone() };
    bodies.push(app.token(&swapped, None).await.text().await.unwrap());

    // Exchange (basic and actor token), re-exchange, bad subject tokens.
    let r = app
        .post_form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", "alice"),
                ("subject_token_type", USER_ID),
                ("actor_token", &tokens[0]),
                ("actor_token_type", ACCESS),
            ],
        )
        .await;
    let user = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    tokens.push(user.clone());
    let r = app
        .post_form(
            "/oauth2/token",
            Some((&partner.id, &partner.secret)),
            &[("grant_type", EXCHANGE), ("subject_token", &user), ("subject_token_type", ACCESS), ("scope", "a")],
        )
        .await;
    tokens.push(r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned());
    let tampered = format!("{}x", tokens[0]);
    for subject in [tampered.as_str(), tokens[1].as_str()] {
        let r = app
            .post_form(
                "/oauth2/token",
                Some((&partner.id, &partner.secret)),
                &[("grant_type", EXCHANGE), ("subject_token", subject), ("subject_token_type", ACCESS)],
            )
            .await;
        bodies.push(r.text().await.unwrap());
    }

    // Introspection and revocation, good and bad.
    for t in tokens.clone() {
        bodies.push(app.introspect(&rs, &t).await.to_string());
    }
    bodies.push(app.introspect(&rs, &tampered).await.to_string());
    bodies.push(app.revoke(&partner, &tokens[1]).await.text().await.unwrap());
    bodies.push(app.revoke(&rs, &tokens[0]).await.text().await.unwrap());

    // gRPC: every RPC, with good and bad credentials.
    let t = app.grpc_token(&partner, &["b"]).await.unwrap();
    tokens.push(t.access_token.clone());
    let _ = app.grpc_introspect(&rs, &t.access_token).await.unwrap();
    bodies.push(format!("{:?}", app.grpc_token(&wrong, &[]).await.unwrap_err()));
    let mut grpc = app.grpc().await;
    let mut req = tonic::Request::new(pb::ExchangeForUserRequest { subject: "bob".into(), ..Default::default() });
    req.metadata_mut().insert("authorization", format!("Bearer {}", t.access_token).parse().unwrap());
    tokens.push(grpc.exchange_for_user(req).await.unwrap().into_inner().access_token);
    let mut req = tonic::Request::new(pb::ExchangeForUserRequest { subject: "bob".into(), ..Default::default() });
    req.metadata_mut().insert("authorization", format!("Bearer {tampered}").parse().unwrap());
    bodies.push(format!("{:?}", grpc.exchange_for_user(req).await.unwrap_err()));
    app.grpc_revoke(&partner, &t.access_token).await.unwrap();
    let mut adm = app.grpc_admin().await;
    let created = adm
        .create_client(with_basic(
            pb::CreateClientRequest { name: "new".into(), ..Default::default() },
            &admin.id,
            &admin.secret,
        ))
        .await
        .unwrap()
        .into_inner();
    secrets.push(created.client_secret.clone());
    let rotated = adm
        .rotate_client_secret(with_basic(
            pb::RotateClientSecretRequest { client_id: created.client.unwrap().client_id },
            &admin.id,
            &admin.secret,
        ))
        .await
        .unwrap()
        .into_inner();
    secrets.push(rotated.client_secret.clone());
    let _ = adm
        .rotate_signing_key(with_basic(pb::RotateSigningKeyRequest::default(), &admin.id, &admin.secret))
        .await
        .unwrap();
    bodies.push(format!(
        "{:?}",
        adm.list_clients(with_basic(pb::ListClientsRequest::default(), &partner.id, &partner.secret))
            .await
            .unwrap_err()
    ));
    app.core.sync_changes().await.unwrap();
    let audit = app
        .core
        .admin
        .query_audit(&tessera::storage::audit::AuditQuery { limit: 10_000, ..Default::default() })
        .await
        .unwrap();
    app.stop().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.lines().count() > 100, "TRACE logging was captured ({} lines)", logs.lines().count());
    assert!(logs.contains(&partner.id), "positive control: the scan sees what is logged (client ids are)");
    let audit = format!("{audit:?}");
    let bodies = bodies.join("\n");
    let mut needles: Vec<(String, &str)> = Vec::new();
    for s in &secrets {
        needles.push((s.clone(), "secret"));
        if let Some((_, material)) = s.split_once('.') {
            needles.push((material.to_owned(), "secret material"));
        }
    }
    for t in &tokens {
        needles.push((t.clone(), "token"));
        needles.push((t.rsplit('.').next().unwrap().to_owned(), "token signature"));
    }
    for (needle, what) in &needles {
        for (place, text) in [("logs", &logs), ("error responses", &bodies), ("audit records", &audit)] {
            assert!(!text.contains(needle.as_str()), "a {what} appears in the {place}");
        }
    }
    eprintln!(
        "secrets test: {} log lines at TRACE, {} error/response bodies, {} audit records, {} secrets and {} tokens checked",
        logs.lines().count(),
        bodies.lines().count(),
        audit.matches("AuditRecord").count(),
        secrets.len(),
        tokens.len()
    );
}
