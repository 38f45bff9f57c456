//! RFC 6749 §5.2 error responses: JSON, `Cache-Control: no-store`, 401 + `WWW-Authenticate`
//! for `invalid_client`. The mapping from the error enum is exhaustive.
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::Error;

pub const REALM_CHALLENGE: &str = "Basic realm=\"tessera\", charset=\"UTF-8\"";

pub fn status_of(err: &Error) -> StatusCode {
    match err {
        Error::InvalidRequest(_)
        | Error::PolicyDenied(_)
        | Error::InvalidGrant(_)
        | Error::UnauthorizedClient(_)
        | Error::UnsupportedGrantType
        | Error::InvalidScope(_)
        | Error::InvalidTarget(_)
        | Error::UnsupportedTokenType => StatusCode::BAD_REQUEST,
        Error::InvalidClient => StatusCode::UNAUTHORIZED,
        Error::AccessDenied(_) => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Builds the error response. `challenge` adds `WWW-Authenticate` to a 401 (RFC 6749 §5.2:
/// required when the client used the Authorization header; we also send it when no
/// credentials came at all, to say which scheme we take).
pub fn error_response(err: Error, challenge: bool, operation: &str) -> Response {
    err.log_if_server_error(operation);
    let status = status_of(&err);
    let code = err.code();
    let body = json!({ "error": err.code(), "error_description": err.description() });
    let mut resp = (status, Json(body)).into_response();
    resp.extensions_mut().insert(crate::telemetry::Outcome(code));
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if status == StatusCode::UNAUTHORIZED && challenge {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM_CHALLENGE));
    }
    if let Error::Throttled { retry_after_secs } = err
        && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string())
    {
        h.insert(header::RETRY_AFTER, v);
    }
    resp
}
