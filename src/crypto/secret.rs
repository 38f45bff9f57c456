//! Client secrets: `<secret_id>.<256 random bits, base64url>`, stored only as argon2id hashes.
//! Argon2 runs on blocking threads with bounded concurrency, so a flood of attempts cannot
//! occupy the async runtime or unbounded memory (each run takes ~19 MiB).
use std::sync::Arc;

use anyhow::Context;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::domain::ids::{generate_secret_id, generate_secret_material, is_secret_id};

/// A new secret: its public id and the full secret string shown once to the operator.
pub struct NewSecret {
    pub secret_id: String,
    pub secret: Zeroizing<String>,
}

pub fn generate_secret() -> NewSecret {
    let secret_id = generate_secret_id();
    let secret = Zeroizing::new(format!("{secret_id}.{}", generate_secret_material()));
    NewSecret { secret_id, secret }
}

/// The secret id a presented secret names, if it has our shape.
pub fn secret_id_of(presented: &str) -> Option<&str> {
    let (id, rest) = presented.split_once('.')?;
    (is_secret_id(id) && !rest.is_empty()).then_some(id)
}

/// More verifications are waiting than allowed: the caller should shed the request.
#[derive(Debug, thiserror::Error)]
#[error("too many argon2 verifications waiting")]
pub struct Busy;

/// Verifications allowed to wait for a permit; beyond this a request is refused at once, so a
/// flood cannot queue unbounded work (each run needs ~19 MiB while it runs).
pub const MAX_WAITING: usize = 64;

#[derive(Clone)]
pub struct SecretHasher {
    permits: Arc<Semaphore>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    /// Verified against when the client or secret id is unknown, so that costs a real argon2 run.
    dummy_hash: Arc<String>,
}

impl SecretHasher {
    pub fn new(concurrency: usize) -> anyhow::Result<Self> {
        let dummy = generate_secret();
        let dummy_hash = hash_blocking(&dummy.secret)?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    pub async fn hash(&self, secret: Zeroizing<String>) -> anyhow::Result<String> {
        let _permit = self.permits.clone().acquire_owned().await.context("hasher closed")?;
        tokio::task::spawn_blocking(move || hash_blocking(&secret)).await.context("hash task")?
    }

    /// Verifies `presented` against `hash`, or against the dummy hash when `hash` is None, so
    /// every outcome costs one argon2 run. The comparison inside argon2 is constant-time.
    pub async fn verify(&self, hash: Option<String>, presented: Zeroizing<String>) -> anyhow::Result<bool> {
        use std::sync::atomic::Ordering;
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(Busy.into());
                }
                let p = self.permits.clone().acquire_owned().await;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                p.context("hasher closed")?
            }
        };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.as_str().to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let parsed = PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("stored hash unreadable: {e}"))?;
            Ok::<_, anyhow::Error>(Argon2::default().verify_password(presented.as_bytes(), &parsed).is_ok())
        })
        .await
        .context("verify task")??;
        Ok(ok && known)
    }

    /// How many argon2 runs may start right now (for metrics and tests).
    pub fn available_permits(&self) -> usize {
        self.permits.available_permits()
    }
}

/// argon2id with the crate defaults (m=19456 KiB, t=2, p=1: OWASP's recommendation).
fn hash_blocking(secret: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let hasher = SecretHasher::new(2).unwrap();
        let s = generate_secret();
        assert_eq!(secret_id_of(&s.secret), Some(s.secret_id.as_str()));
        assert!(s.secret.len() >= 16 + 1 + 43, "256 bits of material");
        let h = hasher.hash(s.secret.clone()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(hasher.verify(Some(h.clone()), s.secret.clone()).await.unwrap());
        assert!(!hasher.verify(Some(h), Zeroizing::new("nope".into())).await.unwrap());
        assert!(!hasher.verify(None, s.secret).await.unwrap(), "unknown never verifies");
        assert_eq!(secret_id_of("no-dot"), None);
        assert_eq!(secret_id_of("XYZ.abc"), None);
    }
}
