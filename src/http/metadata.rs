//! RFC 8414 authorization server metadata and the RFC 7517 JWKS it points to.
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::token::{GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN};
use crate::crypto::SigningAlg;
use crate::service::Tessera;
use crate::service::exchange::TOKEN_TYPE_USER_ID;

pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// How long resource servers may cache JWKS. A new key is published before it signs (the
/// operations issue's pre-publication delay is longer than this), so caches never miss it.
pub const JWKS_MAX_AGE_SECS: u64 = 300;

pub fn metadata_document(core: &Tessera) -> serde_json::Value {
    let issuer = core.settings.issuer.trim_end_matches('/');
    let auth_methods = ["client_secret_basic", "client_secret_post"];
    json!({
        "issuer": core.settings.issuer,
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "grant_types_supported": [GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "access_token_signing_alg_values_supported": SigningAlg::ALL.map(SigningAlg::as_str),
        // RFC 8693 token types accepted as subject_token_type / actor_token_type and issued.
        "token_types_supported": [TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_USER_ID],
    })
}

pub async fn metadata(State(core): State<Arc<Tessera>>) -> Response {
    let doc = metadata_document(&core);
    let mut resp = (StatusCode::OK, axum::Json(doc)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    resp
}

pub async fn jwks(State(core): State<Arc<Tessera>>) -> Response {
    let body = core.jwks();
    let mut resp = (StatusCode::OK, body.as_ref().clone()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwk-set+json"));
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={JWKS_MAX_AGE_SECS}")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    resp
}
