//! The error enum mapped exhaustively to gRPC status codes. Server-side failures go out opaque.
use http::HeaderValue;
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

/// gRPC's status code table (grpc/grpc, doc/statuscodes.md) gives RESOURCE_EXHAUSTED for "sent or
/// received message was larger than configured limit" and lists OUT_OF_RANGE among the codes the
/// library never generates; tonic answers a request over `max_decoding_message_size` with
/// OUT_OF_RANGE. Tessera's own errors never use OUT_OF_RANGE (`code_of`), so a response carrying it
/// is tonic's: it goes out as RESOURCE_EXHAUSTED, with tonic's message. Such errors are
/// trailers-only responses, their status in the headers; successes carry theirs in the trailers.
pub fn size_limit_as_resource_exhausted<B>(mut resp: http::Response<B>) -> http::Response<B> {
    if resp.headers().get("grpc-status").is_some_and(|code| code == "11") {
        resp.headers_mut().insert("grpc-status", HeaderValue::from_static("8"));
    }
    resp
}
