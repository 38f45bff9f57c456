//! Integration tests: one binary, real servers on loopback, real SQLite and PostgreSQL.
mod helpers;

mod bad_input;
mod client_auth;
mod exchange;
mod faults;
mod feed;
mod floods;
mod grpc_api;
mod hostile;
mod interop;
mod keys_and_tokens;
mod operations;
mod secrets;
mod support_pg;
mod support_proxy;
mod token_flow;
