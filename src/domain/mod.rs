//! Validated types shared by every layer: ids, scopes, clients, claims and the error enum.
pub mod claims;
pub mod client;
pub mod error;
pub mod ids;
pub mod scope;

pub use claims::{AccessClaims, Actor, Audience};
pub use client::{Capability, Client, ClientSecret, NewClient};
pub use error::{Error, Result};
pub use ids::ClientId;
pub use scope::ScopeSet;
