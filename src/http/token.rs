//! `POST /oauth2/token` (RFC 6749 §4.4 client credentials; RFC 8693 token exchange).
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::auth::{OAuthForm, client_credentials};
use super::error::error_response;
use super::form::Form;
use crate::domain::{Error, Result, ScopeSet};
use crate::service::exchange::TOKEN_TYPE_USER_ID;
use crate::service::{ExchangeAuth, ExchangeRequest, IssueRequest, IssuedToken, SubjectRef, Tessera};

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub use crate::service::exchange::TOKEN_TYPE_ACCESS_TOKEN;

#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<&'static str>,
}

/// RFC 6749 §5.1: the token response must not be cached.
pub fn no_store(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

fn token_response(t: &IssuedToken, issued_token_type: Option<&'static str>) -> Response {
    let body = TokenBody {
        access_token: &t.access_token,
        token_type: "Bearer",
        expires_in: t.expires_in,
        scope: t.scope.to_string(),
        issued_token_type,
    };
    no_store((StatusCode::OK, Json(body)).into_response())
}

/// Audiences from RFC 8693 `audience` and RFC 8707 `resource`, both of which may repeat.
pub fn requested_audiences(form: &Form) -> Vec<String> {
    form.all("audience").into_iter().chain(form.all("resource")).map(str::to_owned).collect()
}

pub fn requested_scope(form: &Form) -> Result<Option<ScopeSet>> {
    form.single("scope")?.map(ScopeSet::parse).transpose()
}

pub async fn token(State(core): State<Arc<Tessera>>, req: OAuthForm) -> Response {
    let OAuthForm { headers, form, challenge, source } = req;
    match handle(&core, &headers, &form, core.now_ms(), source).await {
        Ok(resp) => resp,
        Err(e) => error_response(e, challenge, "token"),
    }
}

async fn handle(
    core: &Tessera,
    headers: &HeaderMap,
    form: &Form,
    now: i64,
    source: Option<std::net::IpAddr>,
) -> Result<Response> {
    // Cheap checks first: junk requests never reach argon2.
    let grant_type = form.required("grant_type")?;
    // Only known values reach the trace: a client could put anything (even a token) here.
    let known = [GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE].into_iter().find(|g| *g == grant_type);
    tracing::Span::current().record("grant_type", known.unwrap_or("unsupported"));
    match grant_type {
        GRANT_CLIENT_CREDENTIALS => {
            let req = IssueRequest { scope: requested_scope(form)?, audience: requested_audiences(form) };
            let caller = core.authenticate(&client_credentials(headers, form)?.from(source)).await?;
            let issued = core.issue_client_token(&caller, req, now).await?;
            Ok(token_response(&issued, None))
        }
        GRANT_TOKEN_EXCHANGE => {
            let (mut auth, req) = exchange_request(headers, form)?;
            auth.credentials = auth.credentials.map(|c| c.from(source));
            let caller = core.authenticate_exchange(&auth, now).await?;
            let issued = core.exchange_for_user(&caller, req, now).await?;
            Ok(token_response(&issued, Some(TOKEN_TYPE_ACCESS_TOKEN)))
        }
        _ => Err(Error::UnsupportedGrantType),
    }
}

/// RFC 8693 §2.1 parameters, checked before any authentication work.
pub fn exchange_request(headers: &HeaderMap, form: &Form) -> Result<(ExchangeAuth, ExchangeRequest)> {
    let subject_token = form.required("subject_token")?;
    let subject = match form.required("subject_token_type")? {
        TOKEN_TYPE_USER_ID => SubjectRef::UserId(subject_token.to_owned()),
        TOKEN_TYPE_ACCESS_TOKEN => SubjectRef::Token(subject_token.to_owned()),
        _ => return Err(Error::invalid_request("unsupported subject_token_type")),
    };
    if form.single("requested_token_type")?.is_some_and(|t| t != TOKEN_TYPE_ACCESS_TOKEN) {
        return Err(Error::invalid_request("only access tokens can be requested"));
    }
    let actor_token = match (form.single("actor_token")?, form.single("actor_token_type")?) {
        (Some(t), Some(TOKEN_TYPE_ACCESS_TOKEN)) => Some(t.to_owned()),
        (Some(_), Some(_)) => return Err(Error::invalid_request("unsupported actor_token_type")),
        (Some(_), None) => return Err(Error::invalid_request("actor_token_type is required with actor_token")),
        (None, Some(_)) => return Err(Error::invalid_request("actor_token_type without actor_token")),
        (None, None) => None,
    };
    // The actor token may stand in for client authentication (the partner's server holds one).
    let has_credentials = headers.contains_key(axum::http::header::AUTHORIZATION) || form.has("client_secret");
    let credentials =
        if has_credentials || actor_token.is_none() { Some(client_credentials(headers, form)?) } else { None };
    let req = ExchangeRequest {
        subject,
        scope: requested_scope(form)?,
        audience: requested_audiences(form),
        account: form.single("account")?.map(str::to_owned),
    };
    Ok((ExchangeAuth { credentials, actor_token }, req))
}
