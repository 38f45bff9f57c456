//! tessera.v1.TokenService.
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::{self, token_service_server::TokenService};
use super::status::to_status;
use crate::domain::{Actor, Error, ScopeSet};
use crate::service::{ExchangeRequest, Introspection, IssueRequest, IssuedToken, SubjectRef, Tessera};

use crate::service::exchange::TOKEN_TYPE_ACCESS_TOKEN;

#[derive(Clone, Debug)]
pub struct TokenApi {
    core: Arc<Tessera>,
}

impl TokenApi {
    pub fn new(core: Arc<Tessera>) -> Self {
        Self { core }
    }
}

/// Repeated scope strings → a scope set; each element may itself hold space-delimited scopes.
/// Empty list = "not requested".
pub fn scope_of(scopes: &[String]) -> Result<Option<ScopeSet>, Error> {
    if scopes.iter().all(|s| s.trim().is_empty()) {
        return Ok(None);
    }
    ScopeSet::from_tokens(scopes.iter().flat_map(|s| s.split(' ')).filter(|s| !s.is_empty())).map(Some)
}

/// RFC 8693-style response for both issuance and exchange.
fn token_response(t: IssuedToken) -> pb::TokenResponse {
    pb::TokenResponse {
        access_token: t.access_token,
        token_type: "Bearer".into(),
        expires_in: t.expires_in,
        scope: t.scope.to_vec(),
        issued_token_type: TOKEN_TYPE_ACCESS_TOKEN.into(),
    }
}

fn actor_pb(a: &Actor) -> pb::Actor {
    pb::Actor { sub: a.sub.clone(), act: a.act.as_deref().map(|inner| Box::new(actor_pb(inner))) }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn issue_token(&self, req: Request<pb::IssueTokenRequest>) -> Result<Response<pb::TokenResponse>, Status> {
        let now = self.core.now_ms();
        let result = async {
            tracing::Span::current().record("grant_type", "client_credentials");
            let creds = super::credentials(&req)?;
            let body = req.get_ref();
            let issue = IssueRequest { scope: scope_of(&body.scope)?, audience: body.audience.clone() };
            let caller = self.core.authenticate(&creds).await?;
            self.core.issue_client_token(&caller, issue, now).await
        }
        .await;
        let t = result.map_err(|e| to_status(e, "IssueToken"))?;
        Ok(Response::new(token_response(t)))
    }

    async fn exchange_for_user(
        &self,
        req: Request<pb::ExchangeForUserRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let now = self.core.now_ms();
        let result = async {
            tracing::Span::current().record("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange");
            let auth = super::exchange_auth(&req)?;
            let body = req.get_ref();
            let subject = match (body.subject.is_empty(), body.subject_token.is_empty()) {
                (false, true) => SubjectRef::UserId(body.subject.clone()),
                (true, false) => SubjectRef::Token(body.subject_token.clone()),
                (false, false) => return Err(Error::invalid_request("give subject or subject_token, not both")),
                (true, true) => return Err(Error::invalid_request("subject or subject_token is required")),
            };
            let exchange = ExchangeRequest {
                subject,
                scope: scope_of(&body.scope)?,
                audience: body.audience.clone(),
                account: Some(body.account.clone()).filter(|a| !a.is_empty()),
            };
            let caller = self.core.authenticate_exchange(&auth, now).await?;
            self.core.exchange_for_user(&caller, exchange, now).await
        }
        .await;
        let t = result.map_err(|e| to_status(e, "ExchangeForUser"))?;
        Ok(Response::new(token_response(t)))
    }

    async fn introspect(
        &self,
        req: Request<pb::IntrospectRequest>,
    ) -> Result<Response<pb::IntrospectResponse>, Status> {
        let now = self.core.now_ms();
        let result = async {
            let creds = super::credentials(&req)?;
            if req.get_ref().token.is_empty() {
                return Err(Error::invalid_request("token is required"));
            }
            let caller = self.core.authenticate(&creds).await?;
            Ok(self.core.introspect(&caller, &req.get_ref().token, now).await)
        }
        .await;
        let out = match result.map_err(|e| to_status(e, "Introspect"))? {
            Introspection::Inactive => pb::IntrospectResponse::default(),
            Introspection::Active(t) => {
                let c = &t.claims;
                pb::IntrospectResponse {
                    active: true,
                    sub: c.sub.clone(),
                    client_id: c.client_id.clone(),
                    scope: c.scopes(),
                    exp: c.exp,
                    iat: c.iat,
                    iss: c.iss.clone(),
                    aud: c.aud.to_vec(),
                    jti: c.jti.clone(),
                    token_type: "Bearer".into(),
                    tenant: c.tenant.clone(),
                    act: c.act.as_ref().map(actor_pb),
                    account: c.account.clone().unwrap_or_default(),
                }
            }
        };
        Ok(Response::new(out))
    }

    async fn revoke(&self, req: Request<pb::RevokeRequest>) -> Result<Response<pb::RevokeResponse>, Status> {
        let now = self.core.now_ms();
        let result = async {
            let creds = super::credentials(&req)?;
            if req.get_ref().token.is_empty() {
                return Err(Error::invalid_request("token is required"));
            }
            let caller = self.core.authenticate(&creds).await?;
            self.core.revoke(&caller, &req.get_ref().token, now).await
        }
        .await;
        result.map_err(|e| to_status(e, "Revoke"))?;
        Ok(Response::new(pb::RevokeResponse {}))
    }
}
