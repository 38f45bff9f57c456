//! Access-token verification as introspection and token exchange do it: `header_kid`, the key
//! looked up by kid, then `verify_with`; and `verify_with` with every key directly. Never a panic,
//! and never a forgery: whenever a token verifies with one of our keys, its signature must be
//! exactly the one that key itself makes for the token's header.payload (all three algorithms
//! sign deterministically; for ES256 also the (r, n-s) twin, ECDSA being malleable by nature).
//! A mutated token therefore verifies only if it is, byte for byte, a token we signed.
//!
//! Keys: the three in ../fixtures/jwt_keys.json (fixed, so that the genuine tokens in the seed
//! corpus verify on every run) plus one EdDSA key generated at start-up. At start-up the target
//! also checks a list of genuine and hostile tokens (alg none, HS256 keyed with the public key,
//! crit, wrong typ/kid/issuer, spliced segments, non-canonical base64) for the expected verdict.
//!
//! Input: the token itself; or, when it starts with '{', `HEADER-JSON \0 PAYLOAD-JSON \0 SIG`
//! (base64url-encoded here, so the fuzzer mutates the JSON directly). Without the second '\0'
//! (no SIG at all) the target signs HEADER.PAYLOAD itself with the key the header's kid names
//! (else, and instead of the slow RSA key, the first EdDSA key), which lets the fuzzer reach what
//! happens after a valid signature: claims parsing and the issuer check.
//!
//! `TESSERA_FUZZ_WRITE_SEEDS=DIR` writes the seed corpus (a few of those tokens, JSON forms) into DIR:
//!   TESSERA_FUZZ_WRITE_SEEDS=fuzz/corpus/jwt_verify RUSTC_BOOTSTRAP=1 \
//!     cargo fuzz run --fuzz-dir fuzz jwt_verify -- -runs=0
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tessera::crypto::jwt::{MAX_TOKEN_LEN, Rejection, header_kid, sign, verify_with};
use tessera::crypto::keys::{LoadedKey, SigningAlg, generate, thumbprint};
use tessera::domain::ids::token_id_issued_at_ms;
use tessera::domain::{AccessClaims, Actor, Audience, Lineage};

const ISSUER: &str = "https://issuer.example";
const KEYS_JSON: &str = include_str!("../fixtures/jwt_keys.json");
/// Keys from the fixture; the generated one comes after them.
const FIXED_KEYS: usize = 3;

fn keys() -> &'static [LoadedKey] {
    static KEYS: OnceLock<Vec<LoadedKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let keys = load_keys();
        check_known_tokens(&keys);
        keys
    })
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
    assert_eq!(keys.len(), FIXED_KEYS);
    let g = generate(SigningAlg::EdDSA).expect("generate EdDSA key");
    keys.push(LoadedKey::new(&g.kid, g.alg, &g.public_jwk, Some(&g.private_der), 0, None).expect("generated key"));
    keys
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `b64(header).b64(payload).b64(signature by key)`: what a signer with our key but careless
/// headers would produce.
fn sign_raw(key: &LoadedKey, header: &[u8], payload: &[u8]) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let signature = key.signer.as_ref().expect("private key").sign(message.as_bytes()).expect("sign");
    format!("{message}.{}", b64(&signature))
}

/// The order of the P-256 group, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The other valid ES256 signature of the same message: (r, n - s) for (r, s).
fn ecdsa_twin(sig: &[u8]) -> Option<Vec<u8>> {
    let (r, s) = sig.split_at_checked(32)?;
    let mut twin_s = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(P256_N[i]) - i16::from(*s.get(i)?) - borrow;
        borrow = i16::from(d < 0);
        twin_s[i] = u8::try_from(d.rem_euclid(256)).ok()?;
    }
    Some([r, &twin_s[..]].concat())
}

/// Whether the token's signature is the one `key` makes for its header.payload.
fn signed_by_us(key: &LoadedKey, token: &str) -> bool {
    let Some((message, sig)) = token.rsplit_once('.') else { return false };
    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else { return false };
    let ours = key.signer.as_ref().expect("private key").sign(message.as_bytes()).expect("sign");
    sig == ours || (key.alg == SigningAlg::ES256 && ecdsa_twin(&ours) == Some(sig))
}

/// The whole check, as `Tessera::verify_token` does it.
fn full_check(keys: &[LoadedKey], token: &str) -> Result<(usize, AccessClaims), Rejection> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Rejection::Malformed);
    }
    let (kid, alg) = header_kid(token)?;
    let i = keys.iter().position(|k| k.kid == kid).ok_or(Rejection::UnknownKey)?;
    verify_with(token, alg, &keys[i], ISSUER).map(|claims| (i, claims))
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

/// Genuine and hostile tokens with the verdict the full check must give: (name, token, accept).
fn known_tokens(keys: &[LoadedKey]) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let client = client_claims(ISSUER);
    let client_json = serde_json::to_vec(&client).expect("claims");
    for (i, key) in keys.iter().enumerate() {
        let prefix = if i < FIXED_KEYS { String::new() } else { "generated-".to_owned() };
        let alg = key.alg.as_str().to_ascii_lowercase();
        let wrong_issuer = client_claims("https://evil.example");
        for (what, claims, accept) in [
            ("client-token", &client, true),
            ("user-token", &user_claims(), true),
            ("wrong-issuer", &wrong_issuer, false),
        ] {
            out.push((format!("{prefix}{alg}-{what}"), sign(claims, key).expect("sign"), accept));
        }
    }

    // Our EdDSA key, careless headers: a genuine signature does not make them acceptable.
    let k0 = &keys[0];
    let headers = [
        ("crit", json!({"typ": "at+jwt", "alg": "EdDSA", "kid": k0.kid, "crit": ["exp"]}), false),
        ("typ-jwt", json!({"typ": "JWT", "alg": "EdDSA", "kid": k0.kid}), false),
        ("no-typ", json!({"alg": "EdDSA", "kid": k0.kid}), false),
        ("no-kid", json!({"typ": "at+jwt", "alg": "EdDSA"}), false),
        ("unknown-kid", json!({"typ": "at+jwt", "alg": "EdDSA", "kid": "unknown"}), false),
        ("es256-kid", json!({"typ": "at+jwt", "alg": "EdDSA", "kid": keys[1].kid}), false),
        ("alg-es256", json!({"typ": "at+jwt", "alg": "ES256", "kid": k0.kid}), false),
        ("typ-application", json!({"typ": "application/AT+JWT", "alg": "EdDSA", "kid": k0.kid}), true),
    ];
    for (what, header, accept) in headers {
        let token = sign_raw(k0, &serde_json::to_vec(&header).expect("header"), &client_json);
        out.push((format!("eddsa-header-{what}"), token, accept));
    }
    let dup = format!(r#"{{"typ":"at+jwt","alg":"EdDSA","kid":"unknown","kid":"{}"}}"#, k0.kid);
    out.push(("eddsa-header-duplicate-kid".into(), sign_raw(k0, dup.as_bytes(), &client_json), false));

    // Forgeries.
    let header = |alg: &str| b64(format!(r#"{{"typ":"at+jwt","alg":"{alg}","kid":"{}"}}"#, k0.kid).as_bytes());
    let payload = b64(&client_json);
    for alg in ["none", "None", "NONE"] {
        out.push((format!("forged-alg-{alg}"), format!("{}.{payload}.", header(alg)), false));
    }
    out.push(("forged-zero-signature".into(), format!("{}.{payload}.{}", header("EdDSA"), b64(&[0; 64])), false));
    let x = URL_SAFE_NO_PAD.decode(k0.jwk["x"].as_str().expect("x")).expect("x");
    let jwk_text = serde_json::to_string(&k0.jwk).expect("jwk");
    for (what, secret) in [("raw-public-key", x.as_slice()), ("jwk-json", jwk_text.as_bytes())] {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".to_owned());
        h.kid = Some(k0.kid.clone());
        let token = jsonwebtoken::encode(&h, &client, &EncodingKey::from_secret(secret)).expect("HS256");
        out.push((format!("forged-hs256-{what}"), token, false));
    }
    let (c, u) = (sign(&client, k0).expect("sign"), sign(&user_claims(), k0).expect("sign"));
    let [c_head, _, c_sig]: [&str; 3] = c.split('.').collect::<Vec<_>>().try_into().expect("token");
    let [u_head, u_payload, _]: [&str; 3] = u.split('.').collect::<Vec<_>>().try_into().expect("token");
    out.push(("forged-swapped-signature".into(), format!("{u_head}.{u_payload}.{c_sig}"), false));
    out.push(("forged-spliced-payload".into(), format!("{c_head}.{u_payload}.{c_sig}"), false));
    // The same signature bytes, spelled differently in base64: must not be another valid token.
    let last = c_sig.chars().last().expect("signature");
    let tweaked = match last {
        'A' => 'B',
        'Q' => 'R',
        'g' => 'h',
        _ => 'x',
    };
    out.push(("forged-noncanonical-base64".into(), format!("{}{tweaked}", &c[..c.len() - 1]), false));
    out.push(("forged-padded-signature".into(), format!("{c}=="), false));
    out.push(("forged-extra-segment".into(), format!("{c}.{c_sig}"), false));
    out
}

/// Each known token gets its verdict, before fuzzing starts.
fn check_known_tokens(keys: &[LoadedKey]) {
    let known = known_tokens(keys);
    for (name, token, accept) in &known {
        let got = full_check(keys, token);
        assert_eq!(got.is_ok(), *accept, "{name}: {got:?}");
        if let Ok((i, _)) = got {
            assert!(signed_by_us(&keys[i], token), "{name}");
        }
    }
    if let Ok(dir) = std::env::var("TESSERA_FUZZ_WRITE_SEEDS") {
        write_seeds(keys, &known, std::path::Path::new(&dir));
    }
}

/// The known tokens written as seeds.
const SEEDS: &[&str] = &[
    "eddsa-user-token",
    "rs256-client-token",
    "eddsa-header-crit",
    "forged-alg-none",
    "forged-hs256-raw-public-key",
    "forged-noncanonical-base64",
];

fn write_seeds(keys: &[LoadedKey], known: &[(String, String, bool)], dir: &std::path::Path) {
    let write = |name: &str, data: &[u8]| std::fs::write(dir.join(name), data).expect("write seed");
    std::fs::create_dir_all(dir).expect("seed dir");
    // A few of the known tokens (every run checks all of them at start-up anyway).
    for (name, token, _) in known.iter().filter(|(name, ..)| SEEDS.contains(&name.as_str())) {
        write(name, token.as_bytes());
    }
    // ECDSA's other valid signature of the same token (accepted: ECDSA is malleable).
    let (_, es256, _) = known.iter().find(|(name, ..)| name == "es256-client-token").expect("es256 token");
    let (message, sig) = es256.rsplit_once('.').expect("token");
    let twin = ecdsa_twin(&URL_SAFE_NO_PAD.decode(sig).expect("sig")).expect("twin");
    write("es256-client-token-high-s", format!("{message}.{}", b64(&twin)).as_bytes());
    // JSON forms: the genuine EdDSA user token with its signature, and claims for the target to
    // sign with the EdDSA and ES256 keys.
    let (_, user, _) = known.iter().find(|(name, ..)| name == "eddsa-user-token").expect("user token");
    let parts: Vec<Vec<u8>> = user.split('.').map(|p| URL_SAFE_NO_PAD.decode(p).expect("segment")).collect();
    write("json-eddsa-user-token", &parts.join(&0u8));
    write("json-eddsa-user-claims-to-sign", &parts[..2].join(&0u8));
    let es_header = json!({"typ": "at+jwt", "alg": "ES256", "kid": keys[1].kid}).to_string();
    write("json-es256-user-claims-to-sign", &[es_header.as_bytes(), &parts[1][..]].join(&0u8));
    write("garbage-dots", b"a.b.c");
}

/// The token an input stands for.
fn token_from(keys: &[LoadedKey], data: &[u8]) -> Option<String> {
    if data.first() != Some(&b'{') {
        return std::str::from_utf8(data).ok().map(str::to_owned);
    }
    let mut parts = data.splitn(3, |b| *b == 0);
    let header = parts.next().unwrap_or_default();
    let payload = parts.next().unwrap_or_default();
    match parts.next() {
        Some(signature) => Some(format!("{}.{}.{}", b64(header), b64(payload), b64(signature))),
        None => {
            let kid =
                serde_json::from_slice::<Value>(header).ok().and_then(|h| h.get("kid")?.as_str().map(str::to_owned));
            // Not with RSA: signing costs ~20 ms in this build, and what follows a valid
            // signature (claims, issuer) is the same for every algorithm.
            let key = kid
                .and_then(|kid| keys.iter().find(|k| k.kid == kid && k.alg != SigningAlg::RS256))
                .unwrap_or(&keys[0]);
            Some(sign_raw(key, header, payload))
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let Some(token) = token_from(keys, data) else { return };

    let header = header_kid(&token);
    if header.is_ok() {
        assert!(token.len() <= MAX_TOKEN_LEN && token.matches('.').count() == 2, "header_kid accepted {token:?}");
    }
    if let Ok((i, claims)) = full_check(keys, &token) {
        let key = &keys[i];
        assert!(signed_by_us(key, &token), "full check accepted a signature we did not make: {token:?}");
        assert_eq!(claims.iss, ISSUER, "full check accepted another issuer: {token:?}");
        let h = jsonwebtoken::decode_header(&token).expect("accepted header parses");
        assert_eq!(h.alg, key.alg.jwt(), "{token:?}");
        assert_eq!(h.kid.as_deref(), Some(key.kid.as_str()), "{token:?}");
        assert!(h.crit.is_none(), "full check accepted crit: {token:?}");
        let typ = h.typ.unwrap_or_default().to_ascii_lowercase();
        assert!(typ == "at+jwt" || typ == "application/at+jwt", "full check accepted typ {typ:?}");
        let _ = token_id_issued_at_ms(&claims.jti);
    }

    // verify_with on its own, with every key: the key decides the algorithm.
    for key in keys {
        if let Ok(claims) = verify_with(&token, key.alg.jwt(), key, ISSUER) {
            assert!(signed_by_us(key, &token), "verify_with accepted a signature we did not make: {token:?}");
            assert_eq!(claims.iss, ISSUER, "verify_with accepted another issuer: {token:?}");
        }
        if let Ok((_, alg)) = &header
            && *alg != key.alg.jwt()
        {
            assert_eq!(verify_with(&token, *alg, key, ISSUER).err(), Some(Rejection::WrongAlgorithm));
        }
    }
});
