//! Prometheus metrics, served on the operations port. Labels are bounded: transport, operation
//! (a fixed set of routes/RPCs), outcome (an OAuth error code or gRPC code name) — never a
//! client id, subject or token.
use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub tokens_issued: IntCounterVec,
    /// Series of the hot paths, resolved once (`with_label_values` hashes and locks per call).
    pub tokens_issued_client: IntCounter,
    pub tokens_issued_user: IntCounter,
    pub credential_cache_hit: IntCounter,
    pub credential_cache_miss: IntCounter,
    pub auth_failures: IntCounter,
    pub argon2_verifications: IntCounter,
    pub credential_cache: IntCounterVec,
    pub audit_batch_size: Histogram,
    pub audit_flush_seconds: Histogram,
    pub feed_applied: IntCounter,
    pub feed_lag_seconds: prometheus::Gauge,
    pub state: IntGaugeVec,
    pub db_pool: IntGaugeVec,
    pub throttled: IntCounter,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("tessera".into()), None)?;
    let latency = vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
    let tokens_issued = IntCounterVec::new(
        Opts::new("tokens_issued_total", "Tokens issued, by kind (client = client credentials, user = exchange)"),
        &["kind"],
    )?;
    let credential_cache = IntCounterVec::new(
        Opts::new("credential_cache_total", "Verified-credential cache lookups (hit ratio = hit / (hit + miss))"),
        &["result"],
    )?;
    let m = Metrics {
        tokens_issued_client: tokens_issued.with_label_values(&["client"]),
        tokens_issued_user: tokens_issued.with_label_values(&["user"]),
        credential_cache_hit: credential_cache.with_label_values(&["hit"]),
        credential_cache_miss: credential_cache.with_label_values(&["miss"]),
        requests: IntCounterVec::new(
            Opts::new("requests_total", "Requests by transport, operation and outcome"),
            &["transport", "operation", "outcome"],
        )?,
        request_seconds: HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Request latency").buckets(latency.clone()),
            &["transport", "operation"],
        )?,
        tokens_issued,
        auth_failures: IntCounter::new("client_auth_failures_total", "Failed client authentications")?,
        argon2_verifications: IntCounter::new("argon2_verifications_total", "argon2id verifications run")?,
        credential_cache,
        audit_batch_size: Histogram::with_opts(
            HistogramOpts::new("audit_batch_records", "Audit records per group commit")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
        )?,
        audit_flush_seconds: Histogram::with_opts(
            HistogramOpts::new("audit_flush_duration_seconds", "Time to commit one audit batch").buckets(latency),
        )?,
        feed_applied: IntCounter::new("change_feed_applied_total", "Changes applied from the change feed")?,
        feed_lag_seconds: prometheus::Gauge::new(
            "change_feed_lag_seconds",
            "Seconds since the change feed was last read successfully",
        )?,
        state: IntGaugeVec::new(
            Opts::new(
                "state_entries",
                "In-memory state sizes (clients, revoked_tokens, grants, keys, verified_tokens)",
            ),
            &["kind"],
        )?,
        db_pool: IntGaugeVec::new(Opts::new("db_pool_connections", "Database pool connections"), &["state"])?,
        throttled: IntCounter::new("throttled_total", "Requests refused by failed-authentication throttling")?,
        registry,
    };
    m.registry.register(Box::new(m.requests.clone()))?;
    m.registry.register(Box::new(m.request_seconds.clone()))?;
    m.registry.register(Box::new(m.tokens_issued.clone()))?;
    m.registry.register(Box::new(m.auth_failures.clone()))?;
    m.registry.register(Box::new(m.argon2_verifications.clone()))?;
    m.registry.register(Box::new(m.credential_cache.clone()))?;
    m.registry.register(Box::new(m.audit_batch_size.clone()))?;
    m.registry.register(Box::new(m.audit_flush_seconds.clone()))?;
    m.registry.register(Box::new(m.feed_applied.clone()))?;
    m.registry.register(Box::new(m.feed_lag_seconds.clone()))?;
    m.registry.register(Box::new(m.state.clone()))?;
    m.registry.register(Box::new(m.db_pool.clone()))?;
    m.registry.register(Box::new(m.throttled.clone()))?;
    Ok(m)
}

/// The process-wide metrics. Registration of these fixed names cannot fail.
#[allow(clippy::expect_used)]
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| build().expect("static metric definitions"));

pub fn set_state(kind: &str, value: usize) {
    METRICS.state.with_label_values(&[kind]).set(i64::try_from(value).unwrap_or(i64::MAX));
}

pub fn set_db_pool(in_use: u32, idle: u32) {
    METRICS.db_pool.with_label_values(&["in_use"]).set(i64::from(in_use));
    METRICS.db_pool.with_label_values(&["idle"]).set(i64::from(idle));
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

pub fn gauge_i64(g: &IntGauge, v: usize) {
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
}
