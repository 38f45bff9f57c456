//! Signing keys: made on first start, loaded (and decrypted) into the key ring.
use anyhow::Context;

use super::Tessera;
use crate::crypto::keys::{self, LoadedKey, SigningAlg};
use crate::storage::keys::StoredKey;

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

    pub(crate) async fn reload_keys(&self) -> anyhow::Result<()> {
        let stored = self.store.load_keys().await.context("load signing keys")?;
        let mut loaded = Vec::with_capacity(stored.len());
        for k in stored {
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
