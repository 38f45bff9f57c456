//! `POST /oauth2/token` (RFC 6749 §4.4 client credentials; RFC 8693 token exchange).
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::auth::{client_credentials, read_form, wants_challenge};
use super::error::error_response;
use super::form::Form;
use crate::domain::{Error, Result, ScopeSet};
use crate::service::{IssueRequest, IssuedToken, Tessera};

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

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
    form.all("audience")
        .into_iter()
        .chain(form.all("resource"))
        .map(str::to_owned)
        .collect()
}

pub fn requested_scope(form: &Form) -> Result<Option<ScopeSet>> {
    form.single("scope")?.map(ScopeSet::parse).transpose()
}

pub async fn token(State(core): State<Arc<Tessera>>, headers: HeaderMap, body: Body) -> Response {
    let now = core.now_ms();
    let form = match read_form(&headers, body).await {
        Ok(f) => f,
        Err(e) => return super::body_error(e, "token"),
    };
    let challenge = wants_challenge(&headers, Some(&form));
    match handle(&core, &headers, &form, now).await {
        Ok(resp) => resp,
        Err(e) => error_response(e, challenge, "token"),
    }
}

async fn handle(core: &Tessera, headers: &HeaderMap, form: &Form, now: i64) -> Result<Response> {
    // Cheap checks first: junk requests never reach argon2.
    let grant_type = form.required("grant_type")?;
    match grant_type {
        GRANT_CLIENT_CREDENTIALS => {
            let req = IssueRequest {
                scope: requested_scope(form)?,
                audience: requested_audiences(form),
            };
            let caller = core
                .authenticate(&client_credentials(headers, form)?)
                .await?;
            let issued = core.issue_client_token(&caller, req, now)?;
            Ok(token_response(&issued, None))
        }
        _ => Err(Error::UnsupportedGrantType),
    }
}
