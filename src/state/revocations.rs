//! Revoked token ids that have not expired yet, held in memory for the introspection hot path.
//!
//! Every id Tessera issues is 16 bytes in base64url (22 characters), so the set keys those by
//! the 16 bytes themselves: 20 bytes an entry in place (with the expiry), no heap allocation, about
//! 45 MiB for a million revocations. Ids of any other shape (none are issued today, but the column is text)
//! go to a small string map beside it.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;

#[derive(Debug, Default)]
pub struct RevocationSet {
    /// Token id bytes -> token expiry (unix seconds, as u32 until 2106); purged once expired.
    compact: DashMap<[u8; 16], u32>,
    other: DashMap<Box<str>, i64>,
}

/// The 16 bytes of a 22-character base64url id, when it is one.
fn compact_key(jti: &str) -> Option<[u8; 16]> {
    if jti.len() != 22 {
        return None;
    }
    let mut raw = [0u8; 16];
    // Canonical decoding only, so two spellings of one id can never both exist.
    match URL_SAFE_NO_PAD.decode_slice(jti, &mut raw) {
        Ok(16) => Some(raw),
        _ => None,
    }
}

impl RevocationSet {
    pub fn insert(&self, jti: &str, expires_at: i64) {
        match (compact_key(jti), u32::try_from(expires_at)) {
            (Some(key), Ok(exp)) => {
                self.compact.insert(key, exp);
            }
            _ => {
                self.other.insert(jti.into(), expires_at);
            }
        }
    }

    pub fn contains(&self, jti: &str) -> bool {
        match compact_key(jti) {
            Some(key) => self.compact.contains_key(&key) || (!self.other.is_empty() && self.other.contains_key(jti)),
            None => self.other.contains_key(jti),
        }
    }

    pub fn purge_expired(&self, now_secs: i64) {
        self.compact.retain(|_, exp| i64::from(*exp) > now_secs);
        self.other.retain(|_, exp| *exp > now_secs);
    }

    pub fn len(&self) -> usize {
        self.compact.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::generate_token_id;

    #[test]
    fn issued_ids_are_held_compactly_and_others_by_name() {
        let set = RevocationSet::default();
        let issued = generate_token_id(1_700_000_000_000);
        set.insert(&issued, 2_000_000_000);
        set.insert("legacy-id", 2_000_000_000);
        // 22 characters that are not canonical base64url (the last one carries stray bits).
        let odd = format!("{}B", &issued[..21]);
        assert!(set.contains(&issued));
        assert!(set.contains("legacy-id"));
        assert!(!set.contains(&generate_token_id(1_700_000_000_000)));
        assert_eq!((set.compact.len(), set.other.len()), (1, 1));
        assert_eq!(compact_key(&odd), None);
        set.insert(&odd, 2_000_000_000);
        assert!(set.contains(&odd) && set.other.contains_key(odd.as_str()));
        set.purge_expired(2_000_000_000);
        assert!(set.is_empty());
    }
}
