//! Building and running a replica: bind first (port 0 in tests, so the real ports are known),
//! open the core, then serve gRPC and HTTP until the shutdown future completes.
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::crypto::Kek;
use crate::grpc::pb::admin_service_server::AdminServiceServer;
use crate::grpc::pb::token_service_server::TokenServiceServer;
use crate::grpc::{self, admin::AdminApi, token::TokenApi};
use crate::limits::LimitedListener;
use crate::service::{Settings, Tessera};
use crate::storage::{NOTIFY_CHANNEL, Store};
use crate::telemetry::{ObserveLayer, Transport};
use crate::tls::{TlsFiles, TlsListener};

#[derive(Debug)]
pub struct ServeConfig {
    pub database_url: String,
    pub grpc_addr: String,
    pub http_addr: String,
    /// None = derived from the bound HTTP address.
    pub issuer: Option<String>,
    pub settings: Settings,
    pub kek: Kek,
    pub migrate: bool,
    /// Serve HTTP and gRPC over TLS with this certificate.
    pub tls: Option<TlsFiles>,
    /// Operations listener (/healthz, /readyz, /metrics); None = none.
    pub ops_addr: Option<String>,
    /// How long requests in flight may take to finish after shutdown begins.
    pub drain_timeout: Duration,
    /// Open connections at most, per listener (gRPC, REST).
    pub max_connections: usize,
    /// Threads that serve gRPC connections, each a single-threaded runtime ([`crate::shards`]);
    /// 0 = serve them on the work-stealing runtime.
    pub grpc_threads: usize,
    /// The same for REST connections; 0 = serve them on the work-stealing runtime.
    pub http_threads: usize,
}

pub struct Application {
    core: Arc<Tessera>,
    grpc: TcpListener,
    http: TcpListener,
    ops: Option<TcpListener>,
    tls: Option<TlsFiles>,
    drain_timeout: Duration,
    max_connections: usize,
    grpc_threads: usize,
    http_threads: usize,
}

impl Application {
    pub async fn build(config: ServeConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let store = Store::connect(&config.database_url).await?;
        if config.migrate {
            store.migrate().await?;
        } else {
            let pending = store.pending_migrations().await?;
            if !pending.is_empty() {
                anyhow::bail!(
                    "database schema is behind ({} pending migrations): run `tessera migrate`",
                    pending.len()
                );
            }
        }
        let grpc =
            TcpListener::bind(&config.grpc_addr).await.with_context(|| format!("bind gRPC {}", config.grpc_addr))?;
        let http =
            TcpListener::bind(&config.http_addr).await.with_context(|| format!("bind HTTP {}", config.http_addr))?;
        let ops = match &config.ops_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("bind operations {addr}"))?),
            None => None,
        };
        if let Some(tls) = &config.tls {
            tls.server_config()?; // fail at start, not at the first connection
        }
        let mut settings = config.settings;
        settings.issuer = match config.issuer {
            Some(i) => i,
            None => {
                let scheme = if config.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", http.local_addr()?)
            }
        };
        let core = Tessera::open(store, settings, config.kek, clock).await?;
        Ok(Self {
            core,
            grpc,
            http,
            ops,
            tls: config.tls,
            drain_timeout: config.drain_timeout,
            max_connections: config.max_connections,
            grpc_threads: config.grpc_threads,
            http_threads: config.http_threads,
        })
    }

    pub fn core(&self) -> &Arc<Tessera> {
        &self.core
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` completes. Then, in order: readiness and gRPC health turn
    /// NOT_SERVING, the listeners stop accepting, requests in flight finish (bounded by the
    /// drain timeout), and the audit trail is flushed.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { core, grpc, http, ops, tls, drain_timeout, max_connections, grpc_threads, http_threads } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        tokio::spawn(follow_changes(Arc::clone(&core), Arc::clone(&wake), stop_rx.clone()));
        if core.store.is_postgres() {
            tokio::spawn(listen_for_changes(Arc::clone(&core), Arc::clone(&wake), stop_rx.clone()));
        }

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<TokenServiceServer<TokenApi>>().await;
        health.set_serving::<AdminServiceServer<AdminApi>>().await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let token_service = TokenServiceServer::new(TokenApi::new(Arc::clone(&core)))
            .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES);
        let admin_service = AdminServiceServer::new(AdminApi::new(Arc::clone(&core)))
            .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES);

        let mut builder = tonic::transport::Server::builder();
        if let Some(files) = &tls {
            let (cert, key) = files.read_pem()?;
            let identity = tonic::transport::Identity::from_pem(cert, key);
            builder = builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
        }
        let grpc_router = builder
            .timeout(crate::http::REQUEST_TIMEOUT)
            .http2_max_header_list_size(u32::try_from(crate::http::MAX_HEADER_BYTES).unwrap_or(16 * 1024))
            .layer(ObserveLayer(Transport::Grpc))
            .layer(tower::util::MapResponseLayer::new(
                grpc::status::size_limit_as_resource_exhausted::<tonic::body::Body>,
            ))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(token_service)
            .add_service(admin_service);
        let grpc_listener = LimitedListener::new(grpc, max_connections).unvectored();
        let grpc_server: std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> = if grpc_threads == 0 {
            let server =
                grpc_router.serve_with_incoming_shutdown(grpc_listener.into_stream(), wait_for(stop_rx.clone()));
            Box::pin(async move { server.await.context("gRPC server") })
        } else {
            let idleness = core.settings.audit_pacing.idleness.clone();
            let serve =
                move |incoming, stop| grpc_router.clone().serve_with_incoming_shutdown(incoming, wait_for(stop));
            Box::pin(crate::shards::serve("grpc", grpc_listener, grpc_threads, idleness, serve, stop_rx.clone()))
        };
        let rest = axum::ServiceExt::into_make_service_with_connect_info::<crate::tls::Peer>(crate::http::service(
            Arc::clone(&core),
        ));
        let http_local = http.local_addr()?;
        let http_listener = LimitedListener::new(http, max_connections);
        let tls_config = tls.as_ref().map(TlsFiles::server_config).transpose()?;
        // One REST server on the connections it is handed, plain or TLS: all of them on the
        // work-stealing runtime, or each thread's share on that thread.
        let serve = move |incoming, stop| {
            let (rest, tls_config) = (rest.clone(), tls_config.clone());
            async move {
                let handed = crate::shards::Handed::new(incoming, http_local);
                match tls_config {
                    Some(config) => {
                        axum::serve(TlsListener::new(handed, config)?, rest)
                            .with_graceful_shutdown(wait_for(stop))
                            .await?
                    }
                    None => axum::serve(handed, rest).with_graceful_shutdown(wait_for(stop)).await?,
                }
                Ok::<(), anyhow::Error>(())
            }
        };
        let http_server: std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> = if http_threads == 0 {
            Box::pin(serve(futures::StreamExt::boxed(http_listener.into_stream()), stop_rx.clone()))
        } else {
            let idleness = core.settings.audit_pacing.idleness.clone();
            Box::pin(crate::shards::serve("http", http_listener, http_threads, idleness, serve, stop_rx.clone()))
        };
        let mut servers = tokio::task::JoinSet::new();
        servers.spawn(grpc_server);
        servers.spawn(http_server);
        // The operations listener outlives the drain, so probes see "not ready" throughout.
        let ops_task = ops.map(|listener| {
            let router = crate::ops::router(Arc::clone(&core));
            tokio::spawn(async move { axum::serve(listener, router).await })
        });
        tracing::info!(issuer = %core.settings.issuer, "serving");

        // Run until asked to stop, or until a server fails.
        tokio::select! {
            _ = shutdown => {}
            Some(done) = servers.join_next() => {
                let _ = stop_tx.send(true);
                if let Some(ops) = ops_task { ops.abort(); }
                return match done {
                    Ok(Ok(())) => Err(anyhow::anyhow!("a server stopped unexpectedly")),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(e.into()),
                };
            }
        }

        core.begin_shutdown();
        health.set_not_serving::<TokenServiceServer<TokenApi>>().await;
        health.set_not_serving::<AdminServiceServer<AdminApi>>().await;
        health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        tracing::info!(
            drain_timeout_secs = drain_timeout.as_secs(),
            "shutting down: not ready, draining requests in flight"
        );
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(drain_timeout, async {
            while let Some(done) = servers.join_next().await {
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = format!("{e:#}"), "server failed while draining"),
                    Err(e) => tracing::error!(error = %e, "server task failed while draining"),
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(remaining = servers.len(), "drain timeout reached: closing the remaining connections");
            servers.abort_all();
        }
        core.audit_flush().await;
        if let Some(ops) = ops_task {
            ops.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

async fn wait_for(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Polls the change feed (and wakes early on PostgreSQL NOTIFY), so every change made anywhere
/// reaches this replica within the poll interval.
async fn follow_changes(core: Arc<Tessera>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let poll = core.settings.change_poll_interval;
    let mut last_purge = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match core.sync_changes().await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("change feed reachable again");
            }
            Ok(_) => {}
            Err(e) => {
                if !failing {
                    e.log_if_server_error("change feed");
                    tracing::warn!("change feed unreachable; retrying");
                }
                failing = true;
            }
        }
        if last_purge.elapsed() > Duration::from_secs(60) {
            last_purge = tokio::time::Instant::now();
            core.purge_expired();
            // Retired keys leave JWKS once their last token has expired.
            if let Err(e) = core.refresh_keys().await {
                tracing::warn!(error = format!("{e:#}"), "refreshing signing keys failed");
            }
            if let Some(interval) = core.settings.key_rotation_interval {
                let secs = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX);
                match core.rotate_keys_if_due(secs).await {
                    Ok(Some(k)) => tracing::info!(kid = %k.kid, "automatic signing-key rotation"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "automatic key rotation failed"),
                }
            }
        }
    }
}

/// PostgreSQL LISTEN on the change channel: a wake-up only; the feed table is the truth.
async fn listen_for_changes(core: Arc<Tessera>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    loop {
        let pool = core.store.db().get_postgres_connection_pool().clone();
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
            l.listen(NOTIFY_CHANNEL).await?;
            // Catch up on anything missed while not listening.
            wake.notify_one();
            loop {
                l.recv().await?;
                wake.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            r = listener => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "change notifications lost; reconnecting");
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
