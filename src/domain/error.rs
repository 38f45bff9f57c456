//! One error type for every use case. Its variants are the OAuth error codes of RFC 6749 §5.2,
//! RFC 7009 §2.2.1 and RFC 8693 §2.2.2, plus the few non-OAuth outcomes of the admin surface.
//! Each transport maps it exhaustively (src/grpc/status.rs, src/http/error.rs).
use std::borrow::Cow;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed, missing or repeated parameter.
    #[error("invalid_request: {0}")]
    InvalidRequest(Cow<'static, str>),
    /// Client authentication failed (unknown client, wrong secret, disabled client, no credentials).
    #[error("invalid_client")]
    InvalidClient,
    /// The presented grant (subject token, actor token) is invalid, expired or revoked.
    #[error("invalid_grant: {0}")]
    InvalidGrant(Cow<'static, str>),
    /// The client is authenticated but may not use this grant or operation.
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(Cow<'static, str>),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// The subject or actor token is unacceptable by policy (no grant, another tenant, not a
    /// user token). RFC 8693 §2.2.2 makes this `invalid_request` on the wire; gRPC says
    /// PERMISSION_DENIED, its code for "not allowed".
    #[error("invalid_request (policy): {0}")]
    PolicyDenied(Cow<'static, str>),
    /// Requested scope is malformed or exceeds what the client may have.
    #[error("invalid_scope: {0}")]
    InvalidScope(Cow<'static, str>),
    /// Requested audience/resource is not one the client may address (RFC 8693 §2.2.2, RFC 8707 §2).
    #[error("invalid_target: {0}")]
    InvalidTarget(Cow<'static, str>),
    /// RFC 7009 §2.2.1.
    #[error("unsupported_token_type")]
    UnsupportedTokenType,
    /// The caller lacks the capability (admin surface).
    #[error("access_denied: {0}")]
    AccessDenied(Cow<'static, str>),
    /// Admin surface: the named object does not exist.
    #[error("not_found: {0}")]
    NotFound(Cow<'static, str>),
    /// Too many failed attempts; retry after the given number of seconds.
    #[error("slow_down")]
    Throttled { retry_after_secs: u64 },
    /// The database is unreachable; the call may succeed later.
    #[error("temporarily_unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else. Goes out opaque, into the log with its cause chain.
    #[error("server_error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn invalid_request(msg: impl Into<Cow<'static, str>>) -> Self {
        Self::InvalidRequest(msg.into())
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// The RFC error code sent on the wire.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) | Error::PolicyDenied(_) => "invalid_request",
            Error::InvalidClient => "invalid_client",
            Error::InvalidGrant(_) => "invalid_grant",
            Error::UnauthorizedClient(_) => "unauthorized_client",
            Error::UnsupportedGrantType => "unsupported_grant_type",
            Error::InvalidScope(_) => "invalid_scope",
            Error::InvalidTarget(_) => "invalid_target",
            Error::UnsupportedTokenType => "unsupported_token_type",
            Error::AccessDenied(_) => "access_denied",
            Error::NotFound(_) => "not_found",
            Error::Throttled { .. } => "slow_down",
            Error::Unavailable(_) => "temporarily_unavailable",
            Error::Internal(_) => "server_error",
        }
    }

    /// A description safe to show the caller: never a cause chain, secret or token.
    pub fn description(&self) -> Cow<'static, str> {
        match self {
            Error::InvalidRequest(m)
            | Error::PolicyDenied(m)
            | Error::InvalidGrant(m)
            | Error::UnauthorizedClient(m)
            | Error::InvalidScope(m)
            | Error::InvalidTarget(m)
            | Error::AccessDenied(m)
            | Error::NotFound(m) => m.clone(),
            Error::InvalidClient => "client authentication failed".into(),
            Error::UnsupportedGrantType => "the grant type is not supported".into(),
            Error::UnsupportedTokenType => "the token type is not supported".into(),
            Error::Throttled { .. } => "too many failed attempts; retry later".into(),
            Error::Unavailable(_) => "the service is temporarily unavailable".into(),
            Error::Internal(_) => "internal error".into(),
        }
    }

    /// Logs server-side failures with their full cause chain (never sent to the caller).
    pub fn log_if_server_error(&self, operation: &str) {
        match self {
            Error::Internal(e) => {
                tracing::error!(operation, error = format!("{e:#}"), "internal error")
            }
            Error::Unavailable(e) => tracing::warn!(operation, error = format!("{e:#}"), "dependency unavailable"),
            _ => {}
        }
    }
}

impl From<sea_orm::DbErr> for Error {
    fn from(err: sea_orm::DbErr) -> Self {
        use sea_orm::DbErr;
        match &err {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => Error::Unavailable(err.into()),
            DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e)) | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e))
                if e.as_database_error().and_then(|d| d.code()).is_some_and(|c| {
                    // PostgreSQL: connection exceptions (08…), operator intervention (57P01 admin
                    // shutdown, 57P02 crash shutdown, 57P03 cannot connect now), too many
                    // connections (53300). SQLite: busy (5) and locked (6) incl. extended codes.
                    c.starts_with("08") || c.starts_with("57P") || c == "53300" || {
                        let n: i64 = c.parse().unwrap_or(-1);
                        n >= 0 && (n & 0xff == 5 || n & 0xff == 6)
                    }
                }) =>
            {
                Error::Unavailable(err.into())
            }
            _ => {
                // sqlx reports a dropped or refused connection as an I/O error inside Exec/Query.
                let text = err.to_string();
                if text.contains("Connection refused")
                    || text.contains("connection closed")
                    || text.contains("PoolTimedOut")
                    || text.contains("pool timed out")
                    || text.contains("io error")
                    || text.contains("error communicating with database")
                {
                    Error::Unavailable(err.into())
                } else {
                    Error::Internal(err.into())
                }
            }
        }
    }
}
