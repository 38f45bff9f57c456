//! Access-token verification as introspection and token exchange do it: `header_kid`, the key
//! looked up by kid, then `verify_with` (plus `verify_with` with every key directly). Never a
//! panic, and never an accepted token that we did not sign: any token that verifies must be
//! byte-identical to one signed at start-up (for ES256, or its (r, n-s) twin: ECDSA signatures
//! are malleable by nature; the header and payload are still exactly ours).
//!
//! Keys: the three in ../fixtures/jwt_keys.json (fixed, so the genuine tokens in the seed corpus
//! verify on every run) plus one EdDSA key generated at start-up.
//!
//! An input starting with '{' is taken as `header JSON \0 payload JSON \0 raw signature` and
//! base64url-encoded into a token, so the fuzzer can mutate the JSON directly; anything else is
//! the token itself.
//!
//! `TESSERA_FUZZ_WRITE_SEEDS=DIR` writes the start-up tokens into DIR as seeds:
//!   TESSERA_FUZZ_WRITE_SEEDS=fuzz/corpus/jwt_verify cargo fuzz run jwt_verify -- -runs=0
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tessera::crypto::jwt::{MAX_TOKEN_LEN, Rejection, header_kid, sign, verify_with};
use tessera::crypto::keys::{LoadedKey, SigningAlg, generate, thumbprint};
use tessera::domain::ids::token_id_issued_at_ms;
use tessera::domain::{AccessClaims, Actor, Audience, Lineage};

const ISSUER: &str = "https://issuer.example";
const KEYS_JSON: &str = include_str!("../fixtures/jwt_keys.json");

/// A token made at start-up with one of our keys.
struct Signed {
    name: String,
    token: String,
    /// Index of the key it was signed with, if any (a forgery has none).
    key: Option<usize>,
    claims: AccessClaims,
    /// Whether the full check (header_kid, key by kid, verify_with) must accept it.
    accept: bool,
}

struct World {
    keys: Vec<LoadedKey>,
    signed: Vec<Signed>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(build)
}

fn load_keys() -> Vec<LoadedKey> {
    let fixture: Value = serde_json::from_str(KEYS_JSON).expect("fixtures/jwt_keys.json");
    let mut keys = Vec::new();
    for k in fixture["keys"].as_array().expect("keys") {
        let alg: SigningAlg = k["alg"].as_str().expect("alg").parse().expect("alg");
        let jwk = &k["public_jwk"];
        let der = STANDARD.decode(k["private_der"].as_str().expect("private_der")).expect("base64 DER");
        let kid = thumbprint(jwk).expect("thumbprint");
        keys.push(LoadedKey::new(&kid, alg, jwk, Some(&der), 0, None).expect("fixture key loads"));
    }
    let g = generate(SigningAlg::EdDSA).expect("generate EdDSA key");
    keys.push(LoadedKey::new(&g.kid, g.alg, &g.public_jwk, Some(&g.private_der), 0, None).expect("generated key"));
    keys
}

fn client_claims(iss: &str) -> AccessClaims {
    AccessClaims {
        iss: iss.to_owned(),
        sub: "cl_0123456789abcdef01234567".to_owned(),
        aud: Audience::One(ISSUER.to_owned()),
        exp: 1_790_003_600,
        iat: 1_790_000_000,
        jti: "AZmC4ZgAAAECAwQFBgcICQ".to_owned(),
        client_id: "cl_0123456789abcdef01234567".to_owned(),
        scope: "orders:read orders:write".to_owned(),
        tenant: "acme".to_owned(),
        act: None,
        account: None,
        lineage: Lineage::default(),
    }
}

fn user_claims() -> AccessClaims {
    AccessClaims {
        sub: "alice@example.com".to_owned(),
        aud: Audience::Many(vec!["https://orders.example".to_owned(), "https://cms.example".to_owned()]),
        exp: 1_790_000_300,
        jti: "AZmC4ZgBCgsMDQ4PEBESEw".to_owned(),
        client_id: "cl_service".to_owned(),
        scope: "orders:read".to_owned(),
        act: Some(Actor {
            sub: "cl_service".to_owned(),
            act: Some(Box::new(Actor { sub: "cl_0123456789abcdef01234567".to_owned(), act: None })),
        }),
        account: Some("site-7".to_owned()),
        lineage: Lineage {
            grants: vec!["gr_1".to_owned()],
            parents: vec![("cl_0123456789abcdef01234567".to_owned(), "AZmC4ZgAAAECAwQFBgcICQ".to_owned())],
        },
        ..client_claims(ISSUER)
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs with our key but a header of our choosing (what a bug elsewhere, or a stolen key with
/// a careless signer, could produce).
fn sign_with_header(header: &Header, claims: &AccessClaims, key: &LoadedKey) -> String {
    jsonwebtoken::encode(header, claims, key.encoding.as_ref().expect("private key")).expect("sign")
}

fn our_header(key: &LoadedKey) -> Header {
    let mut h = Header::new(key.alg.jwt());
    h.typ = Some("at+jwt".to_owned());
    h.kid = Some(key.kid.clone());
    h
}

/// The order of the P-256 group, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad,
    0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The same ES256 token with signature (r, n - s) instead of (r, s).
fn ecdsa_twin(token: &str) -> Option<String> {
    let (message, sig) = token.rsplit_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    let (r, s) = sig.split_at_checked(32)?;
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(P256_N[i]) - i16::from(*s.get(i)?) - borrow;
        borrow = i16::from(d < 0);
        out[i] = u8::try_from(d.rem_euclid(256)).ok()?;
    }
    Some(format!("{message}.{}", b64(&[r, &out[..]].concat())))
}

/// The whole check, as `Tessera::verify_token` does it.
fn full_check(w: &World, token: &str) -> Result<AccessClaims, Rejection> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Rejection::Malformed);
    }
    let (kid, alg) = header_kid(token)?;
    let key = w.keys.iter().find(|k| k.kid == kid).ok_or(Rejection::UnknownKey)?;
    verify_with(token, alg, key, ISSUER)
}

fn build() -> World {
    let keys = load_keys();
    let mut signed = Vec::new();
    let mut add = |name: String, token: String, key: Option<usize>, claims: &AccessClaims, accept: bool| {
        signed.push(Signed { name, token, key, claims: claims.clone(), accept });
    };
    let client = client_claims(ISSUER);
    let user = user_claims();
    for (i, key) in keys.iter().enumerate() {
        let alg = key.alg.as_str().to_ascii_lowercase();
        let fixed = i < 3;
        let name = |what: &str| if fixed { format!("{alg}-{what}") } else { format!("generated-{alg}-{what}") };
        add(name("client-token"), sign(&client, key).expect("sign"), Some(i), &client, true);
        add(name("user-token"), sign(&user, key).expect("sign"), Some(i), &user, true);
        let other = client_claims("https://evil.example");
        add(name("wrong-issuer"), sign(&other, key).expect("sign"), Some(i), &other, false);
    }

    // Headers the full check must refuse even with a genuine signature, and one it accepts.
    let k0 = &keys[0];
    let mut h = our_header(k0);
    h.crit = Some(vec!["exp".to_owned()]);
    add("eddsa-crit".into(), sign_with_header(&h, &client, k0), Some(0), &client, false);
    let mut h = our_header(k0);
    h.typ = Some("JWT".to_owned());
    add("eddsa-typ-jwt".into(), sign_with_header(&h, &client, k0), Some(0), &client, false);
    let mut h = our_header(k0);
    h.typ = None;
    add("eddsa-no-typ".into(), sign_with_header(&h, &client, k0), Some(0), &client, false);
    let mut h = our_header(k0);
    h.kid = None;
    add("eddsa-no-kid".into(), sign_with_header(&h, &client, k0), Some(0), &client, false);
    let mut h = our_header(k0);
    h.kid = Some("unknown-kid".to_owned());
    add("eddsa-unknown-kid".into(), sign_with_header(&h, &client, k0), Some(0), &client, false);
    let mut h = our_header(k0);
    h.kid = Some(keys[1].kid.clone());
    add("eddsa-signed-es256-kid".into(), sign_with_header(&h, &client, k0), Some(0), &client, false);
    let mut h = our_header(k0);
    h.typ = Some("application/AT+JWT".to_owned());
    add("eddsa-typ-application".into(), sign_with_header(&h, &client, k0), Some(0), &client, true);

    // Forgeries: no signature, HMAC keyed with the public key, spliced segments.
    let header_json = |alg: &str| format!(r#"{{"typ":"at+jwt","alg":"{alg}","kid":"{}"}}"#, k0.kid);
    let payload = b64(&serde_json::to_vec(&client).expect("claims"));
    for alg in ["none", "None", "NONE"] {
        let t = format!("{}.{payload}.", b64(header_json(alg).as_bytes()));
        add(format!("forged-alg-{alg}"), t, None, &client, false);
    }
    let t = format!("{}.{payload}.{}", b64(header_json("EdDSA").as_bytes()), b64(&[0u8; 64]));
    add("forged-zero-signature".into(), t, None, &client, false);
    let x = URL_SAFE_NO_PAD.decode(k0.jwk["x"].as_str().expect("x")).expect("x");
    let jwk_text = serde_json::to_string(&k0.jwk).expect("jwk");
    for (what, secret) in [("raw-public-key", x.as_slice()), ("jwk-json", jwk_text.as_bytes())] {
        let mut h = our_header(k0);
        h.alg = Algorithm::HS256;
        let t = jsonwebtoken::encode(&h, &client, &EncodingKey::from_secret(secret)).expect("HS256");
        add(format!("forged-hs256-{what}"), t, None, &client, false);
    }
    let (c, u) = (sign(&client, k0).expect("sign"), sign(&user, k0).expect("sign"));
    let [c_head, _, c_sig]: [&str; 3] = c.split('.').collect::<Vec<_>>().try_into().expect("token");
    let [u_head, u_payload, _]: [&str; 3] = u.split('.').collect::<Vec<_>>().try_into().expect("token");
    add("forged-swapped-signature".into(), format!("{u_head}.{u_payload}.{c_sig}"), None, &user, false);
    add("forged-spliced-payload".into(), format!("{c_head}.{u_payload}.{c_sig}"), None, &user, false);

    let w = World { keys, signed };
    // Each start-up token is accepted or refused as expected, before fuzzing even starts.
    for s in &w.signed {
        let got = full_check(&w, &s.token);
        assert_eq!(got.is_ok(), s.accept, "{}: {got:?}", s.name);
        if let Ok(claims) = got {
            assert_eq!(claims, s.claims, "{}", s.name);
        }
    }
    if let Ok(dir) = std::env::var("TESSERA_FUZZ_WRITE_SEEDS") {
        write_seeds(&w, std::path::Path::new(&dir));
    }
    w
}

fn write_seeds(w: &World, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("seed dir");
    for s in w.signed.iter().filter(|s| !s.name.starts_with("generated-")) {
        std::fs::write(dir.join(&s.name), &s.token).expect("write seed");
    }
    // The genuine EdDSA user token in the JSON form, so mutations reach the header and claims.
    let parts: Vec<&str> = w.signed[1].token.split('.').collect();
    let mut json = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            json.push(0);
        }
        json.extend(URL_SAFE_NO_PAD.decode(p).expect("segment"));
    }
    std::fs::write(dir.join("json-eddsa-user-token"), json).expect("write seed");
    // ECDSA's other valid signature for the same message: accepted or not, never a new claim.
    let es256 = w.signed.iter().find(|s| s.name == "es256-client-token").expect("es256 token");
    std::fs::write(dir.join("es256-client-token-high-s"), ecdsa_twin(&es256.token).expect("twin")).expect("write seed");
    std::fs::write(dir.join("garbage-dots"), "a.b.c").expect("write seed");
    std::fs::write(dir.join("garbage-json-header"), "eyJ9.e30.").expect("write seed");
}

/// The token an input stands for.
fn token_from(data: &[u8]) -> Option<String> {
    if data.first() == Some(&b'{') {
        let mut parts = data.splitn(3, |b| *b == 0);
        let header = parts.next().unwrap_or_default();
        let payload = parts.next().unwrap_or_default();
        let signature = parts.next().unwrap_or_default();
        return Some(format!("{}.{}.{}", b64(header), b64(payload), b64(signature)));
    }
    std::str::from_utf8(data).ok().map(str::to_owned)
}

/// A token that verified: it must be one we signed with `key`, bit for bit (ES256: or its twin).
fn assert_ours<'w>(w: &'w World, token: &str, key: usize, claims: &AccessClaims, how: &str) -> &'w Signed {
    let found = w.signed.iter().find(|s| {
        s.key == Some(key)
            && (s.token == token || (w.keys[key].alg == SigningAlg::ES256 && ecdsa_twin(&s.token).as_deref() == Some(token)))
    });
    let Some(s) = found else { panic!("{how}: accepted a token we never signed: {token:?} -> {claims:?}") };
    assert_eq!(&s.claims, claims, "{how}: claims of {}", s.name);
    assert_eq!(claims.iss, ISSUER, "{how}: accepted another issuer");
    let _ = token_id_issued_at_ms(&claims.jti);
    s
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let Some(token) = token_from(data) else { return };

    let header = header_kid(&token);
    if header.is_ok() {
        assert!(token.len() <= MAX_TOKEN_LEN && token.matches('.').count() == 2, "header_kid accepted {token:?}");
    }
    if let Ok(claims) = full_check(w, &token) {
        let (kid, _) = header.as_ref().expect("verified without a header");
        let key = w.keys.iter().position(|k| &k.kid == kid).expect("verified with an unknown kid");
        let s = assert_ours(w, &token, key, &claims, "full check");
        assert!(s.accept, "full check accepted {} ({token:?})", s.name);
    }

    // verify_with on its own, with every key: the key decides the algorithm.
    for (i, key) in w.keys.iter().enumerate() {
        if let Ok(claims) = verify_with(&token, key.alg.jwt(), key, ISSUER) {
            let _ = assert_ours(w, &token, i, &claims, "verify_with");
        }
        if let Ok((_, alg)) = &header
            && *alg != key.alg.jwt()
        {
            assert_eq!(verify_with(&token, *alg, key, ISSUER).err(), Some(Rejection::WrongAlgorithm));
        }
    }
});
