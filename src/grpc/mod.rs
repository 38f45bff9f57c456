//! gRPC adapters (tonic): decode → one service call → encode. Health and reflection are served
//! beside TokenService and AdminService.
pub mod admin;
pub mod status;
pub mod token;

use tonic::Request;

use crate::domain::Error;
use crate::service::auth::parse_basic_authorization;
use crate::service::{ClientCredentials, ExchangeAuth};

#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]
pub mod pb {
    tonic::include_proto!("tessera.v1");

    /// Encoded descriptor set for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tessera_descriptor.bin"));
}

/// Largest request message accepted; OAuth requests are tiny.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The one `authorization` entry of the call's metadata. Several are refused rather than the
/// first taken, as on REST (a client MUST NOT use more than one authentication method, RFC 6749
/// §2.3), so a proxy and a client cannot disagree on who is calling.
fn authorization<T>(req: &Request<T>) -> Result<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>, Error> {
    let mut values = req.metadata().get_all("authorization").iter();
    let value = values.next().ok_or(Error::InvalidClient)?;
    if values.next().is_some() {
        return Err(Error::invalid_request("more than one authorization entry"));
    }
    Ok(value)
}

/// `authorization: Basic base64(client_id:client_secret)` from the call's metadata.
pub fn credentials<T>(req: &Request<T>) -> Result<ClientCredentials, Error> {
    let text = authorization(req)?.to_str().map_err(|_| Error::InvalidClient)?;
    Ok(parse_basic_authorization(text)?.from(req.remote_addr().map(|a| a.ip())))
}

/// For ExchangeForUser: `Basic` credentials, or `Bearer <the caller's own client access token>`.
pub fn exchange_auth<T>(req: &Request<T>) -> Result<ExchangeAuth, Error> {
    let text = authorization(req)?.to_str().map_err(|_| Error::InvalidClient)?.trim();
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(ExchangeAuth { credentials: None, actor_token: Some(token.trim().to_owned()) })
        }
        _ => Ok(ExchangeAuth {
            credentials: Some(parse_basic_authorization(text)?.from(req.remote_addr().map(|a| a.ip()))),
            actor_token: None,
        }),
    }
}
