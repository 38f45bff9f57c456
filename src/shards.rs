//! Connections served on threads of their own, one single-threaded Tokio runtime each
//! ("shards"), instead of on Tokio's work-stealing runtime: gRPC's (`TESSERA_GRPC_THREADS`) and
//! REST's (`TESSERA_HTTP_THREADS`), one thread per CPU each by default.
//!
//! Every audited request parks until the audit writer's thread commits its record and wakes it.
//! On the work-stealing runtime the woken task runs on whichever worker is free, so a
//! connection's state moves between cores and memory allocated on one thread is freed on the
//! other (mimalloc's cross-thread frees). For gRPC it is worse: hyper serves each HTTP/2 stream as
//! a task of its own beside the connection's task, all sharing h2's state behind one lock, and
//! the two ran on both cores at once. On a shard everything of a connection stays on one thread.
//! Multiplexed IssueToken (8 connections x 8 streams, h2load): 62 against 73 µs of server CPU per
//! call, the allocator 2.8% of the CPU against 5.2%, while the system calls per call stayed about
//! the same (1.8-2.0 `writev`; a shard woken from outside adds an eventfd write). REST issuance:
//! 37.7 against 40.0 µs per token and 22% more tokens/s at 64 connections.
//!
//! One acceptor on the server's runtime takes the connections (and their permit from the
//! connection limit) and hands each to the shard with the fewest open connections. What the
//! shards give up is work stealing: a connection waits for its own thread.
//!
//! Each shard also has a [`Home`]: a queue through which another thread runs work on it. The
//! audit writer answers a whole group of waiting requests with one job per shard. Woken one by
//! one from the writer's thread, every waiting request cost a write to its shard's eventfd (a
//! current-thread runtime woken from outside always makes one): 19 system calls per group
//! commit on the writer's thread, which took 174 µs of CPU per commit against 145 now.
use std::cell::RefCell;
use std::future::Future;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::limits::{Counted, LimitedListener, Tally};
use crate::service::audit::Idleness;

/// The number of shards when none is configured: one per CPU the process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A connection on its way to a shard.
type Handoff = Counted<StdTcpStream>;

/// Work handed to a shard's thread.
pub type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    static HOME: RefCell<Option<Home>> = const { RefCell::new(None) };
}

/// A shard, as other threads reach it: jobs sent here run on the shard's thread, in order, as
/// one task; sending a batch of wake-ups as one job wakes the thread once.
#[derive(Clone, Debug)]
pub struct Home(mpsc::UnboundedSender<Job>);

impl Home {
    /// The shard whose thread this is, if it is one.
    pub fn current() -> Option<Home> {
        HOME.with(|home| home.borrow().clone())
    }

    /// Makes this thread a shard, for as long as `runtime` (a current-thread runtime on this
    /// thread) runs: jobs run as a task on it.
    pub fn install(runtime: &tokio::runtime::Runtime) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        runtime.spawn(async move {
            while let Some(job) = rx.recv().await {
                job();
            }
        });
        HOME.with(|home| *home.borrow_mut() = Some(Home(tx)));
    }

    /// Runs `job` on the shard's thread; gives it back when the shard has stopped.
    pub fn run(&self, job: Job) -> Result<(), Job> {
        self.0.send(job).map_err(|e| e.0)
    }

    /// Whether both are the same shard.
    pub fn same(&self, other: &Home) -> bool {
        self.0.same_channel(&other.0)
    }
}

/// Keeps a timer pending on the shard's runtime, so that registering each request's timeout does
/// not wake the runtime's own driver. Tokio unparks a runtime's driver (an eventfd write) whenever
/// a timer is registered while no timer was pending when the driver last parked; a shard with
/// nothing in flight parks with no timer, so every request's timeout (REST's and gRPC's, both
/// [`REQUEST_TIMEOUT`](crate::http::REQUEST_TIMEOUT)) cost a `write(2)` on the shard's own
/// thread, and a spurious return from its next `epoll_wait`. A timer always due before any
/// request's deadline leaves nothing to wake for; it fires twice per timeout, on an idle server too.
async fn hold_timer() {
    let mut tick = tokio::time::interval(crate::http::REQUEST_TIMEOUT / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

struct Shard {
    connections: mpsc::UnboundedSender<Handoff>,
    open: Arc<AtomicUsize>,
}

/// Serves the connections `listener` accepts on `count` shards named `name`; `serve` runs one
/// shard's server (tonic's `serve_with_incoming_shutdown`, or axum's over [`Handed`]) on the
/// connections it is given, until `stop`. Returns when every shard has drained, or with the
/// first shard's error. Dropping the returned future (the drain timeout) ends the shards at
/// once, closing their connections.
pub async fn serve<S, F, E>(
    name: &'static str,
    mut listener: LimitedListener,
    count: usize,
    idleness: Option<Arc<Idleness>>,
    serve: S,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()>
where
    S: Fn(futures::stream::BoxStream<'static, std::io::Result<Counted<TcpStream>>>, watch::Receiver<bool>) -> F
        + Clone
        + Send
        + 'static,
    F: Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    // Dropped with this future: tells every shard to stop without waiting.
    let (abort, aborted) = watch::channel(());
    let mut shards = Vec::with_capacity(count.max(1));
    let mut finished = FuturesUnordered::new();
    for i in 0..count.max(1) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Handoff>();
        let (done_tx, done_rx) = oneshot::channel::<anyhow::Result<()>>();
        let (serve, stop, mut aborted, idleness) = (serve.clone(), stop.clone(), aborted.clone(), idleness.clone());
        std::thread::Builder::new()
            .name(format!("tessera-{name}-{i}"))
            .spawn(move || {
                let mut builder = tokio::runtime::Builder::new_current_thread();
                builder.enable_all();
                if let Some(idleness) = &idleness {
                    idleness.install(&mut builder, 1);
                }
                let result = builder.build().with_context(|| format!("{name} thread's runtime")).and_then(|runtime| {
                    Home::install(&runtime);
                    runtime.spawn(hold_timer());
                    runtime.block_on(async move {
                        // Each connection joins this shard's reactor as it arrives.
                        let incoming = futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
                            .map(|c: Handoff| c.into_tokio())
                            .boxed();
                        tokio::select! {
                            r = serve(incoming, stop) => r.map_err(|e| e.into().context(format!("{name} server"))),
                            _ = aborted.changed() => Ok(()),
                        }
                    })
                });
                let _ = done_tx.send(result);
            })
            .with_context(|| format!("start a {name} thread"))?;
        shards.push(Shard { connections: tx, open: Arc::new(AtomicUsize::new(0)) });
        finished.push(done_rx);
    }

    let mut next = 0usize;
    loop {
        tokio::select! {
            (conn, _) = listener.accept_counted() => {
                // The least loaded shard; ties go round the shards in turn.
                let n = shards.len();
                let pick = (0..n)
                    .map(|k| (next + k) % n)
                    .min_by_key(|&i| shards[i].open.load(Ordering::Relaxed))
                    .unwrap_or(0);
                next = (pick + 1) % n;
                let shard = &shards[pick];
                match conn.into_std() {
                    Ok(conn) => {
                        let _ = shard.connections.send(conn.tallied(Tally::new(&shard.open)));
                    }
                    Err(e) => tracing::warn!(error = %e, server = name, "handing a connection to its thread failed"),
                }
            }
            _ = stop.wait_for(|s| *s) => break,
            Some(done) = finished.next() => {
                return match done {
                    Ok(Ok(())) => Err(anyhow::anyhow!("a {name} thread stopped unexpectedly")),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(anyhow::anyhow!("a {name} thread failed")),
                };
            }
        }
    }
    // No more connections (the listening socket closes, so new clients are refused rather than
    // left in the backlog); each shard drains its own.
    drop(listener);
    drop(shards);
    let mut result = Ok(());
    while let Some(done) = finished.next().await {
        let done = done.unwrap_or_else(|_| Err(anyhow::anyhow!("a {name} thread failed")));
        if result.is_ok() {
            result = done;
        }
    }
    drop(abort);
    result
}

/// The connections handed to a shard, as a listener for axum (and, over TLS, for [`TlsListener`]).
///
/// [`TlsListener`]: crate::tls::TlsListener
pub struct Handed {
    incoming: futures::stream::BoxStream<'static, std::io::Result<Counted<TcpStream>>>,
    local: SocketAddr,
}

impl Handed {
    /// `local`: the address the acceptor listens on.
    pub fn new(
        incoming: futures::stream::BoxStream<'static, std::io::Result<Counted<TcpStream>>>,
        local: SocketAddr,
    ) -> Self {
        Self { incoming, local }
    }
}

impl axum::serve::Listener for Handed {
    type Io = Counted<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(io)) => match io.peer_addr() {
                    Ok(addr) => return (io, addr),
                    // Closed before it got here.
                    Err(_) => continue,
                },
                Some(Err(e)) => tracing::debug!(error = %e, "a handed-over connection was lost"),
                // The acceptor has stopped: nothing more comes.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
