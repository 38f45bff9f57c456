//! The error enum mapped exhaustively to gRPC status codes. Server-side failures go out opaque.
use tonic::{Code, Status};

use crate::domain::Error;

pub fn code_of(err: &Error) -> Code {
    match err {
        Error::InvalidRequest(_)
        | Error::InvalidGrant(_)
        | Error::UnsupportedGrantType
        | Error::InvalidScope(_)
        | Error::InvalidTarget(_)
        | Error::UnsupportedTokenType => Code::InvalidArgument,
        Error::InvalidClient => Code::Unauthenticated,
        Error::UnauthorizedClient(_) | Error::AccessDenied(_) | Error::PolicyDenied(_) => Code::PermissionDenied,
        Error::NotFound(_) => Code::NotFound,
        Error::Throttled { .. } => Code::ResourceExhausted,
        Error::Unavailable(_) => Code::Unavailable,
        Error::Internal(_) => Code::Internal,
    }
}

/// Status message: the OAuth error code and a safe description, e.g. "invalid_scope: …".
pub fn to_status(err: Error, operation: &str) -> Status {
    err.log_if_server_error(operation);
    let mut status = Status::new(code_of(&err), format!("{}: {}", err.code(), err.description()));
    if let Error::Throttled { retry_after_secs } = err
        && let Ok(v) = retry_after_secs.to_string().parse()
    {
        status.metadata_mut().insert("retry-after", v);
    }
    status
}
