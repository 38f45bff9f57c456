//! Validated types shared by every layer: ids, scopes, clients, claims and the error enum.
pub mod claims;
pub mod client;
pub mod error;
pub mod grant;
pub mod ids;
pub mod scope;

pub use claims::{AccessClaims, Actor, Audience, Lineage};
pub use client::{ActAs, Capability, Client, ClientSecret, ClientUpdate, NewClient};
pub use error::{Error, Result};
pub use grant::{Grant, NewGrant};
pub use ids::ClientId;
pub use scope::ScopeSet;
