//! The audit trail's writer. Records are durable before the response that caused them returns,
//! written in groups: concurrent requests share one transaction (one fsync), so auditing does not
//! become the bottleneck (group commit).
//!
//! The writer runs on a thread of its own, with its own connection. Group commit is a loop: while one
//! group commits, the next gathers, so the time a commit takes bounds throughput. As a task on the
//! server's runtime, the writer was woken by SQLite's thread from outside the runtime and waited
//! in the global queue behind request tasks, up to two thirds of each commit's 0.77 ms. On its own
//! thread a commit takes about 0.3 ms, and issuance gained 5–10%. On an SQLite file the writer's
//! thread runs the statement itself ([`GroupWriter::File`]): no hand-over to a database thread,
//! and its runtime parks on a futex, not epoll. (In-memory SQLite, which has no connection of its
//! own for the writer, keeps it as a task on the server's runtime.)
//!
//! Commits are paced while the server is saturated: a group commit then starts at most once per
//! commit interval (500 µs by default), counted from the start of the one before, and the writer
//! gathers records for the rest of the interval. On an SQLite file a commit costs about 75 µs of
//! CPU whatever its size (the fdatasync alone about 50: two requests to the disk), and unpaced
//! the writer commits as often as the disk allows, 3,000–3,500 times a second with 10–12
//! records each. Waiting only pays while the CPU is the bottleneck, though: with spare CPU it
//! only adds latency, and a client that waits for each token before asking for the next gets
//! fewer of them (8 connections: 13k against 18k tokens/s with fixed pacing). So the writer
//! waits only while the server's runtime threads have kept every CPU busy since the previous
//! commit started ([`Idleness`], kept by hooks on the runtime's threads); any idle moment ends
//! the wait. At 64 connections groups grow from about 10 records to 20–22, p99 falls from 6.5–7.5
//! ms to 3.5–4.2 ms and the writer's thread takes 2–3 µs less CPU per token; at 8 to 32
//! connections throughput is unchanged within the noise.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::domain::{Error, Result};
use crate::shards::Home;
use crate::storage::Store;
use crate::storage::audit::{AuditRecord, GroupWriter};

/// Largest group written in one transaction.
const MAX_BATCH: usize = crate::storage::audit::MAX_GROUP;
/// Records queued at most; a full queue makes callers wait (back-pressure), never drops.
const QUEUE: usize = 8192;
/// Group commits start at most this often by default, while the server is saturated.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_micros(500);
/// How long the writer sleeps between looks at the queue and the runtime while it paces.
const PACE_STEP: Duration = Duration::from_micros(30);

/// Whether the server's runtime threads have left a CPU idle: [`Idleness::install`] hooks it
/// into the park and unpark of each runtime that serves requests (the work-stealing runtime and
/// the gRPC threads). The server is saturated while at least as many of those threads run as
/// there are CPUs.
#[derive(Debug)]
pub struct Idleness {
    cpus: usize,
    /// Runtime threads hooked.
    threads: AtomicUsize,
    /// Of those, parked right now.
    idle: AtomicUsize,
    /// Parks that left fewer threads running than there are CPUs, so far.
    slack: AtomicU64,
}

impl Default for Idleness {
    /// For as many CPUs as this process may use.
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from))
    }
}

impl Idleness {
    pub fn new(cpus: usize) -> Self {
        Self { cpus: cpus.max(1), threads: AtomicUsize::new(0), idle: AtomicUsize::new(0), slack: AtomicU64::new(0) }
    }

    /// Counts the parks of the `threads` threads the runtime `builder` makes (its workers; one
    /// for a current-thread runtime).
    pub fn install(self: &Arc<Self>, builder: &mut tokio::runtime::Builder, threads: usize) {
        self.threads.fetch_add(threads, Ordering::Relaxed);
        let (park, unpark) = (Arc::clone(self), Arc::clone(self));
        builder
            .on_thread_park(move || {
                let idle = park.idle.fetch_add(1, Ordering::Relaxed) + 1;
                if park.threads.load(Ordering::Relaxed).saturating_sub(idle) < park.cpus {
                    park.slack.fetch_add(1, Ordering::Relaxed);
                }
            })
            .on_thread_unpark(move || {
                unpark.idle.fetch_sub(1, Ordering::Relaxed);
            });
    }

    fn slack(&self) -> u64 {
        self.slack.load(Ordering::Relaxed)
    }

    /// As many threads running as CPUs now, and none short of that since `slack` was read.
    fn busy_since(&self, slack: u64) -> bool {
        let running = self.threads.load(Ordering::Relaxed).saturating_sub(self.idle.load(Ordering::Relaxed));
        running >= self.cpus && self.slack() == slack
    }
}

/// How the writer spaces its commits.
#[derive(Clone, Debug, Default)]
pub struct Pacing {
    /// Commits start at most this often while the server is saturated (zero: never wait).
    pub interval: Duration,
    /// The server runtime's idleness; without it the writer waits whenever commits follow each
    /// other back to back.
    pub idleness: Option<Arc<Idleness>>,
}

struct Pending {
    record: AuditRecord,
    waiter: Waiter,
}

/// Where a caller's answer goes: its record committed, or why not.
type Answer = oneshot::Sender<Result<(), String>>;

/// A caller waiting for its record's commit, and the shard it waits on (see [`deliver`]).
struct Waiter {
    done: Answer,
    home: Option<Home>,
}

// Records are the common case; boxing them would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(Pending),
    /// Answered once everything queued before it is committed.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
enum Sink {
    /// Write each record at once (the CLI: one record per command).
    Direct(Store),
    /// Group commit through a writer task (the server).
    Batched(mpsc::Sender<Msg>),
    /// Auditing switched off (benchmarks comparing its cost).
    Off,
}

#[derive(Clone)]
pub struct Audit(Sink);

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Sink::Direct(_) => "Audit(direct)",
            Sink::Batched(_) => "Audit(batched)",
            Sink::Off => "Audit(off)",
        })
    }
}

impl Audit {
    pub fn direct(store: Store) -> Self {
        Self(Sink::Direct(store))
    }

    pub fn off() -> Self {
        Self(Sink::Off)
    }

    /// Starts the group-commit writer; it ends when the last `Audit` clone is dropped, after
    /// writing everything queued. Pacing needs the writer's own thread, so the in-memory
    /// database, whose writer is a task on the server's runtime, is never paced.
    pub fn batched(store: Store, pacing: Pacing) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let target = store.group_writer();
        if target.wants_thread() {
            let mut runtime = tokio::runtime::Builder::new_current_thread();
            match target {
                // Only a PostgreSQL connection needs the I/O driver; without it the thread parks
                // on a futex rather than in epoll.
                GroupWriter::Orm(_) => runtime.enable_all(),
                GroupWriter::File(_) => runtime.enable_time(),
            };
            let runtime = runtime.build()?;
            std::thread::Builder::new()
                .name("tessera-audit".into())
                .spawn(move || runtime.block_on(writer(target, rx, pacing)))?;
        } else {
            tokio::spawn(writer(target, rx, Pacing::default()));
        }
        Ok(Self(Sink::Batched(tx)))
    }

    /// Whether records are kept (false only when the trail is switched off).
    pub fn enabled(&self) -> bool {
        !matches!(self.0, Sink::Off)
    }

    /// Waits until every record queued so far is committed (shutdown).
    pub async fn flush(&self) {
        if let Sink::Batched(tx) = &self.0 {
            let (done, wait) = oneshot::channel();
            if tx.send(Msg::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// Returns once the record is committed.
    pub async fn record(&self, record: AuditRecord) -> Result<()> {
        match &self.0 {
            Sink::Off => Ok(()),
            Sink::Direct(store) => Ok(store.insert_audit(std::slice::from_ref(&record)).await?),
            Sink::Batched(tx) => {
                let (done, wait) = oneshot::channel();
                let waiter = Waiter { done, home: Home::current() };
                tx.send(Msg::Record(Pending { record, waiter }))
                    .await
                    .map_err(|_| Error::Unavailable(anyhow::anyhow!("audit writer stopped")))?;
                match wait.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(msg)) => Err(Error::Unavailable(anyhow::anyhow!("audit write failed: {msg}"))),
                    Err(_) => Err(Error::Unavailable(anyhow::anyhow!("audit writer stopped"))),
                }
            }
        }
    }
}

/// `pacing` has a non-zero interval only on the writer's own thread, which it blocks while it
/// waits.
async fn writer(mut target: GroupWriter, mut rx: mpsc::Receiver<Msg>, pacing: Pacing) {
    let mut group = Group::default();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    // When the last commit started, and the runtime's park count then.
    let mut last_commit: Option<(Instant, u64)> = None;
    while let Some(first) = rx.recv().await {
        gather(&mut rx, first, &mut group, &mut flushes);
        if let Some((started, slack)) = last_commit {
            let saturated = || pacing.idleness.as_ref().is_none_or(|i| i.busy_since(slack));
            while group.records.len() < MAX_BATCH && flushes.is_empty() && saturated() {
                let left = pacing.interval.saturating_sub(started.elapsed());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(PACE_STEP));
                if let Ok(msg) = rx.try_recv() {
                    gather(&mut rx, msg, &mut group, &mut flushes);
                }
            }
        }
        if group.records.is_empty() {
            last_commit = None;
        } else {
            last_commit = Some((Instant::now(), pacing.idleness.as_ref().map_or(0, |i| i.slack())));
            if !commit(&mut target, &mut group).await {
                // The database is unreachable: everything that queued while this batch failed
                // would fail the same way; answer it now rather than after one more timeout each.
                while let Ok(msg) = rx.try_recv() {
                    match msg {
                        Msg::Record(p) => {
                            let _ = p.waiter.done.send(Err("database unreachable".into()));
                        }
                        Msg::Flush(done) => flushes.push(done),
                    }
                }
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Adds `first` and whatever else is queued to the group, up to [`MAX_BATCH`] records.
fn gather(rx: &mut mpsc::Receiver<Msg>, first: Msg, group: &mut Group, flushes: &mut Vec<oneshot::Sender<()>>) {
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        match msg {
            Msg::Record(p) => {
                group.records.push(p.record);
                group.waiting.push(p.waiter);
            }
            Msg::Flush(done) => flushes.push(done),
        }
        if group.records.len() < MAX_BATCH {
            next = rx.try_recv().ok();
        }
    }
}

/// The records of one group commit and the callers waiting for it, in the same order.
#[derive(Default)]
struct Group {
    records: Vec<AuditRecord>,
    waiting: Vec<Waiter>,
}

/// Returns false when the database could not be reached.
async fn commit(target: &mut GroupWriter, group: &mut Group) -> bool {
    let records = &group.records;
    let started = Instant::now();
    let mut result = target.insert(records).await;
    let unreachable = result.as_ref().is_err_and(|e| matches!(Error::from(e.clone()), Error::Unavailable(_)));
    if result.is_err() && !unreachable {
        // One retry after a pause rides out a brief database hiccup.
        tokio::time::sleep(Duration::from_millis(100)).await;
        result = target.insert(records).await;
    }
    let m = &crate::metrics::METRICS;
    m.audit_batch_size.observe(records.len() as f64);
    m.audit_flush_seconds.observe(started.elapsed().as_secs_f64());
    let outcome = result.map_err(|e| e.to_string());
    if let Err(e) = &outcome {
        tracing::error!(error = %e, records = records.len(), "audit batch not written");
    }
    let ok = outcome.is_ok();
    group.records.clear();
    deliver(group.waiting.drain(..), &outcome);
    ok || !unreachable
}

/// Answers the callers of a group: those waiting on a shard with one job per shard, which wakes
/// them on their own thread, the others (on the work-stealing runtime) directly.
fn deliver(waiting: impl Iterator<Item = Waiter>, outcome: &Result<(), String>) {
    // A group's callers are on a handful of shards at most.
    let mut by_home: Vec<(Home, Vec<Answer>)> = Vec::new();
    for Waiter { done, home } in waiting {
        match home {
            Some(home) => match by_home.iter_mut().find(|(h, _)| h.same(&home)) {
                Some((_, dones)) => dones.push(done),
                None => by_home.push((home, vec![done])),
            },
            None => {
                let _ = done.send(outcome.clone());
            }
        }
    }
    for (home, dones) in by_home {
        let outcome = outcome.clone();
        let job: crate::shards::Job = Box::new(move || {
            for done in dones {
                let _ = done.send(outcome.clone());
            }
        });
        // A shard that has stopped has no callers left to wake; its job runs here.
        if let Err(job) = home.run(job) {
            job();
        }
    }
}
