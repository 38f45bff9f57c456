//! Signing keys: made on first start, loaded (and decrypted) into the key ring.
use anyhow::Context;

use super::Tessera;
use crate::crypto::Kek;
use crate::crypto::keys::{self, LoadedKey, SigningAlg};
use crate::storage::Store;
use crate::storage::audit::AuditRecord;
use crate::storage::keys::{PUBLISH_AFTER_RETIRE_SECS, StoredKey};

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Published in JWKS, not signing yet (resource servers' caches pick it up first).
    Pending,
    /// Signing new tokens.
    Active,
    /// No longer signing; still published until the last token it signed has expired.
    Retired,
    /// Past its publication horizon.
    Expired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Expired => "expired",
        }
    }
}

/// A key as operators see it (never its private part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: String,
    pub state: KeyState,
    pub created_at: i64,
    pub activates_at: i64,
    pub retired_at: Option<i64>,
    /// When it leaves JWKS (None while it signs or waits).
    pub published_until: Option<i64>,
}

fn state_of(k: &StoredKey, now: i64) -> KeyState {
    match k.retired_at {
        Some(r) if r + PUBLISH_AFTER_RETIRE_SECS <= now => KeyState::Expired,
        Some(r) if r <= now => KeyState::Retired,
        _ if k.activates_at > now => KeyState::Pending,
        _ => KeyState::Active,
    }
}

/// Every stored key with its state, newest first.
pub async fn list_keys(store: &Store, now_secs: i64) -> anyhow::Result<Vec<KeyInfo>> {
    let mut keys: Vec<KeyInfo> = store
        .load_keys()
        .await
        .context("load signing keys")?
        .iter()
        .map(|k| KeyInfo {
            kid: k.kid.clone(),
            alg: k.alg.clone(),
            state: state_of(k, now_secs),
            created_at: k.created_at,
            activates_at: k.activates_at,
            retired_at: k.retired_at,
            published_until: k.retired_at.map(|r| r + PUBLISH_AFTER_RETIRE_SECS),
        })
        .collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.activates_at));
    Ok(keys)
}

/// The actor of the server's own scheduled work in the audit trail.
const SERVER_ACTOR: &str = "tessera";

/// Makes a new key of `alg` that is published at once and starts signing after `prepublish_secs`;
/// the key signing now retires at that instant. With `only_if_older_than`, only when due (see
/// [`Store::rotate_signing_key`]). Returns the new key, or None when not due.
pub async fn rotate(
    store: &Store,
    kek: &Kek,
    alg: SigningAlg,
    prepublish_secs: i64,
    only_if_older_than: Option<i64>,
    now_ms: i64,
    actor: Option<&str>,
) -> anyhow::Result<Option<KeyInfo>> {
    let generated = tokio::task::spawn_blocking(move || keys::generate(alg)).await??;
    let now = now_ms / 1000;
    let stored = StoredKey {
        kid: generated.kid.clone(),
        alg: alg.as_str().to_owned(),
        public_jwk: generated.public_jwk.to_string(),
        private_key_enc: kek.encrypt(&generated.private_der, generated.kid.as_bytes())?,
        created_at: now,
        activates_at: now + prepublish_secs.max(0),
        retired_at: None,
    };
    let audit = actor.map(|actor| AuditRecord {
        at_ms: now_ms,
        action: "keys.rotate".into(),
        actor: actor.into(),
        outcome: "ok".into(),
        detail: Some(format!("new key {}", stored.kid)),
        ..AuditRecord::default()
    });
    let rotated = store.rotate_signing_key(stored.clone(), only_if_older_than, now_ms, audit.as_ref());
    if !rotated.await.context("rotate signing key")? {
        return Ok(None);
    }
    tracing::info!(kid = %stored.kid, alg = %alg, activates_at = stored.activates_at, "signing key rotation scheduled");
    let state = state_of(&stored, now);
    Ok(Some(KeyInfo {
        kid: stored.kid,
        alg: stored.alg,
        state,
        created_at: stored.created_at,
        activates_at: stored.activates_at,
        retired_at: None,
        published_until: None,
    }))
}

impl Tessera {
    /// Makes a signing key of the configured algorithm if no active one exists yet.
    pub(crate) async fn ensure_signing_key(&self) -> anyhow::Result<()> {
        let alg = self.settings.signing_alg;
        let existing = self.store.load_keys().await.context("load signing keys")?;
        if existing.iter().any(|k| k.retired_at.is_none()) {
            if !existing.iter().any(|k| k.retired_at.is_none() && k.alg == alg.as_str()) {
                tracing::warn!(configured = %alg, "active signing key uses another algorithm; it stays in use until rotated");
            }
            return Ok(());
        }
        let generated = tokio::task::spawn_blocking(move || keys::generate(alg)).await??;
        let now_ms = self.clock.now_ms();
        let sealed = self.kek.encrypt(&generated.private_der, generated.kid.as_bytes())?;
        let stored = StoredKey {
            kid: generated.kid.clone(),
            alg: alg.as_str().to_owned(),
            public_jwk: generated.public_jwk.to_string(),
            private_key_enc: sealed,
            created_at: now_ms / 1000,
            activates_at: now_ms / 1000,
            retired_at: None,
        };
        if self.store.insert_first_key(stored, now_ms).await.context("store signing key")? {
            tracing::info!(kid = %generated.kid, alg = %alg, "generated signing key");
        }
        Ok(())
    }

    /// Rotates now (AdminService), or only when due (automatic rotation on a schedule).
    pub async fn rotate_keys(
        &self,
        actor: &str,
        alg: Option<SigningAlg>,
        prepublish_secs: Option<i64>,
    ) -> anyhow::Result<Option<KeyInfo>> {
        let alg = alg.unwrap_or(self.settings.signing_alg);
        let prepublish = prepublish_secs.unwrap_or(self.settings.key_prepublish_secs);
        let actor = self.audit.enabled().then_some(actor);
        let out = rotate(&self.store, &self.kek, alg, prepublish, None, self.clock.now_ms(), actor).await?;
        self.reload_keys().await?;
        Ok(out)
    }

    /// Automatic rotation: a new key when the newest one activated `interval` ago or earlier.
    pub async fn rotate_keys_if_due(&self, interval_secs: i64) -> anyhow::Result<Option<KeyInfo>> {
        let now_ms = self.clock.now_ms();
        let cutoff = now_ms / 1000 - interval_secs;
        let out = rotate(
            &self.store,
            &self.kek,
            self.settings.signing_alg,
            self.settings.key_prepublish_secs,
            Some(cutoff),
            now_ms,
            self.audit.enabled().then_some(SERVER_ACTOR),
        )
        .await?;
        if out.is_some() {
            self.reload_keys().await?;
        }
        Ok(out)
    }

    pub async fn list_keys(&self) -> anyhow::Result<Vec<KeyInfo>> {
        list_keys(&self.store, self.clock.now_secs()).await
    }

    /// Reloads the key ring: keys past their publication horizon leave JWKS.
    pub async fn refresh_keys(&self) -> anyhow::Result<()> {
        self.reload_keys().await
    }

    pub(crate) async fn reload_keys(&self) -> anyhow::Result<()> {
        let stored = self.store.load_keys().await.context("load signing keys")?;
        let now = self.clock.now_secs();
        let mut loaded = Vec::with_capacity(stored.len());
        for k in stored {
            // Past its horizon every token it signed has expired: it leaves JWKS and the ring.
            if k.retired_at.is_some_and(|r| r + PUBLISH_AFTER_RETIRE_SECS <= now) {
                continue;
            }
            let alg: SigningAlg = k.alg.parse()?;
            let jwk: serde_json::Value = serde_json::from_str(&k.public_jwk).context("stored JWK")?;
            let private = self
                .kek
                .decrypt(&k.private_key_enc, k.kid.as_bytes())
                .with_context(|| format!("signing key {}", k.kid))?;
            loaded.push(LoadedKey::new(&k.kid, alg, &jwk, Some(&private), k.activates_at, k.retired_at)?);
        }
        self.keys.replace(loaded);
        Ok(())
    }
}
