//! Client secrets: `<secret_id>.<256 random bits, base64url>`, stored only as argon2id hashes.
//! Argon2 runs on blocking threads with bounded concurrency, so a flood of attempts cannot
//! occupy the async runtime or unbounded memory (each run takes ~19 MiB).
use std::sync::Arc;

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
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

/// argon2 working memory, reused: one buffer per permit instead of a fresh 19 MiB allocation
/// per verification (which the allocator keeps around per thread, growing the process by
/// hundreds of MiB under load).
type Memory = Vec<Block>;

#[derive(Clone)]
pub struct SecretHasher {
    permits: Arc<Semaphore>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    memory: Arc<std::sync::Mutex<Vec<Memory>>>,
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
            memory: Arc::new(std::sync::Mutex::new(Vec::new())),
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
        let pool = Arc::clone(&self.memory);
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut memory = pool.lock().map(|mut p| p.pop()).unwrap_or(None).unwrap_or_default();
            let result = verify_with_memory(&hash, presented.as_bytes(), &mut memory);
            if let Ok(mut p) = pool.lock() {
                p.push(memory);
            }
            result
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

/// Verifies `presented` against a PHC argon2 string, computing into `memory` (grown as needed
/// and kept for the next call); the final comparison is constant-time.
fn verify_with_memory(stored: &str, presented: &[u8], memory: &mut Memory) -> anyhow::Result<bool> {
    let parsed = PasswordHash::new(stored).map_err(|e| anyhow::anyhow!("stored hash unreadable: {e}"))?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
    let mut salt_buf = [0u8; 64];
    let salt = parsed
        .salt
        .context("stored hash has no salt")?
        .decode_b64(&mut salt_buf)
        .map_err(|e| anyhow::anyhow!("stored hash salt: {e}"))?;
    let expected = parsed.hash.context("stored hash has no output")?;
    let expected = expected.as_bytes();
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = [0u8; 64];
    let out = out.get_mut(..expected.len()).context("stored hash output too long")?;
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(presented, salt, out, &mut memory[..blocks])
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(out.ct_eq(expected).into())
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
