//! One harness for every test: a real server (gRPC + HTTP) on 127.0.0.1 port 0, its own database
//! (a fresh SQLite file or a fresh PostgreSQL database), an injected clock, a typed tonic client
//! and an HTTP client. Logs are silent unless TEST_LOG=1.
#![allow(dead_code)]

use std::sync::{Arc, Once};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use tessera::app::{Application, ServeConfig};
use tessera::clock::{Clock, ManualClock};
use tessera::crypto::{Kek, SigningAlg};
use tessera::grpc::pb;
use tessera::grpc::pb::admin_service_client::AdminServiceClient;
use tessera::grpc::pb::token_service_client::TokenServiceClient;
use tessera::service::{Admin, Settings, Tessera};
use tessera::storage::Store;
use tonic::transport::Channel;

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs the test body once per database engine.
#[macro_export]
macro_rules! on_both_dbs {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Db::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::Db::Postgres).await
                }
            }
        )*
    };
}

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tessera::cli::init_logging(tessera::cli::LogFormat::Text);
        }
    });
}

/// A database for one test; dropped (PostgreSQL) when the test ends.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new(kind: Db) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        match kind {
            Db::Sqlite => {
                Self { url: format!("sqlite://{}/tessera.db?mode=rwc", dir.path().display()), pg_name: None, _dir: dir }
            }
            Db::Postgres => {
                let name = format!("tessera_test_{}", uuid_like());
                let admin = sea_orm::Database::connect(PG_ADMIN_URL).await.expect(
                    "PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) is needed for the postgres tests",
                );
                sea_orm::ConnectionTrait::execute_unprepared(&admin, &format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let _ = admin.close().await;
                Self { url: format!("postgres://postgres@127.0.0.1:5432/{name}"), pg_name: Some(name), _dir: dir }
            }
        }
    }

    /// A database someone else owns (a private cluster, a proxy in front of one): never dropped.
    fn external(url: String) -> Self {
        Self { url, pg_name: None, _dir: tempfile::tempdir().expect("tempdir") }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Drop happens outside any runtime we can block on: use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async {
                    if let Ok(admin) = sea_orm::Database::connect(PG_ADMIN_URL).await {
                        let _ = sea_orm::ConnectionTrait::execute_unprepared(
                            &admin,
                            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                        )
                        .await;
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

fn uuid_like() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub struct Options {
    pub signing_alg: SigningAlg,
    pub access_token_ttl: i64,
    /// Fixed issuer (replicas of one deployment share it); None = derived from the port.
    pub issuer: Option<String>,
    /// Serve HTTPS and gRPC over TLS with a fresh self-signed certificate.
    pub tls: bool,
    pub max_connections: usize,
    /// Threads serving gRPC (0 = on the test's runtime).
    pub grpc_threads: usize,
    /// Threads serving REST (0 = on the test's runtime).
    pub http_threads: usize,
    /// How often the change feed is polled (PostgreSQL NOTIFY also wakes it).
    pub change_poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            signing_alg: SigningAlg::EdDSA,
            access_token_ttl: 3600,
            issuer: None,
            tls: false,
            max_connections: 1024,
            grpc_threads: 2,
            http_threads: 2,
            change_poll: Duration::from_millis(50),
        }
    }
}

pub struct TestApp {
    pub http: String,
    pub grpc_addr: std::net::SocketAddr,
    /// Base URL of the operations listener (/healthz, /readyz, /metrics).
    pub ops: String,
    pub core: Arc<Tessera>,
    pub clock: Arc<ManualClock>,
    pub db_url: String,
    pub kek_b64: String,
    pub client: reqwest::Client,
    /// PEM of the self-signed certificate when TLS is on.
    pub ca_pem: Option<String>,
    _certs: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    db: Option<Arc<TestDb>>,
}

#[derive(Clone, Debug)]
pub struct TestClient {
    pub id: String,
    pub secret: String,
}

pub async fn spawn_app(kind: Db) -> TestApp {
    spawn_app_with(kind, Options::default()).await
}

pub async fn spawn_app_with(kind: Db, opts: Options) -> TestApp {
    let db = Arc::new(TestDb::new(kind).await);
    let kek = Kek::generate();
    spawn_on(db, kek.to_base64().to_string(), opts).await
}

/// A second replica on the same database (same key-encryption key), like another pod.
pub async fn spawn_replica(of: &TestApp) -> TestApp {
    let db = of.db.clone().expect("database");
    let opts = Options { issuer: Some(of.core.settings.issuer.clone()), ..Options::default() };
    spawn_on(db, of.kek_b64.clone(), opts).await
}

/// A server on a database this harness does not own (e.g. a private PostgreSQL cluster).
pub async fn spawn_app_on(db_url: String) -> TestApp {
    spawn_on(Arc::new(TestDb::external(db_url)), Kek::generate().to_base64().to_string(), Options::default()).await
}

/// Another replica of `of` (same key-encryption key and issuer) that reaches the database
/// through `db_url`, e.g. a proxy in front of `of`'s database.
pub async fn spawn_replica_via(of: &TestApp, db_url: String, opts: Options) -> TestApp {
    let opts = Options { issuer: Some(of.core.settings.issuer.clone()), ..opts };
    spawn_on(Arc::new(TestDb::external(db_url)), of.kek_b64.clone(), opts).await
}

async fn spawn_on(db: Arc<TestDb>, kek_b64: String, opts: Options) -> TestApp {
    init_tracing();
    let clock = Arc::new(ManualClock::new(tessera::clock::SystemClock.now_ms()));
    let mut settings = Settings::new(String::new());
    settings.signing_alg = opts.signing_alg;
    settings.access_token_ttl = opts.access_token_ttl;
    settings.change_poll_interval = opts.change_poll;
    // Tests count throttled answers one by one; the tarpit delay is measured by benches/load.sh.
    settings.throttle_delay = Duration::ZERO;
    let certs = tempfile::tempdir().expect("tempdir");
    let mut ca_pem = None;
    let tls = if opts.tls {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).expect("cert");
        let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).expect("write cert");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
        ca_pem = Some(ck.cert.pem());
        Some(tessera::tls::TlsFiles { cert, key })
    } else {
        None
    };
    let config = ServeConfig {
        database_url: db.url.clone(),
        grpc_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        issuer: opts.issuer,
        settings,
        kek: Kek::from_base64(&kek_b64).expect("kek"),
        migrate: true,
        tls,
        ops_addr: Some("127.0.0.1:0".into()),
        drain_timeout: Duration::from_secs(10),
        max_connections: opts.max_connections,
        grpc_threads: opts.grpc_threads,
        http_threads: opts.http_threads,
    };
    let app = Application::build(config, clock.clone()).await.expect("build app");
    let scheme = if ca_pem.is_some() { "https" } else { "http" };
    let http = format!("{scheme}://{}", app.http_addr());
    let grpc_addr = app.grpc_addr();
    let ops = format!("http://{}", app.ops_addr().expect("ops listener"));
    let core = Arc::clone(app.core());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        http,
        grpc_addr,
        ops,
        core,
        clock,
        db_url: db.url.clone(),
        kek_b64,
        client: http_client(ca_pem.as_deref()),
        ca_pem,
        _certs: certs,
        shutdown: Some(tx),
        server: Some(server),
        db: Some(db),
    }
}

/// An HTTP client trusting only the test certificate when there is one.
pub fn http_client(ca_pem: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(15)).redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = ca_pem {
        b = b
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("cert"));
    }
    b.build().expect("reqwest")
}

pub fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

pub fn with_basic<T>(msg: T, id: &str, secret: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", basic(id, secret).parse().expect("metadata"));
    req
}

/// Polls `check` until it is true or `within` elapses; returns the time it took.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

impl TestApp {
    /// Begins shutdown (like SIGTERM) and returns the server task, to await its drain.
    pub fn begin_stop(&mut self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.take().expect("server running")
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }

    /// The admin operations the CLI uses, on their own connection to the database (as a
    /// separate process would), so changes reach the server only through the change feed.
    pub async fn outside_admin(&self) -> Admin {
        let store = Store::connect(&self.db_url).await.expect("store");
        let audit = tessera::service::Audit::direct(store.clone());
        let hasher = tessera::crypto::secret::SecretHasher::new(1).expect("hasher");
        Admin::new(store, hasher, Arc::new(tessera::clock::SystemClock), audit)
    }

    /// Creates a client through the core (as AdminService does) and returns its credentials.
    pub async fn create_client(&self, name: &str, scopes: &str, capabilities: &[&str]) -> TestClient {
        self.create_client_in(name, None, scopes, capabilities).await
    }

    pub async fn create_client_in(
        &self,
        name: &str,
        tenant: Option<&str>,
        scopes: &str,
        capabilities: &[&str],
    ) -> TestClient {
        self.create_client_with(tessera::domain::NewClient {
            name: name.into(),
            tenant: tenant.map(str::to_owned),
            scopes: tessera::domain::ScopeSet::parse(scopes).expect("scopes"),
            capabilities: capabilities.iter().map(|c| c.parse().expect("capability")).collect(),
            ..Default::default()
        })
        .await
    }

    /// A partner that may act for users (act-as `tenant` or `granted`).
    pub async fn create_actor(&self, name: &str, tenant: &str, scopes: &str, act_as: &str) -> TestClient {
        self.create_client_with(tessera::domain::NewClient {
            name: name.into(),
            tenant: Some(tenant.into()),
            scopes: tessera::domain::ScopeSet::parse(scopes).expect("scopes"),
            act_as: act_as.parse().expect("act-as"),
            ..Default::default()
        })
        .await
    }

    pub async fn create_client_with(&self, new: tessera::domain::NewClient) -> TestClient {
        let created = self.core.admin.create_client("test", new).await.expect("create client");
        self.core.sync_changes().await.expect("sync");
        TestClient { id: created.client.client_id.to_string(), secret: created.secret.to_string() }
    }

    /// A user token for `subject` from an RFC 8693 exchange by `partner` (REST); panics unless 200.
    pub async fn user_token(&self, partner: &TestClient, subject: &str) -> String {
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", subject),
            ("subject_token_type", "urn:tessera:params:oauth:token-type:user_id"),
        ];
        let resp = self.post_form("/oauth2/token", Some((&partner.id, &partner.secret)), &form).await;
        assert_eq!(resp.status(), 200, "exchange for {subject}");
        resp.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn post_form(&self, path: &str, auth: Option<(&str, &str)>, form: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.http)).form(form);
        if let Some((id, secret)) = auth {
            req = req.header("authorization", basic(id, secret));
        }
        req.send().await.expect("http request")
    }

    pub async fn token(&self, c: &TestClient, scope: Option<&str>) -> reqwest::Response {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        self.post_form("/oauth2/token", Some((&c.id, &c.secret)), &form).await
    }

    /// A token for `c` over REST, asserting success.
    pub async fn access_token(&self, c: &TestClient, scope: Option<&str>) -> String {
        let resp = self.token(c, scope).await;
        assert_eq!(resp.status(), 200, "token request failed");
        let body: Value = resp.json().await.expect("json");
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    pub async fn introspect(&self, caller: &TestClient, token: &str) -> Value {
        let resp = self.post_form("/oauth2/introspect", Some((&caller.id, &caller.secret)), &[("token", token)]).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("json")
    }

    pub async fn is_active(&self, caller: &TestClient, token: &str) -> bool {
        self.introspect(caller, token).await["active"] == Value::Bool(true)
    }

    pub async fn revoke(&self, caller: &TestClient, token: &str) -> reqwest::Response {
        self.post_form("/oauth2/revoke", Some((&caller.id, &caller.secret)), &[("token", token)]).await
    }

    pub async fn grpc(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::connect(format!("http://{}", self.grpc_addr)).await.expect("grpc connect")
    }

    pub async fn grpc_admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::connect(format!("http://{}", self.grpc_addr)).await.expect("grpc connect")
    }

    pub async fn grpc_token(&self, c: &TestClient, scope: &[&str]) -> Result<pb::TokenResponse, tonic::Status> {
        let msg = pb::IssueTokenRequest { scope: scope.iter().map(|s| s.to_string()).collect(), audience: vec![] };
        self.grpc().await.issue_token(with_basic(msg, &c.id, &c.secret)).await.map(|r| r.into_inner())
    }

    pub async fn grpc_introspect(
        &self,
        caller: &TestClient,
        token: &str,
    ) -> Result<pb::IntrospectResponse, tonic::Status> {
        let msg = pb::IntrospectRequest { token: token.into(), token_type_hint: String::new() };
        self.grpc().await.introspect(with_basic(msg, &caller.id, &caller.secret)).await.map(|r| r.into_inner())
    }

    pub async fn grpc_revoke(&self, caller: &TestClient, token: &str) -> Result<pb::RevokeResponse, tonic::Status> {
        let msg = pb::RevokeRequest { token: token.into(), token_type_hint: String::new() };
        self.grpc().await.revoke(with_basic(msg, &caller.id, &caller.secret)).await.map(|r| r.into_inner())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}

/// Splits a JWT and decodes its header and claims (without verifying anything).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let dec = |s: &str| -> Value {
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).expect("b64")).expect("json")
    };
    let h = dec(it.next().expect("header"));
    let c = dec(it.next().expect("claims"));
    (h, c)
}
