//! Client credentials (RFC 6749 §4.4): a token for the calling client itself.
use super::Tessera;
use crate::crypto::jwt;
use crate::domain::client::parse_audience;
use crate::domain::ids::generate_token_id;
use crate::domain::{AccessClaims, Audience, Client, Error, Lineage, Result, ScopeSet};
use crate::state::ClientEntry;
use crate::storage::audit::AuditRecord;

#[derive(Clone, Debug, Default)]
pub struct IssueRequest {
    /// None = everything the client is allowed.
    pub scope: Option<ScopeSet>,
    /// Empty = every audience the client is allowed.
    pub audience: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: ScopeSet,
    pub jti: String,
}

impl Tessera {
    /// Issues, and records the outcome in the audit trail before returning.
    #[tracing::instrument(target = "tessera::trace", skip_all, fields(client_id = %caller.client.client_id))]
    pub async fn issue_client_token(
        &self,
        caller: &ClientEntry,
        req: IssueRequest,
        now_ms: i64,
    ) -> Result<IssuedToken> {
        let result = self.issue_inner(caller, req, now_ms);
        if result.is_ok() {
            crate::metrics::METRICS.tokens_issued_client.inc();
        }
        let client_id = caller.client.client_id.to_string();
        let (scopes, jti, outcome, detail) = match &result {
            Ok(t) => (Some(t.scope.to_string()), Some(t.jti.clone()), "ok".to_owned(), None),
            Err(e) => (None, None, e.code().to_owned(), Some(e.description().into_owned())),
        };
        self.audit
            .record(AuditRecord {
                at_ms: now_ms,
                action: "client_credentials".into(),
                actor: client_id.clone(),
                client_id: Some(client_id),
                scopes,
                jti,
                outcome,
                detail,
                ..AuditRecord::default()
            })
            .await?;
        result
    }

    fn issue_inner(&self, caller: &ClientEntry, req: IssueRequest, now_ms: i64) -> Result<IssuedToken> {
        let client = &caller.client;
        let scope = ScopeSet::grant(req.scope, &client.scopes)?;
        let audience = self.resolve_audience(client, &req.audience)?;
        let ttl = if client.access_token_ttl > 0 { client.access_token_ttl } else { self.settings.access_token_ttl };
        let now = now_ms.div_euclid(1000);
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: client.client_id.to_string(),
            aud: audience,
            exp: now + ttl,
            iat: now,
            jti: generate_token_id(now_ms),
            client_id: client.client_id.to_string(),
            scope: scope.to_string(),
            tenant: client.tenant.clone(),
            act: None,
            account: None,
            lineage: Lineage::default(),
        };
        let access_token = self.sign(&claims, now)?;
        Ok(IssuedToken { access_token, expires_in: ttl, scope, jti: claims.jti })
    }

    pub(crate) fn sign(&self, claims: &AccessClaims, now_secs: i64) -> Result<String> {
        let key = self
            .keys
            .signer(now_secs)
            .ok_or_else(|| Error::Unavailable(anyhow::anyhow!("no signing key is active")))?;
        jwt::sign(claims, &key).map_err(Error::Internal)
    }

    /// Requested audiences must each be allowed to the client (RFC 8707 §2: `invalid_target`);
    /// none requested means all of the client's, or this issuer when it has none configured.
    pub(crate) fn resolve_audience(&self, client: &Client, requested: &[String]) -> Result<Audience> {
        if requested.is_empty() {
            if client.audiences.is_empty() {
                return Ok(Audience::One(self.settings.issuer.clone()));
            }
            return Ok(Audience::from_vec(client.audiences.clone()));
        }
        let mut out: Vec<String> = Vec::with_capacity(requested.len());
        for aud in requested {
            let aud = parse_audience(aud)?;
            if !client.audiences.contains(&aud) {
                return Err(Error::InvalidTarget("requested audience is not allowed for this client".into()));
            }
            if !out.contains(&aud) {
                out.push(aud);
            }
        }
        Ok(Audience::from_vec(out))
    }
}
