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
    /// Parallel argon2 verifications at most.
    pub argon2_concurrency: usize,
    /// Verified tokens remembered for introspection.
    pub token_cache_capacity: usize,
    /// How often the change feed is polled (PostgreSQL also wakes it by NOTIFY).
    pub change_poll_interval: Duration,
}

impl Settings {
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            signing_alg: SigningAlg::EdDSA,
            access_token_ttl: 3600,
            user_token_ttl: 300,
            audit: true,
            argon2_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            token_cache_capacity: 200_000,
            change_poll_interval: Duration::from_millis(250),
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
    feed: tokio::sync::Mutex<FeedCursor>,
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
        let audit = if settings.audit { Audit::batched(store.clone()).0 } else { Audit::off() };
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
            feed: tokio::sync::Mutex::new(FeedCursor::default()),
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
