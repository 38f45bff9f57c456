//! Verified tokens: the outcome of a signature check, keyed by a digest of the token, kept until
//! the token expires. A repeated introspection costs a hash and a few map lookups against the
//! live revocation state, never a second signature check or a database read.
use std::sync::Arc;

use dashmap::DashMap;

use crate::domain::AccessClaims;

#[derive(Debug)]
pub struct VerifiedToken {
    pub kid: String,
    pub claims: AccessClaims,
}

pub type TokenDigest = crate::crypto::digest::Digest256;

/// The cache key of a token: a collision-resistant digest of the whole token (a forged token must
/// not find a verified one's entry), SHA-256 or BLAKE3, whichever this CPU computes faster.
pub fn token_digest(token: &str) -> TokenDigest {
    crate::crypto::digest::digest256(token.as_bytes())
}

#[derive(Debug)]
pub struct TokenCache {
    map: DashMap<TokenDigest, Arc<VerifiedToken>>,
    capacity: usize,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self { map: DashMap::new(), capacity: capacity.max(1) }
    }

    pub fn get(&self, digest: &TokenDigest) -> Option<Arc<VerifiedToken>> {
        self.map.get(digest).map(|v| Arc::clone(&v))
    }

    pub fn insert(&self, digest: TokenDigest, token: Arc<VerifiedToken>, now_secs: i64) {
        if self.map.len() >= self.capacity {
            self.purge_expired(now_secs);
            if self.map.len() >= self.capacity {
                // Still full of live tokens: start over rather than grow without bound. The cost
                // is one signature check per token on its next introspection.
                self.map.clear();
            }
        }
        self.map.insert(digest, token);
    }

    pub fn purge_expired(&self, now_secs: i64) {
        self.map.retain(|_, v| v.claims.exp > now_secs);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
