//! Acting for users (RFC 8693 token exchange): the shop-front partner, the integration partner
//! with grants, cascading revocation, re-exchange with nested `act`, the audit trail, bad input.
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tessera::grpc::pb;
use tessera::service::Audit;
use tessera::service::audit::{Idleness, Pacing};
use tessera::shards::Home;
use tessera::storage::Store;
use tessera::storage::audit::{AuditQuery, AuditRecord};

use crate::helpers::{Db, TestApp, TestClient, TestDb, eventually, jwt_parts, spawn_app, with_basic};
use crate::on_both_dbs;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const USER_ID: &str = "urn:tessera:params:oauth:token-type:user_id";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

on_both_dbs!(
    shop_front_partner,
    integration_partner_with_grants,
    cascading_revocation,
    re_exchange_for_another_audience,
    audit_trail_records_each_case,
    audit_groups_are_written_whole_and_in_order,
    audit_commits_are_paced,
    exchange_bad_input,
);

/// REST exchange for a user id; `auth` = Basic credentials, `actor` = the client's own token.
async fn exchange(
    app: &TestApp,
    auth: Option<&TestClient>,
    actor: Option<&str>,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut form: Vec<(&str, &str)> = vec![("grant_type", EXCHANGE)];
    if let Some(a) = actor {
        form.push(("actor_token", a));
        form.push(("actor_token_type", ACCESS_TOKEN));
    }
    form.extend_from_slice(extra);
    app.post_form("/oauth2/token", auth.map(|c| (c.id.as_str(), c.secret.as_str())), &form).await
}

async fn user_token(app: &TestApp, partner: &TestClient, subject: &str, scope: &str) -> String {
    let resp = exchange(
        app,
        Some(partner),
        None,
        &[("subject_token", subject), ("subject_token_type", USER_ID), ("scope", scope)],
    )
    .await;
    assert_eq!(resp.status(), 200, "exchange for {subject}");
    resp.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
}

async fn error_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (status, body["error"].as_str().unwrap_or_default().to_owned())
}

fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

fn for_user(subject: &str, scope: &[&str]) -> pb::ExchangeForUserRequest {
    pb::ExchangeForUserRequest {
        subject: subject.into(),
        scope: scope.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn shop_front_partner(db: Db) {
    let app = spawn_app(db).await;
    let partner = app.create_actor("shop", "shop", "orders:read orders:write", "tenant").await;
    let rs = app.create_client_in("orders-api", Some("platform"), "", &["introspect"]).await;

    // Basic authentication.
    let resp = exchange(
        &app,
        Some(&partner),
        None,
        &[("subject_token", "alice"), ("subject_token_type", USER_ID), ("scope", "orders:read")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN, "RFC 8693 §2.2.1");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "orders:read");
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!(expires_in > 0 && expires_in <= 300, "short-lived by default: {expires_in}");
    assert!(body.get("refresh_token").is_none());
    let basic_token = body["access_token"].as_str().unwrap().to_owned();

    // The partner's server already holds a client token: it stands in for client authentication.
    let client_token = app.access_token(&partner, None).await;
    let resp =
        exchange(&app, None, Some(&client_token), &[("subject_token", "alice"), ("subject_token_type", USER_ID)]).await;
    assert_eq!(resp.status(), 200);
    let actor_token_path = resp.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();

    // The browser/mobile app holds only the user token; the resource server introspects it.
    for token in [&basic_token, &actor_token_path] {
        let info = app.introspect(&rs, token).await;
        assert_eq!(info["active"], true);
        assert_eq!(info["sub"], "alice");
        assert_eq!(info["act"], json!({"sub": partner.id}));
        assert_eq!(info["tenant"], "shop");
        assert_eq!(info["client_id"], partner.id.as_str());
        let (_, claims) = jwt_parts(token);
        assert_eq!(claims["act"]["sub"], partner.id.as_str(), "RFC 8693 §4.1 act claim in the JWT");
    }
    // Whole scope when none requested, and never more than the actor token carried.
    let narrow = app.access_token(&partner, Some("orders:read")).await;
    let resp = exchange(
        &app,
        None,
        Some(&narrow),
        &[("subject_token", "bob"), ("subject_token_type", USER_ID), ("scope", "orders:write")],
    )
    .await;
    assert_eq!(error_of(resp).await, (400, "invalid_scope".into()));

    // gRPC, Basic and Bearer.
    let mut grpc = app.grpc().await;
    let t = grpc
        .exchange_for_user(with_basic(for_user("carol", &["orders:write"]), &partner.id, &partner.secret))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.issued_token_type, ACCESS_TOKEN);
    assert_eq!(t.scope, vec!["orders:write"]);
    let t2 = grpc.exchange_for_user(bearer(for_user("dave", &[]), &client_token)).await.unwrap().into_inner();
    assert_eq!(t2.scope, vec!["orders:read", "orders:write"]);
    let info = app.grpc_introspect(&rs, &t.access_token).await.unwrap();
    assert!(info.active);
    assert_eq!(info.sub, "carol");
    assert_eq!(info.act.unwrap().sub, partner.id);
    assert_eq!(info.tenant, "shop");

    // Never beyond the parent token's expiry.
    app.clock.advance_secs(3600 - 100);
    let resp =
        exchange(&app, None, Some(&client_token), &[("subject_token", "erin"), ("subject_token_type", USER_ID)]).await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["expires_in"], 100, "capped by the actor token's expiry");

    // A client with act-as none may not exchange.
    let plain = app.create_client_in("plain", Some("shop"), "orders:read", &[]).await;
    let resp = exchange(&app, Some(&plain), None, &[("subject_token", "alice"), ("subject_token_type", USER_ID)]).await;
    assert_eq!(error_of(resp).await, (400, "unauthorized_client".into()));
    let err = grpc.exchange_for_user(with_basic(for_user("alice", &[]), &plain.id, &plain.secret)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

fn cli(app: &TestApp, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("TESSERA_DATABASE_URL", &app.db_url)
        .env("TESSERA_LOG", "warn")
        .output()
        .expect("run tessera CLI");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

async fn integration_partner_with_grants(db: Db) {
    let app = spawn_app(db).await;
    let cms = app.create_actor("Acme CMS", "acme", "cms:read cms:write", "granted").await;
    let rs = app.create_client_in("platform-api", Some("platform"), "", &["introspect"]).await;
    let ask = |scope: &'static str| {
        let app = &app;
        let cms = &cms;
        async move {
            exchange(
                app,
                Some(cms),
                None,
                &[("subject_token", "u-42"), ("subject_token_type", USER_ID), ("scope", scope)],
            )
            .await
        }
    };

    // No grant yet: refused (RFC 8693 §2.2.2 invalid_request; gRPC PERMISSION_DENIED).
    assert_eq!(error_of(ask("cms:read").await).await, (400, "invalid_request".into()));
    let err =
        app.grpc().await.exchange_for_user(with_basic(for_user("u-42", &[]), &cms.id, &cms.secret)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // The user enables the integration (the platform backend, here the CLI).
    let grant = cli(
        &app,
        &[
            "grant",
            "create",
            "--client",
            &cms.id,
            "--subject",
            "u-42",
            "--account",
            "site-7",
            "--scope",
            "cms:read",
            "--json",
        ],
    );
    let grant_id = grant["grant_id"].as_str().unwrap().to_owned();
    assert_eq!(grant["active"], true);

    let resp = ask("cms:read").await;
    assert_eq!(resp.status(), 200, "a grant made a moment ago elsewhere is honoured at once");
    let token = resp.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let info = app.introspect(&rs, &token).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["account"], "site-7", "account from the grant");
    assert_eq!(info["scope"], "cms:read");
    // Within the granted scopes only.
    assert_eq!(error_of(ask("cms:write").await).await, (400, "invalid_scope".into()));
    let body: Value = exchange(&app, Some(&cms), None, &[("subject_token", "u-42"), ("subject_token_type", USER_ID)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["scope"], "cms:read", "no scope requested: the grant's, not the client's");
    let g = app
        .grpc()
        .await
        .exchange_for_user(with_basic(for_user("u-42", &["cms:read"]), &cms.id, &cms.secret))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(app.grpc_introspect(&rs, &g.access_token).await.unwrap().account, "site-7");
    // Someone else's subject is still refused.
    let resp = exchange(&app, Some(&cms), None, &[("subject_token", "u-43"), ("subject_token_type", USER_ID)]).await;
    assert_eq!(error_of(resp).await, (400, "invalid_request".into()));

    // The user disables the integration: tokens already issued stop working within a second.
    cli(&app, &["grant", "revoke", &grant_id, "--json"]);
    let took = eventually(Duration::from_secs(1), || async { !app.is_active(&rs, &token).await }).await;
    assert!(took.is_some(), "grant revoke deactivates the user token");
    assert!(!app.grpc_introspect(&rs, &g.access_token).await.unwrap().active);
    assert_eq!(error_of(ask("cms:read").await).await, (400, "invalid_request".into()));
    let listed = cli(&app, &["grant", "list", "--client", &cms.id, "--json"]);
    assert_eq!(listed[0]["active"], false);
}

async fn cascading_revocation(db: Db) {
    let app = spawn_app(db).await;
    let partner = app.create_actor("shop", "shop", "orders:read", "tenant").await;
    let rs = app.create_client_in("rs", Some("platform"), "", &["introspect"]).await;

    // Revoking the partner's client token deactivates the user tokens derived from it.
    let client_token = app.access_token(&partner, None).await;
    let derived =
        exchange(&app, None, Some(&client_token), &[("subject_token", "alice"), ("subject_token_type", USER_ID)]).await;
    let derived = derived.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let independent = user_token(&app, &partner, "bob", "orders:read").await;
    assert!(app.is_active(&rs, &derived).await);
    assert_eq!(app.revoke(&partner, &client_token).await.status(), 200);
    assert!(!app.is_active(&rs, &derived).await, "child of a revoked token");
    assert!(app.is_active(&rs, &independent).await, "tokens not derived from it stay active");

    // Revoking a user token itself.
    let u = user_token(&app, &partner, "carol", "orders:read").await;
    assert_eq!(app.revoke(&partner, &u).await.status(), 200);
    assert!(!app.is_active(&rs, &u).await);

    // `client revoke-tokens`: everything it minted until now.
    app.clock.advance_ms(5);
    app.core.admin.revoke_client_tokens("test", &partner.id).await.unwrap();
    app.core.sync_changes().await.unwrap();
    assert!(!app.is_active(&rs, &independent).await);
    app.clock.advance_ms(5);
    let fresh = user_token(&app, &partner, "dave", "orders:read").await;
    assert!(app.is_active(&rs, &fresh).await);

    // Disabling the client deactivates everything it minted, on another replica too.
    let other = crate::helpers::spawn_replica(&app).await;
    assert!(other.is_active(&rs, &fresh).await);
    app.outside_admin().await.set_disabled("test", &partner.id, true).await.unwrap();
    for a in [&app, &other] {
        assert!(eventually(Duration::from_secs(1), || async { !a.is_active(&rs, &fresh).await }).await.is_some());
    }
    other.stop().await;
}

async fn re_exchange_for_another_audience(db: Db) {
    let app = spawn_app(db).await;
    let partner = app.create_actor("shop", "shop", "orders:read orders:write", "tenant").await;
    let svc = app
        .create_client_with(tessera::domain::NewClient {
            name: "inventory-svc".into(),
            tenant: Some("shop".into()),
            scopes: tessera::domain::ScopeSet::parse("orders:read stock:read").unwrap(),
            audiences: vec!["https://inventory.internal".into()],
            act_as: tessera::domain::ActAs::Tenant,
            ..Default::default()
        })
        .await;
    let stranger = app.create_actor("other-tenant-svc", "elsewhere", "orders:read", "tenant").await;
    let rs = app.create_client_in("rs", Some("platform"), "", &["introspect"]).await;
    let parent = user_token(&app, &partner, "alice", "orders:read orders:write").await;

    let rx = |c: &TestClient, scope: &'static str| {
        let (app, parent, c) = (&app, parent.clone(), c.clone());
        async move {
            exchange(
                app,
                Some(&c),
                None,
                &[
                    ("subject_token", &parent),
                    ("subject_token_type", ACCESS_TOKEN),
                    ("audience", "https://inventory.internal"),
                    ("scope", scope),
                ],
            )
            .await
        }
    };
    let resp = rx(&svc, "orders:read").await;
    assert_eq!(resp.status(), 200);
    let child = resp.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let info = app.introspect(&rs, &child).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["sub"], "alice");
    assert_eq!(info["aud"], "https://inventory.internal");
    assert_eq!(info["act"], json!({"sub": svc.id, "act": {"sub": partner.id}}), "nested act (RFC 8693 §4.1)");
    // Narrower only: stock:read is the service's but not the parent's; orders:write is the parent's but not the service's.
    assert_eq!(error_of(rx(&svc, "stock:read").await).await, (400, "invalid_scope".into()));
    assert_eq!(error_of(rx(&svc, "orders:write").await).await, (400, "invalid_scope".into()));
    // Another tenant's client is refused.
    assert_eq!(error_of(rx(&stranger, "orders:read").await).await, (400, "invalid_request".into()));
    let req = pb::ExchangeForUserRequest { subject_token: parent.clone(), ..Default::default() };
    let err = app.grpc().await.exchange_for_user(with_basic(req, &stranger.id, &stranger.secret)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // gRPC re-exchange works too, and revoking the parent deactivates the child.
    let req = pb::ExchangeForUserRequest {
        subject_token: parent.clone(),
        scope: vec!["orders:read".into()],
        ..Default::default()
    };
    let g = app.grpc().await.exchange_for_user(with_basic(req, &svc.id, &svc.secret)).await.unwrap().into_inner();
    let act = app.grpc_introspect(&rs, &g.access_token).await.unwrap().act.unwrap();
    assert_eq!((act.sub.as_str(), act.act.unwrap().sub.as_str()), (svc.id.as_str(), partner.id.as_str()));
    assert_eq!(app.revoke(&partner, &parent).await.status(), 200);
    assert!(!app.is_active(&rs, &child).await);
    assert!(!app.grpc_introspect(&rs, &g.access_token).await.unwrap().active);
    assert_eq!(error_of(rx(&svc, "orders:read").await).await, (400, "invalid_request".into()), "revoked subject_token");
}

async fn audit_trail_records_each_case(db: Db) {
    let app = spawn_app(db).await;
    let partner = app.create_actor("shop", "shop", "orders:read", "tenant").await;
    let token = app.access_token(&partner, None).await;
    let user = user_token(&app, &partner, "alice", "orders:read").await;
    let resp = exchange(
        &app,
        Some(&partner),
        None,
        &[("subject_token", "alice"), ("subject_token_type", USER_ID), ("scope", "admin")],
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(app.revoke(&partner, &user).await.status(), 200);

    let q = AuditQuery { client_id: Some(partner.id.clone()), limit: 100, ..Default::default() };
    let mut records = app.core.admin.query_audit(&q).await.unwrap();
    records.reverse();
    let summary: Vec<(String, String, Option<String>)> =
        records.iter().map(|r| (r.action.clone(), r.outcome.clone(), r.subject.clone())).collect();
    let alice = Some("alice".to_owned());
    assert_eq!(
        summary,
        vec![
            ("client.create".into(), "ok".into(), None),
            ("client_credentials".into(), "ok".into(), None),
            ("token_exchange".into(), "ok".into(), alice.clone()),
            ("token_exchange".into(), "invalid_scope".into(), alice.clone()),
            ("revoke".into(), "ok".into(), alice.clone()),
        ]
    );
    let (_, user_claims) = jwt_parts(&user);
    let (_, client_claims) = jwt_parts(&token);
    assert_eq!(records[1].jti.as_deref(), client_claims["jti"].as_str());
    assert_eq!(records[2].jti.as_deref(), user_claims["jti"].as_str());
    assert_eq!(records[2].actor, partner.id);
    assert_eq!(records[4].jti.as_deref(), user_claims["jti"].as_str());
    // Never a token or a secret.
    for r in &records {
        let all = format!("{r:?}");
        assert!(!all.contains(&token) && !all.contains(&user) && !all.contains(&partner.secret));
    }
    // The same through the CLI and AdminService.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["audit", "--subject", "alice", "--json"])
        .env("TESSERA_DATABASE_URL", &app.db_url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3, "alice: ok, denied, revoke");
    let admin = app.create_client("ops", "", &["admin"]).await;
    let resp = app
        .grpc_admin()
        .await
        .query_audit(with_basic(
            pb::QueryAuditRequest { subject: "alice".into(), ..Default::default() },
            &admin.id,
            &admin.secret,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.records.len(), 3);
    assert_eq!(resp.records[1].outcome, "invalid_scope");
}

async fn exchange_bad_input(db: Db) {
    let app = spawn_app(db).await;
    let partner = app.create_actor("shop", "shop", "orders:read", "tenant").await;
    let user = user_token(&app, &partner, "alice", "orders:read").await;
    let long = "x".repeat(300);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "unknown subject_token_type",
            vec![("subject_token", "alice"), ("subject_token_type", "urn:x:unknown")],
            "invalid_request",
        ),
        ("missing subject_token", vec![("subject_token_type", USER_ID)], "invalid_request"),
        ("missing subject_token_type", vec![("subject_token", "alice")], "invalid_request"),
        ("oversized subject", vec![("subject_token", &long), ("subject_token_type", USER_ID)], "invalid_request"),
        ("malformed subject", vec![("subject_token", "<script>"), ("subject_token_type", USER_ID)], "invalid_request"),
        ("subject with space", vec![("subject_token", "a b"), ("subject_token_type", USER_ID)], "invalid_request"),
        (
            "refresh token requested",
            vec![
                ("subject_token", "alice"),
                ("subject_token_type", USER_ID),
                ("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token"),
            ],
            "invalid_request",
        ),
        (
            "garbage subject_token",
            vec![("subject_token", "not.a.jwt"), ("subject_token_type", ACCESS_TOKEN)],
            "invalid_request",
        ),
        (
            "client token as subject_token",
            vec![("subject_token", "CLIENT"), ("subject_token_type", ACCESS_TOKEN)],
            "invalid_request",
        ),
        (
            "actor_token without type",
            vec![("subject_token", "alice"), ("subject_token_type", USER_ID), ("actor_token", "x")],
            "invalid_request",
        ),
        (
            "repeated subject_token",
            vec![("subject_token", "a"), ("subject_token", "b"), ("subject_token_type", USER_ID)],
            "invalid_request",
        ),
    ];
    let client_token = app.access_token(&partner, None).await;
    for (name, form, code) in cases {
        let form: Vec<(&str, &str)> =
            form.into_iter().map(|(k, v)| (k, if v == "CLIENT" { client_token.as_str() } else { v })).collect();
        let resp = exchange(&app, Some(&partner), None, &form).await;
        assert_eq!(error_of(resp).await, (400, code.to_owned()), "{name}");
    }
    // A user token used as an actor token (alone: authentication fails; with credentials: invalid_request).
    let resp = exchange(&app, None, Some(&user), &[("subject_token", "bob"), ("subject_token_type", USER_ID)]).await;
    assert_eq!(error_of(resp).await, (401, "invalid_client".into()));
    let resp =
        exchange(&app, Some(&partner), Some(&user), &[("subject_token", "bob"), ("subject_token_type", USER_ID)]).await;
    assert_eq!(error_of(resp).await, (400, "invalid_request".into()));
    // An actor token of another client next to these credentials.
    let other = app.create_actor("other", "shop", "orders:read", "tenant").await;
    let other_token = app.access_token(&other, None).await;
    let resp = exchange(
        &app,
        Some(&partner),
        Some(&other_token),
        &[("subject_token", "bob"), ("subject_token_type", USER_ID)],
    )
    .await;
    assert_eq!(error_of(resp).await, (400, "invalid_request".into()));
    // gRPC: both subject and subject_token, neither, a user token as Bearer, garbage ids.
    let mut grpc = app.grpc().await;
    let both = pb::ExchangeForUserRequest { subject: "a".into(), subject_token: user.clone(), ..Default::default() };
    assert_eq!(
        grpc.exchange_for_user(with_basic(both, &partner.id, &partner.secret)).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        grpc.exchange_for_user(bearer(for_user("bob", &[]), &user)).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    for bad in [long.as_str(), "a b", "ü"] {
        let err =
            grpc.exchange_for_user(with_basic(for_user(bad, &[]), &partner.id, &partner.secret)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
    }
    // The metadata advertises the grant and token types.
    let m: Value = app
        .client
        .get(format!("{}/.well-known/oauth-authorization-server", app.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(m["grant_types_supported"].as_array().unwrap().contains(&json!(EXCHANGE)));
    assert!(m["token_types_supported"].as_array().unwrap().contains(&json!(USER_ID)));
}

/// The audit writer hands the database a whole group at once: every field of every record (NULLs,
/// quotes, non-ASCII) comes back as written, in order, and no padding row is ever stored.
async fn audit_groups_are_written_whole_and_in_order(db: Db) {
    let db = TestDb::new(db).await;
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let records: Vec<AuditRecord> = (0..1800)
        .map(|i| AuditRecord {
            at_ms: 1_700_000_000_000 + i,
            action: if i % 3 == 0 { "token_exchange" } else { "client_credentials" }.into(),
            actor: format!("cl_{i}"),
            client_id: (i % 7 != 0).then(|| format!("cl_{i}")),
            subject: (i % 2 == 0).then(|| format!("user-{i}@example.com")),
            scopes: Some("api:read api:write".into()),
            jti: Some(format!("jti-{i}")),
            grant_id: (i % 5 == 0).then(|| format!("gr_{i}")),
            outcome: if i % 11 == 0 { "invalid_scope" } else { "ok" }.into(),
            detail: (i % 11 == 0).then(|| format!("scope \"x\" is not allowed – {i} \\ ünïcode")),
        })
        .collect();
    // One row, a group that leaves most of its statement empty, and more than one statement holds;
    // the first half through sea-orm (the CLI's path), the second through the audit writer's own
    // target (on an SQLite file, its direct connection).
    let (orm, writer) = records.split_at(900);
    for part in [&orm[..1], &orm[1..300], &orm[300..]] {
        store.insert_audit(part).await.unwrap();
    }
    let mut target = store.group_writer();
    for part in [&writer[..1], &writer[1..300], &writer[300..]] {
        target.insert(part).await.unwrap();
    }
    let mut back = store.query_audit(&AuditQuery { limit: 2000, ..AuditQuery::default() }).await.unwrap();
    back.reverse();
    assert_eq!(back, records);
}

/// Write system calls this thread has made so far (`syscw` in `/proc/thread-self/io`).
fn write_calls() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    io.lines().find_map(|l| l.strip_prefix("syscw: ")).unwrap().trim().parse().unwrap()
}

/// On an SQLite file the audit writer's connection hands a group commit's WAL frames to the
/// kernel in one write, not two per page (`storage::wal_buffer`), and nothing else changes: every
/// group is visible to the server's other connections the moment it commits, through transactions
/// larger than the buffer and checkpoints that empty the WAL, and the file stays intact.
#[tokio::test]
async fn audit_wal_frames_reach_the_file_in_one_write_per_commit() {
    let db = TestDb::new(Db::Sqlite).await;
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let mut target = store.group_writer();
    let mut all = Vec::new();
    // A lone record, a usual group, a full statement, a transaction of several statements and
    // about 3 MiB (the buffer passes on 128 KiB at most), then usual groups again after the WAL
    // was emptied.
    for (round, size) in [1, 24, 512, 1500, 24, 7].into_iter().enumerate() {
        let group: Vec<AuditRecord> = (0..size)
            .map(|i| AuditRecord {
                detail: (round == 3).then(|| format!("{round}-{i}-{}", "d".repeat(2000))),
                ..audit_record(all.len() as i64 + i)
            })
            .collect();
        // The writer's SQLite connection works on the calling thread, which counts its writes.
        let before = write_calls();
        target.insert(&group).await.unwrap();
        let writes = write_calls() - before;
        all.extend(group);
        if size == 24 {
            // Without the buffer, two per page: eight here (four pages). One with it; two when
            // the WAL starts over, since SQLite syncs a new WAL's header before its first frame.
            assert!(writes <= 2, "{writes} write calls for one group commit of 24 records");
        }
        let mut back = store.query_audit(&AuditQuery { limit: 10_000, ..AuditQuery::default() }).await.unwrap();
        back.reverse();
        assert_eq!(back.len(), all.len(), "after group {round}");
        assert!(back == all, "records read back differ after group {round}");
        if round == 3 {
            let (busy, log, checkpointed): (i64, i64, i64) = sqlx_row(&store, "PRAGMA wal_checkpoint(TRUNCATE)").await;
            assert_eq!((busy, log, checkpointed), (0, 0, 0), "the WAL is emptied");
        }
    }
    let check: (String,) = sqlx_row(&store, "PRAGMA integrity_check").await;
    assert_eq!(check.0, "ok");
}

/// One row of a statement run on the store's pool.
async fn sqlx_row<T: sea_orm::TryGetableMany>(store: &Store, sql: &str) -> T {
    use sea_orm::ConnectionTrait;
    let row = store.db().query_one_raw(sea_orm::Statement::from_string(store.db().get_database_backend(), sql));
    T::try_get_many_by_index(&row.await.unwrap().unwrap()).unwrap()
}

fn audit_record(i: i64) -> AuditRecord {
    AuditRecord {
        at_ms: 1_700_000_000_000 + i,
        action: "client_credentials".into(),
        actor: format!("cl_{i}"),
        outcome: "ok".into(),
        ..AuditRecord::default()
    }
}

/// A fresh, migrated database and a group-commit audit writer on it.
async fn paced_audit(db: Db, pacing: Pacing) -> (TestDb, Store, Audit) {
    let db = TestDb::new(db).await;
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let audit = Audit::batched(store.clone(), pacing).unwrap();
    (db, store, audit)
}

/// Back to back, and with no runtime idleness to tell it otherwise, the audit writer starts a group
/// commit at most once per commit interval and what arrives meanwhile joins one group; a record
/// after a quiet spell is committed at once.
async fn audit_commits_are_paced(db: Db) {
    const INTERVAL: Duration = Duration::from_millis(1500);
    let (_db, store, audit) = paced_audit(db, Pacing { interval: INTERVAL, idleness: None }).await;
    let t0 = std::time::Instant::now();
    audit.record(audit_record(0)).await.unwrap();
    let lone = t0.elapsed();
    assert!(lone < INTERVAL / 2, "a lone record waited {lone:?}");
    // Two more right after that commit: they wait for the interval to pass since it started, and
    // the later one, queued while the writer waits, is committed in the same group (a group of
    // its own would start another interval later).
    let (second, third) = tokio::join!(
        async {
            audit.record(audit_record(1)).await.unwrap();
            t0.elapsed()
        },
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            audit.record(audit_record(2)).await.unwrap();
            t0.elapsed()
        },
    );
    assert!(second >= INTERVAL, "the next commit started {second:?} after the first, within the interval");
    assert!(third < INTERVAL * 2, "the third record waited for a group of its own ({third:?})");
    let back = store.query_audit(&AuditQuery { limit: 10, ..AuditQuery::default() }).await.unwrap();
    assert_eq!(back.len(), 3);
}

/// A runtime of two workers whose parks `idleness` counts (for two CPUs).
fn two_workers(idleness: &Arc<Idleness>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    idleness.install(builder.worker_threads(2).enable_all(), 2);
    builder.build().unwrap()
}

/// With the server runtime's idleness known, the audit writer waits only while the workers have
/// had no idle moment since the last commit began: on an idle runtime, a record that follows a
/// commit at once is written at once, not an interval later.
#[test]
fn audit_pacing_never_waits_with_idle_workers() {
    const INTERVAL: Duration = Duration::from_secs(3);
    let idleness = Arc::new(Idleness::new(2));
    two_workers(&idleness).block_on(async {
        let (_db, store, audit) =
            paced_audit(Db::Sqlite, Pacing { interval: INTERVAL, idleness: Some(idleness) }).await;
        for i in 0..3 {
            let t = std::time::Instant::now();
            audit.record(audit_record(i)).await.unwrap();
            assert!(t.elapsed() < INTERVAL / 2, "record {i} waited {:?} on an idle server", t.elapsed());
        }
        let back = store.query_audit(&AuditQuery { limit: 10, ..AuditQuery::default() }).await.unwrap();
        assert_eq!(back.len(), 3);
    });
}

/// Every CPU busy counts, whichever runtime keeps it busy: with both CPUs taken by the two
/// workers of one runtime, the writer paces even though another runtime's thread (the gRPC
/// threads' kind) sits idle.
#[test]
fn audit_pacing_counts_busy_cpus_across_runtimes() {
    const INTERVAL: Duration = Duration::from_millis(1500);
    let idleness = Arc::new(Idleness::new(2));
    let workers = two_workers(&idleness);
    let mut idle = tokio::runtime::Builder::new_current_thread();
    idleness.install(idle.enable_all(), 1);
    let idle = idle.build().unwrap();
    idle.block_on(async {
        let (_db, _store, audit) =
            paced_audit(Db::Sqlite, Pacing { interval: INTERVAL, idleness: Some(idleness) }).await;
        // Both workers busy until told to stop (bounded: at most 10 s).
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinning: Vec<_> = (0..2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                workers.spawn(async move {
                    let t = std::time::Instant::now();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && t.elapsed() < Duration::from_secs(10) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = std::time::Instant::now();
        audit.record(audit_record(0)).await.unwrap();
        audit.record(audit_record(1)).await.unwrap();
        let second = t0.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for s in spinning {
            s.await.unwrap();
        }
        assert!(second >= INTERVAL, "the second commit did not wait while both CPUs were busy ({second:?})");
        // Once the workers are idle again, nothing waits.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t1 = std::time::Instant::now();
        audit.record(audit_record(2)).await.unwrap();
        audit.record(audit_record(3)).await.unwrap();
        assert!(t1.elapsed() < INTERVAL / 2, "waited {:?} with the workers idle", t1.elapsed());
    });
}

/// Runs `work` on a thread of its own as a shard: a current-thread runtime with a [`Home`], as
/// the REST and gRPC threads are; returns the thread's result.
fn on_shard<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            Home::install(&runtime);
            runtime.block_on(work())
        })
        .unwrap()
}

/// The audit writer answers callers on shards through their shard's [`Home`], a group's callers
/// on one shard with one job: every caller on every shard gets its answer, each committed, and a
/// shard that stops while its caller waits costs the others nothing.
#[test]
fn audit_answers_callers_on_their_own_threads() {
    const INTERVAL: Duration = Duration::from_millis(1500);
    let main = tokio::runtime::Runtime::new().unwrap();
    // Paced with no idleness: a record right after a commit waits for the next interval, long
    // enough to stop a shard while its caller waits.
    let (_db, store, audit) = main.block_on(paced_audit(Db::Sqlite, Pacing { interval: INTERVAL, idleness: None }));
    assert!(Home::current().is_none(), "a test thread is no shard");

    // Jobs sent home run on the shard's own thread.
    let (named_tx, named_rx) = std::sync::mpsc::channel();
    let home = on_shard("shard-home", move || {
        Box::pin(async move {
            let home = Home::current().expect("a shard has a home");
            named_tx.send(home.clone()).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        })
    });
    let their_home = named_rx.recv().unwrap();
    let (ran_tx, ran_rx) = std::sync::mpsc::channel();
    their_home
        .run(Box::new(move || ran_tx.send(std::thread::current().name().map(str::to_owned)).unwrap()))
        .unwrap_or_else(|_| panic!("the shard is running"));
    assert_eq!(ran_rx.recv_timeout(Duration::from_secs(5)).unwrap().as_deref(), Some("shard-home"));
    home.join().unwrap();
    // Once it has stopped, a job comes back to run elsewhere.
    assert!(their_home.run(Box::new(|| ())).is_err(), "a stopped shard took a job");

    // Two shards, 20 callers each, all at once: the first record commits alone, the rest in the
    // next group, answered on both shards.
    main.block_on(audit.record(audit_record(0))).unwrap();
    let shards: Vec<_> = (0..2)
        .map(|s| {
            let audit = audit.clone();
            on_shard(&format!("shard-{s}"), move || {
                Box::pin(async move {
                    let calls = (0..20).map(|i| audit.record(audit_record(1 + s * 20 + i)));
                    futures::future::join_all(calls).await.into_iter().collect::<Result<Vec<()>, _>>()
                })
            })
        })
        .collect();
    // A third shard whose caller joins that group too, but whose thread stops before the commit.
    let leaving = {
        let audit = audit.clone();
        on_shard("shard-leaving", move || {
            Box::pin(async move {
                tokio::select! {
                    r = audit.record(audit_record(100)) => panic!("committed within 200 ms: {r:?}"),
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            })
        })
    };
    leaving.join().unwrap();
    for shard in shards {
        shard.join().unwrap().expect("every caller on a shard is answered with its commit");
    }
    let back = main.block_on(store.query_audit(&AuditQuery { limit: 100, ..AuditQuery::default() })).unwrap();
    assert_eq!(back.len(), 42, "the group, the leaving shard's record included, was committed");
}
