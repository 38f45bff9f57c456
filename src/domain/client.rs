//! A client (partner application or internal service) as the core sees it.
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use super::error::Error;
use super::ids::{ClientId, is_id_char};
use super::scope::ScopeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// May introspect any token (resource servers).
    Introspect,
    /// May revoke any token.
    Revoke,
    /// May call AdminService.
    Admin,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Introspect => "introspect",
            Capability::Revoke => "revoke",
            Capability::Admin => "admin",
        }
    }
}

impl FromStr for Capability {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "introspect" => Ok(Capability::Introspect),
            "revoke" => Ok(Capability::Revoke),
            "admin" => Ok(Capability::Admin),
            _ => Err(Error::invalid_request(format!(
                "unknown capability (expected introspect, revoke or admin): {}",
                s.escape_debug()
            ))),
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tenant name: 1–128 id characters.
pub fn parse_tenant(raw: &str) -> Result<String, Error> {
    if raw.is_empty() || raw.len() > 128 || !raw.chars().all(is_id_char) {
        return Err(Error::invalid_request("malformed tenant"));
    }
    Ok(raw.to_owned())
}

/// An audience (RFC 7519 `aud`, RFC 8707 `resource`): 1–256 visible ASCII characters.
pub fn parse_audience(raw: &str) -> Result<String, Error> {
    if raw.is_empty() || raw.len() > 256 || !raw.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(Error::invalid_request("malformed audience"));
    }
    Ok(raw.to_owned())
}

pub const DEFAULT_TENANT: &str = "default";

#[derive(Clone, Debug)]
pub struct ClientSecret {
    pub secret_id: String,
    /// argon2id PHC string.
    pub hash: String,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct Client {
    pub client_id: ClientId,
    pub name: String,
    pub tenant: String,
    pub scopes: ScopeSet,
    pub audiences: Vec<String>,
    pub capabilities: BTreeSet<Capability>,
    /// Access-token lifetime in seconds.
    pub access_token_ttl: i64,
    pub disabled: bool,
    /// Tokens issued before this instant (unix ms) are inactive; 0 = none.
    pub tokens_revoked_before_ms: i64,
    pub created_at: i64,
    pub secrets: Vec<ClientSecret>,
}

impl Client {
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// What an operator asks for when creating a client; validated before it reaches storage.
#[derive(Clone, Debug, Default)]
pub struct NewClient {
    pub name: String,
    pub tenant: Option<String>,
    pub scopes: ScopeSet,
    pub audiences: Vec<String>,
    pub capabilities: BTreeSet<Capability>,
    /// None = the server's default.
    pub access_token_ttl: Option<i64>,
}

impl NewClient {
    pub fn validate(&self) -> Result<(), Error> {
        if self.name.trim().is_empty()
            || self.name.len() > 200
            || self.name.chars().any(char::is_control)
        {
            return Err(Error::invalid_request(
                "name must be 1-200 printable characters",
            ));
        }
        if let Some(t) = &self.tenant {
            parse_tenant(t)?;
        }
        for a in &self.audiences {
            parse_audience(a)?;
        }
        if let Some(ttl) = self.access_token_ttl
            && !(1..=86_400).contains(&ttl)
        {
            return Err(Error::invalid_request(
                "access token lifetime must be 1-86400 seconds",
            ));
        }
        Ok(())
    }
}
