//! Use cases, transport-free. gRPC and REST adapters call these same functions, so the two
//! transports cannot drift apart.
pub mod admin;
pub mod audit;
pub mod auth;
pub mod exchange;
pub mod introspect;
pub mod issue;
pub mod keys;
pub mod revoke;
pub mod sync;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::crypto::{Kek, SigningAlg, secret::SecretHasher};
use crate::state::{ClientDirectory, GrantDirectory, KeyRing, RevocationSet, TokenCache, feed::FeedCursor};
use crate::storage::Store;

pub use admin::Admin;
pub use audit::Audit;
pub use auth::ClientCredentials;
pub use exchange::{ExchangeAuth, ExchangeRequest, SubjectRef};
pub use introspect::Introspection;
pub use issue::{IssueRequest, IssuedToken};

#[derive(Clone, Debug)]
pub struct Settings {
    /// `iss` of every token and the RFC 8414 issuer identifier.
    pub issuer: String,
    pub signing_alg: SigningAlg,
    /// Default access-token lifetime (seconds) for clients without their own.
    pub access_token_ttl: i64,
    /// Default user-token lifetime (seconds) for clients without their own.
    pub user_token_ttl: i64,
    /// Write the audit trail (on by default; off only to measure its cost).
    pub audit: bool,
    /// How the audit writer spaces its group commits while the server is saturated.
    pub audit_pacing: audit::Pacing,
    /// Parallel argon2 verifications at most.
    pub argon2_concurrency: usize,
    /// Verified tokens remembered for introspection.
    pub token_cache_capacity: usize,
    /// How often the change feed is polled (PostgreSQL also wakes it by NOTIFY).
    pub change_poll_interval: Duration,
    /// A new signing key is published this long before it signs (longer than JWKS max-age).
    pub key_prepublish_secs: i64,
    /// Automatic rotation: a new key when the newest is this old (None = manual only).
    pub key_rotation_interval: Option<Duration>,
    /// How long a throttled authentication attempt waits before its answer (tarpit).
    pub throttle_delay: Duration,
}

impl Settings {
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            signing_alg: SigningAlg::EdDSA,
            access_token_ttl: 3600,
            user_token_ttl: 300,
            audit: true,
            audit_pacing: audit::Pacing { interval: audit::DEFAULT_COMMIT_INTERVAL, idleness: None },
            argon2_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            token_cache_capacity: 200_000,
            change_poll_interval: Duration::from_millis(250),
            key_prepublish_secs: 600,
            key_rotation_interval: None,
            throttle_delay: Duration::from_millis(1000),
        }
    }
}

/// One replica's service: the store, the clock and the in-memory state of the hot paths.
pub struct Tessera {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub settings: Settings,
    pub admin: Admin,
    kek: Kek,
    pub(crate) clients: ClientDirectory,
    pub(crate) revocations: RevocationSet,
    pub(crate) grants: GrantDirectory,
    pub(crate) audit: Audit,
    pub(crate) keys: KeyRing,
    pub(crate) tokens: TokenCache,
    pub(crate) hasher: SecretHasher,
    pub(crate) throttle: throttle::Throttle,
    feed: tokio::sync::Mutex<FeedCursor>,
    /// Unix ms of the last successful change-feed read (readiness, lag metric).
    feed_ok_at_ms: std::sync::atomic::AtomicI64,
    /// Set when shutdown begins: readiness turns false at once.
    shutting_down: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Tessera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tessera").field("issuer", &self.settings.issuer).finish_non_exhaustive()
    }
}

impl Tessera {
    /// Makes sure a signing key exists, then loads clients, keys and revocations into memory.
    pub async fn open(store: Store, settings: Settings, kek: Kek, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Self>> {
        let hasher = SecretHasher::new(settings.argon2_concurrency)?;
        let audit =
            if settings.audit { Audit::batched(store.clone(), settings.audit_pacing.clone())? } else { Audit::off() };
        let admin = Admin::new(store.clone(), hasher.clone(), Arc::clone(&clock), audit.clone());
        let core = Arc::new(Self {
            tokens: TokenCache::new(settings.token_cache_capacity),
            store,
            clock,
            settings,
            admin,
            kek,
            clients: ClientDirectory::default(),
            revocations: RevocationSet::default(),
            grants: GrantDirectory::default(),
            audit,
            keys: KeyRing::default(),
            hasher,
            throttle: throttle::Throttle::default(),
            feed: tokio::sync::Mutex::new(FeedCursor::default()),
            feed_ok_at_ms: std::sync::atomic::AtomicI64::new(0),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        });
        core.ensure_signing_key().await?;
        core.full_resync().await?;
        Ok(core)
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The JWKS document (RFC 7517) of every key a token we issued may be signed with.
    pub fn jwks(&self) -> Arc<Vec<u8>> {
        self.keys.jwks()
    }

    /// Waits until every audit record queued so far is committed.
    pub async fn audit_flush(&self) {
        self.audit.flush().await;
    }

    /// Readiness turns false from now on (shutdown has begun).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn mark_feed_ok(&self) {
        self.feed_ok_at_ms.store(self.clock.now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Seconds since the change feed was last read successfully.
    pub fn feed_lag_secs(&self) -> f64 {
        let at = self.feed_ok_at_ms.load(std::sync::atomic::Ordering::Relaxed);
        ((self.clock.now_ms() - at).max(0) as f64) / 1000.0
    }

    /// Database reachable, a signing key loaded, the change feed current, not shutting down.
    pub async fn readiness(&self) -> crate::ops::Readiness {
        let database = matches!(tokio::time::timeout(crate::ops::PING_TIMEOUT, self.store.ping()).await, Ok(Ok(())));
        // Current = read within a few poll intervals (at least 3 s, so one slow read is no alarm).
        let allowed = (self.settings.change_poll_interval.as_secs_f64() * 5.0).max(3.0);
        crate::ops::Readiness {
            shutting_down: self.is_shutting_down(),
            database,
            signing_key: self.keys.signer(self.clock.now_secs()).is_some(),
            feed_current: self.feed_lag_secs() <= allowed,
        }
    }

    /// Updates the gauges exported on /metrics.
    pub fn refresh_gauges(&self) {
        let s = self.state_sizes();
        crate::metrics::set_state("clients", s.clients);
        crate::metrics::set_state("revoked_tokens", s.revoked_tokens);
        crate::metrics::set_state("grants", s.grants);
        crate::metrics::set_state("keys", s.keys);
        crate::metrics::set_state("verified_tokens", s.verified_tokens);
        crate::metrics::METRICS.feed_lag_seconds.set(self.feed_lag_secs());
        let (in_use, idle) = self.store.pool_usage();
        crate::metrics::set_db_pool(in_use, idle);
    }

    /// Sizes of the in-memory state (for readiness, metrics and tests).
    pub fn state_sizes(&self) -> StateSizes {
        StateSizes {
            clients: self.clients.len(),
            revoked_tokens: self.revocations.len(),
            keys: self.keys.len(),
            grants: self.grants.len(),
            verified_tokens: self.tokens.len(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateSizes {
    pub clients: usize,
    pub revoked_tokens: usize,
    pub keys: usize,
    pub grants: usize,
    pub verified_tokens: usize,
}
