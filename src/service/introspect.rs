//! Introspection (RFC 7662). Active only if signature, kid, expiry, revocation and client status
//! all pass; a caller without the `introspect` capability learns about its own tokens only.
use std::sync::Arc;

use super::Tessera;
use crate::crypto::jwt::{self, Rejection};
use crate::domain::Capability;
use crate::domain::ids::token_id_issued_at_ms;
use crate::state::ClientEntry;
use crate::state::tokens::{VerifiedToken, token_digest};

/// Tokens dated further than this into the future are not yet valid (clock skew allowance).
const MAX_CLOCK_SKEW_SECS: i64 = 60;

#[derive(Debug, Clone)]
pub enum Introspection {
    Inactive,
    Active(Arc<VerifiedToken>),
}

impl Tessera {
    #[tracing::instrument(target = "tessera::trace", skip_all, fields(client_id = %caller.client.client_id))]
    pub async fn introspect(&self, caller: &ClientEntry, token: &str, now_ms: i64) -> Introspection {
        let Ok(verified) = self.verify_token(token, now_ms.div_euclid(1000)) else {
            return Introspection::Inactive;
        };
        if verified.claims.client_id != caller.client.client_id.as_str() && !caller.client.has(Capability::Introspect) {
            return Introspection::Inactive;
        }
        if !self.is_active(&verified, now_ms).await {
            return Introspection::Inactive;
        }
        Introspection::Active(verified)
    }

    /// Signature and issuer, remembered per token so each token is checked once.
    pub(crate) fn verify_token(&self, token: &str, now_secs: i64) -> Result<Arc<VerifiedToken>, Rejection> {
        if token.is_empty() || token.len() > jwt::MAX_TOKEN_LEN {
            return Err(Rejection::Malformed);
        }
        let digest = token_digest(token);
        if let Some(v) = self.tokens.get(&digest) {
            // A key removed from the ring takes its tokens with it.
            if self.keys.get(&v.kid).is_some() {
                return Ok(v);
            }
            return Err(Rejection::UnknownKey);
        }
        let (kid, alg) = jwt::header_kid(token)?;
        let key = self.keys.get(&kid).ok_or(Rejection::UnknownKey)?;
        let claims = jwt::verify_with(token, alg, &key, &self.settings.issuer)?;
        let verified = Arc::new(VerifiedToken { kid, claims });
        if verified.claims.exp > now_secs {
            self.tokens.insert(digest, Arc::clone(&verified), now_secs);
        }
        Ok(verified)
    }

    /// Expiry, revocation of the token itself and of every token it derives from, the status of
    /// every client in its lineage, and the grants it was minted under.
    pub(crate) async fn is_active(&self, token: &VerifiedToken, now_ms: i64) -> bool {
        let claims = &token.claims;
        let now = now_ms.div_euclid(1000);
        if claims.exp <= now || claims.iat > now + MAX_CLOCK_SKEW_SECS {
            return false;
        }
        if !self.issued_token_stands(&claims.client_id, &claims.jti, claims.iat).await {
            return false;
        }
        for (client_id, jti) in &claims.lineage.parents {
            if !self.issued_token_stands(client_id, jti, 0).await {
                return false;
            }
        }
        for grant_id in &claims.lineage.grants {
            let grant = match self.grants.get(grant_id) {
                Some(g) => g,
                None => match self.store.load_grant(grant_id).await {
                    Ok(Some(g)) => self.grants.upsert(g),
                    _ => return false,
                },
            };
            if !grant.is_active(now) {
                return false;
            }
        }
        true
    }

    /// A token issued to `client_id` with id `jti` is not revoked, and its client is enabled and
    /// has not revoked everything issued before the token's issuance instant.
    async fn issued_token_stands(&self, client_id: &str, jti: &str, iat: i64) -> bool {
        if self.revocations.contains(jti) {
            return false;
        }
        let Some(client) = self.client_entry(client_id).await else {
            return false;
        };
        if client.client.disabled {
            return false;
        }
        let issued_ms = token_id_issued_at_ms(jti).unwrap_or(iat * 1000);
        issued_ms >= client.client.tokens_revoked_before_ms
    }

    /// A client from memory, or from the database if this replica has not seen it yet.
    pub(crate) async fn client_entry(&self, client_id: &str) -> Option<Arc<ClientEntry>> {
        if let Some(c) = self.clients.get(client_id) {
            return Some(c);
        }
        match self.store.load_client(client_id).await {
            Ok(Some(c)) => Some(self.clients.upsert(c)),
            _ => None,
        }
    }
}
