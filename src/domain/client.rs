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

/// Whom a client may act for (token exchange).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ActAs {
    /// No token exchange: `unauthorized_client`.
    #[default]
    None,
    /// Any subject of the client's own tenant (partner-owned users).
    Tenant,
    /// Only subjects with an active grant for this client (platform users who enabled it).
    Granted,
}

impl ActAs {
    pub fn as_str(self) -> &'static str {
        match self {
            ActAs::None => "none",
            ActAs::Tenant => "tenant",
            ActAs::Granted => "granted",
        }
    }
}

impl FromStr for ActAs {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "none" => Ok(ActAs::None),
            "tenant" => Ok(ActAs::Tenant),
            "granted" => Ok(ActAs::Granted),
            _ => Err(Error::invalid_request("act-as must be none, tenant or granted")),
        }
    }
}

impl fmt::Display for ActAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subject (end-user id): 1–255 characters of `A-Z a-z 0-9 - . _ ~ : @ + | = /`, which covers
/// numeric ids, UUIDs, e-mail addresses and `provider|id` forms; anything else is garbage.
pub fn parse_subject(raw: &str) -> Result<String, Error> {
    let ok =
        !raw.is_empty() && raw.len() <= 255 && raw.chars().all(|c| is_id_char(c) || matches!(c, '+' | '|' | '=' | '/'));
    if !ok {
        return Err(Error::invalid_request("malformed subject: 1-255 characters of A-Z a-z 0-9 - . _ ~ : @ + | = /"));
    }
    Ok(raw.to_owned())
}

/// An account id within a grant: the same alphabet as subjects.
pub fn parse_account(raw: &str) -> Result<String, Error> {
    parse_subject(raw).map_err(|_| Error::invalid_request("malformed account"))
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

/// Changes to a client's policy (None = unchanged).
#[derive(Clone, Debug, Default)]
pub struct ClientUpdate {
    pub act_as: Option<ActAs>,
    pub access_token_ttl: Option<i64>,
    pub user_token_ttl: Option<i64>,
    pub scopes: Option<ScopeSet>,
    pub audiences: Option<Vec<String>>,
}

impl ClientUpdate {
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(a) = &self.audiences {
            for aud in a {
                parse_audience(aud)?;
            }
        }
        validate_ttls(self.access_token_ttl, self.user_token_ttl)
    }
}

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
    /// Access-token lifetime in seconds (0 = the server's default).
    pub access_token_ttl: i64,
    pub act_as: ActAs,
    /// User-token lifetime in seconds (0 = the server's default).
    pub user_token_ttl: i64,
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
    pub act_as: ActAs,
    /// None = the server's default.
    pub user_token_ttl: Option<i64>,
}

impl NewClient {
    pub fn validate(&self) -> Result<(), Error> {
        if self.name.trim().is_empty() || self.name.len() > 200 || self.name.chars().any(char::is_control) {
            return Err(Error::invalid_request("name must be 1-200 printable characters"));
        }
        if let Some(t) = &self.tenant {
            parse_tenant(t)?;
        }
        for a in &self.audiences {
            parse_audience(a)?;
        }
        validate_ttls(self.access_token_ttl, self.user_token_ttl)
    }
}

/// Lifetimes an operator may set: access tokens up to a day, user tokens up to an hour (they
/// are meant to be short; the partner exchanges again).
pub fn validate_ttls(access: Option<i64>, user: Option<i64>) -> Result<(), Error> {
    if access.is_some_and(|t| !(1..=86_400).contains(&t)) {
        return Err(Error::invalid_request("access token lifetime must be 1-86400 seconds"));
    }
    if user.is_some_and(|t| !(1..=3_600).contains(&t)) {
        return Err(Error::invalid_request("user token lifetime must be 1-3600 seconds"));
    }
    Ok(())
}
