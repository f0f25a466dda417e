//! Signed thumbnail URLs, the CDN path of the edge tier:
//! `GET /v1/thumbnail/{signature}/{options}/{encoded source}` (the scheme: `signing.rs` and the
//! README). No bearer token: the signature is the credential, and the key that verifies names
//! the job's tenant.
//!
//! A verified request becomes an ordinary thumbnail job (same runtime, same confinement: a
//! source outside `sources.allow` is `forbidden`), under an id derived from the tenant and the
//! signed path, so a repeated URL is answered from the stored result and its stored output
//! without running again. The answer is the image itself with `Cache-Control: public,
//! max-age=…` (`thumbnail.max_age_s`) and a strong `ETag` (a digest of the bytes);
//! `If-None-Match` with it answers 304. A wrong or missing signature is 403 before anything
//! else in the path is read; errors are JSON with `Cache-Control: no-store`.

use crate::config::{ConfigError, ThumbnailConfig};
use crate::runtime::{Admission, Runtime};
use crate::signing::{Signed, SignedError, SigningKeys};
use crate::sinks::http as answer;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Json;
use kiln_jobs::{Envelope, JobStatus, Priority};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use url::Url;

pub use crate::signing::PREFIX;

/// The keys from `thumbnail.keys` and `thumbnail.keys_file`.
pub fn keys_from_config(cfg: &ThumbnailConfig) -> Result<SigningKeys, ConfigError> {
    let text = crate::config::read_secrets_file("thumbnail.keys_file", cfg.keys_file.as_deref())?;
    SigningKeys::parse(&cfg.keys, text.as_deref())
        .map_err(|e| ConfigError::Invalid { key: "thumbnail.keys / thumbnail.keys_file", message: e.to_string() })
}

struct SignedState {
    rt: Arc<Runtime>,
    keys: SigningKeys,
    cache_control: HeaderValue,
}

/// The `GET {PREFIX}{*rest}` route for the HTTP router (keys unreadable: the endpoint is off,
/// which `kiln serve` has already refused to start with).
pub fn route<S: Clone + Send + Sync + 'static>(rt: Arc<Runtime>) -> MethodRouter<S> {
    let cfg = rt.config().thumbnail.clone();
    let keys = keys_from_config(&cfg).unwrap_or_else(|e| {
        tracing::error!(error = %e, "signing keys unreadable; signed thumbnail URLs are off");
        SigningKeys::default()
    });
    let cache_control = HeaderValue::from_str(&format!("public, max-age={}", cfg.max_age_s))
        .unwrap_or_else(|_| HeaderValue::from_static("public, max-age=86400"));
    get(handle).with_state(Arc::new(SignedState { rt, keys, cache_control }))
}

fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    let mut resp = (status, Json(json!({"error": {"code": code, "message": message}}))).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The job id of a signed request: the same tenant and path give the same id (and so the
/// stored result), another tenant's key another id.
pub fn job_id(s: &Signed) -> String {
    let d = Sha256::digest(format!("{}\n{}", s.tenant, s.message).as_bytes());
    format!("sig-{}", &hex::encode(d)[..40])
}

/// Whether `If-None-Match` names `etag` (weak comparison, as RFC 9110 asks for it) or is `*`.
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| {
        let t = t.trim();
        t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag
    })
}

async fn handle(State(st): State<Arc<SignedState>>, headers: HeaderMap, uri: Uri) -> Response {
    if st.keys.is_empty() {
        return refuse(StatusCode::NOT_FOUND, "not_found", "signed thumbnail URLs are not configured (thumbnail.keys)".into());
    }
    let rest = uri.path().strip_prefix(PREFIX).unwrap_or_default();
    let signed = match st.keys.verify(rest) {
        Ok(s) => s,
        Err(e @ (SignedError::Options(_) | SignedError::Source)) => return refuse(StatusCode::BAD_REQUEST, "invalid_spec", e.to_string()),
        Err(e) => return refuse(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
    };
    let env = Envelope {
        id: Some(job_id(&signed)),
        kind: "thumbnail".into(),
        input: json!({"source": signed.source, "outputs": [signed.output]}),
        output: None,
        deadline_ms: None,
        priority: Priority::Interactive,
    };
    let trace = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(crate::tracectx::TraceContext::child_of);
    let entry = crate::auth::with_tenant(signed.tenant.clone(), st.rt.submit(env, Admission::Refuse, trace.as_ref())).await;
    let result = entry.wait().await;
    let out = match (result.status, result.outputs.first()) {
        (JobStatus::Succeeded, Some(out)) => out.clone(),
        _ => {
            let mut resp = answer::result(&result);
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return resp;
        }
    };
    let limit = st.rt.config().limits.max_input_bytes;
    let bytes = match Url::parse(&out.uri) {
        Ok(u) => st.rt.store().get(&u, limit).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(job_id = %result.id, error = %e, "stored thumbnail unreadable");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the stored thumbnail is unreadable: {e}"));
        }
    };
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&bytes))[..32]);
    let etag_value = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    let mut resp = if not_modified(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Body::from(bytes).into_response();
        if let Ok(ct) = HeaderValue::from_str(&out.content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        r
    };
    resp.headers_mut().insert(header::ETAG, etag_value);
    resp.headers_mut().insert(header::CACHE_CONTROL, st.cache_control.clone());
    resp
}
