//! What each replica keeps in memory for the hot paths, kept current by the change feed.
pub mod clients;
pub mod feed;
pub mod grants;
pub mod keys;
pub mod revocations;
pub mod tokens;

pub use clients::{ClientDirectory, ClientEntry};
pub use grants::GrantDirectory;
pub use keys::KeyRing;
pub use revocations::RevocationSet;
pub use tokens::TokenCache;
