//! JWT access tokens per RFC 9068: header `typ: at+jwt` and `kid`, signed with the key ring's
//! current key; verification accepts only our own keys, each with its own algorithm.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Validation;

use super::keys::LoadedKey;
use crate::domain::AccessClaims;

/// Upper bound on a token we are willing to parse; ours are well under 1 KiB (RS256 ~700 B).
pub const MAX_TOKEN_LEN: usize = 4096;

/// A JWS compact serialization (RFC 7515 §7.1): the key's pre-encoded header, the claims, and
/// the signature made with the key's pre-parsed signer.
pub fn sign(claims: &AccessClaims, key: &LoadedKey) -> anyhow::Result<String> {
    let signer = key.signer.as_ref().ok_or_else(|| anyhow::anyhow!("key {} has no private part", key.kid))?;
    let payload = serde_json::to_vec(claims)?;
    let mut token = String::with_capacity(key.header_b64.len() + payload.len() * 4 / 3 + 100);
    token.push_str(&key.header_b64);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let signature = signer.sign(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
    Ok(token)
}

/// Why a token was not accepted. Only ever logged at debug level or turned into
/// `active: false` / `invalid_grant`; it never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    WrongType,
    UnknownKey,
    WrongAlgorithm,
    BadSignatureOrClaims,
}

/// The header fields verification needs, read without trusting anything else in it.
pub fn header_kid(token: &str) -> Result<(String, jsonwebtoken::Algorithm), Rejection> {
    if token.len() > MAX_TOKEN_LEN || token.bytes().filter(|b| *b == b'.').count() != 2 {
        return Err(Rejection::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
    // RFC 9068 §2.1: "at+jwt" (the "application/" prefix is permitted by RFC 7515 §4.1.9).
    let typ_ok = header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"));
    if !typ_ok {
        return Err(Rejection::WrongType);
    }
    // We understand no critical extensions (RFC 7515 §4.1.11).
    if header.crit.is_some() {
        return Err(Rejection::Malformed);
    }
    let kid = header.kid.ok_or(Rejection::UnknownKey)?;
    Ok((kid, header.alg))
}

/// Verifies signature and issuer with `key` (looked up by the caller from the header's kid).
/// Expiry is checked by the caller against the injected clock.
pub fn verify_with(
    token: &str,
    alg: jsonwebtoken::Algorithm,
    key: &LoadedKey,
    issuer: &str,
) -> Result<AccessClaims, Rejection> {
    // The key decides the algorithm, never the token: this is what defeats `alg: none` and
    // HS256-signed-with-the-public-key confusion.
    if alg != key.alg.jwt() {
        return Err(Rejection::WrongAlgorithm);
    }
    let mut validation = Validation::new(key.alg.jwt());
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "jti"]);
    jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
        .map(|data| data.claims)
        .map_err(|_| Rejection::BadSignatureOrClaims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::{SigningAlg, generate};
    use crate::domain::{Audience, Lineage};

    /// Tokens from the pre-parsed signers are ordinary JWS: jsonwebtoken verifies them.
    #[test]
    fn signed_tokens_verify_with_jsonwebtoken() {
        for alg in SigningAlg::ALL {
            let g = generate(alg).unwrap();
            let key = LoadedKey::new(&g.kid, alg, &g.public_jwk, Some(&g.private_der), 0, None).unwrap();
            let claims = AccessClaims {
                iss: "https://i".into(),
                sub: "s".into(),
                aud: Audience::One("a".into()),
                exp: 4_000_000_000,
                iat: 1,
                jti: "j".into(),
                client_id: "c".into(),
                scope: "x y".into(),
                tenant: "t".into(),
                act: None,
                account: None,
                lineage: Lineage::default(),
            };
            let token = sign(&claims, &key).unwrap();
            let (kid, a) = header_kid(&token).unwrap();
            assert_eq!(kid, g.kid);
            assert_eq!(verify_with(&token, a, &key, "https://i").unwrap(), claims, "{alg}");
            let mut tampered = token.clone();
            tampered.insert(token.find('.').unwrap() + 5, 'A');
            assert!(verify_with(&tampered, a, &key, "https://i").is_err());
        }
    }
}
