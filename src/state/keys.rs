//! The key ring: every known key by kid, the JWKS document, and which key signs now.
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{Value, json};

use crate::crypto::LoadedKey;

#[derive(Debug, Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<LoadedKey>>,
    /// Newest first by activation time.
    ordered: Vec<Arc<LoadedKey>>,
    jwks: Arc<Vec<u8>>,
}

#[derive(Debug, Default)]
pub struct KeyRing {
    inner: RwLock<Arc<KeySet>>,
}

impl KeyRing {
    pub fn replace(&self, keys: Vec<LoadedKey>) {
        let mut ordered: Vec<Arc<LoadedKey>> = keys.into_iter().map(Arc::new).collect();
        ordered.sort_by(|a, b| b.activates_at.cmp(&a.activates_at).then_with(|| a.kid.cmp(&b.kid)));
        let jwks = json!({ "keys": ordered.iter().map(|k| k.jwk.clone()).collect::<Vec<Value>>() });
        let set = KeySet {
            by_kid: ordered.iter().map(|k| (k.kid.clone(), Arc::clone(k))).collect(),
            jwks: Arc::new(serde_json::to_vec(&jwks).unwrap_or_default()),
            ordered,
        };
        *self.inner.write() = Arc::new(set);
    }

    pub fn get(&self, kid: &str) -> Option<Arc<LoadedKey>> {
        self.inner.read().by_kid.get(kid).cloned()
    }

    /// The newest key allowed to sign at `now_secs`.
    pub fn signer(&self, now_secs: i64) -> Option<Arc<LoadedKey>> {
        self.inner.read().ordered.iter().find(|k| k.can_sign_at(now_secs)).cloned()
    }

    /// The serialized JWKS document (RFC 7517 §5).
    pub fn jwks(&self) -> Arc<Vec<u8>> {
        Arc::clone(&self.inner.read().jwks)
    }

    pub fn len(&self) -> usize {
        self.inner.read().ordered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
