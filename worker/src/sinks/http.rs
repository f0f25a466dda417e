//! The HTTP API's answers: a result as JSON with its status, the event stream as SSE, the 202
//! of an async submission, and 404 for an unknown job.

use super::{retry_after, status_for};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt};
use kiln_jobs::{Event, JobResult};
use serde_json::json;
use std::convert::Infallible;

use crate::jobtable::JobEntry;

/// A finished job: the result as the body, the status from its code, `Retry-After` on 503.
pub fn result(result: &JobResult) -> Response {
    let status = status_for(result);
    let mut resp = (status, Json(result)).into_response();
    if let Some(secs) = retry_after(status) {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
    }
    resp
}

/// A result with a status chosen by the caller (DELETE answers 200 or 409 by what happened).
pub fn result_with(status: StatusCode, result: &JobResult) -> Response {
    (status, Json(result)).into_response()
}

/// The status of a job that is still live.
pub fn live(entry: &JobEntry) -> Response {
    Json(json!({"id": entry.id, "kind": entry.kind, "status": entry.status()})).into_response()
}

/// `202 Accepted` with the job's `Location` (`Prefer: respond-async`).
pub fn accepted(entry: &JobEntry) -> Response {
    let location = format!("/v1/jobs/{}", entry.id);
    let mut resp =
        (StatusCode::ACCEPTED, Json(json!({"id": entry.id, "kind": entry.kind, "status": entry.status()}))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A job's events as Server-Sent Events, one `event:` per kind of event.
pub fn sse(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    let stream = events.map(|e| {
        let data = serde_json::to_string(&e).unwrap_or_else(|_| "{}".into());
        Ok::<_, Infallible>(SseEvent::default().event(e.name()).data(data))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// No job with this id, live or stored.
pub fn not_found(id: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"id": id, "error": {"message": "no such job"}}))).into_response()
}
