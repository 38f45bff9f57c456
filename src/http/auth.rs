//! Reading a request: the form body (size-limited, content type checked) and the client's
//! credentials by `client_secret_basic` or `client_secret_post` (RFC 6749 §2.3.1).
use std::time::Duration;

use axum::body::{Body, HttpBody as _};
use axum::http::{HeaderMap, header};
use futures::StreamExt as _;

use super::form::Form;
use crate::domain::{Error, Result};
use crate::service::ClientCredentials;
use crate::service::auth::parse_basic_authorization;

/// OAuth requests are small; anything larger is refused with 413 before it is buffered.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Once the headers are in, the body must follow within this time. A stalled upload is refused
/// well before the request timeout (which answers 503), so it holds its connection no longer.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(3);

/// Failure to read the body: the error plus whether it was too large (413).
pub struct BodyError(pub Error, pub bool);

fn too_large() -> BodyError {
    BodyError(Error::invalid_request("request body too large"), true)
}

pub async fn read_form(headers: &HeaderMap, body: Body) -> std::result::Result<Form, BodyError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(BodyError(Error::invalid_request("Content-Type must be application/x-www-form-urlencoded"), false));
    }
    // A declared length over the limit is refused at once, without waiting for bytes that would
    // be refused anyway (a Content-Length of 1 GiB and nothing sent must not hold the request).
    if body.size_hint().lower() > u64::try_from(MAX_BODY_BYTES).unwrap_or(u64::MAX) {
        return Err(too_large());
    }
    let bytes = tokio::time::timeout(BODY_TIMEOUT, read_body(body))
        .await
        .map_err(|_| BodyError(Error::invalid_request("request body not received in time"), false))??;
    Form::parse(&bytes).map_err(|e| BodyError(e, false))
}

/// The body, up to [`MAX_BODY_BYTES`]. Broken framing (a chunk size that is not hex, a chunk
/// longer than announced) is a malformed request, not a large one.
async fn read_body(body: Body) -> std::result::Result<Vec<u8>, BodyError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError(Error::invalid_request("malformed request body"), false))?;
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// What every OAuth endpoint starts with: the headers, the parsed form, whether a 401 should
/// carry a challenge, and the peer address (for throttling). Body errors are answered here.
pub struct OAuthForm {
    pub headers: HeaderMap,
    pub form: Form,
    pub challenge: bool,
    pub source: Option<std::net::IpAddr>,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for OAuthForm {
    type Rejection = axum::response::Response;

    async fn from_request(req: axum::extract::Request, _state: &S) -> std::result::Result<Self, Self::Rejection> {
        let source = req
            .extensions()
            .get::<axum::extract::ConnectInfo<crate::tls::Peer>>()
            .map(|axum::extract::ConnectInfo(crate::tls::Peer(peer))| peer.ip());
        let (parts, body) = req.into_parts();
        let form = read_form(&parts.headers, body).await.map_err(|e| super::body_error(e, parts.uri.path()))?;
        let challenge = wants_challenge(&parts.headers, Some(&form));
        Ok(Self { headers: parts.headers, form, challenge, source })
    }
}

/// Whether a 401 should carry `WWW-Authenticate`: the client used the header, or sent nothing.
pub fn wants_challenge(headers: &HeaderMap, form: Option<&Form>) -> bool {
    headers.contains_key(header::AUTHORIZATION) || !form.is_some_and(|f| f.has("client_secret"))
}

/// The client's credentials, from exactly one method.
pub fn client_credentials(headers: &HeaderMap, form: &Form) -> Result<ClientCredentials> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let header_value = values.next();
    if values.next().is_some() {
        return Err(Error::invalid_request("more than one Authorization header"));
    }
    let body_secret = form.single("client_secret")?;
    let body_id = form.single("client_id")?;
    match header_value {
        Some(v) => {
            if body_secret.is_some() {
                // RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
                return Err(Error::invalid_request("client credentials in both the Authorization header and the body"));
            }
            let creds = parse_basic_authorization(v.to_str().map_err(|_| Error::InvalidClient)?)?;
            if body_id.is_some_and(|id| id != creds.client_id) {
                return Err(Error::invalid_request("client_id in the body does not match the Authorization header"));
            }
            Ok(creds)
        }
        None => match (body_id, body_secret) {
            (Some(id), Some(secret)) => Ok(ClientCredentials {
                client_id: id.to_owned(),
                secret: zeroize::Zeroizing::new(secret.to_owned()),
                source: None,
            }),
            (None, Some(_)) => Err(Error::invalid_request("client_secret without client_id")),
            // No credentials, or a public client (which Tessera does not have).
            _ => Err(Error::InvalidClient),
        },
    }
}
