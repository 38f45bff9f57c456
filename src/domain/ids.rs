//! Identifiers: parsed once at the edge, never re-validated inside.
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use std::fmt;

use super::error::Error;

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Characters allowed in identifiers we accept from outside: RFC 3986 unreserved plus ':' and '@'
/// (so e-mail-like and URN-like ids work) — nothing that needs quoting in logs or URLs.
pub(crate) fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | ':' | '@')
}

/// A client identifier: generated as `cl_` + 24 hex digits; any 1–64 id characters accepted.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(String);

impl ClientId {
    pub fn generate() -> Self {
        Self(format!("cl_{}", hex(&random_bytes::<12>())))
    }

    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.is_empty() || raw.len() > 64 || !raw.chars().all(is_id_char) {
            return Err(Error::invalid_request("malformed client_id"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({})", self.0)
    }
}

/// A secret's public identifier (16 hex digits). It is the part of a client secret before the
/// '.', so verification knows which stored hash to check: exactly one argon2 run per attempt,
/// whether the client exists, has one secret or several.
pub fn generate_secret_id() -> String {
    hex(&random_bytes::<8>())
}

pub fn is_secret_id(raw: &str) -> bool {
    raw.len() == 16 && raw.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A token id (`jti`): 6 bytes of issuance time in unix milliseconds followed by 10 random bytes,
/// base64url (22 characters). Carrying the issuance instant at millisecond precision lets
/// "revoke everything issued to this client until now" be exact even within one second, while
/// `iat` stays the integer NumericDate that every JWT library expects.
pub fn generate_token_id(now_ms: i64) -> String {
    let mut raw = [0u8; 16];
    let ms = u64::try_from(now_ms).unwrap_or(0).to_be_bytes();
    raw[..6].copy_from_slice(&ms[2..]);
    // The thread's CSPRNG (ChaCha, seeded and reseeded from the OS): a token id needs to be
    // unique and unguessable, and a getrandom system call per token is a measurable cost.
    rand::thread_rng().fill_bytes(&mut raw[6..]);
    URL_SAFE_NO_PAD.encode(raw)
}

/// The issuance instant encoded in a jti made by [`generate_token_id`], if it is one.
pub fn token_id_issued_at_ms(jti: &str) -> Option<i64> {
    if jti.len() != 22 {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(jti).ok()?;
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(raw.get(..6)?);
    i64::try_from(u64::from_be_bytes(ms)).ok()
}

/// 32 bytes from the OS RNG, base64url: the secret part of a client secret (256 bits).
pub fn generate_secret_material() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_id_round_trips_issuance_time() {
        let now = 1_790_000_000_123;
        let jti = generate_token_id(now);
        assert_eq!(jti.len(), 22);
        assert_eq!(token_id_issued_at_ms(&jti), Some(now));
        assert_ne!(generate_token_id(now), jti, "ids must be unique");
        assert_eq!(token_id_issued_at_ms("not-a-jti"), None);
    }

    #[test]
    fn client_id_parsing() {
        assert!(ClientId::parse(ClientId::generate().as_str()).is_ok());
        assert!(ClientId::parse("").is_err());
        assert!(ClientId::parse("a b").is_err());
        assert!(ClientId::parse(&"x".repeat(65)).is_err());
        assert!(ClientId::parse("partner@example.com").is_ok());
    }
}
