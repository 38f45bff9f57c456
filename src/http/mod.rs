//! The REST layer: the standard OAuth2 wire format, so any ordinary OAuth2 client library works.
//! Thin: read the request, call the same service functions as gRPC, write the response.
pub mod auth;
pub mod error;
pub mod form;
pub mod introspect;
pub mod metadata;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};

use crate::domain::Error;
use crate::service::Tessera;

/// Every request completes or fails within this time (argon2 queueing included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers larger than this in total are refused (431), on both transports.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The REST API as one service: the routes inside the middleware. It is served as it is, not
/// wrapped in another `Router` (an outer router would route every request twice and clone a
/// boxed service chain for it).
pub fn service(
    core: Arc<Tessera>,
) -> impl tower::Service<
    axum::extract::Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let routes = Router::new()
        .route("/oauth2/token", post(token::token))
        .route("/oauth2/introspect", post(introspect::introspect))
        .route("/oauth2/revoke", post(introspect::revoke))
        .route("/.well-known/oauth-authorization-server", get(metadata::metadata))
        .route(metadata::JWKS_PATH, get(metadata::jwks))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(core);
    // The middleware wraps the router once, not each route: `Router::layer` would box every
    // layer per route and clone that chain of boxes on every request.
    tower::ServiceBuilder::new()
        .layer(crate::telemetry::ObserveLayer(crate::telemetry::Transport::Http))
        .layer(axum::middleware::from_fn(limit_headers))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
        .service(routes)
}

fn json_error(status: StatusCode, code: &str, description: &str) -> Response {
    use axum::response::IntoResponse;
    (status, axum::Json(serde_json::json!({"error": code, "error_description": description}))).into_response()
}

async fn limit_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let size: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if size > MAX_HEADER_BYTES {
        return json_error(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "invalid_request", "request headers too large");
    }
    next.run(req).await
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> Response {
    json_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "method not allowed")
}

pub(crate) fn body_error(e: auth::BodyError, operation: &str) -> Response {
    let auth::BodyError(err, too_large) = e;
    if too_large {
        // The rest of the body stays unread, so the connection cannot carry another request: say
        // so, or a client that reuses it finds it closed under its next request.
        let mut resp = json_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "request body too large");
        resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        return resp;
    }
    error::error_response(err, false, operation)
}

/// Used by tests and fuzzing: the HTTP status an error maps to.
pub fn status_for(err: &Error) -> StatusCode {
    error::status_of(err)
}
