//! RFC 8693 token exchange for users: a client acts for one of its users (act-as `tenant`) or
//! for a platform user who granted it access (act-as `granted`), or re-exchanges a user token
//! for a narrower scope or another audience. The result is a short-lived user token with an
//! `act` claim (RFC 8693 §4.1) and a lineage, so revoking any of its origins deactivates it.
use std::sync::Arc;

use super::{ClientCredentials, IssuedToken, Tessera};
use crate::domain::client::{parse_account, parse_subject};
use crate::domain::ids::generate_token_id;
use crate::domain::{AccessClaims, ActAs, Actor, Error, Grant, Lineage, Result, ScopeSet};
use crate::state::ClientEntry;
use crate::state::tokens::VerifiedToken;
use crate::storage::audit::AuditRecord;

/// `subject_token_type` for a plain user id (Tessera's own URN, RFC 8693 §3 allows these).
pub const TOKEN_TYPE_USER_ID: &str = "urn:tessera:params:oauth:token-type:user_id";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Who the new token is for.
#[derive(Clone, Debug)]
pub enum SubjectRef {
    /// A user id (the partner's own, or a platform user's with a grant).
    UserId(String),
    /// A Tessera user token to re-exchange.
    Token(String),
}

#[derive(Clone, Debug)]
pub struct ExchangeRequest {
    pub subject: SubjectRef,
    pub scope: Option<ScopeSet>,
    pub audience: Vec<String>,
    pub account: Option<String>,
}

/// How the caller proved who it is: its credentials, its own client access token (the
/// `actor_token`, or gRPC `authorization: Bearer`), or both (then they must agree).
#[derive(Clone, Debug, Default)]
pub struct ExchangeAuth {
    pub credentials: Option<ClientCredentials>,
    pub actor_token: Option<String>,
}

/// Resolved caller of an exchange.
pub struct ExchangeCaller {
    pub client: Arc<ClientEntry>,
    pub actor: Option<Arc<VerifiedToken>>,
}

impl Tessera {
    /// Authenticates an exchange's caller. An actor token must be the caller's own, active
    /// client token: a user token cannot stand in for a client.
    pub async fn authenticate_exchange(&self, auth: &ExchangeAuth, now_ms: i64) -> Result<ExchangeCaller> {
        let by_credentials = match &auth.credentials {
            Some(c) => Some(self.authenticate(c).await?),
            None => None,
        };
        // Without credentials the actor token *is* the authentication: failures are invalid_client.
        let reject = |msg: &'static str| {
            if by_credentials.is_some() { Error::invalid_request(msg) } else { Error::InvalidClient }
        };
        let actor = match &auth.actor_token {
            None => None,
            Some(token) => {
                let v =
                    self.verify_token(token, now_ms.div_euclid(1000)).map_err(|_| reject("actor_token is invalid"))?;
                if !self.is_active(&v, now_ms).await {
                    return Err(reject("actor_token is not active"));
                }
                if v.claims.is_user_token() || v.claims.sub != v.claims.client_id {
                    return Err(reject("actor_token must be the client's own access token, not a user token"));
                }
                if let Some(c) = &by_credentials
                    && c.client.client_id.as_str() != v.claims.client_id
                {
                    return Err(Error::invalid_request("actor_token was issued to another client"));
                }
                Some(v)
            }
        };
        let client = match (by_credentials, &actor) {
            (Some(c), _) => c,
            (None, Some(v)) => {
                self.clients.get(&v.claims.client_id).filter(|c| !c.client.disabled).ok_or(Error::InvalidClient)?
            }
            (None, None) => return Err(Error::InvalidClient),
        };
        Ok(ExchangeCaller { client, actor })
    }

    /// Exchanges, and records the outcome (allowed or denied) in the audit trail before returning.
    #[tracing::instrument(target = "tessera::trace", skip_all, fields(client_id = %caller.client.client.client_id))]
    pub async fn exchange_for_user(
        &self,
        caller: &ExchangeCaller,
        req: ExchangeRequest,
        now_ms: i64,
    ) -> Result<IssuedToken> {
        let subject_hint = match &req.subject {
            SubjectRef::UserId(s) => parse_subject(s).ok(),
            SubjectRef::Token(_) => None,
        };
        let result = self.exchange_inner(caller, req, now_ms).await;
        if result.is_ok() {
            crate::metrics::METRICS.tokens_issued_user.inc();
        }
        let client_id = caller.client.client.client_id.to_string();
        let mut record = AuditRecord {
            at_ms: now_ms,
            action: "token_exchange".into(),
            actor: client_id.clone(),
            client_id: Some(client_id),
            ..AuditRecord::default()
        };
        match &result {
            Ok((t, claims)) => {
                record.subject = Some(claims.sub.clone());
                record.scopes = Some(t.scope.to_string());
                record.jti = Some(t.jti.clone());
                record.grant_id = claims.lineage.grants.last().cloned();
                record.outcome = "ok".into();
                record.detail = claims.lineage.parents.last().map(|(c, j)| format!("parent {c}/{j}"));
            }
            Err(e) => {
                record.subject = subject_hint;
                record.outcome = e.code().into();
                record.detail = Some(e.description().into_owned());
            }
        }
        self.audit.record(record).await?;
        result.map(|(t, _)| t)
    }

    async fn exchange_inner(
        &self,
        caller: &ExchangeCaller,
        req: ExchangeRequest,
        now_ms: i64,
    ) -> Result<(IssuedToken, AccessClaims)> {
        let client = &caller.client.client;
        if client.act_as == ActAs::None {
            return Err(Error::UnauthorizedClient("this client may not act for users (act-as none)".into()));
        }
        let now = now_ms.div_euclid(1000);
        let mut parents: Vec<(String, String)> = Vec::new();
        let mut grants: Vec<String> = Vec::new();
        let mut not_after = i64::MAX;
        // Scopes the new token may not exceed, besides the client's own.
        let mut ceilings: Vec<ScopeSet> = Vec::new();
        if let Some(a) = &caller.actor {
            parents.push((a.claims.client_id.clone(), a.claims.jti.clone()));
            not_after = not_after.min(a.claims.exp);
            ceilings.push(ScopeSet::from_tokens(a.claims.scope.split(' ').filter(|s| !s.is_empty()))?);
        }

        let (subject, account, act, tenant) = match &req.subject {
            SubjectRef::UserId(raw) => {
                let subject = parse_subject(raw)?;
                let account = match client.act_as {
                    ActAs::Granted => {
                        let g =
                            self.find_grant(client.client_id.as_str(), &subject, req.account.as_deref(), now).await?;
                        ceilings.push(g.scopes.clone());
                        grants.push(g.grant_id.clone());
                        g.account.clone()
                    }
                    _ => {
                        if req.account.is_some() {
                            return Err(Error::invalid_request("account applies to granted subjects only"));
                        }
                        None
                    }
                };
                let act = Actor { sub: client.client_id.to_string(), act: None };
                (subject, account, act, client.tenant.clone())
            }
            SubjectRef::Token(token) => {
                // RFC 8693 §2.2.2: an invalid or unacceptable subject_token is invalid_request.
                let v =
                    self.verify_token(token, now).map_err(|_| Error::invalid_request("subject_token is invalid"))?;
                if !self.is_active(&v, now_ms).await {
                    return Err(Error::invalid_request("subject_token is not active"));
                }
                let parent = &v.claims;
                let Some(parent_act) = parent.act.clone() else {
                    return Err(Error::invalid_request("subject_token must be a user token"));
                };
                if parent.tenant != client.tenant {
                    return Err(Error::PolicyDenied("subject_token belongs to another tenant".into()));
                }
                if req.account.as_deref().is_some_and(|a| Some(a) != parent.account.as_deref()) {
                    return Err(Error::invalid_request("account differs from the subject_token's"));
                }
                if client.act_as == ActAs::Granted {
                    let g =
                        self.find_grant(client.client_id.as_str(), &parent.sub, parent.account.as_deref(), now).await?;
                    ceilings.push(g.scopes.clone());
                    grants.push(g.grant_id.clone());
                }
                grants.splice(0..0, parent.lineage.grants.iter().cloned());
                parents.splice(0..0, parent.lineage.parents.iter().cloned());
                parents.push((parent.client_id.clone(), parent.jti.clone()));
                not_after = not_after.min(parent.exp);
                ceilings.push(ScopeSet::from_tokens(parent.scope.split(' ').filter(|s| !s.is_empty()))?);
                let act = Actor { sub: client.client_id.to_string(), act: Some(Box::new(parent_act)) };
                (parent.sub.clone(), parent.account.clone(), act, parent.tenant.clone())
            }
        };

        // Requested ∩ allowed, never silently widened: more than allowed is invalid_scope.
        let allowed = ceilings.iter().fold(client.scopes.clone(), |acc, c| acc.intersect(c));
        let scope = ScopeSet::grant(req.scope, &allowed)?;
        let audience = self.resolve_audience(client, &req.audience)?;
        let ttl = if client.user_token_ttl > 0 { client.user_token_ttl } else { self.settings.user_token_ttl };
        let exp = (now + ttl).min(not_after);
        if exp <= now {
            return Err(Error::invalid_request("the token this exchange derives from expires now"));
        }
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: subject,
            aud: audience,
            exp,
            iat: now,
            jti: generate_token_id(now_ms),
            client_id: client.client_id.to_string(),
            scope: scope.to_string(),
            tenant,
            act: Some(act),
            account,
            lineage: Lineage { grants, parents },
        };
        let access_token = self.sign(&claims, now)?;
        let issued = IssuedToken { access_token, expires_in: exp - now, scope, jti: claims.jti.clone() };
        Ok((issued, claims))
    }

    /// The active grant of `subject` to `client_id` (for `account`, if named). Memory first; a
    /// miss asks the database, in case the grant was made a moment ago elsewhere.
    async fn find_grant(&self, client_id: &str, subject: &str, account: Option<&str>, now: i64) -> Result<Arc<Grant>> {
        let account = account.map(parse_account).transpose()?;
        let mut found = self.grants.active_for(client_id, subject, now);
        if found.is_empty() {
            for g in self.store.find_active_grants(client_id, subject, now).await? {
                self.grants.upsert(g);
            }
            found = self.grants.active_for(client_id, subject, now);
        }
        if let Some(a) = &account {
            found.retain(|g| g.account.as_deref() == Some(a.as_str()));
        }
        found.sort_by_key(|g| std::cmp::Reverse(g.created_at));
        match found.as_slice() {
            [] => Err(Error::PolicyDenied("no active grant from this subject for this client".into())),
            [g] => Ok(Arc::clone(g)),
            [g, rest @ ..] => {
                if account.is_none() && rest.iter().any(|o| o.account != g.account) {
                    return Err(Error::invalid_request("the subject granted several accounts: name one with account"));
                }
                Ok(Arc::clone(g))
            }
        }
    }
}
