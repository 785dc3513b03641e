//! Every error a call can end with, turned into a gRPC status in this one place: the engine's
//! errors by kind, and the transport's own refusals (a message over the size limit, bytes that
//! do not decode) rewritten to INVALID_ARGUMENT with a message that names the limit.

use tonic::{Code, Status, codegen::http};

use crate::{engine::call::EngineError, jobs::service::JobError};

impl From<EngineError> for Status {
    fn from(error: EngineError) -> Self {
        let code = match &error {
            EngineError::UnknownModel(_) => Code::NotFound,
            EngineError::WrongTask { .. } => Code::FailedPrecondition,
            EngineError::Loading(_) | EngineError::Unavailable(_) => Code::Unavailable,
            EngineError::InvalidInput { .. }
            | EngineError::Invalid(_)
            | EngineError::InputTooLong { .. } => Code::InvalidArgument,
            EngineError::Overloaded { .. } | EngineError::OutOfMemory { .. } => {
                Code::ResourceExhausted
            }
            EngineError::DeadlineExceeded => Code::DeadlineExceeded,
            EngineError::Model(_) => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}

impl From<JobError> for Status {
    fn from(error: JobError) -> Self {
        match error {
            JobError::NotFound(_) => Status::not_found(error.to_string()),
            JobError::Invalid(message) => Status::invalid_argument(message),
            JobError::Engine(engine) => Status::from(engine),
            JobError::Store(store) => Status::unavailable(store.to_string()),
        }
    }
}

/// Rewrites tonic's own refusals of a request, which happen before any handler runs: an
/// oversized message (OUT_OF_RANGE) and undecodable bytes such as malformed UTF-8 in a string
/// (INTERNAL) both become INVALID_ARGUMENT, naming `server.limits.max_message_bytes` for the
/// first. Other responses pass untouched.
pub fn rewrite_transport_status<B>(
    max_message_bytes: usize,
) -> impl Fn(http::Response<B>) -> http::Response<B> + Clone {
    move |mut response| {
        let Some(status) = Status::from_header_map(response.headers()) else { return response };
        let message = status.message();
        let rewritten = match status.code() {
            Code::OutOfRange if message.contains("message length too large") => {
                Status::invalid_argument(format!(
                    "message over server.limits.max_message_bytes ({max_message_bytes} bytes): {message}"
                ))
            }
            Code::Internal if message.starts_with("failed to decode Protobuf message") => {
                Status::invalid_argument(format!("malformed request: {message}"))
            }
            _ => return response,
        };
        let headers = response.headers_mut();
        headers.remove("grpc-status");
        headers.remove("grpc-message");
        headers.remove("grpc-status-details-bin");
        let _ = rewritten.add_header(headers);
        response
    }
}

/// The call's deadline from its `grpc-timeout` header (`1m` is one millisecond).
pub fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    use std::time::Duration;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_engine_error_has_its_code() {
        let cases = [
            (EngineError::UnknownModel("x".into()), Code::NotFound),
            (
                EngineError::WrongTask { model: "m".into(), task: "a".into(), wanted: "b".into() },
                Code::FailedPrecondition,
            ),
            (EngineError::Loading("m".into()), Code::Unavailable),
            (
                EngineError::InvalidInput { index: 1, message: "empty".into() },
                Code::InvalidArgument,
            ),
            (EngineError::InputTooLong { index: 0, tokens: 9, limit: 8 }, Code::InvalidArgument),
            (EngineError::Overloaded { queued: 4 }, Code::ResourceExhausted),
            (EngineError::DeadlineExceeded, Code::DeadlineExceeded),
            (EngineError::Unavailable("stopping".into()), Code::Unavailable),
            (EngineError::OutOfMemory { index: 0, message: "oom".into() }, Code::ResourceExhausted),
            (EngineError::Model("boom".into()), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error.clone()).code(), code, "{error}");
        }
    }

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(grpc_timeout(&metadata), None);
        for (text, expected) in [
            ("1m", std::time::Duration::from_millis(1)),
            ("2S", std::time::Duration::from_secs(2)),
            ("1H", std::time::Duration::from_secs(3600)),
            ("500u", std::time::Duration::from_micros(500)),
        ] {
            metadata.insert("grpc-timeout", text.parse().unwrap());
            assert_eq!(grpc_timeout(&metadata), Some(expected));
        }
    }
}
