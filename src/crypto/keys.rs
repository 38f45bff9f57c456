//! Signing keys: generation, the public JWK (RFC 7517) and the key id, which is the key's
//! RFC 7638 JWK thumbprint, so the same key always has the same `kid`.
use std::fmt;
use std::str::FromStr;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, jwk::Jwk};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigningAlg {
    EdDSA,
    ES256,
    RS256,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::EdDSA => "EdDSA",
            SigningAlg::ES256 => "ES256",
            SigningAlg::RS256 => "RS256",
        }
    }

    pub fn jwt(self) -> Algorithm {
        match self {
            SigningAlg::EdDSA => Algorithm::EdDSA,
            SigningAlg::ES256 => Algorithm::ES256,
            SigningAlg::RS256 => Algorithm::RS256,
        }
    }

    pub const ALL: [SigningAlg; 3] = [SigningAlg::EdDSA, SigningAlg::ES256, SigningAlg::RS256];
}

impl FromStr for SigningAlg {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "EDDSA" | "ED25519" => Ok(SigningAlg::EdDSA),
            "ES256" => Ok(SigningAlg::ES256),
            "RS256" => Ok(SigningAlg::RS256),
            _ => anyhow::bail!("unsupported signing algorithm {s:?} (EdDSA, ES256 or RS256)"),
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A freshly generated key: private DER (PKCS#8 for EdDSA/ES256, PKCS#1 for RS256, the forms
/// jsonwebtoken loads) and the public JWK without `kid`/`alg`/`use`.
pub struct GeneratedKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub private_der: Zeroizing<Vec<u8>>,
    pub public_jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn generate(alg: SigningAlg) -> anyhow::Result<GeneratedKey> {
    let mut rng = rand::rngs::OsRng;
    let (private_der, public_jwk) = match alg {
        SigningAlg::EdDSA => {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            let sk = ed25519_dalek::SigningKey::generate(&mut rng);
            let der = sk.to_pkcs8_der().context("encode Ed25519 key")?;
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(sk.verifying_key().as_bytes())});
            (Zeroizing::new(der.as_bytes().to_vec()), jwk)
        }
        SigningAlg::ES256 => {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            use p256::pkcs8::EncodePrivateKey;
            let sk = p256::SecretKey::random(&mut rng);
            let der = sk.to_pkcs8_der().context("encode P-256 key")?;
            let point = sk.public_key().to_encoded_point(false);
            let (x, y) = (point.x().context("P-256 x")?, point.y().context("P-256 y")?);
            let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)});
            (Zeroizing::new(der.as_bytes().to_vec()), jwk)
        }
        SigningAlg::RS256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::traits::PublicKeyParts;
            let sk = rsa::RsaPrivateKey::new(&mut rng, 2048).context("generate RSA key")?;
            let der = sk.to_pkcs1_der().context("encode RSA key")?;
            let jwk = json!({"kty": "RSA", "n": b64(&sk.n().to_bytes_be()), "e": b64(&sk.e().to_bytes_be())});
            (Zeroizing::new(der.as_bytes().to_vec()), jwk)
        }
    };
    let kid = thumbprint(&public_jwk)?;
    Ok(GeneratedKey { kid, alg, private_der, public_jwk })
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
pub fn thumbprint(jwk: &Value) -> anyhow::Result<String> {
    let members: &[&str] = match jwk.get("kty").and_then(Value::as_str) {
        Some("OKP") => &["crv", "kty", "x"],
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("RSA") => &["e", "kty", "n"],
        _ => anyhow::bail!("unsupported JWK type"),
    };
    // serde_json's Map is ordered by key, which is exactly RFC 7638's ordering.
    let mut required = serde_json::Map::new();
    for m in members {
        required.insert((*m).to_owned(), jwk.get(*m).cloned().context("JWK member missing")?);
    }
    let canonical = serde_json::to_vec(&Value::Object(required))?;
    Ok(b64(&Sha256::digest(&canonical)))
}

/// A private key parsed once, ready to sign. Ed25519 and RSA sign in AWS-LC: its Ed25519 is
/// s2n-bignum assembly on x86-64 and Arm, about twice as fast as ed25519-dalek, and the
/// signature is most of what an issuance costs. ES256 stays with the `p256` crate for its
/// deterministic nonces (RFC 6979): no dependence on the RNG at signing time, and a signature
/// can be checked by making it again (the jwt_verify fuzz target relies on that). AWS-LC's
/// ECDSA would be faster but draws a random nonce. (jsonwebtoken's `encode` would also rebuild
/// its signer from DER on every call.)
pub enum PreparedSigner {
    Ed25519(aws_lc_rs::signature::Ed25519KeyPair),
    P256(p256::ecdsa::SigningKey),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

impl PreparedSigner {
    fn from_der(alg: SigningAlg, der: &[u8]) -> anyhow::Result<Self> {
        use aws_lc_rs::signature::Ed25519KeyPair;
        Ok(match alg {
            SigningAlg::EdDSA => PreparedSigner::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| anyhow::anyhow!("Ed25519 key: {e}"))?,
            ),
            SigningAlg::ES256 => {
                use p256::pkcs8::DecodePrivateKey;
                PreparedSigner::P256(p256::ecdsa::SigningKey::from_pkcs8_der(der).context("P-256 key")?)
            }
            SigningAlg::RS256 => PreparedSigner::Rsa(
                aws_lc_rs::rsa::KeyPair::from_der(der).map_err(|e| anyhow::anyhow!("RSA key: {e}"))?,
            ),
        })
    }

    /// The JWS signature over `message` (RFC 7518 §3: raw r||s for ES256).
    pub fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            PreparedSigner::Ed25519(k) => k.sign(message).as_ref().to_vec(),
            PreparedSigner::P256(k) => {
                use p256::ecdsa::signature::Signer;
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_bytes().to_vec()
            }
            PreparedSigner::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                let rng = aws_lc_rs::rand::SystemRandom::new();
                k.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| anyhow::anyhow!("RS256 signing failed"))?;
                sig
            }
        })
    }
}

/// A key ready to use: the signer exists only where the private part was loaded.
pub struct LoadedKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub signer: Option<PreparedSigner>,
    /// base64url of this key's JWT header `{"typ":"at+jwt","alg":…,"kid":…}`, made once.
    pub header_b64: String,
    pub decoding: DecodingKey,
    /// Public JWK as published in JWKS (with kid, alg, use).
    pub jwk: Value,
    /// Unix seconds from which it may sign.
    pub activates_at: i64,
    /// Unix seconds at which it stopped signing, if retired.
    pub retired_at: Option<i64>,
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("activates_at", &self.activates_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl LoadedKey {
    pub fn new(
        kid: &str,
        alg: SigningAlg,
        public_jwk: &Value,
        private_der: Option<&[u8]>,
        activates_at: i64,
        retired_at: Option<i64>,
    ) -> anyhow::Result<Self> {
        let mut jwk = public_jwk.clone();
        let obj = jwk.as_object_mut().context("JWK is not an object")?;
        obj.insert("kid".into(), json!(kid));
        obj.insert("alg".into(), json!(alg.as_str()));
        obj.insert("use".into(), json!("sig"));
        let parsed: Jwk = serde_json::from_value(jwk.clone()).context("parse JWK")?;
        let decoding = DecodingKey::from_jwk(&parsed).context("load public key")?;
        let signer = private_der.map(|der| PreparedSigner::from_der(alg, der)).transpose()?;
        let header = json!({"typ": "at+jwt", "alg": alg.as_str(), "kid": kid});
        let header_b64 = b64(&serde_json::to_vec(&header)?);
        Ok(Self { kid: kid.to_owned(), alg, signer, header_b64, decoding, jwk, activates_at, retired_at })
    }

    pub fn can_sign_at(&self, now_secs: i64) -> bool {
        self.signer.is_some() && self.activates_at <= now_secs && self.retired_at.is_none_or(|r| r > now_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1 example key and its thumbprint.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn generated_keys_load_for_every_alg() {
        for alg in SigningAlg::ALL {
            let g = generate(alg).unwrap();
            let k = LoadedKey::new(&g.kid, alg, &g.public_jwk, Some(&g.private_der), 0, None).unwrap();
            assert!(k.can_sign_at(1));
            assert_eq!(k.jwk["kid"], g.kid.as_str());
        }
    }
}
