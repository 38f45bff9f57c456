//! Tessera: OAuth2 client credentials (RFC 6749 §4.4), token exchange for users (RFC 8693),
//! introspection (RFC 7662) and revocation (RFC 7009) over gRPC and REST, on SQLite or PostgreSQL.
//! Layers (data flows down): grpc/http adapters → service (use cases) → domain, crypto, state →
//! storage. See ../shared/ARCHITECTURE.md.
// No unsafe code but the SQLite VFS of `storage::wal_buffer` (a C interface), which allows it.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod service;
pub mod shards;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod tls;
