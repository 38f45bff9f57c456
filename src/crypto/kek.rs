//! The key-encryption key (KEK): AES-256-GCM over signing keys' private parts at rest, with the
//! key id as associated data so a ciphertext cannot be moved to another row.
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use zeroize::Zeroizing;

const VERSION_PREFIX: &str = "v1:";

pub struct Kek(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

impl Kek {
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self(key)
    }

    /// 32 bytes, base64 (standard or URL-safe, padding optional). Surrounding whitespace is
    /// ignored so files written by `echo` or Kubernetes Secrets work.
    pub fn from_base64(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text)
                .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
                .context("key-encryption key is not valid base64")?,
        );
        if bytes.len() != 32 {
            bail!("key-encryption key must be 32 bytes, got {}", bytes.len());
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&bytes);
        Ok(Self(key))
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.as_ref().into())
    }

    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> anyhow::Result<String> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher()
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad })
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(format!("{VERSION_PREFIX}{}", STANDARD.encode(out)))
    }

    pub fn decrypt(&self, sealed: &str, aad: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let body = sealed.strip_prefix(VERSION_PREFIX).context("unknown key encryption format")?;
        let raw = STANDARD.decode(body).context("corrupt encrypted key")?;
        if raw.len() < 12 + 16 {
            bail!("corrupt encrypted key");
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().context("corrupt encrypted key")?;
        let pt = self
            .cipher()
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad })
            .map_err(|_| anyhow::anyhow!("cannot decrypt a signing key: wrong key-encryption key?"))?;
        Ok(Zeroizing::new(pt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let kek = Kek::generate();
        let sealed = kek.encrypt(b"private", b"kid1").unwrap();
        assert_eq!(kek.decrypt(&sealed, b"kid1").unwrap().as_slice(), b"private");
        assert!(kek.decrypt(&sealed, b"kid2").is_err(), "aad binds the key id");
        assert!(Kek::generate().decrypt(&sealed, b"kid1").is_err());
        let again = Kek::from_base64(&kek.to_base64()).unwrap();
        assert_eq!(again.decrypt(&sealed, b"kid1").unwrap().as_slice(), b"private");
        assert!(Kek::from_base64("c2hvcnQ=").is_err());
    }
}
