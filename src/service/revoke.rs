//! Revocation (RFC 7009). Durable in the database before the call returns, then in memory here
//! and, through the change feed, on every replica.
use super::Tessera;
use crate::domain::{Capability, Error, Result};
use crate::state::ClientEntry;
use crate::storage::audit::AuditRecord;
use crate::storage::revocations::Revocation;

impl Tessera {
    #[tracing::instrument(target = "tessera::trace", skip_all, fields(client_id = %caller.client.client_id))]
    pub async fn revoke(&self, caller: &ClientEntry, token: &str, now_ms: i64) -> Result<()> {
        let now = now_ms.div_euclid(1000);
        // RFC 7009 §2.2: an invalid or unknown token is not an error.
        let Ok(verified) = self.verify_token(token, now) else {
            return Ok(());
        };
        let claims = &verified.claims;
        let mut record = AuditRecord {
            at_ms: now_ms,
            action: "revoke".into(),
            actor: caller.client.client_id.to_string(),
            client_id: Some(claims.client_id.clone()),
            subject: claims.is_user_token().then(|| claims.sub.clone()),
            jti: Some(claims.jti.clone()),
            outcome: "ok".into(),
            ..AuditRecord::default()
        };
        if claims.client_id != caller.client.client_id.as_str() && !caller.client.has(Capability::Revoke) {
            // RFC 7009 §2.1: the token was not issued to this client, so the request is refused.
            let err = Error::UnauthorizedClient("the token was not issued to this client".into());
            record.outcome = err.code().into();
            self.audit.record(record).await?;
            return Err(err);
        }
        if claims.exp <= now || self.revocations.contains(&claims.jti) {
            return Ok(());
        }
        let r = Revocation { jti: claims.jti.clone(), client_id: claims.client_id.clone(), expires_at: claims.exp };
        // The record shares the revocation's transaction.
        self.store.insert_revocation(&r, now_ms, self.audit.enabled().then_some(&record)).await?;
        self.revocations.insert(&r.jti, r.expires_at);
        tracing::info!(jti = %claims.jti, "token revoked");
        Ok(())
    }
}
