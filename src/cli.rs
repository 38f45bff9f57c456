//! The `tessera` binary: `serve`, `migrate`, and `client …` working directly on the configured
//! database (so they work before any server runs; running servers see changes through the
//! change feed). Every setting is a flag and an environment variable.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::app::{Application, ServeConfig};
use crate::clock::{Clock, SystemClock};
use crate::config::{DEFAULT_DATABASE_URL, resolve_kek, value_or_file};
use crate::crypto::SigningAlg;
use crate::crypto::secret::SecretHasher;
use crate::domain::{Capability, Client, ClientUpdate, Grant, NewClient, NewGrant, ScopeSet};
use crate::service::audit::{Idleness, Pacing};
use crate::service::{Admin, Audit, Settings};
use crate::storage::Store;
use crate::storage::audit::AuditQuery;

#[derive(Parser, Debug)]
#[command(
    name = "tessera",
    version,
    about = "OAuth2 token service: client credentials, token exchange for users, introspection, revocation"
)]
pub struct Cli {
    #[command(flatten)]
    pub db: DbArgs,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "TESSERA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// sea-orm database URL: sqlite://FILE?mode=rwc or postgres://USER:PASSWORD@HOST/DB.
    #[arg(long, env = "TESSERA_DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// File holding the database URL (for Kubernetes Secrets).
    #[arg(long, env = "TESSERA_DATABASE_URL_FILE", global = true)]
    pub database_url_file: Option<PathBuf>,
}

impl DbArgs {
    pub fn url(&self) -> anyhow::Result<String> {
        Ok(value_or_file(self.database_url.clone(), self.database_url_file.as_deref(), "database URL")?
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply pending migrations (unless --no-migrate), then serve gRPC and HTTP.
    Serve(ServeArgs),
    /// Apply pending migrations and exit.
    Migrate,
    /// Manage clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage grants: platform users who let a client act for them.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Show the audit trail, newest first.
    Audit(AuditArgs),
    /// Signing keys: rotate, list.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Subcommand, Debug)]
pub enum GrantCommand {
    /// Let a client act for a subject within scopes (the user enabled the integration).
    Create {
        #[arg(long)]
        client: String,
        #[arg(long)]
        subject: String,
        #[arg(long)]
        account: Option<String>,
        /// Granted scopes, space-delimited (a subset of the client's).
        #[arg(long)]
        scope: Vec<String>,
        /// Lifetime, e.g. 3600, 90m, 30d (default: until revoked).
        #[arg(long, value_parser = parse_duration_secs)]
        expires_in: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// List grants.
    List {
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a grant: every token minted under it stops working.
    Revoke {
        grant_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[arg(long)]
    pub client: Option<String>,
    #[arg(long)]
    pub subject: Option<String>,
    /// Only records since: unix seconds, RFC 3339 (2026-11-21T10:00:00Z) or an age (15m, 2h, 7d).
    #[arg(long, value_parser = parse_since_ms)]
    pub since: Option<i64>,
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    #[arg(long)]
    pub json: bool,
}

/// Seconds, or a humantime duration (90m, 30d).
fn parse_duration_secs(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    humantime::parse_duration(s)
        .map_err(|e| e.to_string())
        .and_then(|d| i64::try_from(d.as_secs()).map_err(|e| e.to_string()))
}

/// Unix seconds, an RFC 3339 instant, or an age before now; as unix milliseconds.
fn parse_since_ms(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs * 1000);
    }
    let to_ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).map_err(|e| e.to_string())
    };
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return to_ms(t);
    }
    let age = humantime::parse_duration(s).map_err(|_| format!("not a time or an age: {s}"))?;
    to_ms(std::time::SystemTime::now() - age)
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long, env = "TESSERA_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,
    #[arg(long, env = "TESSERA_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// Operations listener: /healthz, /readyz, /metrics. Keep it off the public network.
    #[arg(long, env = "TESSERA_OPS_ADDR", default_value = "127.0.0.1:9090")]
    pub ops_addr: String,
    /// Milliseconds a throttled authentication attempt waits before its 429 (tarpit; 0 = none).
    #[arg(long, env = "TESSERA_THROTTLE_DELAY_MS", default_value_t = 1000)]
    pub throttle_delay_ms: u64,
    /// Open connections at most, per listener.
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Threads serving gRPC connections, each with the connections it was handed (default: one
    /// per CPU; 0 = serve gRPC on Tokio's work-stealing runtime).
    #[arg(long, env = "TESSERA_GRPC_THREADS", value_parser = clap::value_parser!(u64).range(0..=256))]
    pub grpc_threads: Option<u64>,
    /// Threads serving REST connections, each with the connections it was handed (default: one
    /// per CPU; 0 = serve REST on Tokio's work-stealing runtime).
    #[arg(long, env = "TESSERA_HTTP_THREADS", value_parser = clap::value_parser!(u64).range(0..=256))]
    pub http_threads: Option<u64>,
    /// Seconds requests in flight may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "TESSERA_DRAIN_TIMEOUT_SECS", default_value_t = 20)]
    pub drain_timeout_secs: u64,
    /// Issuer identifier (`iss`, RFC 8414); default http://<HTTP address>.
    #[arg(long, env = "TESSERA_ISSUER")]
    pub issuer: Option<String>,
    /// Algorithm of newly generated signing keys: EdDSA, ES256 or RS256.
    #[arg(long, env = "TESSERA_SIGNING_ALG", default_value = "EdDSA")]
    pub signing_alg: SigningAlg,
    /// Default access-token lifetime in seconds (clients may have their own).
    #[arg(long, env = "TESSERA_ACCESS_TOKEN_TTL", default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..=86_400))]
    pub access_token_ttl: i64,
    #[command(flatten)]
    pub kek: KekArgs,
    /// Seconds a new signing key is published in JWKS before it signs (keep it above JWKS max-age, 300).
    #[arg(long, env = "TESSERA_KEY_PREPUBLISH_SECS", default_value_t = 600)]
    pub key_prepublish_secs: i64,
    /// Automatic signing-key rotation when the newest key is this old, e.g. 30d (default: off).
    #[arg(long, env = "TESSERA_KEY_ROTATION_INTERVAL", value_parser = parse_duration_secs)]
    pub key_rotation_interval: Option<i64>,
    /// Parallel argon2 verifications at most (default: the number of CPUs).
    #[arg(long, env = "TESSERA_ARGON2_CONCURRENCY")]
    pub argon2_concurrency: Option<usize>,
    /// Default user-token lifetime in seconds (clients may have their own).
    #[arg(long, env = "TESSERA_USER_TOKEN_TTL", default_value_t = 300, value_parser = clap::value_parser!(i64).range(1..=3_600))]
    pub user_token_ttl: i64,
    /// Audit trail: on (default) or off (only to measure its cost).
    #[arg(long, env = "TESSERA_AUDIT", value_enum, default_value_t = Switch::On)]
    pub audit: Switch,
    /// While the server is saturated, audit group commits start at most once per this many
    /// microseconds (0 = back to back): fewer, larger commits cost less CPU and disk.
    #[arg(long, env = "TESSERA_AUDIT_COMMIT_INTERVAL_US", default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub audit_commit_interval_us: u64,
    /// Change-feed poll interval in milliseconds (PostgreSQL also wakes on NOTIFY).
    #[arg(long, env = "TESSERA_CHANGE_POLL_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=5000))]
    pub change_poll_ms: u64,
    /// PEM certificate chain: serve HTTP and gRPC over TLS (needs --tls-key-file).
    #[arg(long, env = "TESSERA_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for --tls-cert-file.
    #[arg(long, env = "TESSERA_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Do not apply migrations (run `tessera migrate` separately, e.g. as a Helm hook).
    #[arg(long)]
    pub no_migrate: bool,
}

#[derive(Args, Debug, Clone)]
pub struct KekArgs {
    /// 32 random bytes, base64: encrypts signing keys at rest. Required with PostgreSQL.
    #[arg(long, env = "TESSERA_KEY_ENCRYPTION_KEY", hide_env_values = true)]
    pub key_encryption_key: Option<String>,
    #[arg(long, env = "TESSERA_KEY_ENCRYPTION_KEY_FILE")]
    pub key_encryption_key_file: Option<PathBuf>,
}

impl KekArgs {
    pub fn resolve(&self, database_url: &str) -> anyhow::Result<crate::crypto::Kek> {
        let value = value_or_file(
            self.key_encryption_key.clone(),
            self.key_encryption_key_file.as_deref(),
            "key-encryption key",
        )?;
        resolve_kek(value, database_url)
    }
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Publish a new signing key now; it signs after the pre-publication delay, and the current
    /// key retires then (it stays in JWKS until the last token it signed has expired).
    Rotate {
        #[command(flatten)]
        kek: KekArgs,
        /// EdDSA, ES256 or RS256 (default: TESSERA_SIGNING_ALG, else EdDSA).
        #[arg(long, env = "TESSERA_SIGNING_ALG", default_value = "EdDSA")]
        alg: SigningAlg,
        /// Seconds before the new key signs.
        #[arg(long, env = "TESSERA_KEY_PREPUBLISH_SECS", default_value_t = 600)]
        prepublish_secs: i64,
        #[arg(long)]
        json: bool,
    },
    /// List signing keys and their states (pending, active, retired, expired).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Create a client; prints its client_id and client_secret (shown once).
    Create(CreateArgs),
    /// List clients.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one client.
    Show {
        client_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Add a new secret (printed once); existing secrets stay valid until removed.
    RotateSecret {
        client_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove one secret (see `client show` for secret ids).
    RemoveSecret {
        client_id: String,
        secret_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Disable the client: it can no longer authenticate and none of its tokens is active.
    Disable {
        client_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Enable a disabled client.
    Enable {
        client_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a client's act-as policy, lifetimes, scopes or audiences.
    Update(UpdateArgs),
    /// Revoke every token issued to the client until now.
    RevokeTokens {
        client_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub tenant: Option<String>,
    /// Allowed scopes, space-delimited (may be repeated).
    #[arg(long)]
    pub scope: Vec<String>,
    /// Allowed audience (repeat for several).
    #[arg(long)]
    pub audience: Vec<String>,
    /// introspect | revoke | admin (repeat for several).
    #[arg(long)]
    pub capability: Vec<String>,
    /// Access-token lifetime in seconds (default: the server's).
    #[arg(long)]
    pub access_token_ttl: Option<i64>,
    /// Whom it may act for by token exchange: none, tenant (its tenant's users) or granted.
    #[arg(long, default_value = "none")]
    pub act_as: String,
    /// User-token lifetime in seconds (default: the server's).
    #[arg(long)]
    pub user_token_ttl: Option<i64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    pub client_id: String,
    /// none | tenant | granted
    #[arg(long)]
    pub act_as: Option<String>,
    #[arg(long)]
    pub access_token_ttl: Option<i64>,
    #[arg(long)]
    pub user_token_ttl: Option<i64>,
    /// Replace the allowed scopes (space-delimited; may be repeated).
    #[arg(long)]
    pub scope: Option<Vec<String>>,
    /// Replace the allowed audiences (repeat for several).
    #[arg(long)]
    pub audience: Option<Vec<String>>,
    #[arg(long)]
    pub json: bool,
}

/// Logs only (tests, and the CLI's administrative commands).
pub fn init_logging(format: LogFormat) {
    let _ = crate::telemetry::init(format == LogFormat::Json);
}

/// `idleness`: the runtime's, when the caller installed it ([`Idleness::install`]); the server's
/// audit writer paces its commits by it.
pub async fn run(cli: Cli, idleness: Option<Arc<Idleness>>) -> anyhow::Result<()> {
    let url = cli.db.url()?;
    match cli.command {
        Command::Serve(args) => serve(url, args, idleness).await,
        Command::Migrate => {
            let store = Store::connect(&url).await?;
            store.migrate().await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Client(cmd) => client(url, cmd).await,
        Command::Grant(cmd) => grant(url, cmd).await,
        Command::Audit(args) => audit(url, args).await,
        Command::Keys(cmd) => keys(url, cmd).await,
    }
}

async fn serve(database_url: String, args: ServeArgs, idleness: Option<Arc<Idleness>>) -> anyhow::Result<()> {
    let kek = args.kek.resolve(&database_url)?;
    let mut settings = Settings::new(String::new());
    settings.signing_alg = args.signing_alg;
    settings.access_token_ttl = args.access_token_ttl;
    settings.user_token_ttl = args.user_token_ttl;
    settings.audit = args.audit == Switch::On;
    settings.audit_pacing =
        Pacing { interval: std::time::Duration::from_micros(args.audit_commit_interval_us), idleness };
    settings.throttle_delay = std::time::Duration::from_millis(args.throttle_delay_ms);
    settings.key_prepublish_secs = args.key_prepublish_secs.max(0);
    if settings.key_prepublish_secs < 300 {
        tracing::warn!(
            "TESSERA_KEY_PREPUBLISH_SECS is below the JWKS cache lifetime (300 s): resource servers may see a new key's tokens before its JWKS entry"
        );
    }
    settings.key_rotation_interval =
        args.key_rotation_interval.map(|s| std::time::Duration::from_secs(u64::try_from(s.max(3600)).unwrap_or(3600)));
    settings.change_poll_interval = std::time::Duration::from_millis(args.change_poll_ms);
    if let Some(n) = args.argon2_concurrency {
        settings.argon2_concurrency = n.max(1);
    }
    let config = ServeConfig {
        database_url,
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        issuer: args.issuer,
        settings,
        kek,
        migrate: !args.no_migrate,
        ops_addr: Some(args.ops_addr),
        drain_timeout: std::time::Duration::from_secs(args.drain_timeout_secs),
        max_connections: args.max_connections,
        grpc_threads: args.grpc_threads.map_or_else(crate::shards::default_count, |n| n as usize),
        http_threads: args.http_threads.map_or_else(crate::shards::default_count, |n| n as usize),
        tls: match (args.tls_cert_file, args.tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles { cert, key }),
            _ => None,
        },
    };
    let app = Application::build(config, Arc::new(SystemClock)).await?;
    tracing::info!(grpc = %app.grpc_addr(), http = %app.http_addr(), ops = ?app.ops_addr(), "listening");
    app.run_until(shutdown_signal()).await
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}

fn client_json(c: &Client) -> serde_json::Value {
    json!({
        "client_id": c.client_id.as_str(),
        "name": c.name,
        "tenant": c.tenant,
        "scopes": c.scopes.to_vec(),
        "audiences": c.audiences,
        "capabilities": c.capabilities.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "access_token_ttl_seconds": c.access_token_ttl,
        "disabled": c.disabled,
        "tokens_revoked_before_ms": c.tokens_revoked_before_ms,
        "created_at": c.created_at,
        "act_as": c.act_as.as_str(),
        "user_token_ttl_seconds": c.user_token_ttl,
        "secrets": c.secrets.iter().map(|s| json!({"secret_id": s.secret_id, "created_at": s.created_at})).collect::<Vec<_>>(),
    })
}

fn print_client(c: &Client) {
    println!("client_id:    {}", c.client_id);
    println!("name:         {}", c.name);
    println!("tenant:       {}", c.tenant);
    println!("scopes:       {}", c.scopes);
    println!("audiences:    {}", c.audiences.join(" "));
    println!("capabilities: {}", c.capabilities.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(" "));
    let ttl = if c.access_token_ttl > 0 { format!("{}s", c.access_token_ttl) } else { "server default".into() };
    println!("token ttl:    {ttl}");
    println!("act-as:       {}", c.act_as);
    let uttl = if c.user_token_ttl > 0 { format!("{}s", c.user_token_ttl) } else { "server default".into() };
    println!("user ttl:     {uttl}");
    println!("disabled:     {}", c.disabled);
    for s in &c.secrets {
        println!("secret:       {} (created {})", s.secret_id, s.created_at);
    }
}

fn emit(c: &Client, as_json: bool) {
    if as_json {
        println!("{}", client_json(c));
    } else {
        print_client(c);
    }
}

/// The audit actor for changes made from the command line.
const CLI_ACTOR: &str = "cli";

/// Admin operations straight on the database (the CLI also works before any server ran).
async fn open_admin(database_url: &str) -> anyhow::Result<Admin> {
    let store = Store::connect(database_url).await?;
    store.migrate().await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Ok(Admin::new(store.clone(), SecretHasher::new(1)?, clock, Audit::direct(store)))
}

fn scopes_arg(list: &[String]) -> Result<ScopeSet, crate::domain::Error> {
    ScopeSet::from_tokens(list.iter().flat_map(|s| s.split(' ')).filter(|s| !s.is_empty()))
}

fn grant_json(g: &Grant) -> serde_json::Value {
    json!({
        "grant_id": g.grant_id,
        "client_id": g.client_id,
        "subject": g.subject,
        "account": g.account,
        "scopes": g.scopes.to_vec(),
        "created_at": g.created_at,
        "expires_at": g.expires_at,
        "revoked_at": g.revoked_at,
        "active": g.is_active(SystemClock.now_secs()),
    })
}

fn emit_grant(g: &Grant, as_json: bool) {
    if as_json {
        println!("{}", grant_json(g));
    } else {
        let state = if g.is_active(SystemClock.now_secs()) { "active" } else { "ended" };
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            g.grant_id,
            g.client_id,
            g.subject,
            g.account.as_deref().unwrap_or("-"),
            g.scopes,
            state
        );
    }
}

async fn grant(database_url: String, cmd: GrantCommand) -> anyhow::Result<()> {
    let admin = open_admin(&database_url).await?;
    match cmd {
        GrantCommand::Create { client, subject, account, scope, expires_in, json } => {
            let g = admin
                .create_grant(
                    CLI_ACTOR,
                    NewGrant { client_id: client, subject, account, scopes: scopes_arg(&scope)?, expires_in },
                )
                .await?;
            emit_grant(&g, json);
        }
        GrantCommand::List { client, subject, json } => {
            let grants = admin.list_grants(client.as_deref(), subject.as_deref()).await?;
            if json {
                println!("{}", serde_json::Value::Array(grants.iter().map(grant_json).collect()));
            } else {
                for g in &grants {
                    emit_grant(g, false);
                }
            }
        }
        GrantCommand::Revoke { grant_id, json } => emit_grant(&admin.revoke_grant(CLI_ACTOR, &grant_id).await?, json),
    }
    Ok(())
}

async fn audit(database_url: String, args: AuditArgs) -> anyhow::Result<()> {
    let admin = open_admin(&database_url).await?;
    let q = AuditQuery { client_id: args.client, subject: args.subject, since_ms: args.since, limit: args.limit };
    for r in admin.query_audit(&q).await? {
        if args.json {
            println!(
                "{}",
                json!({"at_ms": r.at_ms, "action": r.action, "actor": r.actor, "client_id": r.client_id,
                       "subject": r.subject, "scopes": r.scopes, "jti": r.jti, "grant_id": r.grant_id,
                       "outcome": r.outcome, "detail": r.detail})
            );
        } else {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(r.at_ms).unwrap_or(0));
            let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            println!(
                "{}  {:<22} {:<8} actor={} client={} subject={} scopes=\"{}\" jti={} grant={}{}",
                humantime::format_rfc3339_millis(at),
                r.action,
                r.outcome,
                r.actor,
                opt(&r.client_id),
                opt(&r.subject),
                r.scopes.clone().unwrap_or_default(),
                opt(&r.jti),
                opt(&r.grant_id),
                r.detail.map(|d| format!(" ({d})")).unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn key_json(k: &crate::service::keys::KeyInfo) -> serde_json::Value {
    json!({
        "kid": k.kid, "alg": k.alg, "state": k.state.as_str(), "created_at": k.created_at,
        "activates_at": k.activates_at, "retired_at": k.retired_at, "published_until": k.published_until,
    })
}

async fn keys(database_url: String, cmd: KeysCommand) -> anyhow::Result<()> {
    let store = Store::connect(&database_url).await?;
    store.migrate().await?;
    match cmd {
        KeysCommand::Rotate { kek, alg, prepublish_secs, json } => {
            let kek = kek.resolve(&database_url)?;
            let now_ms = SystemClock.now_ms();
            let key = crate::service::keys::rotate(&store, &kek, alg, prepublish_secs, None, now_ms, Some(CLI_ACTOR))
                .await?
                .ok_or_else(|| anyhow::anyhow!("rotation did not happen"))?;
            if json {
                println!("{}", key_json(&key));
            } else {
                println!(
                    "new key {} ({}) published now, signs from {} (unix seconds)",
                    key.kid, key.alg, key.activates_at
                );
            }
        }
        KeysCommand::List { json } => {
            let keys = crate::service::keys::list_keys(&store, SystemClock.now_secs()).await?;
            if json {
                println!("{}", serde_json::Value::Array(keys.iter().map(key_json).collect()));
            } else {
                for k in &keys {
                    println!(
                        "{}\t{}\t{:<8}\tactivates {}\tretired {}",
                        k.kid,
                        k.alg,
                        k.state.as_str(),
                        k.activates_at,
                        k.retired_at.map_or("-".into(), |r| r.to_string())
                    );
                }
            }
        }
    }
    Ok(())
}

async fn client(database_url: String, cmd: ClientCommand) -> anyhow::Result<()> {
    let admin = open_admin(&database_url).await?;
    match cmd {
        ClientCommand::Create(a) => {
            let scopes = ScopeSet::from_tokens(a.scope.iter().flat_map(|s| s.split(' ')).filter(|s| !s.is_empty()))?;
            let capabilities =
                a.capability.iter().map(|c| c.parse::<Capability>()).collect::<Result<BTreeSet<_>, _>>()?;
            let created = admin
                .create_client(
                    CLI_ACTOR,
                    NewClient {
                        name: a.name,
                        tenant: a.tenant,
                        scopes,
                        audiences: a.audience,
                        capabilities,
                        access_token_ttl: a.access_token_ttl,
                        act_as: a.act_as.parse()?,
                        user_token_ttl: a.user_token_ttl,
                    },
                )
                .await?;
            if a.json {
                let mut v = client_json(&created.client);
                v["client_secret"] = json!(created.secret.as_str());
                println!("{v}");
            } else {
                print_client(&created.client);
                println!("client_secret: {}", created.secret.as_str());
                eprintln!("\nThe client secret is shown only once: store it now.");
            }
        }
        ClientCommand::List { tenant, json } => {
            let clients = admin.list_clients(tenant.as_deref()).await?;
            if json {
                println!("{}", serde_json::Value::Array(clients.iter().map(client_json).collect()));
            } else {
                for c in &clients {
                    println!(
                        "{}\t{}\t{}\t{}",
                        c.client_id,
                        c.tenant,
                        if c.disabled { "disabled" } else { "enabled" },
                        c.name
                    );
                }
            }
        }
        ClientCommand::Show { client_id, json } => emit(&admin.get_client(&client_id).await?, json),
        ClientCommand::RotateSecret { client_id, json } => {
            let added = admin.rotate_secret(CLI_ACTOR, &client_id).await?;
            if json {
                let mut v = client_json(&added.client);
                v["client_secret"] = json!(added.secret.as_str());
                v["secret_id"] = json!(added.secret_id);
                println!("{v}");
            } else {
                println!("secret_id:     {}", added.secret_id);
                println!("client_secret: {}", added.secret.as_str());
                eprintln!(
                    "\nThe new secret is shown only once. Older secrets stay valid until `client remove-secret`."
                );
            }
        }
        ClientCommand::RemoveSecret { client_id, secret_id, json } => {
            emit(&admin.remove_secret(CLI_ACTOR, &client_id, &secret_id).await?, json)
        }
        ClientCommand::Disable { client_id, json } => {
            emit(&admin.set_disabled(CLI_ACTOR, &client_id, true).await?, json)
        }
        ClientCommand::Enable { client_id, json } => {
            emit(&admin.set_disabled(CLI_ACTOR, &client_id, false).await?, json)
        }
        ClientCommand::Update(u) => {
            let update = ClientUpdate {
                act_as: u.act_as.as_deref().map(str::parse).transpose()?,
                access_token_ttl: u.access_token_ttl,
                user_token_ttl: u.user_token_ttl,
                scopes: u.scope.as_deref().map(scopes_arg).transpose()?,
                audiences: u.audience,
            };
            emit(&admin.update_client(CLI_ACTOR, &u.client_id, update).await?, u.json)
        }
        ClientCommand::RevokeTokens { client_id, json } => {
            emit(&admin.revoke_client_tokens(CLI_ACTOR, &client_id).await?, json)
        }
    }
    Ok(())
}

/// Turns a domain error from the CLI into a readable message.
pub fn describe(err: &anyhow::Error) -> String {
    if let Some(e) = err.downcast_ref::<crate::domain::Error>() {
        return format!("{}: {}", e.code(), e.description());
    }
    format!("{err:#}")
}
