//! The HTTP API of DESIGN.md (`kiln serve`), with axum.
//!
//! POST /v1/jobs answers with the result (sync), the event stream (SSE), or 202 + Location
//! (`Prefer: respond-async`). A full queue or a draining worker answers 503 + Retry-After.
//! The answers themselves are built by the HTTP sink ([`crate::sinks::http`]); the status of a
//! finished job follows its result code ([`crate::sinks::status_for`]).

use crate::capacity::Reporter;
use crate::http_server::BodyLimits;
use crate::runtime::{Admission, Lookup, Runtime};
use crate::sinks::http as answer;
use crate::tracectx::TraceContext;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kiln_jobs::{ErrorCode, Event, JobStatus};
use kiln_router_client::WorkerState;
use serde_json::json;
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
        .route(&format!("{}{{*rest}}", crate::sources::signed::PREFIX), crate::sources::signed::route(state.rt.clone()))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(BodyLimits::from_config(&state.rt.config().http), crate::http_server::read_body))
        .layer(axum::middleware::from_fn_with_state(crate::auth::for_config(&state.rt.config().http), crate::auth::require))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|s| s.contains("text/event-stream")))
}

fn wants_async(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|p| p.trim() == "respond-async")))
}

async fn post_job(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let trace = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceContext::child_of);
    let caller = crate::tracectx::Caller {
        route: headers.get("x-kiln-route").and_then(|v| crate::tracectx::route_value(v.as_bytes())),
        cold_start_ms: None,
    };
    let entry = crate::tracectx::with_caller(caller, st.rt.submit(&body[..], Admission::Refuse, trace.as_ref())).await;
    if let Some(r) = entry.result() {
        if r.error_code() == Some(ErrorCode::Overloaded) || !wants_sse(&headers) {
            return answer::result(&r);
        }
    }
    if wants_async(&headers) {
        return answer::accepted(&entry);
    }
    if wants_sse(&headers) {
        return answer::sse(entry.events());
    }
    let result = entry.wait().await;
    answer::result(&result)
}

/// The tenant of the request (bearer token), if any.
type Requester = Option<axum::Extension<crate::auth::Tenant>>;

/// A job by id, as the requesting tenant may see it: another tenant's job is not there
/// (`tenants.rs`).
async fn lookup_for(st: &AppState, id: &str, who: &Requester) -> Option<Lookup> {
    let found = st.rt.lookup(id).await?;
    let owner = match &found {
        Lookup::Live(e) => e.tenant().map(str::to_owned),
        Lookup::Stored(r) => crate::tenants::owner(r).map(str::to_owned),
    };
    crate::tenants::visible(owner.as_deref(), who.as_ref().map(|t| t.0 .0.as_str())).then_some(found)
}

async fn get_job(State(st): State<AppState>, who: Requester, Path(id): Path<String>) -> Response {
    match lookup_for(&st, &id, &who).await {
        Some(Lookup::Live(e)) => match e.result() {
            Some(r) => answer::result(&r),
            None => answer::live(&e),
        },
        Some(Lookup::Stored(r)) => answer::result(&r),
        None => answer::not_found(&id),
    }
}

async fn job_events(State(st): State<AppState>, who: Requester, Path(id): Path<String>) -> Response {
    match lookup_for(&st, &id, &who).await {
        Some(Lookup::Live(e)) => answer::sse(e.events()),
        Some(Lookup::Stored(r)) => answer::sse(futures_util::stream::iter([Event::Result((*r).clone())])),
        None => answer::not_found(&id),
    }
}

async fn delete_job(State(st): State<AppState>, who: Requester, Path(id): Path<String>) -> Response {
    if lookup_for(&st, &id, &who).await.is_none() {
        return answer::not_found(&id);
    }
    match st.rt.cancel(&id) {
        None => answer::not_found(&id),
        Some((e, true)) => {
            let r = e.wait().await;
            // Cancelled, or finished first: either way the final result.
            let code = if r.status == JobStatus::Cancelled { StatusCode::OK } else { StatusCode::CONFLICT };
            answer::result_with(code, &r)
        }
        Some((e, false)) => match e.result() {
            Some(r) => answer::result_with(StatusCode::CONFLICT, &r),
            None => answer::not_found(&id),
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
    crate::scheduler::metrics::render(&snap, &mut text);
    for kind in st.rt.kinds().kinds() {
        kind.render_metrics(&mut text);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
