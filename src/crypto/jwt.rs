//! JWT access tokens per RFC 9068: header `typ: at+jwt` and `kid`, signed with the key ring's
//! current key; verification accepts only our own keys, each with its own algorithm.
use jsonwebtoken::{Header, Validation};

use super::keys::LoadedKey;
use crate::domain::AccessClaims;

/// Upper bound on a token we are willing to parse; ours are well under 1 KiB (RS256 ~700 B).
pub const MAX_TOKEN_LEN: usize = 4096;

pub fn sign(claims: &AccessClaims, key: &LoadedKey) -> anyhow::Result<String> {
    let encoding = key.encoding.as_ref().ok_or_else(|| anyhow::anyhow!("key {} has no private part", key.kid))?;
    let mut header = Header::new(key.alg.jwt());
    header.typ = Some("at+jwt".to_owned());
    header.kid = Some(key.kid.clone());
    Ok(jsonwebtoken::encode(&header, claims, encoding)?)
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
