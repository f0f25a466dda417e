//! Where results and events go, one sink per transport, beside the sources they answer:
//! HTTP responses and SSE ([`http`]), Kafka results, events and dead letters ([`kafka`]), Lambda
//! responses and NDJSON streams ([`lambda`]), and JSONL on stdout ([`stdout`]).
//!
//! Every sink that speaks HTTP status codes (the HTTP API, Lambda's function-URL answers) takes
//! them from one mapping, [`status_for`].

pub mod http;
pub mod kafka;
pub mod lambda;
pub mod stdout;

use axum::http::StatusCode;
use kiln_jobs::{ErrorCode, JobResult};

/// The HTTP status of a finished job, from its result code (ARCHITECTURE.md lists it).
pub fn status_for(result: &JobResult) -> StatusCode {
    match result.error_code() {
        None => StatusCode::OK,
        Some(code) => match code {
            ErrorCode::InvalidSpec => StatusCode::BAD_REQUEST,
            ErrorCode::InputTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unsupported
            | ErrorCode::InputNotFound
            | ErrorCode::CorruptInput
            | ErrorCode::TooLongForTier => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Cancelled => StatusCode::CONFLICT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        },
    }
}

/// Seconds a client should wait before retrying a result with this status (`Retry-After`).
pub fn retry_after(status: StatusCode) -> Option<&'static str> {
    (status == StatusCode::SERVICE_UNAVAILABLE).then_some("1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_jobs::{JobError, WorkerInfo};

    fn failed(code: ErrorCode) -> JobResult {
        let w = WorkerInfo { id: "w".into(), tier: "container".into(), accel: "cpu".into() };
        JobResult::failed("j".into(), "thumbnail".into(), &JobError::new(code, "x"), w)
    }

    #[test]
    fn every_code_has_its_status() {
        let cases = [
            (ErrorCode::InvalidSpec, 400),
            (ErrorCode::InputTooLarge, 413),
            (ErrorCode::Unsupported, 422),
            (ErrorCode::InputNotFound, 422),
            (ErrorCode::CorruptInput, 422),
            (ErrorCode::TooLongForTier, 422),
            (ErrorCode::Forbidden, 403),
            (ErrorCode::DeadlineExceeded, 504),
            (ErrorCode::Overloaded, 503),
            (ErrorCode::Cancelled, 409),
            (ErrorCode::Internal, 500),
        ];
        for (code, status) in cases {
            let s = status_for(&failed(code));
            assert_eq!(s.as_u16(), status, "{code}");
            assert_eq!(retry_after(s).is_some(), status == 503, "{code}");
        }
    }
}
