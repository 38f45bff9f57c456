//! JWT access-token claims (RFC 9068 §2.2) plus Tessera's `tenant`.
use serde::{Deserialize, Serialize};

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn from_vec(mut auds: Vec<String>) -> Self {
        if auds.len() == 1 { Audience::One(auds.remove(0)) } else { Audience::Many(auds) }
    }

    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a.clone()],
            Audience::Many(v) => v.clone(),
        }
    }
}

/// RFC 8693 §4.1 actor: who is acting, nested for delegation chains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

/// Where an exchanged token came from, so revoking any origin deactivates it: the grants it was
/// minted under, and every token it was derived from as `[client_id, jti]` (the actor token
/// that authenticated the exchange, the re-exchanged user token, and their own parents).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<(String, String)>,
}

impl Lineage {
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty() && self.parents.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Lineage::is_empty")]
    pub lineage: Lineage,
}

impl Actor {
    /// The clients in an actor chain, outermost first.
    pub fn chain(&self) -> Vec<&str> {
        let mut out = vec![self.sub.as_str()];
        let mut cur = self.act.as_deref();
        while let Some(a) = cur {
            out.push(a.sub.as_str());
            cur = a.act.as_deref();
        }
        out
    }
}

impl AccessClaims {
    /// A user token (RFC 8693 impersonation result) carries `act`; a client token does not.
    pub fn is_user_token(&self) -> bool {
        self.act.is_some()
    }

    pub fn scopes(&self) -> Vec<String> {
        self.scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }
}
