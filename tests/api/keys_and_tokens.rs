//! Tokens verify against the published JWKS with an independent JWT library; forged, tampered
//! and foreign tokens are inactive.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::{Value, json};
use tessera::crypto::SigningAlg;

use crate::helpers::{Db, Options, jwt_parts, spawn_app, spawn_app_with};
use crate::on_both_dbs;

on_both_dbs!(
    tokens_verify_against_jwks_for_every_algorithm,
    forged_and_tampered_tokens_are_inactive,
    metadata_document
);

async fn tokens_verify_against_jwks_for_every_algorithm(db: Db) {
    for alg in SigningAlg::ALL {
        let app = spawn_app_with(db, Options { signing_alg: alg, ..Options::default() }).await;
        let c = app.create_client("c", "read", &[]).await;
        let token = app.access_token(&c, None).await;
        let (header, claims) = jwt_parts(&token);
        assert_eq!(header["typ"], "at+jwt", "RFC 9068 §2.1");
        assert_eq!(header["alg"], alg.as_str());
        for claim in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "tenant"] {
            assert!(claims.get(claim).is_some(), "RFC 9068 claim {claim} missing");
        }

        let resp = app.client.get(format!("{}/.well-known/jwks.json", app.http)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["cache-control"].to_str().unwrap().contains("max-age"));
        let jwks: JwkSet = resp.json().await.unwrap();
        let kid = header["kid"].as_str().unwrap();
        let jwk = jwks.find(kid).expect("kid published in JWKS");
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut v = Validation::new(alg.jwt());
        v.set_issuer(&[app.core.settings.issuer.as_str()]);
        v.set_audience(&[app.core.settings.issuer.as_str()]);
        let data = jsonwebtoken::decode::<Value>(&token, &key, &v).expect("verifies against JWKS");
        assert_eq!(data.claims["client_id"], c.id.as_str());
        assert!(app.is_active(&c, &token).await, "{alg}");
        app.stop().await;
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

async fn forged_and_tampered_tokens_are_inactive(db: Db) {
    let app = spawn_app(db).await;
    let c = app.create_client("c", "read write", &[]).await;
    let rs = app.create_client("rs", "", &["introspect"]).await;
    let token = app.access_token(&c, Some("read")).await;
    let (header, claims) = jwt_parts(&token);
    let sig = token.rsplit('.').next().unwrap();

    // Tampered payload (wider scope), original signature.
    let mut wider = claims.clone();
    wider["scope"] = json!("read write");
    let tampered = format!("{}.{}.{}", b64(&header), b64(&wider), sig);

    // alg: none.
    let mut none_header = header.clone();
    none_header["alg"] = json!("none");
    let alg_none = format!("{}.{}.", b64(&none_header), b64(&claims));

    // HS256 "signed" with the public key bytes (key confusion).
    let jwks: Value =
        app.client.get(format!("{}/.well-known/jwks.json", app.http)).send().await.unwrap().json().await.unwrap();
    let x = jwks["keys"][0]["x"].as_str().unwrap();
    let mut hs_header = header.clone();
    hs_header["alg"] = json!("HS256");
    let hs = jsonwebtoken::encode(
        &serde_json::from_value::<jsonwebtoken::Header>(hs_header).unwrap(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(x.as_bytes()),
    )
    .unwrap();

    // A token signed by a key Tessera never published, with a kid it does not know...
    let foreign = tessera::crypto::keys::generate(SigningAlg::EdDSA).unwrap();
    let foreign_key = jsonwebtoken::EncodingKey::from_ed_der(&foreign.private_der);
    let mut fh = jsonwebtoken::Header::new(Algorithm::EdDSA);
    fh.typ = Some("at+jwt".into());
    fh.kid = Some(foreign.kid.clone());
    let unknown_kid = jsonwebtoken::encode(&fh, &claims, &foreign_key).unwrap();
    // ...and with our kid injected.
    fh.kid = Some(header["kid"].as_str().unwrap().to_owned());
    let injected_kid = jsonwebtoken::encode(&fh, &claims, &foreign_key).unwrap();

    // Wrong issuer, validly signed by nobody we trust; and a plain JWT without typ at+jwt.
    let mut other_iss = claims.clone();
    other_iss["iss"] = json!("https://evil.example");
    let other_issuer = format!("{}.{}.{}", b64(&header), b64(&other_iss), sig);

    for (name, bad) in [
        ("tampered", tampered),
        ("alg none", alg_none),
        ("hs256 with public key", hs),
        ("unknown kid", unknown_kid),
        ("injected kid", injected_kid),
        ("other issuer", other_issuer),
        ("not a jwt", "abc".to_owned()),
        ("garbage segments", "a.b.c".to_owned()),
    ] {
        assert_eq!(app.introspect(&rs, &bad).await, json!({"active": false}), "{name}");
        assert!(!app.grpc_introspect(&rs, &bad).await.unwrap().active, "{name}");
    }
    assert!(app.is_active(&rs, &token).await, "the genuine token is still fine");
}

async fn metadata_document(db: Db) {
    let app = spawn_app(db).await;
    let resp = app.client.get(format!("{}/.well-known/oauth-authorization-server", app.http)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let m: Value = resp.json().await.unwrap();
    let issuer = app.core.settings.issuer.as_str();
    assert_eq!(m["issuer"], issuer);
    assert_eq!(m["token_endpoint"], format!("{issuer}/oauth2/token"));
    assert_eq!(m["introspection_endpoint"], format!("{issuer}/oauth2/introspect"));
    assert_eq!(m["revocation_endpoint"], format!("{issuer}/oauth2/revoke"));
    assert_eq!(m["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
    assert!(m["grant_types_supported"].as_array().unwrap().contains(&json!("client_credentials")));
    for key in [
        "token_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
    ] {
        let methods = m[key].as_array().unwrap();
        assert!(
            methods.contains(&json!("client_secret_basic")) && methods.contains(&json!("client_secret_post")),
            "{key}"
        );
    }
    // The JWKS it points to is reachable and names the key tokens carry.
    let jwks: Value = app.client.get(m["jwks_uri"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    let c = app.create_client("c", "", &[]).await;
    let (h, _) = jwt_parts(&app.access_token(&c, None).await);
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == h["kid"]));
}
