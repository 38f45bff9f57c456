//! Client authentication input (RFC 6749 §2.3.1): `Authorization: Basic …` values, any number of
//! Authorization headers, and `client_id`/`client_secret` in the body. Never a panic; a
//! well-formed Basic header always yields exactly its id and secret; more than one header or
//! credentials in both places are always refused.
#![no_main]

use http::HeaderValue;
use http::header::AUTHORIZATION;
use libfuzzer_sys::fuzz_target;
use tessera::http::auth::{client_credentials, wants_challenge};
use tessera::service::auth::parse_basic_authorization;
use tessera_fuzz::{Request, assert_request_error};

// Input: see `tessera_fuzz::Request`; the first line goes to `parse_basic_authorization`.
fuzz_target!(|data: &[u8]| {
    let input = Request::parse(data);
    if let Some(raw) = input.raw_str()
        && let Ok(c) = parse_basic_authorization(raw)
    {
        assert!(!c.client_id.is_empty() && !c.secret.is_empty(), "{raw:?}");
    }

    for h in &input.headers {
        if let Some((id, secret)) = h.expected() {
            let value = String::from_utf8(h.value()).expect("built from strings");
            match parse_basic_authorization(&value) {
                Ok(c) => assert_eq!((c.client_id.as_str(), c.secret.as_str()), (id, secret), "{value:?}"),
                Err(e) => panic!("well-formed {h:?} refused: {e:?}"),
            }
        }
    }
    let headers = input.header_map();

    let Some(form) = input.body.form() else { return };
    let _ = wants_challenge(&headers, Some(&form));
    let result = client_credentials(&headers, &form);
    let values: Vec<&HeaderValue> = headers.get_all(AUTHORIZATION).iter().collect();
    let (body_id, body_secret) = (form.single("client_id"), form.single("client_secret"));
    match &result {
        Ok(c) => {
            assert!(values.len() <= 1, "accepted {} Authorization headers", values.len());
            assert!(!c.client_id.is_empty() && !c.secret.is_empty());
            if let [v] = values[..] {
                assert!(matches!(body_secret, Ok(None)), "accepted credentials in header and body");
                let p = parse_basic_authorization(v.to_str().expect("accepted header is text"))
                    .expect("accepted header parses");
                assert_eq!((p.client_id.as_str(), p.secret.as_str()), (c.client_id.as_str(), c.secret.as_str()));
                if let Ok(Some(id)) = body_id {
                    assert_eq!(id, c.client_id, "body client_id differs from the header's");
                }
            } else {
                assert_eq!(body_id.ok().flatten(), Some(c.client_id.as_str()));
                assert_eq!(body_secret.ok().flatten(), Some(c.secret.as_str()));
            }
        }
        Err(e) => {
            assert_request_error(e, "client_credentials");
            if values.len() > 1 {
                assert_eq!(e.code(), "invalid_request");
            }
            // Exactly one method, well-formed: must be accepted.
            if values.is_empty() && matches!((&body_id, &body_secret), (Ok(Some(_)), Ok(Some(_)))) {
                panic!("body credentials refused: {e:?}");
            }
        }
    }
});
