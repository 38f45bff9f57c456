//! The audit trail's writer. Records are durable before the response that caused them returns,
//! written in groups: concurrent requests share one transaction (one fsync), so auditing does not
//! become the bottleneck (group commit).
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::domain::{Error, Result};
use crate::storage::Store;
use crate::storage::audit::AuditRecord;

/// Largest group written in one transaction.
const MAX_BATCH: usize = 1024;
/// Records queued at most; a full queue makes callers wait (back-pressure), never drops.
const QUEUE: usize = 8192;

struct Pending {
    record: AuditRecord,
    done: oneshot::Sender<Result<(), String>>,
}

#[derive(Clone)]
enum Sink {
    /// Write each record at once (the CLI: one record per command).
    Direct(Store),
    /// Group commit through a writer task (the server).
    Batched(mpsc::Sender<Pending>),
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
    /// writing everything queued.
    pub fn batched(store: Store) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(writer(store, rx));
        (Self(Sink::Batched(tx)), task)
    }

    /// Returns once the record is committed.
    pub async fn record(&self, record: AuditRecord) -> Result<()> {
        match &self.0 {
            Sink::Off => Ok(()),
            Sink::Direct(store) => Ok(store.insert_audit(std::slice::from_ref(&record)).await?),
            Sink::Batched(tx) => {
                let (done, wait) = oneshot::channel();
                tx.send(Pending { record, done })
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

async fn writer(store: Store, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let records: Vec<AuditRecord> = batch.iter().map(|p| p.record.clone()).collect();
        let mut result = store.insert_audit(&records).await;
        if result.is_err() {
            // One retry after a pause rides out a brief database hiccup.
            tokio::time::sleep(Duration::from_millis(100)).await;
            result = store.insert_audit(&records).await;
        }
        let outcome = result.map_err(|e| e.to_string());
        if let Err(e) = &outcome {
            tracing::error!(error = %e, records = records.len(), "audit batch not written");
        } else {
            tracing::trace!(records = records.len(), "audit batch committed");
        }
        for p in batch.drain(..) {
            let _ = p.done.send(outcome.clone());
        }
    }
}
