//! The HTTP/1 server under `kiln serve` and `kiln route`: an axum router served by hyper with
//! a header-read timeout per connection and a deadline and size limit on each request body,
//! so a slow or stalled client is cut off instead of holding a connection (or a buffer)
//! open. `axum::serve` sets no timeouts at all, which is why this loop exists.
//!
//! Bodies are read whole here, before auth-checked handlers see them (they are JSON jobs and
//! capacity reports, at most `http.max_body_bytes`): a job is admitted only once its body has
//! arrived, so a slow client never holds a job slot.

use crate::config::HttpConfig;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Pause after a failed `accept` (out of file descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The request-body limits [`read_body`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl BodyLimits {
    pub fn from_config(http: &HttpConfig) -> Self {
        BodyLimits { max_bytes: http.max_body_bytes, timeout: Duration::from_millis(http.body_timeout_ms) }
    }
}

fn refusal(status: StatusCode, code: &str, message: String) -> Response {
    let mut resp = (status, Json(json!({"error": {"code": code, "message": message}}))).into_response();
    // Ask the client to open a new connection: the rest of this request's body is unread.
    resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    resp
}

/// After a too-large body, how much more of it is read and dropped, and for how long, so a
/// client still sending gets the 413 rather than a reset connection (nginx's lingering close).
const LINGER_BYTES: usize = 64 << 20;
const LINGER: Duration = Duration::from_secs(2);

enum Collected {
    Whole(Bytes),
    /// Over the limit: the rest of the body, not read yet.
    TooLarge(Body),
    Broken(axum::Error),
}

/// The body's bytes, up to `max`.
async fn collect(mut body: Body, max: usize) -> Collected {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers
            },
            Err(e) => return Collected::Broken(e),
        };
        if buf.len() + data.len() > max {
            return Collected::TooLarge(body);
        }
        buf.extend_from_slice(&data);
    }
    Collected::Whole(Bytes::from(buf))
}

/// Reads and drops what is left of a refused body, within [`LINGER`] and [`LINGER_BYTES`].
async fn linger(mut body: Body) {
    let drain = async {
        let mut dropped = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            dropped += frame.data_ref().map_or(0, |d| d.len());
            if dropped > LINGER_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Middleware (`from_fn_with_state(BodyLimits, read_body)`): reads the request body within
/// its deadline and size limit, answering 408 `deadline_exceeded` or 413 `input_too_large`
/// otherwise (a declared `Content-Length` over the limit is refused without buffering), then
/// hands the handler the buffered body.
pub async fn read_body(State(limits): State<BodyLimits>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let max = limits.max_bytes;
    let too_large = || refusal(StatusCode::PAYLOAD_TOO_LARGE, "input_too_large", format!("the request body is over http.max_body_bytes ({max} bytes)"));
    let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        linger(body).await;
        return too_large();
    }
    let bytes = match tokio::time::timeout(limits.timeout, collect(body, max)).await {
        Err(_) => {
            let ms = limits.timeout.as_millis();
            return refusal(StatusCode::REQUEST_TIMEOUT, "deadline_exceeded", format!("the request body did not arrive within http.body_timeout_ms ({ms} ms)"));
        }
        Ok(Collected::TooLarge(rest)) => {
            linger(rest).await;
            return too_large();
        }
        Ok(Collected::Broken(e)) => {
            return refusal(StatusCode::BAD_REQUEST, "invalid_spec", format!("the request body could not be read: {e}"));
        }
        Ok(Collected::Whole(b)) => b,
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// Serves `app` on `listener` until `stop`, then lets open connections finish their current
/// request (the caller bounds that wait). Each connection must send its headers within
/// `header_timeout` (which also closes idle keep-alive connections).
pub async fn serve(listener: TcpListener, app: Router, header_timeout: Duration, stop: CancellationToken) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = http1.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}
