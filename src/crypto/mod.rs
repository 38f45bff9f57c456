//! Signing keys, JWT signing and verification, the key-encryption key and client secrets.
pub mod digest;
pub mod jwt;
pub mod kek;
pub mod keys;
pub mod secret;

pub use kek::Kek;
pub use keys::{LoadedKey, SigningAlg};
