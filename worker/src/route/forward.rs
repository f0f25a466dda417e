//! One job through the router: parse the envelope (bad input → the worker's own failed
//! result with `invalid_spec`, 400), features and placement (the decision logged as JSONL
//! and put on the job's span), then forward to a container worker and stream its answer
//! back. A worker that is unreachable, dies mid-run, times out, answers `overloaded` (full
//! or draining) or `too_long_for_tier` is retried on another worker under the same job id
//! (the workers' idempotency makes that safe), up to `route.max_attempts`.
//!
//! The answer carries `x-kiln-route: tier=…; worker=…; rule=…; placed=…; attempts=…;
//! policy=…` (`placed` is the decision's tier; `tier` and `worker` where it ran).
//!
//! SSE (`Accept: text/event-stream`) and `Prefer: respond-async` answers are passed through
//! as they come; they are retried only when the worker fails before answering.

use super::{lock, now_ms, RouteState};
use crate::tracectx::TraceContext;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_jobs::{ErrorCode, JobError, JobResult, WorkerInfo};
use kiln_router_client::{Decision, Tier};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn, Instrument};

const PASSED_ON: [HeaderName; 4] = [header::CONTENT_TYPE, header::LOCATION, header::RETRY_AFTER, header::CACHE_CONTROL];

fn router_worker() -> WorkerInfo {
    WorkerInfo { id: "kiln-route".into(), tier: "router".into(), accel: String::new() }
}

/// A failed result built here (nothing ran), with the worker's status mapping.
fn refuse(id: &str, kind: &str, err: &JobError) -> Response {
    let r = JobResult::failed(id.to_owned(), kind.to_owned(), err, router_worker());
    crate::sinks::http::result(&r)
}

fn header_has(headers: &HeaderMap, name: &str, needle: &str) -> bool {
    headers.get_all(name).iter().any(|v| v.to_str().is_ok_and(|s| s.contains(needle)))
}

/// What one attempt came back with.
enum Attempt {
    /// The final answer (passed on to the client).
    Done(Response),
    /// Worth another worker: why, and the answer to give if none is left.
    Retry(&'static str, Option<Response>),
}

/// Picks a container worker for `kind` among the ready, untried ones: the least loaded by
/// (busy + queued as reported + jobs this router has in flight there) / slots, so a burst
/// between two reports spreads; the decision's worker (`preferred`) wins ties.
fn next_worker(st: &RouteState, kind: &str, gpu: bool, preferred: Option<&str>, tried: &[String]) -> Option<(String, String)> {
    let book = lock(&st.book);
    let cands = lock(&st.view).candidates(kind, now_ms());
    let inflight = lock(&st.inflight);
    let best = cands
        .into_iter()
        .filter(|c| (!gpu || c.gpu) && !tried.contains(&c.worker_id))
        .filter_map(|c| {
            let url = book.url(&c.worker_id)?;
            let mine = inflight.get(&c.worker_id).copied().unwrap_or(0);
            let load = f64::from(c.busy + c.queued + mine) / f64::from(c.slots.max(1));
            let not_preferred = Some(c.worker_id.as_str()) != preferred;
            Some((load, not_preferred, c.worker_id, url))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then_with(|| a.2.cmp(&b.2)));
    match best {
        Some((_, _, w, u)) => Some((w, u)),
        // The decision's worker without a fresh report (a race with expiry): still try it.
        None => preferred.filter(|w| !tried.iter().any(|t| t == w)).and_then(|w| Some((w.to_owned(), book.url(w)?))),
    }
}

/// Counts a forward in flight on a worker while alive.
struct InFlight<'a>(&'a RouteState, String);

impl<'a> InFlight<'a> {
    fn new(st: &'a RouteState, worker: &str) -> Self {
        *lock(&st.inflight).entry(worker.to_owned()).or_insert(0) += 1;
        InFlight(st, worker.to_owned())
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.0.inflight).get_mut(&self.1) {
            *n = n.saturating_sub(1);
        }
    }
}

/// `POST /v1/jobs` through the router.
pub async fn submit(st: Arc<RouteState>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let mut env: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            st.metrics.invalid.inc();
            return refuse(&ulid::Ulid::new().to_string(), "", &JobError::invalid_spec("the envelope is not a JSON object"));
        }
        Err(e) => {
            st.metrics.invalid.inc();
            return refuse(&ulid::Ulid::new().to_string(), "", &JobError::invalid_spec(format!("the body is not JSON: {e}")));
        }
    };
    let kind = env.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    // Every attempt carries the same id, so a retry elsewhere is idempotent.
    let (id, body) = match env.get("id").and_then(Value::as_str) {
        Some(id) => (id.to_owned(), body),
        None => {
            let id = ulid::Ulid::new().to_string();
            env["id"] = Value::String(id.clone());
            (id, Bytes::from(serde_json::to_vec(&env).unwrap_or_default()))
        }
    };
    let features = match lock(&st.policy).features(&env, None) {
        Ok(f) => f,
        Err(e) => {
            st.metrics.invalid.inc();
            return refuse(&id, &kind, &JobError::invalid_spec(e.to_string()));
        }
    };
    let record = {
        let view = lock(&st.view);
        lock(&st.policy).place_logged(&features, &view, now_ms())
    };
    st.log_decision(&record.to_json_line());
    let decision = record.decision;
    let rule = decision.rule();
    st.metrics.decisions.with_label_values(&[decision.target.tier.as_str(), rule]).inc();
    if rule == "overflow" && decision.target.tier != decision.primary {
        st.metrics.overflowed.inc();
    }
    let trace = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceContext::child_of);
    let span = tracing::info_span!("route", job_id = %id, kind = %kind,
        tier = decision.target.tier.as_str(), worker = decision.target.worker_id.as_deref().unwrap_or(""),
        rule, reasons = ?decision.reasons, policy_version = decision.policy_version,
        trace_id = trace.as_ref().map(|t| t.trace_id.as_str()).unwrap_or(""));
    let gpu = features.needs_gpu || lock(&st.policy).config().rule(&kind).needs_gpu;
    run_attempts(st, headers, body, id, kind, decision, gpu, trace, started).instrument(span).await
}

#[allow(clippy::too_many_arguments)]
async fn run_attempts(
    st: Arc<RouteState>,
    headers: HeaderMap,
    body: Bytes,
    id: String,
    kind: String,
    decision: Decision,
    gpu: bool,
    trace: Option<TraceContext>,
    started: Instant,
) -> Response {
    info!(target = ?decision.target, reasons = ?decision.reasons, "placed");
    let mut notes: Vec<&'static str> = Vec::new();
    let container_ok = decision.primary == Tier::Container || decision.fallback == Some(Tier::Container);
    if decision.target.tier == Tier::Serverless {
        // No Lambda invoker yet: the serverless tier is answered by a container worker.
        st.metrics.retries.with_label_values(&["serverless_unavailable"]).inc();
        notes.push("serverless unavailable");
        if !container_ok {
            let err = JobError::new(ErrorCode::Overloaded, format!("{kind} may only run serverless, and the router has no Lambda invoker"));
            let mut resp = refuse(&id, &kind, &err);
            route_header(&mut resp, &decision, None, 0, &notes);
            return resp;
        }
    }
    let sse = header_has(&headers, "accept", "text/event-stream");
    let asynchronous = header_has(&headers, "prefer", "respond-async");
    let mut tried: Vec<String> = Vec::new();
    let mut last: Option<Response> = None;
    let mut preferred = decision.target.worker_id.clone();
    for _ in 0..st.cfg.max_attempts {
        let Some((worker, url)) = next_worker(&st, &kind, gpu, preferred.take().as_deref(), &tried) else { break };
        tried.push(worker.clone());
        let counted = InFlight::new(&st, &worker);
        let outcome = attempt(&st, &url, &headers, &body, trace.as_ref(), sse || asynchronous).await;
        drop(counted);
        match outcome {
            Attempt::Done(mut resp) => {
                lock(&st.jobs).insert(&id, &url);
                let latency = started.elapsed();
                st.metrics.latency.with_label_values(&["container"]).observe(latency.as_secs_f64());
                st.metrics.jobs.with_label_values(&["container", status_class(resp.status())]).inc();
                if resp.status().is_success() && !sse && !asynchronous && decision.target.tier == Tier::Container {
                    lock(&st.policy).observe(Tier::Container, &kind, latency.as_secs_f64() * 1e3, decision.predicted_ms);
                }
                route_header(&mut resp, &decision, Some(&worker), tried.len(), &notes);
                return resp;
            }
            Attempt::Retry(why, resp) => {
                warn!(%worker, why, "attempt failed; trying another worker");
                st.metrics.retries.with_label_values(&[why]).inc();
                notes.push(why);
                if why == "unreachable" {
                    // Dead or gone: out of the view until its next report.
                    lock(&st.view).remove_worker(&worker);
                }
                if resp.is_some() {
                    last = resp;
                }
            }
        }
    }
    st.metrics.jobs.with_label_values(&["none", "5xx"]).inc();
    let mut resp = last.unwrap_or_else(|| {
        let why = if tried.is_empty() {
            format!("no ready container worker serves {kind}{}", if gpu { " with a GPU" } else { "" })
        } else {
            format!("no worker could take the job ({} tried)", tried.len())
        };
        refuse(&id, &kind, &JobError::new(ErrorCode::Overloaded, why))
    });
    route_header(&mut resp, &decision, None, tried.len(), &notes);
    resp
}

/// `x-kiln-route` on the client's answer: where it ran (`tier=none` when nowhere), where it
/// was placed, the rule, the attempts and what went wrong on the way.
fn route_header(resp: &mut Response, decision: &Decision, worker: Option<&str>, attempts: usize, notes: &[&str]) {
    let note = if notes.is_empty() { String::new() } else { format!("; note={}", notes.join(",")) };
    let value = format!(
        "tier={}; worker={}; rule={}; placed={}; attempts={attempts}; policy={}{note}",
        if worker.is_some() { "container" } else { "none" },
        worker.unwrap_or(""),
        decision.rule(),
        decision.target.tier.as_str(),
        decision.policy_version
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert("x-kiln-route", v);
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A worker answer's status and the headers passed on.
struct Head {
    status: u16,
    headers: Vec<(HeaderName, Vec<u8>)>,
}

fn resp_head(resp: &reqwest::Response) -> Head {
    let headers = PASSED_ON
        .iter()
        .filter_map(|name| resp.headers().get(name.as_str()).map(|v| (name.clone(), v.as_bytes().to_vec())))
        .collect();
    Head { status: resp.status().as_u16(), headers }
}

/// Builds the client's answer from a worker's, with the body given.
fn answer_from(head: &Head, body: Body) -> Response {
    let mut out = Response::builder().status(head.status);
    for (name, v) in &head.headers {
        out = out.header(name, v.as_slice());
    }
    out.body(body).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// `GET`/`DELETE` of `/v1/jobs/{id}[/events]`: sent to the worker that took the job (the id
/// map), else to every known worker in turn until one knows the job; 404 when none does.
pub async fn to_owner(st: Arc<RouteState>, method: reqwest::Method, id: &str, path: &str) -> Response {
    let known = lock(&st.jobs).get(id);
    let mut urls: Vec<String> = known.clone().into_iter().collect();
    urls.extend(lock(&st.book).all().into_iter().filter(|u| Some(u) != known.as_ref()));
    for url in urls {
        let resp = match st.client.request(method.clone(), format!("{url}{path}")).send().await {
            Ok(r) => r,
            Err(e) => {
                warn!(%url, error = %e, "worker did not answer a lookup");
                continue;
            }
        };
        if resp.status() == StatusCode::NOT_FOUND {
            continue;
        }
        lock(&st.jobs).insert(id, &url);
        let head = resp_head(&resp);
        return answer_from(&head, Body::from_stream(resp.bytes_stream()));
    }
    let body = serde_json::json!({"id": id, "error": {"message": "no such job"}});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// One try on one worker.
async fn attempt(st: &RouteState, url: &str, headers: &HeaderMap, body: &Bytes, trace: Option<&TraceContext>, streaming: bool) -> Attempt {
    let mut req = st.client.post(format!("{url}/v1/jobs")).header(header::CONTENT_TYPE.as_str(), "application/json").body(body.clone());
    for name in ["accept", "prefer"] {
        for v in headers.get_all(name) {
            req = req.header(name, v.as_bytes());
        }
    }
    if let Some(t) = trace {
        req = req.header("traceparent", t.header());
    }
    let timeout = Duration::from_millis(st.cfg.forward_timeout_ms);
    if !streaming {
        req = req.timeout(timeout);
    }
    let resp = match tokio::time::timeout(timeout, req.send()).await {
        Err(_) => return Attempt::Retry("timeout", None),
        Ok(Err(e)) if e.is_timeout() => return Attempt::Retry("timeout", None),
        Ok(Err(_)) => return Attempt::Retry("unreachable", None),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let head = resp_head(&resp);
    if streaming && status.is_success() {
        let stream = resp.bytes_stream();
        return Attempt::Done(answer_from(&head, Body::from_stream(stream)));
    }
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) if e.is_timeout() => return Attempt::Retry("timeout", None),
        Err(_) => return Attempt::Retry("unreachable", None),
    };
    let code = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.pointer("/error/code").and_then(Value::as_str).map(str::to_owned));
    let out = answer_from(&head, Body::from(bytes));
    match code.as_deref() {
        Some("too_long_for_tier") => Attempt::Retry("too_long_for_tier", Some(out)),
        Some("overloaded") => Attempt::Retry("overloaded", Some(out)),
        _ if status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE => Attempt::Retry("unavailable", Some(out)),
        _ => Attempt::Done(out),
    }
}
