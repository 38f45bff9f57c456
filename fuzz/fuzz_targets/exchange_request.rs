//! RFC 8693 token-exchange requests, validated before any authentication work
//! (`exchange_request`), and the validators of what they carry: subjects, tenants, audiences,
//! accounts, client ids and scopes. Never a panic; each validator accepts exactly its documented
//! alphabet and length; an accepted request is consistent with its form.
#![no_main]

use http::header::AUTHORIZATION;
use libfuzzer_sys::fuzz_target;
use tessera::domain::client::{parse_account, parse_audience, parse_subject, parse_tenant};
use tessera::domain::scope::{MAX_SCOPE_TOKEN_LEN, MAX_SCOPES};
use tessera::domain::{ClientId, ScopeSet};
use tessera::http::auth::client_credentials;
use tessera::http::token::{TOKEN_TYPE_ACCESS_TOKEN, exchange_request, requested_audiences, requested_scope};
use tessera::service::SubjectRef;
use tessera::service::exchange::TOKEN_TYPE_USER_ID;
use tessera_fuzz::{Request, assert_request_error};

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:@".contains(c)
}

/// Each validator against its documented rule.
fn check_validators(raw: &str) {
    let subject_ok = (1..=255).contains(&raw.len()) && raw.chars().all(|c| id_char(c) || "+|=/".contains(c));
    let subject = parse_subject(raw);
    assert_eq!(subject.as_deref().ok(), subject_ok.then_some(raw), "parse_subject({raw:?})");
    assert_eq!(parse_account(raw).is_ok(), subject_ok, "parse_account({raw:?})");

    let tenant_ok = (1..=128).contains(&raw.len()) && raw.chars().all(id_char);
    assert_eq!(parse_tenant(raw).as_deref().ok(), tenant_ok.then_some(raw), "parse_tenant({raw:?})");

    let client_ok = (1..=64).contains(&raw.len()) && raw.chars().all(id_char);
    assert_eq!(ClientId::parse(raw).ok().map(|c| c.as_str() == raw), client_ok.then_some(true), "ClientId({raw:?})");

    let audience_ok = (1..=256).contains(&raw.len()) && raw.bytes().all(|b| (0x21..=0x7e).contains(&b));
    assert_eq!(parse_audience(raw).as_deref().ok(), audience_ok.then_some(raw), "parse_audience({raw:?})");

    check_scope(raw);
}

/// RFC 6749 §3.3 scope: space-delimited tokens of %x21 / %x23-5B / %x5D-7E.
fn check_scope(raw: &str) {
    let tokens: std::collections::BTreeSet<&str> = raw.split(' ').filter(|t| !t.is_empty()).collect();
    let token_ok = |t: &str| {
        t.len() <= MAX_SCOPE_TOKEN_LEN
            && t.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    };
    let ok = tokens.len() <= MAX_SCOPES && tokens.iter().all(|t| token_ok(t));
    let parsed = ScopeSet::parse(raw);
    assert_eq!(parsed.is_ok(), ok, "ScopeSet::parse({raw:?}): {parsed:?}");
    if let Ok(set) = parsed {
        assert_eq!(set.iter().collect::<std::collections::BTreeSet<_>>(), tokens, "{raw:?}");
        let shown = set.to_string();
        assert_eq!(ScopeSet::parse(&shown).ok().as_ref(), Some(&set), "round trip of {shown:?}");
    }
}

// Input: see `tessera_fuzz::Request`; the first line goes to every validator directly.
fuzz_target!(|data: &[u8]| {
    let input = Request::parse(data);
    if let Some(raw) = input.raw_str() {
        check_validators(raw);
    }
    let headers = input.header_map();
    let Some(form) = input.body.form() else { return };

    let (auth, req) = match exchange_request(&headers, &form) {
        Ok(ok) => ok,
        Err(e) => return assert_request_error(&e, "exchange_request"),
    };

    // The subject is what the form says, of the type it says.
    let subject_token = form.required("subject_token").expect("accepted without subject_token");
    match (&req.subject, form.required("subject_token_type")) {
        (SubjectRef::UserId(s), Ok(TOKEN_TYPE_USER_ID)) => {
            assert_eq!(s, subject_token);
            if let Ok(parsed) = parse_subject(s) {
                assert_eq!(&parsed, s);
            }
        }
        (SubjectRef::Token(t), Ok(TOKEN_TYPE_ACCESS_TOKEN)) => assert_eq!(t, subject_token),
        (s, t) => panic!("subject {s:?} for subject_token_type {t:?}"),
    }
    assert!(matches!(form.single("requested_token_type"), Ok(None | Some(TOKEN_TYPE_ACCESS_TOKEN))));

    // The actor token comes with its type; without credentials it is the only authentication.
    match &auth.actor_token {
        Some(t) => {
            assert_eq!(form.single("actor_token").ok().flatten(), Some(t.as_str()));
            assert_eq!(form.single("actor_token_type").ok().flatten(), Some(TOKEN_TYPE_ACCESS_TOKEN));
        }
        None => {
            assert!(
                matches!(form.single("actor_token"), Ok(None)) && matches!(form.single("actor_token_type"), Ok(None))
            );
        }
    }
    match &auth.credentials {
        Some(c) => {
            let again = client_credentials(&headers, &form).expect("credentials accepted once");
            assert_eq!((&again.client_id, again.secret.as_str()), (&c.client_id, c.secret.as_str()));
        }
        None => {
            assert!(auth.actor_token.is_some(), "accepted with no authentication at all");
            assert!(!headers.contains_key(AUTHORIZATION) && !form.has("client_secret"), "credentials ignored");
        }
    }

    // Scope, audiences and account are the form's, and well-formed where the library says so.
    let scope = requested_scope(&form).expect("scope accepted once");
    assert_eq!(req.scope, scope);
    if let Some(s) = &req.scope {
        check_scope(&s.to_string());
    }
    assert_eq!(req.audience, requested_audiences(&form));
    for a in &req.audience {
        let _ = parse_audience(a);
    }
    assert_eq!(req.account.as_deref(), form.single("account").ok().flatten());
    if let Some(a) = &req.account {
        let _ = parse_account(a);
    }
});
