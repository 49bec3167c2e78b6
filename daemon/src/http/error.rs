//! Errors in OpenAI's JSON shape, `{"error": {"message", "type", "param", "code"}}`, with
//! the HTTP status that says whose fault it is.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::label::live::LiveError;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<&'static str>,
    /// A short machine-readable reason (`invalid_api_key`, `model_not_found`, …).
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// A request that ran past the service's `limit` (the whole answer, or the rest of a
    /// stream).
    pub fn timed_out(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the request took longer than this service's limit of {} s",
                limit.as_secs()
            ),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl From<LiveError> for ApiError {
    fn from(e: LiveError) -> Self {
        let message = e.to_string();
        match e {
            LiveError::BadOptions(_) => Self::bad_request(message),
            LiveError::Unreadable(_) => {
                Self::bad_request(format!("unsupported or unreadable audio: {message}"))
                    .param("file")
                    .code("invalid_audio")
            }
            LiveError::TooLong(_) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, message).code("audio_too_long")
            }
            LiveError::Busy(_) | LiveError::Stopped => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
            }
            LiveError::Failed(_) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                // Shown without credentials, should a message quote a URL.
                "message": crate::store::redacted(&self.message),
                "type": self.kind(),
                "param": self.param,
                "code": self.code,
            }
        });
        (self.status, Json(body)).into_response()
    }
}
