//! Shared pieces of the fuzz targets: a readable request format for the inputs, and small
//! reference implementations that the library is compared with.
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use tessera::domain::Error;
use tessera::http::form::{Form, MAX_PARAMS};

/// Every parameter name the endpoints read.
pub const KNOWN_NAMES: &[&str] = &[
    "grant_type",
    "scope",
    "audience",
    "resource",
    "client_id",
    "client_secret",
    "token",
    "token_type_hint",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "account",
];

/// A token request as a fuzz input spells it, HTTP-like so that seeds are readable and the
/// fuzzer reaches past base64 and percent-encoding:
///
/// ```text
/// LINE                       a string fed to the parsers directly
/// authorization: VALUE       an Authorization header, bytes as they are      } any number,
/// basic ID:SECRET            Basic, id and secret form-urlencoded first       } up to an
/// basic-plain ID:SECRET      Basic, id and secret as they are                 } empty line
///                            (an empty line)
/// BODY                       the rest, as it is; or, if its first line is `@params`,
///                            one `name=value` per line, form-encoded as a client library would
/// ```
#[derive(Debug)]
pub struct Request<'a> {
    pub raw: &'a [u8],
    pub headers: Vec<AuthHeader<'a>>,
    pub body: Body<'a>,
}

impl<'a> Request<'a> {
    pub fn parse(data: &'a [u8]) -> Self {
        let mut lines = data.split(|b| *b == b'\n');
        let raw = lines.next().unwrap_or_default();
        let mut headers = Vec::new();
        let mut consumed = raw.len() + 1;
        for line in lines.by_ref() {
            consumed += line.len() + 1;
            if line.is_empty() {
                break;
            }
            if let Some(v) = strip_prefix_ci(line, b"authorization:") {
                headers.push(AuthHeader::Raw(v.trim_ascii_start()));
            } else if let Some((urlencode, rest)) = line
                .strip_prefix(b"basic-plain ")
                .map(|r| (false, r))
                .or_else(|| line.strip_prefix(b"basic ").map(|r| (true, r)))
                && let Ok(rest) = std::str::from_utf8(rest)
            {
                let (id, secret) = rest.split_once(':').unwrap_or((rest, ""));
                headers.push(AuthHeader::Basic { id, secret, urlencode });
            }
        }
        let body = data.get(consumed..).unwrap_or_default();
        let body = match body.strip_prefix(b"@params\n") {
            Some(params) => Body::Params(
                params
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .filter_map(|l| std::str::from_utf8(l).ok())
                    .map(|l| l.split_once('=').unwrap_or((l, "")))
                    .collect(),
            ),
            None => Body::Raw(body),
        };
        Self { raw, headers, body }
    }

    /// The first line as text, when it is UTF-8.
    pub fn raw_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.raw).ok()
    }

    /// The Authorization headers that are valid header values, in order.
    pub fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for h in &self.headers {
            if let Ok(v) = HeaderValue::from_bytes(&h.value()) {
                map.append(AUTHORIZATION, v);
            }
        }
        map
    }
}

fn strip_prefix_ci<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = line.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &line[prefix.len()..])
}

/// A request body.
#[derive(Debug)]
pub enum Body<'a> {
    /// Parameters, form-encoded before parsing.
    Params(Vec<(&'a str, &'a str)>),
    Raw(&'a [u8]),
}

impl Body<'_> {
    /// Parses the body with the library. Form-encoded parameters must parse exactly when none
    /// has an empty name and at most `MAX_PARAMS` have a value, and the form must then hold
    /// exactly the non-empty values, in order.
    pub fn form(&self) -> Option<Form> {
        match self {
            Body::Raw(raw) => Form::parse(raw).ok(),
            Body::Params(params) => {
                let mut ser = form_urlencoded::Serializer::new(String::new());
                for (n, v) in params {
                    ser.append_pair(n, v);
                }
                let encoded = ser.finish();
                let parsed = Form::parse(encoded.as_bytes());
                let valid = params.iter().all(|(n, _)| !n.is_empty())
                    && params.iter().filter(|(_, v)| !v.is_empty()).count() <= MAX_PARAMS;
                assert_eq!(parsed.is_ok(), valid, "form-encoded {params:?} as {encoded:?}: {parsed:?}");
                let form = parsed.ok()?;
                for (n, _) in params {
                    let expected: Vec<&str> =
                        params.iter().filter(|(m, v)| m == n && !v.is_empty()).map(|(_, v)| *v).collect();
                    assert_eq!(form.all(n), expected, "values of {n:?} in {encoded:?}");
                }
                Some(form)
            }
        }
    }
}

/// An `Authorization` header value.
#[derive(Debug)]
pub enum AuthHeader<'a> {
    /// `Basic base64(id ":" secret)`, with id and secret form-urlencoded first when `urlencode`
    /// (RFC 6749 §2.3.1) and taken as they are otherwise.
    Basic { id: &'a str, secret: &'a str, urlencode: bool },
    /// Anything at all.
    Raw(&'a [u8]),
}

impl AuthHeader<'_> {
    pub fn value(&self) -> Vec<u8> {
        match self {
            AuthHeader::Basic { id, secret, urlencode } => {
                let creds = if *urlencode {
                    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                    format!("{}:{}", enc(id), enc(secret))
                } else {
                    format!("{id}:{secret}")
                };
                format!("Basic {}", STANDARD.encode(creds)).into_bytes()
            }
            AuthHeader::Raw(raw) => raw.to_vec(),
        }
    }

    /// The (client_id, secret) that `parse_basic_authorization` must return for this value, when
    /// it is a well-formed Basic header.
    pub fn expected(&self) -> Option<(&str, &str)> {
        let AuthHeader::Basic { id, secret, urlencode } = self else { return None };
        if id.is_empty() || secret.is_empty() {
            return None;
        }
        let plain = |s: &str| !s.contains(['%', '+']);
        if !*urlencode && !(plain(id) && plain(secret) && !id.contains(':')) {
            return None;
        }
        Some((id, secret))
    }
}

/// The OAuth error codes a malformed request or failed client authentication may produce.
pub fn assert_request_error(e: &Error, what: &str) {
    assert!(
        matches!(e.code(), "invalid_request" | "invalid_client" | "invalid_scope"),
        "{what}: unexpected error {e:?}"
    );
}

/// A strict decoder of one form component, written from the spec rather than from the library:
/// '+' is a space, '%' must be followed by two hex digits, and the result must be UTF-8.
pub fn reference_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let (hi, lo) = (hex_digit(*bytes.get(i + 1)?)?, hex_digit(*bytes.get(i + 2)?)?);
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// The reference form parser: pairs split on '&' and the first '=', empty parts ignored, empty
/// names refused, empty values dropped (RFC 6749 §3.1), at most `MAX_PARAMS` pairs.
pub fn reference_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut pairs = Vec::new();
    for part in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (k, v) = (reference_decode(k)?, reference_decode(v)?);
        if k.is_empty() {
            return None;
        }
        if !v.is_empty() {
            pairs.push((k, v));
        }
    }
    (pairs.len() <= MAX_PARAMS).then_some(pairs)
}

/// Checks what `single`, `required`, `all` and `has` say about one name against each other.
pub fn check_name(form: &Form, name: &str) {
    let all = form.all(name);
    assert_eq!(form.has(name), !all.is_empty(), "has({name:?})");
    assert!(all.iter().all(|v| !v.is_empty()), "empty value kept for {name:?}");
    match all.len() {
        0 => {
            assert!(matches!(form.single(name), Ok(None)), "single({name:?}) of an absent name");
            assert!(form.required(name).is_err_and(|e| e.code() == "invalid_request"));
        }
        1 => {
            assert_eq!(form.single(name).ok(), Some(Some(all[0])), "single({name:?})");
            assert_eq!(form.required(name).ok(), Some(all[0]), "required({name:?})");
        }
        _ => {
            assert!(form.single(name).is_err_and(|e| e.code() == "invalid_request"), "repeated {name:?}");
            assert!(form.required(name).is_err_and(|e| e.code() == "invalid_request"), "repeated {name:?}");
        }
    }
}
