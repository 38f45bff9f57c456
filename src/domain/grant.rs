//! A grant: a platform user (subject) let a client act for them, within scopes and optionally
//! one account, until revoked or expired.
use super::ScopeSet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub grant_id: String,
    pub client_id: String,
    pub subject: String,
    pub account: Option<String>,
    pub scopes: ScopeSet,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl Grant {
    pub fn is_active(&self, now_secs: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now_secs)
    }
}

pub fn generate_grant_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("gr_{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// What the platform's backend asks for when a user enables an integration.
#[derive(Clone, Debug)]
pub struct NewGrant {
    pub client_id: String,
    pub subject: String,
    pub account: Option<String>,
    pub scopes: ScopeSet,
    /// Seconds from now; None = until revoked.
    pub expires_in: Option<i64>,
}
