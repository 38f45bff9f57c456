//! Grants in memory: looked up by (client, subject) on the exchange path and by id when a
//! token minted under a grant is introspected. Revoked grants stay as tombstones for a day
//! (longer than any token can live), so introspecting a dead token never needs the database.
use std::sync::Arc;

use dashmap::DashMap;

use crate::domain::Grant;

/// How long a revoked or expired grant is remembered.
pub const TOMBSTONE_SECS: i64 = 86_400;

#[derive(Debug, Default)]
pub struct GrantDirectory {
    by_id: DashMap<String, Arc<Grant>>,
    /// (client_id, subject) -> grant ids.
    by_pair: DashMap<(String, String), Vec<String>>,
}

impl GrantDirectory {
    pub fn upsert(&self, grant: Grant) -> Arc<Grant> {
        let grant = Arc::new(grant);
        let key = (grant.client_id.clone(), grant.subject.clone());
        let mut ids = self.by_pair.entry(key).or_default();
        if !ids.contains(&grant.grant_id) {
            ids.push(grant.grant_id.clone());
        }
        drop(ids);
        self.by_id.insert(grant.grant_id.clone(), Arc::clone(&grant));
        grant
    }

    pub fn get(&self, grant_id: &str) -> Option<Arc<Grant>> {
        self.by_id.get(grant_id).map(|g| Arc::clone(&g))
    }

    /// Active grants of `subject` to `client_id`.
    pub fn active_for(&self, client_id: &str, subject: &str, now_secs: i64) -> Vec<Arc<Grant>> {
        let key = (client_id.to_owned(), subject.to_owned());
        let Some(ids) = self.by_pair.get(&key) else { return Vec::new() };
        ids.iter().filter_map(|id| self.get(id)).filter(|g| g.is_active(now_secs)).collect()
    }

    pub fn replace_all(&self, grants: Vec<Grant>) {
        self.by_id.clear();
        self.by_pair.clear();
        for g in grants {
            self.upsert(g);
        }
    }

    /// Forgets grants that ended more than a day ago.
    pub fn purge(&self, now_secs: i64) {
        let dead: Vec<Arc<Grant>> = self
            .by_id
            .iter()
            .filter(|g| {
                let ended = g.revoked_at.or(g.expires_at.filter(|e| *e <= now_secs));
                ended.is_some_and(|t| t < now_secs - TOMBSTONE_SECS)
            })
            .map(|g| Arc::clone(&g))
            .collect();
        for g in dead {
            self.by_id.remove(&g.grant_id);
            if let Some(mut ids) = self.by_pair.get_mut(&(g.client_id.clone(), g.subject.clone())) {
                ids.retain(|id| id != &g.grant_id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
