//! The router's HTTP API and lifecycle: `POST /v1/jobs` (placed and forwarded, see
//! [`super::forward`]), `GET /v1/jobs/{id}`, `GET /v1/jobs/{id}/events` and
//! `DELETE /v1/jobs/{id}` (sent to the worker that took the job), `POST /v1/capacity`
//! (also `POST /`, for a `router.url` without a path), `/healthz`, `/readyz`, `/metrics`.

use super::{capacity, forward, RouteState};
use crate::config::Config;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub fn router(st: Arc<RouteState>, max_body: usize) -> Router {
    Router::new()
        .route("/v1/jobs", post(post_job))
        .route("/v1/jobs/{id}", get(get_job).delete(delete_job))
        .route("/v1/jobs/{id}/events", get(job_events))
        .route("/v1/capacity", post(capacity::post_capacity))
        .route("/", post(capacity::post_capacity))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(st)
}

async fn post_job(State(st): State<Arc<RouteState>>, headers: HeaderMap, body: Bytes) -> Response {
    forward::submit(st, headers, body).await
}

async fn get_job(State(st): State<Arc<RouteState>>, Path(id): Path<String>) -> Response {
    let path = format!("/v1/jobs/{id}");
    forward::to_owner(st, reqwest::Method::GET, &id, &path).await
}

async fn job_events(State(st): State<Arc<RouteState>>, Path(id): Path<String>) -> Response {
    let path = format!("/v1/jobs/{id}/events");
    forward::to_owner(st, reqwest::Method::GET, &id, &path).await
}

async fn delete_job(State(st): State<Arc<RouteState>>, Path(id): Path<String>) -> Response {
    let path = format!("/v1/jobs/{id}");
    forward::to_owner(st, reqwest::Method::DELETE, &id, &path).await
}

async fn healthz() -> Response {
    Json(json!({"status": "alive"})).into_response()
}

async fn readyz(State(st): State<Arc<RouteState>>) -> Response {
    if st.ready() {
        (StatusCode::OK, Json(json!({"state": "ready"}))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"state": "warming", "why": "no fresh capacity report yet"}))).into_response()
    }
}

async fn metrics(State(st): State<Arc<RouteState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render()).into_response()
}

/// `kiln route`: serves until SIGTERM or SIGINT. The first stdout line names the bound
/// address (`kiln route listening on http://…`).
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let addr = cfg.http.addr.clone();
    let st = Arc::new(RouteState::new(cfg.route.clone())?);
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let local = listener.local_addr()?;
    println!("kiln route listening on http://{local}");
    info!(%local, policy = ?cfg.route.policy, "routing");
    let watcher = tokio::spawn(st.clone().watch_policy());
    let stop = CancellationToken::new();
    let app = router(st, cfg.http.max_body_bytes);
    let server = tokio::spawn({
        let stop = stop.clone();
        async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await }
    });
    crate::signals::shutdown_signal().await;
    info!("stopping");
    watcher.abort();
    stop.cancel();
    match tokio::time::timeout(std::time::Duration::from_secs(10), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        Err(_) => tracing::warn!("open connections did not close in 10 s; exiting anyway"),
        Ok(Ok(Ok(()))) => {}
    }
    Ok(())
}
