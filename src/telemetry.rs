//! Logs (text or JSON), OpenTelemetry traces over OTLP when the standard OTEL_* variables ask for
//! them, and one span per request on both transports with the caller's W3C `traceparent` as
//! parent. Spans carry client id, grant type and outcome — never a secret or a token.
use std::sync::LazyLock;
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::metrics::METRICS;

/// Keeps the trace pipeline alive; `shutdown` flushes spans still buffered.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider {
            if let Err(e) = p.force_flush() {
                tracing::warn!(error = %e, "flushing traces failed");
            }
            let _ = p.shutdown();
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// Where to send traces: from OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT and _PROTOCOL.
pub fn otlp_from_env() -> Option<(String, OtlpProtocol)> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .ok()
        .filter(|e| !e.trim().is_empty())?;
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    let protocol = if protocol.trim() == "grpc" { OtlpProtocol::Grpc } else { OtlpProtocol::HttpProtobuf };
    Some((endpoint, protocol))
}

/// A tracer provider exporting to `endpoint` in batches on the tokio runtime.
pub fn otlp_provider(endpoint: &str, protocol: OtlpProtocol) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = match protocol {
        OtlpProtocol::Grpc => {
            opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?
        }
        OtlpProtocol::HttpProtobuf => {
            // The endpoint variable names the collector's base URL; traces go to /v1/traces.
            let url = if std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_ok() {
                endpoint.to_owned()
            } else {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            };
            opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(url).build()?
        }
    };
    let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .build();
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("tessera").build();
    Ok(SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build())
}

/// The tracing layer that turns spans into OpenTelemetry spans.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("tessera"))
}

/// The target of the per-request spans. They feed OpenTelemetry traces; the default log filter
/// leaves them out of the logs, where formatting two spans per request cost about 15% of the
/// server's CPU. `TESSERA_LOG=info` puts them back (each log line then carries its request).
pub const SPAN_TARGET: &str = "tessera::trace";

/// The log filter when neither `TESSERA_LOG` nor `RUST_LOG` is set.
const DEFAULT_LOG_FILTER: &str =
    "info,tessera::trace=off,sqlx=warn,sea_orm=warn,h2=warn,hyper=warn,tower=warn,opentelemetry=warn";

fn env_filter() -> EnvFilter {
    EnvFilter::try_from_env("TESSERA_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER))
}

/// Installs the global subscriber: logs to stderr, plus OTLP traces when configured. Must run
/// inside the tokio runtime when OTLP is on (the exporter lives there).
pub fn init(json: bool) -> Telemetry {
    let provider = match otlp_from_env() {
        Some((endpoint, protocol)) => match otlp_provider(&endpoint, protocol) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("warning: OpenTelemetry exporter not started: {e:#}");
                None
            }
        },
        None => None,
    };
    let _ = subscriber(json, env_filter(), provider.as_ref()).try_init();
    Telemetry { provider }
}

/// Logs to stderr through `log_filter`, plus OpenTelemetry spans when there is a provider.
///
/// Without a provider the trace layer is left out, not added as `None`: tracing-subscriber counts
/// an absent layer as interested in everything, so every span the log filter drops (two per
/// request) would still be built in the span registry and torn down again. That cost about 1.3
/// µs per request, 10% of an introspection, in the default configuration.
fn subscriber(
    json: bool,
    log_filter: EnvFilter,
    provider: Option<&SdkTracerProvider>,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    match provider {
        Some(p) => Box::new(
            tracing_subscriber::registry()
                .with(otel_layer::<Registry>(p).with_filter(EnvFilter::new("info")))
                .with(log_layer(json).with_filter(log_filter)),
        ),
        None => Box::new(tracing_subscriber::registry().with(log_layer(json).with_filter(log_filter))),
    }
}

fn log_layer<S>(json: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json { fmt.json().boxed() } else { fmt.boxed() }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The caller's W3C trace context (`traceparent`, `tracestate`) from HTTP headers or gRPC metadata.
pub fn parent_context(headers: &HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// gRPC methods we serve by name, so the `operation` label stays bounded.
const GRPC_METHODS: [&str; 6] = [
    "/tessera.v1.TokenService/IssueToken",
    "/tessera.v1.TokenService/ExchangeForUser",
    "/tessera.v1.TokenService/Introspect",
    "/tessera.v1.TokenService/Revoke",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];
/// Every `operation` label value `grpc_operation` and `http_operation` return.
const GRPC_OTHER_OPERATIONS: [&str; 3] = ["AdminService", "reflection", "unknown"];
const HTTP_OPERATIONS: [&str; 6] = ["token", "introspect", "revoke", "metadata", "jwks", "unknown"];

fn grpc_operation(path: &str) -> &'static str {
    if let Some(k) = GRPC_METHODS.iter().find(|k| **k == path) {
        return k;
    }
    if path.starts_with("/tessera.v1.AdminService/") {
        return "AdminService";
    }
    if path.starts_with("/grpc.reflection.") {
        return "reflection";
    }
    "unknown"
}

fn http_operation(path: &str) -> &'static str {
    match path {
        "/oauth2/token" => "token",
        "/oauth2/introspect" => "introspect",
        "/oauth2/revoke" => "revoke",
        "/.well-known/oauth-authorization-server" => "metadata",
        "/.well-known/jwks.json" => "jwks",
        _ => "unknown",
    }
}

/// The OAuth outcome of a REST response, set by the error mapping (absent = "ok").
#[derive(Clone, Copy, Debug)]
pub struct Outcome(pub &'static str);

fn grpc_code_name(code: &str) -> &'static str {
    match code.trim() {
        "0" => "ok",
        "1" => "cancelled",
        "2" => "unknown",
        "3" => "invalid_argument",
        "4" => "deadline_exceeded",
        "5" => "not_found",
        "7" => "permission_denied",
        "8" => "resource_exhausted",
        "11" => "out_of_range",
        "12" => "unimplemented",
        "13" => "internal",
        "14" => "unavailable",
        "16" => "unauthenticated",
        _ => "other",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Http,
    Grpc,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
        }
    }
}

/// The metric series of one operation, resolved once: `with_label_values` hashes the labels and
/// takes a lock on every call, about 1% of an introspection's CPU.
struct OperationMetrics {
    transport: Transport,
    operation: &'static str,
    ok: prometheus::IntCounter,
    seconds: prometheus::Histogram,
}

static OPERATION_METRICS: LazyLock<Vec<OperationMetrics>> = LazyLock::new(|| {
    let http = HTTP_OPERATIONS.into_iter().map(|op| (Transport::Http, op));
    let grpc = GRPC_METHODS.into_iter().chain(GRPC_OTHER_OPERATIONS).map(|op| (Transport::Grpc, op));
    http.chain(grpc)
        .map(|(transport, operation)| OperationMetrics {
            transport,
            operation,
            ok: METRICS.requests.with_label_values(&[transport.as_str(), operation, "ok"]),
            seconds: METRICS.request_seconds.with_label_values(&[transport.as_str(), operation]),
        })
        .collect()
});

fn operation_metrics(transport: Transport, operation: &str) -> Option<&'static OperationMetrics> {
    OPERATION_METRICS.iter().find(|m| m.transport == transport && m.operation == operation)
}

/// One span per request (parent = the caller's trace context) plus its metrics, for either
/// transport: `.layer(ObserveLayer(Transport::Http))` on the axum router, `Transport::Grpc` on
/// the tonic server.
#[derive(Clone, Copy, Debug)]
pub struct ObserveLayer(pub Transport);

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, transport: self.0 }
    }
}

#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    transport: Transport,
}

fn outcome_of<B>(transport: Transport, resp: &Response<B>) -> &'static str {
    match transport {
        Transport::Http => match resp.extensions().get::<Outcome>() {
            Some(o) => o.0,
            None if resp.status().is_success() => "ok",
            None => match resp.status().as_u16() {
                404 => "not_found",
                405 => "method_not_allowed",
                413 => "payload_too_large",
                429 => "slow_down",
                503 => "temporarily_unavailable",
                _ => "error",
            },
        },
        // Errors travel as trailers-only responses, so grpc-status is in the headers; a success
        // puts grpc-status 0 in the trailers instead.
        Transport::Grpc => match resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()) {
            Some(code) => grpc_code_name(code),
            None => "ok",
        },
    }
}

impl<S, B, RB> tower::Service<Request<B>> for Observe<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        use tracing::Instrument;
        let transport = self.transport;
        let path = req.uri().path();
        let operation = match transport {
            Transport::Http => http_operation(path),
            Transport::Grpc => grpc_operation(path),
        };
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "request",
            otel.name = operation,
            otel.kind = "server",
            transport = transport.as_str(),
            operation,
            client_id = tracing::field::Empty,
            grant_type = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        if !span.is_disabled() {
            let _ = span.set_parent(parent_context(req.headers()));
        }
        let start = Instant::now();
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(async move {
            let result = fut.instrument(span.clone()).await;
            let outcome = match &result {
                Ok(resp) => outcome_of(transport, resp),
                Err(_) => "error",
            };
            span.record("outcome", outcome);
            let series = operation_metrics(transport, operation);
            match series.filter(|_| outcome == "ok") {
                Some(m) => m.ok.inc(),
                None => METRICS.requests.with_label_values(&[transport.as_str(), operation, outcome]).inc(),
            }
            let seconds = start.elapsed().as_secs_f64();
            match series {
                Some(m) => m.seconds.observe(seconds),
                None => METRICS.request_seconds.with_label_values(&[transport.as_str(), operation]).observe(seconds),
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation label the request paths produce has its series resolved up front (the
    /// lists beside `http_operation` and `grpc_operation` must not drift from them).
    #[test]
    fn every_operation_has_resolved_series() {
        let http = [
            "/oauth2/token",
            "/oauth2/introspect",
            "/oauth2/revoke",
            "/.well-known/oauth-authorization-server",
            "/.well-known/jwks.json",
            "/nope",
        ];
        for path in http {
            assert!(operation_metrics(Transport::Http, http_operation(path)).is_some(), "{path}");
        }
        let grpc = GRPC_METHODS.into_iter().chain([
            "/tessera.v1.AdminService/CreateClient",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/nope",
        ]);
        for path in grpc {
            assert!(operation_metrics(Transport::Grpc, grpc_operation(path)).is_some(), "{path}");
        }
    }

    /// With the default log filter and no trace exporter, the per-request spans are not built
    /// at all (building and dropping them cost about 10% of an introspection); `TESSERA_LOG=info`
    /// or an exporter turns them on.
    #[test]
    fn default_logging_builds_no_request_spans() {
        let request_span = || tracing::info_span!(target: SPAN_TARGET, "request", operation = "token");
        tracing::subscriber::with_default(subscriber(false, EnvFilter::new(DEFAULT_LOG_FILTER), None), || {
            assert!(request_span().is_disabled(), "default filter, no exporter");
        });
        tracing::subscriber::with_default(subscriber(true, EnvFilter::new("info"), None), || {
            assert!(!request_span().is_disabled(), "TESSERA_LOG=info");
        });
        let provider = SdkTracerProvider::builder().build();
        tracing::subscriber::with_default(
            subscriber(false, EnvFilter::new(DEFAULT_LOG_FILTER), Some(&provider)),
            || assert!(!request_span().is_disabled(), "default filter with an exporter"),
        );
    }
}
