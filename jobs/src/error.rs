//! One job error type that knows its result code and whether a retry may help.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The result codes of DESIGN.md. Every failed result carries exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidSpec,
    Unsupported,
    InputNotFound,
    InputTooLarge,
    CorruptInput,
    DeadlineExceeded,
    Overloaded,
    TooLongForTier,
    /// A source or output outside what this worker may touch (HTTP 403).
    Forbidden,
    Cancelled,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidSpec,
        ErrorCode::Unsupported,
        ErrorCode::InputNotFound,
        ErrorCode::InputTooLarge,
        ErrorCode::CorruptInput,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Overloaded,
        ErrorCode::TooLongForTier,
        ErrorCode::Forbidden,
        ErrorCode::Cancelled,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidSpec => "invalid_spec",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::InputNotFound => "input_not_found",
            ErrorCode::InputTooLarge => "input_too_large",
            ErrorCode::CorruptInput => "corrupt_input",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::TooLongForTier => "too_long_for_tier",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether the same job may succeed if tried again later, unchanged.
    pub fn retryable_by_default(self) -> bool {
        matches!(self, ErrorCode::Overloaded | ErrorCode::DeadlineExceeded)
    }

    /// Whether a failed result with this code is final for the job id, so that it is stored
    /// and returned again on resubmission (idempotency). Failures caused by the moment
    /// (overload, deadline, cancellation) or by the worker (internal, and `forbidden`, which
    /// depends on this worker's allowlists, not on the job) are not stored.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            ErrorCode::DeadlineExceeded
                | ErrorCode::Overloaded
                | ErrorCode::Cancelled
                | ErrorCode::Internal
                | ErrorCode::Forbidden
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job failure: a code from DESIGN.md, a human message, and whether a retry may help
/// (the Kafka source retries retryable errors with backoff; others go to the DLQ).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct JobError {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
}

impl JobError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        JobError { code, message: message.into(), retryable: code.retryable_by_default() }
    }
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }
    pub fn invalid_spec(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidSpec, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unsupported, message)
    }
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::CorruptInput, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InputTooLarge, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    pub fn cancelled() -> Self {
        Self::new(ErrorCode::Cancelled, "the job was cancelled")
    }
    /// Cancelled because the worker shut down before the job finished: retryable, so a
    /// source that can hand the job to another worker (Kafka) does so instead of answering.
    pub fn shutdown() -> Self {
        Self::new(ErrorCode::Cancelled, "the worker shut down before the job finished; retry it").retryable(true)
    }
    pub fn deadline() -> Self {
        Self::new(ErrorCode::DeadlineExceeded, "the job's deadline passed")
    }
}
