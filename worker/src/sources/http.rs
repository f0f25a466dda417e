//! The HTTP API of DESIGN.md (`kiln serve`), with axum.
//!
//! POST /v1/jobs answers with the result (sync), the event stream (SSE), or 202 + Location
//! (`Prefer: respond-async`). A full queue or a draining worker answers 503 + Retry-After.
//! The HTTP status of a finished job follows its result code ([`status_for`]).

use crate::capacity::Reporter;
use crate::runtime::{Admission, Lookup, Runtime};
use crate::tracectx::TraceContext;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use kiln_jobs::{ErrorCode, Event, JobResult, JobStatus};
use kiln_router_client::WorkerState;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub rt: Arc<Runtime>,
    pub reporter: Arc<Reporter>,
}

pub fn router(state: AppState) -> Router {
    let max_body = state.rt.config().http.max_body_bytes;
    Router::new()
        .route("/v1/jobs", axum::routing::post(post_job))
        .route("/v1/jobs/{id}", get(get_job).delete(delete_job))
        .route("/v1/jobs/{id}/events", get(job_events))
        .route("/v1/capacity", get(capacity))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(crate::auth::for_config(&state.rt.config().http), crate::auth::require))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// The HTTP status for a finished job.
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

fn result_response(result: &JobResult) -> Response {
    let status = status_for(result);
    let mut resp = (status, Json(result)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|s| s.contains("text/event-stream")))
}

fn wants_async(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|p| p.trim() == "respond-async")))
}

fn sse(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    let stream = events.map(|e| {
        let data = serde_json::to_string(&e).unwrap_or_else(|_| "{}".into());
        Ok::<_, Infallible>(SseEvent::default().event(e.name()).data(data))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

fn not_found(id: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"id": id, "error": {"message": "no such job"}}))).into_response()
}

async fn post_job(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let trace = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceContext::child_of);
    let entry = st.rt.submit_bytes_traced(&body, Admission::Refuse, trace.as_ref()).await;
    if let Some(r) = entry.result() {
        if r.error_code() == Some(ErrorCode::Overloaded) || !wants_sse(&headers) {
            return result_response(&r);
        }
    }
    if wants_async(&headers) {
        let location = format!("/v1/jobs/{}", entry.id);
        let mut resp =
            (StatusCode::ACCEPTED, Json(json!({"id": entry.id, "kind": entry.kind, "status": entry.status()}))).into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }
    if wants_sse(&headers) {
        return sse(entry.events());
    }
    let result = entry.wait().await;
    result_response(&result)
}

async fn get_job(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match st.rt.lookup(&id).await {
        Some(Lookup::Live(e)) => match e.result() {
            Some(r) => result_response(&r),
            None => Json(json!({"id": e.id, "kind": e.kind, "status": e.status()})).into_response(),
        },
        Some(Lookup::Stored(r)) => result_response(&r),
        None => not_found(&id),
    }
}

async fn job_events(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match st.rt.lookup(&id).await {
        Some(Lookup::Live(e)) => sse(e.events()),
        Some(Lookup::Stored(r)) => sse(futures_util::stream::iter([Event::Result((*r).clone())])),
        None => not_found(&id),
    }
}

async fn delete_job(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match st.rt.cancel(&id) {
        None => not_found(&id),
        Some((e, true)) => {
            let r = e.wait().await;
            // Cancelled, or finished first: either way the final result.
            let code = if r.status == JobStatus::Cancelled { StatusCode::OK } else { StatusCode::CONFLICT };
            (code, Json(&*r)).into_response()
        }
        Some((e, false)) => match e.result() {
            Some(r) => (StatusCode::CONFLICT, Json(&*r)).into_response(),
            None => not_found(&id),
        },
    }
}

async fn capacity(State(st): State<AppState>) -> Response {
    Json(st.reporter.report(&st.rt)).into_response()
}

async fn healthz() -> Response {
    Json(json!({"status": "alive"})).into_response()
}

async fn readyz(State(st): State<AppState>) -> Response {
    let state = st.rt.state();
    let code = if state == WorkerState::Ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({"state": state}))).into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    let snap = st.rt.scheduler().snapshot();
    st.rt.metrics.queue_depth.set(snap.queued as i64);
    for name in st.rt.kinds().names() {
        let running = snap.by_kind.get(name).map(|k| k.0).unwrap_or(0);
        st.rt.metrics.running.with_label_values(&[name]).set(running as i64);
    }
    let mut text = st.rt.metrics.render();
    for kind in st.rt.kinds().kinds() {
        kind.render_metrics(&mut text);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
