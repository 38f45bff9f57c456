//! Keeping this replica's memory in step with the database: a full load at start (and when the
//! feed was pruned past us), then the change feed.
use anyhow::Context;

use super::Tessera;
use crate::domain::Result;
use crate::storage::{Change, ChangeKind};

const FEED_BATCH: u64 = 1000;

impl Tessera {
    pub async fn full_resync(&self) -> anyhow::Result<()> {
        let mut feed = self.feed.lock().await;
        // Read the cursor first: anything committed while we load is applied again (idempotent).
        let cursor = self.store.latest_change_id().await.context("read change feed")?;
        self.reload_keys().await?;
        let mut seen = std::collections::HashSet::new();
        self.store
            .for_each_client_page(|page| {
                for client in page {
                    seen.insert(client.client_id.to_string());
                    self.clients.upsert(client);
                }
            })
            .await
            .context("load clients")?;
        self.clients.retain_only(&seen);
        let now = self.clock.now_secs();
        self.store
            .for_each_live_revocation(now, |jti, expires_at| self.revocations.insert(jti, expires_at))
            .await
            .context("load revocations")?;
        feed.reset(cursor);
        self.mark_feed_ok();
        tracing::info!(
            clients = self.clients.len(),
            revoked_tokens = self.revocations.len(),
            grants = self.grants.len(),
            keys = self.keys.len(),
            cursor,
            "state loaded"
        );
        Ok(())
    }

    /// Applies every change committed since the last call; returns how many were applied.
    pub async fn sync_changes(&self) -> Result<usize> {
        let mut feed = self.feed.lock().await;
        let now_ms = self.clock.now_ms();
        let mut applied = 0;
        let gaps = feed.open_gaps(now_ms);
        // Each change is applied before the cursor moves past it: one that fails to apply (the
        // database went away mid-sync) is read and applied again on the next call, never skipped.
        // Every change read here is unapplied (a gap, or above the cursor); applying is idempotent.
        for change in self.store.changes_by_id(&gaps).await? {
            self.apply(&change).await?;
            if feed.observe(change.id, now_ms) {
                applied += 1;
            }
        }
        loop {
            let batch = self.store.changes_after(feed.high, FEED_BATCH).await?;
            if let Some(first) = batch.first()
                && feed.high > 0
                && first.id > feed.high + 1
            {
                let oldest = self.store.oldest_change_id().await?.unwrap_or(first.id);
                if oldest > feed.high + 1 {
                    // The feed was pruned past our cursor (a replica cut off for a long time).
                    drop(feed);
                    tracing::warn!("change feed pruned past this replica's cursor; reloading everything");
                    self.full_resync().await.map_err(crate::domain::Error::Unavailable)?;
                    return Ok(applied);
                }
            }
            let full = batch.len() as u64 == FEED_BATCH;
            for change in &batch {
                self.apply(change).await?;
                if feed.observe(change.id, now_ms) {
                    applied += 1;
                }
            }
            if !full {
                break;
            }
        }
        self.mark_feed_ok();
        crate::metrics::METRICS.feed_applied.inc_by(applied as u64);
        Ok(applied)
    }

    async fn apply(&self, change: &Change) -> Result<()> {
        match change.kind {
            Some(ChangeKind::Client) => match self.store.load_client(&change.subject).await? {
                Some(client) => {
                    self.clients.upsert(client);
                }
                None => self.clients.remove(&change.subject),
            },
            Some(ChangeKind::Revocation) => {
                if let Some(r) = self.store.load_revocation(&change.subject).await? {
                    self.revocations.insert(&r.jti, r.expires_at);
                }
            }
            Some(ChangeKind::Grant) => {
                if let Some(g) = self.store.load_grant(&change.subject).await? {
                    self.grants.upsert(g);
                }
            }
            Some(ChangeKind::Keys) => self.reload_keys().await.map_err(crate::domain::Error::Internal)?,
            // Written by a newer version of Tessera: nothing this one knows to do.
            None => {}
        }
        Ok(())
    }

    /// Housekeeping: forget expired revocations and verified tokens.
    pub fn purge_expired(&self) {
        let now = self.clock.now_secs();
        self.revocations.purge_expired(now);
        self.tokens.purge_expired(now);
        self.grants.purge(now);
        self.throttle.purge(self.clock.now_ms());
    }
}
