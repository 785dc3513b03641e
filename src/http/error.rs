//! Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the HTTP
//! statuses OpenAI's clients act on (400, 401, 404, 413, 429, 503): every engine error mapped
//! here, beside the gRPC mapping of the same errors (`grpc/status.rs`), so the two transports
//! agree on what is the caller's fault.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::engine::call::EngineError;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: invalid_request_error, authentication_error, not_found_error,
    /// rate_limit_error, server_error.
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(String::from),
            code: None,
        }
    }

    /// OpenAI's answer to a missing or wrong key.
    pub fn unauthorized(refusal: crate::auth::Refusal) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: refusal.message().into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "not_found_error",
            param: None,
            code: Some("model_not_found"),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let message = error.to_string();
        let (status, kind, param, code) = match &error {
            EngineError::UnknownModel(_) => {
                (StatusCode::NOT_FOUND, "not_found_error", Some("model"), Some("model_not_found"))
            }
            EngineError::WrongTask { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", Some("model"), None)
            }
            EngineError::InvalidInput { .. } | EngineError::Invalid(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", None, None)
            }
            EngineError::InputTooLong { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("input"),
                Some("context_length_exceeded"),
            ),
            EngineError::Overloaded { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", None, None)
            }
            EngineError::OutOfMemory { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", Some("input"), None)
            }
            EngineError::Loading(_) | EngineError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error", None, None)
            }
            EngineError::DeadlineExceeded => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error", None, Some("timeout"))
            }
            EngineError::Model(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, None)
            }
        };
        Self { status, message, kind, param: param.map(String::from), code }
    }
}

impl From<JsonRejection> for ApiError {
    /// A body that is not JSON, or not the route's shape: serde's message names the field.
    fn from(rejection: JsonRejection) -> Self {
        let status = match &rejection {
            JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self { status, ..ApiError::invalid(None, rejection.body_text()) }
    }
}

impl ApiError {
    /// The `error` object of OpenAI's error body (a stream's error event carries it too).
    pub fn body(&self) -> serde_json::Value {
        json!({
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.body()});
        (self.status, Json(body)).into_response()
    }
}

/// Any route this API does not have.
pub async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError {
        code: Some("unknown_url"),
        ..ApiError::not_found(format!("no route {}", uri.path()))
    }
}
