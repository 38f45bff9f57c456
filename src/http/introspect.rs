//! `POST /oauth2/introspect` (RFC 7662) and `POST /oauth2/revoke` (RFC 7009).
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::auth::{OAuthForm, client_credentials};
use super::error::error_response;
use super::token::no_store;
use crate::domain::{Actor, Audience};
use crate::service::{Introspection, Tessera};

#[derive(Serialize)]
struct IntrospectBody<'a> {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a Audience>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<&'a Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
}

const INACTIVE: IntrospectBody<'static> = IntrospectBody {
    active: false,
    scope: None,
    client_id: None,
    token_type: None,
    exp: None,
    iat: None,
    sub: None,
    aud: None,
    iss: None,
    jti: None,
    tenant: None,
    act: None,
    account: None,
};

pub async fn introspect(State(core): State<Arc<Tessera>>, req: OAuthForm) -> Response {
    let OAuthForm { headers, form, challenge, source } = req;
    let now = core.now_ms();
    let result = async {
        let token = form.required("token")?;
        // token_type_hint is advisory (RFC 7662 §2.1); we have one token type.
        form.single("token_type_hint")?;
        let caller = core.authenticate(&client_credentials(&headers, &form)?.from(source)).await?;
        Ok::<_, crate::domain::Error>(core.introspect(&caller, token, now).await)
    }
    .await;
    match result {
        Ok(Introspection::Inactive) => no_store((StatusCode::OK, Json(INACTIVE)).into_response()),
        Ok(Introspection::Active(t)) => {
            let c = &t.claims;
            let body = IntrospectBody {
                active: true,
                scope: Some(c.scope.as_str()).filter(|s| !s.is_empty()),
                client_id: Some(&c.client_id),
                token_type: Some("Bearer"),
                exp: Some(c.exp),
                iat: Some(c.iat),
                sub: Some(&c.sub),
                aud: Some(&c.aud),
                iss: Some(&c.iss),
                jti: Some(&c.jti),
                tenant: Some(&c.tenant),
                act: c.act.as_ref(),
                account: c.account.as_deref(),
            };
            no_store((StatusCode::OK, Json(body)).into_response())
        }
        Err(e) => error_response(e, challenge, "introspect"),
    }
}

pub async fn revoke(State(core): State<Arc<Tessera>>, req: OAuthForm) -> Response {
    let OAuthForm { headers, form, challenge, source } = req;
    let now = core.now_ms();
    let result = async {
        let token = form.required("token")?;
        // An unknown hint is ignored: RFC 7009 §2.1 says to search all token types.
        form.single("token_type_hint")?;
        let caller = core.authenticate(&client_credentials(&headers, &form)?.from(source)).await?;
        core.revoke(&caller, token, now).await
    }
    .await;
    match result {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => error_response(e, challenge, "revoke"),
    }
}
