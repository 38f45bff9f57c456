//! Micro-benchmarks of the hot paths: JWT signing and verification per algorithm, the
//! verified-credential cache hit, authentication on that path, the introspection decision
//! (repeated token: a hash and a few map lookups), and client-credentials issuance with audit off.
//!
//!     cargo bench --bench hot_paths
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use tessera::clock::{Clock, SystemClock};
use tessera::crypto::keys::{LoadedKey, SigningAlg, generate};
use tessera::crypto::{Kek, jwt};
use tessera::domain::{AccessClaims, Audience, Lineage, NewClient, ScopeSet};
use tessera::service::{ClientCredentials, IssueRequest, Settings, Tessera};
use tessera::state::ClientEntry;
use tessera::state::clients::secret_digest;
use tessera::storage::Store;

fn claims(now: i64) -> AccessClaims {
    AccessClaims {
        iss: "https://auth.example.com".into(),
        sub: "cl_0123456789abcdef01234567".into(),
        aud: Audience::One("https://api.example.com".into()),
        exp: now + 3600,
        iat: now,
        jti: tessera::domain::ids::generate_token_id(now * 1000),
        client_id: "cl_0123456789abcdef01234567".into(),
        scope: "orders:read orders:write".into(),
        tenant: "acme".into(),
        act: None,
        account: None,
        lineage: Lineage::default(),
    }
}

fn crypto(c: &mut Criterion) {
    let now = SystemClock.now_secs();
    for alg in SigningAlg::ALL {
        let g = generate(alg).unwrap();
        let key = LoadedKey::new(&g.kid, alg, &g.public_jwk, Some(&g.private_der), 0, None).unwrap();
        let cl = claims(now);
        c.bench_function(&format!("jwt sign {alg}"), |b| b.iter(|| jwt::sign(black_box(&cl), &key).unwrap()));
        let token = jwt::sign(&cl, &key).unwrap();
        c.bench_function(&format!("jwt verify {alg}"), |b| {
            b.iter(|| {
                let (_, a) = jwt::header_kid(black_box(&token)).unwrap();
                jwt::verify_with(&token, a, &key, "https://auth.example.com").unwrap()
            })
        });
    }
}

fn core_paths(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (core, creds, token) = rt.block_on(async {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let mut settings = Settings::new("https://auth.example.com");
        settings.audit = false;
        let core = Tessera::open(store, settings, Kek::generate(), Arc::new(SystemClock)).await.unwrap();
        let created = core
            .admin
            .create_client(
                "bench",
                NewClient {
                    name: "bench".into(),
                    scopes: ScopeSet::parse("orders:read orders:write").unwrap(),
                    capabilities: ["introspect".parse().unwrap()].into_iter().collect(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        core.sync_changes().await.unwrap();
        let creds = ClientCredentials {
            client_id: created.client.client_id.to_string(),
            secret: zeroize::Zeroizing::new(created.secret.to_string()),
            source: None,
        };
        let caller = core.authenticate(&creds).await.unwrap(); // argon2 once; cached from now on
        let t = core.issue_client_token(&caller, IssueRequest::default(), core.now_ms()).await.unwrap();
        (core, creds, t.access_token)
    });

    let entry = ClientEntry::new(rt.block_on(core.admin.get_client(&creds.client_id)).unwrap());
    let digest = secret_digest(&creds.secret);
    entry.remember_verified(digest);
    c.bench_function("credential cache hit (digest + constant-time compare)", |b| {
        b.iter(|| entry.is_verified(&secret_digest(black_box(&creds.secret))))
    });
    c.bench_function("authenticate, cached credentials", |b| {
        b.iter(|| futures::executor::block_on(core.authenticate(black_box(&creds))).unwrap())
    });
    let caller = futures::executor::block_on(core.authenticate(&creds)).unwrap();
    c.bench_function("introspection decision, repeated token", |b| {
        b.iter(|| {
            let r = futures::executor::block_on(core.introspect(&caller, black_box(&token), core.now_ms()));
            assert!(matches!(r, tessera::service::Introspection::Active(_)));
        })
    });
    c.bench_function("issue client token (EdDSA, audit off)", |b| {
        b.iter(|| {
            futures::executor::block_on(core.issue_client_token(&caller, IssueRequest::default(), core.now_ms()))
                .unwrap()
        })
    });
    drop(rt);
}

criterion_group!(benches, crypto, core_paths);
criterion_main!(benches);
