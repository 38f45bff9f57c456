//! Clients in memory, each with its verified-credential cache. A client's entry is replaced
//! whole when anything about it changes (secret added or removed, disabled, revoke-tokens), which
//! drops the cache with it: a removed secret can never be served from the cache.
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::RwLock;
use subtle::ConstantTimeEq;

use crate::domain::Client;

/// At most this many distinct verified secrets per client are remembered (a client has one,
/// or two while rotating).
const MAX_CACHED_PER_CLIENT: usize = 4;

pub type SecretDigest = crate::crypto::digest::Digest256;

/// The digest of a presented secret ([`crate::crypto::digest`]): the cache key, never the secret
/// itself. Secrets carry 256 random bits, so the digest reveals nothing usable. (In memory only,
/// like the token digests.)
pub fn secret_digest(secret: &str) -> SecretDigest {
    crate::crypto::digest::digest256(secret.as_bytes())
}

#[derive(Debug)]
pub struct ClientEntry {
    pub client: Client,
    verified: RwLock<Vec<SecretDigest>>,
    /// Serialises this client's slow path: when many requests bring the same not-yet-verified
    /// secret at once (a restart under load), one runs argon2 and the rest find it cached.
    pub(crate) verify_lock: tokio::sync::Mutex<()>,
}

impl ClientEntry {
    pub fn new(client: Client) -> Self {
        Self { client, verified: RwLock::new(Vec::new()), verify_lock: tokio::sync::Mutex::new(()) }
    }

    /// Constant-time membership test against the digests verified before.
    pub fn is_verified(&self, digest: &SecretDigest) -> bool {
        let cached = self.verified.read();
        let mut hit = subtle::Choice::from(0);
        for d in cached.iter() {
            hit |= d.ct_eq(digest);
        }
        hit.into()
    }

    pub fn remember_verified(&self, digest: SecretDigest) {
        let mut cached = self.verified.write();
        if !cached.contains(&digest) {
            if cached.len() >= MAX_CACHED_PER_CLIENT {
                cached.remove(0);
            }
            cached.push(digest);
        }
    }
}

#[derive(Debug, Default)]
pub struct ClientDirectory {
    map: DashMap<String, Arc<ClientEntry>>,
}

impl ClientDirectory {
    pub fn get(&self, client_id: &str) -> Option<Arc<ClientEntry>> {
        self.map.get(client_id).map(|e| Arc::clone(&e))
    }

    pub fn upsert(&self, client: Client) -> Arc<ClientEntry> {
        let entry = Arc::new(ClientEntry::new(client));
        self.map.insert(entry.client.client_id.to_string(), Arc::clone(&entry));
        entry
    }

    pub fn remove(&self, client_id: &str) {
        self.map.remove(client_id);
    }

    /// Forgets every client whose id is not in `keep` (deleted while this replica was away).
    pub fn retain_only(&self, keep: &std::collections::HashSet<String>) {
        self.map.retain(|k, _| keep.contains(k));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
