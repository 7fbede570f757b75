//! The error body of every non-2xx response.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Machine-readable error class; the HTTP status follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a value is out of range (400).
    InvalidRequest,
    /// The named object does not exist (404).
    NotFound,
    /// The object is in a state that forbids the operation (409).
    Conflict,
    /// The host cannot do this right now: missing kernel/image, no usable VMM (503).
    Unavailable,
    /// A bug or an unexpected failure of the host (500).
    Internal,
    /// A configured quota is full: too many live VMs, instances or ports (429). The message
    /// names the limit, its value and the `config.toml` key that raises it.
    LimitReached,
    /// A disk has no room: the host's free disk under the Aegis home would drop below the
    /// configured reserve, or a guest's disk is full for a file write (507).
    InsufficientStorage,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
            ErrorCode::LimitReached => 429,
            ErrorCode::InsufficientStorage => 507,
        }
    }
}

/// `{"error": {"code": "...", "message": "..."}}`. `message` is one line for a human: what
/// happened, to what, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            error: ErrorBody {
                code,
                message: message.into(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error.message)
    }
}

impl std::error::Error for ApiError {}

/// An error and its sources on one line, `outer: inner: root`: what a client shows and what
/// the daemon records as a cause.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
