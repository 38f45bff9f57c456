//! Revoked token ids that have not expired yet, held in memory for the introspection hot path.
use dashmap::DashMap;

#[derive(Debug, Default)]
pub struct RevocationSet {
    /// jti -> token expiry (unix seconds); entries are purged once the token would be expired anyway.
    jtis: DashMap<String, i64>,
}

impl RevocationSet {
    pub fn insert(&self, jti: String, expires_at: i64) {
        self.jtis.insert(jti, expires_at);
    }

    pub fn contains(&self, jti: &str) -> bool {
        self.jtis.contains_key(jti)
    }

    pub fn purge_expired(&self, now_secs: i64) {
        self.jtis.retain(|_, exp| *exp > now_secs);
    }

    pub fn len(&self) -> usize {
        self.jtis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jtis.is_empty()
    }
}
