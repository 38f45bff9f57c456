//! The operations listener (TESSERA_OPS_ADDR, default 127.0.0.1:9090), separate from the public
//! REST port so partners can never reach it: /healthz (alive), /readyz (database reachable,
//! signing key loaded, change feed current, not shutting down) and /metrics (Prometheus).
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::metrics;
use crate::service::Tessera;

pub fn router(core: Arc<Tessera>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(core)
}

async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

async fn readyz(State(core): State<Arc<Tessera>>) -> Response {
    let checks = core.readiness().await;
    let status = if checks.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        axum::Json(json!({
            "ready": checks.ready(),
            "shutting_down": checks.shutting_down,
            "database": checks.database,
            "signing_key": checks.signing_key,
            "change_feed_current": checks.feed_current,
        })),
    )
        .into_response()
}

async fn metrics_text(State(core): State<Arc<Tessera>>) -> Response {
    core.refresh_gauges();
    let mut resp = (StatusCode::OK, metrics::render()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// The outcome of the readiness checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub shutting_down: bool,
    pub database: bool,
    pub signing_key: bool,
    pub feed_current: bool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        !self.shutting_down && self.database && self.signing_key && self.feed_current
    }
}

/// How long a database ping may take before the replica counts as not ready.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);
