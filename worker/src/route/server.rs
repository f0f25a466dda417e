//! The router's HTTP API and lifecycle: `POST /v1/jobs` (placed and forwarded, see
//! [`super::forward`]), `GET /v1/jobs/{id}`, `GET /v1/jobs/{id}/events` and
//! `DELETE /v1/jobs/{id}` (sent to the worker that took the job), `POST /v1/capacity`
//! (also `POST /`, for a `router.url` without a path), `/healthz`, `/readyz`, `/metrics`.
//!
//! Authentication is `kiln serve`'s ([`crate::auth`]): the same `http.tokens`, the same
//! open paths, the same refusal to serve a non-loopback address without tokens. Capacity
//! reports need a token too (workers send `router.token`). The caller's `Authorization`
//! is passed on to the container worker, which checks it against the same tokens and so
//! knows the same tenant; the tenant also feeds the policy's tenant pins.

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

pub fn router(st: Arc<RouteState>, http: &crate::config::HttpConfig) -> Router {
    Router::new()
        .route("/v1/jobs", post(post_job))
        .route("/v1/jobs/{id}", get(get_job).delete(delete_job))
        .route("/v1/jobs/{id}/events", get(job_events))
        .route("/v1/capacity", post(capacity::post_capacity))
        .route("/", post(capacity::post_capacity))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(crate::http_server::BodyLimits::from_config(http), crate::http_server::read_body))
        .layer(axum::middleware::from_fn_with_state(crate::auth::for_config(http), crate::auth::require))
        .with_state(st)
}

async fn post_job(State(st): State<Arc<RouteState>>, headers: HeaderMap, body: Bytes) -> Response {
    forward::submit(st, headers, body).await
}

async fn get_job(State(st): State<Arc<RouteState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/v1/jobs/{id}");
    forward::to_owner(st, reqwest::Method::GET, &id, &path, &headers).await
}

async fn job_events(State(st): State<Arc<RouteState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/v1/jobs/{id}/events");
    forward::to_owner(st, reqwest::Method::GET, &id, &path, &headers).await
}

async fn delete_job(State(st): State<Arc<RouteState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/v1/jobs/{id}");
    forward::to_owner(st, reqwest::Method::DELETE, &id, &path, &headers).await
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
    crate::auth::check_exposure(&cfg.http, &crate::auth::Tokens::from_config(&cfg.http)?)?;
    let invoker = match cfg.route.lambda.as_deref() {
        Some(target) => Some(super::serverless::Invoker::connect(target, cfg.route.lambda_region.as_deref(), &cfg.route.lambda_streaming).await),
        None => None,
    };
    let queue = super::queue::JobQueue::from_config(&cfg.kafka).map_err(|e| anyhow::anyhow!("kafka producer: {e}"))?;
    let st = Arc::new(RouteState::new(cfg.route.clone(), invoker, queue)?);
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let local = listener.local_addr()?;
    println!("kiln route listening on http://{local}");
    info!(%local, policy = ?cfg.route.policy, lambda = ?cfg.route.lambda, "routing");
    let watcher = tokio::spawn(st.clone().watch_policy());
    let stop_topic = CancellationToken::new();
    let topic_reader = tokio::spawn(super::capacity_topic::consume(st.clone(), cfg.kafka.clone(), stop_topic.clone()));
    let stop = CancellationToken::new();
    let app = router(st, &cfg.http);
    let header_timeout = std::time::Duration::from_millis(cfg.http.header_timeout_ms);
    let server = tokio::spawn(crate::http_server::serve(listener, app, header_timeout, stop.clone()));
    crate::signals::shutdown_signal().await;
    info!("stopping");
    watcher.abort();
    stop_topic.cancel();
    let _ = topic_reader.await;
    stop.cancel();
    match tokio::time::timeout(std::time::Duration::from_secs(10), server).await {
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        Err(_) => tracing::warn!("open connections did not close in 10 s; exiting anyway"),
        Ok(Ok(())) => {}
    }
    Ok(())
}
