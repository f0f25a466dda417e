//! One job through the router: parse the envelope (bad input → the worker's own failed
//! result with `invalid_spec`, 400), features and placement (the decision logged as JSONL
//! and put on the job's span), then attempts on the decision's tier and, when that fails and
//! the decision allows it, on the other one — all under the same job id (the workers'
//! idempotency makes that safe), up to `route.max_attempts` attempts in all:
//!
//! - container: forwarded to the least loaded ready worker and its answer streamed back. A
//!   worker that is unreachable, dies mid-run, times out, answers `overloaded` (full or
//!   draining) or `too_long_for_tier` is retried on another worker, then on the function.
//! - serverless: the job's function invoked ([`super::serverless`]); the instance id, cold
//!   start and init time go into the view's warm pool. Throttling, a failed or timed-out
//!   invocation, `overloaded` or `too_long_for_tier` are retried on a container.
//!
//! A router with a Kafka queue ([`super::queue`]) queues the job there (202 with
//! `worker=queue:{topic}`) when the decision targets the pool's queue (no ready worker, or
//! every worker busy for batch and GPU work), and when neither tier gave an answer and the
//! decision allows containers.
//!
//! The answer carries `x-kiln-route: tier=…; worker=…; rule=…; placed=…; attempts=…;
//! policy=…[; note=…]` (`placed` is the decision's tier; `tier` and `worker` where it ran —
//! the worker id, or the function instance; `note`, what failed on the way).
//!
//! SSE (`Accept: text/event-stream`) and `Prefer: respond-async` answers of a container are
//! passed through as they come; they are retried only when the worker fails before
//! answering. On the serverless tier an SSE request is invoked with response streaming
//! (`InvokeWithResponseStream`) and the function's events are passed on as they come, under
//! the same rule (retried only before the first one); the Invoke API answers an async request
//! only once the job is done, so it tries a container first.

use super::serverless::{self, InvokeFailure, Invoked, Invoker};
use super::streamed::{self, Piece};
use super::{lock, now_ms, RouteState};
use crate::tracectx::TraceContext;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use kiln_jobs::{ErrorCode, Event, JobError, JobResult, WorkerInfo};
use kiln_router_client::decision::other;
use kiln_router_client::{Decision, RequestFeatures, Tier};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn, Instrument};

/// Request headers a container worker gets from the client: what it answers with, and the
/// caller's bearer token (the worker checks it against the same tokens: the same tenant).
const PASSED_TO_WORKER: [&str; 3] = ["accept", "prefer", "authorization"];

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
/// (busy + queued) / slots, where queued includes this router's placements the worker's
/// report cannot show yet ([`kiln_router_client::CapacityView::placed`]), so a burst
/// between two reports spreads; the decision's worker (`preferred`) wins ties.
fn next_worker(st: &RouteState, kind: &str, gpu: bool, preferred: Option<&str>, tried: &[String]) -> Option<(String, String)> {
    let book = lock(&st.book);
    let cands = lock(&st.view).candidates(kind, now_ms());
    let best = cands
        .into_iter()
        .filter(|c| (!gpu || c.gpu) && !tried.contains(&c.worker_id))
        .filter_map(|c| {
            let url = book.url(&c.worker_id)?;
            let load = f64::from(c.busy + c.queued) / f64::from(c.slots.max(1));
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

/// One job on its way through the router: what every attempt needs.
#[derive(Clone)]
struct Job {
    id: String,
    kind: String,
    body: Bytes,
    headers: HeaderMap,
    trace: Option<TraceContext>,
    /// Only workers with a GPU may take it (and never the serverless tier).
    gpu: bool,
    /// The function the serverless tier invokes for this kind.
    function: String,
    sse: bool,
    asynchronous: bool,
    started: Instant,
    /// The tenant whose token authenticated the request: the function is told it
    /// (`x-kiln-tenant`), a container worker learns it from the token passed on.
    tenant: Option<String>,
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
        // The authenticated tenant, never one the envelope claims.
        Ok(f) => RequestFeatures { tenant: crate::auth::current_tenant().or(f.tenant), ..f },
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
    let (gpu, function) = {
        let policy = lock(&st.policy);
        (features.needs_gpu || policy.config().rule(&kind).needs_gpu, policy.config().function(&kind).to_owned())
    };
    let job = Job {
        sse: header_has(&headers, "accept", "text/event-stream"),
        asynchronous: header_has(&headers, "prefer", "respond-async"),
        id,
        kind,
        body,
        headers,
        trace,
        gpu,
        function,
        started,
        tenant: crate::auth::current_tenant(),
    };
    if decision.dual {
        send_shadow(&st, &job, &decision, span.clone());
    }
    run_attempts(st, job, decision).instrument(span).await
}

/// Dual routing (seed §6.2): a copy of the job, under the same id, to the decision's
/// `shadow` target on the other tier, in the background. Its answer is discarded; its
/// latency goes to `kiln_route_shadow_latency_seconds` and, when it succeeded, to the closed
/// loop's rolling p95 of that tier (no prediction: not the duration ratio). The workers'
/// idempotency keeps one stored result. The copy is plain request/response (no SSE, not
/// async) and is tried once: a failure is counted, never retried.
fn send_shadow(st: &Arc<RouteState>, job: &Job, decision: &Decision, span: tracing::Span) {
    let Some(target) = decision.shadow.clone() else { return };
    let mut copy = job.clone();
    copy.sse = false;
    copy.asynchronous = false;
    copy.headers.remove(header::ACCEPT);
    copy.headers.remove("prefer");
    let st = st.clone();
    let task = async move {
        let started = Instant::now();
        let tier = target.tier;
        let ok = match tier {
            Tier::Serverless => match st.invoker.as_ref() {
                Some(invoker) => {
                    let route = format!("tier=serverless; worker={}; rule=dual; shadow=1", copy.function);
                    invoke(&st, invoker, &copy, &route).await.is_ok()
                }
                None => return,
            },
            Tier::Container => {
                let Some((worker, url)) = next_worker(&st, &copy.kind, copy.gpu, target.worker_id.as_deref(), &[]) else {
                    st.metrics.shadows.with_label_values(&[tier.as_str(), "failed"]).inc();
                    return;
                };
                lock(&st.view).placed(&worker, now_ms());
                let route = format!("tier=container; worker={worker}; rule=dual; shadow=1");
                matches!(attempt(&st, &url, &copy, false, &route).await, Attempt::Done(r) if r.status().is_success())
            }
        };
        let secs = started.elapsed().as_secs_f64();
        st.metrics.shadows.with_label_values(&[tier.as_str(), if ok { "ok" } else { "failed" }]).inc();
        st.metrics.shadow_latency.with_label_values(&[tier.as_str()]).observe(secs);
        if ok {
            lock(&st.policy).observe(tier, &copy.kind, secs * 1e3, 0.0);
        }
        info!(tier = tier.as_str(), ok, ms = secs * 1e3, "shadow copy answered (discarded)");
    };
    tokio::spawn(task.instrument(span));
}

/// The tiers to try, in order: the decision's target, then the other tier when the decision
/// allows it there (it is the primary or the fallback; GPU work never has serverless as
/// either). An async request (`Prefer: respond-async`) tries a container first: the Invoke
/// API only answers once the job is done, a container answers 202 at once.
fn tier_order(decision: &Decision, asynchronous: bool) -> Vec<Tier> {
    let allowed = |t: Tier| decision.primary == t || decision.fallback == Some(t);
    let first = decision.target.tier;
    let mut order = vec![first];
    if allowed(other(first)) {
        order.push(other(first));
    }
    if asynchronous && order == [Tier::Serverless, Tier::Container] {
        order.swap(0, 1);
    }
    order
}

/// Tries the job on the decision's tier, then on the other one, up to `route.max_attempts`
/// attempts in all, and answers with the first final answer.
async fn run_attempts(st: Arc<RouteState>, job: Job, decision: Decision) -> Response {
    info!(target = ?decision.target, reasons = ?decision.reasons, "placed");
    let mut notes: Vec<&'static str> = Vec::new();
    let mut tried: Vec<String> = Vec::new();
    let mut attempts = 0usize;
    let max = st.cfg.max_attempts as usize;
    let mut last: Option<Response> = None;
    let mut preferred = decision.target.worker_id.clone();
    // The pool's queue as the target (no ready worker, or the pool-queue rule), and a queue
    // to put it in: no worker is tried.
    let to_queue = decision.target.tier == Tier::Container && decision.target.worker_id.is_none() && st.queue.is_some();
    let order = if to_queue { Vec::new() } else { tier_order(&decision, job.asynchronous) };
    for tier in order {
        match tier {
            Tier::Serverless => {
                if attempts >= max {
                    break;
                }
                let Some(invoker) = st.invoker.as_ref() else {
                    // No invoker configured: the other tier answers, when the decision allows.
                    st.metrics.retries.with_label_values(&["serverless_unavailable"]).inc();
                    notes.push("serverless unavailable");
                    continue;
                };
                attempts += 1;
                let route = route_value(&decision, Some((Tier::Serverless, &job.function)), attempts, &notes);
                match invoke(&st, invoker, &job, &route).await {
                    Ok((resp, instance)) => {
                        return finish(&st, &job, &decision, resp, Tier::Serverless, &instance, attempts, &notes)
                    }
                    Err((why, resp)) => {
                        warn!(function = %job.function, why, "serverless attempt failed; trying the other tier");
                        st.metrics.retries.with_label_values(&[why]).inc();
                        notes.push(why);
                        if resp.is_some() {
                            last = resp;
                        }
                    }
                }
            }
            Tier::Container => {
                while attempts < max {
                    let Some((worker, url)) = next_worker(&st, &job.kind, job.gpu, preferred.take().as_deref(), &tried) else {
                        break;
                    };
                    tried.push(worker.clone());
                    attempts += 1;
                    lock(&st.view).placed(&worker, now_ms());
                    let route = route_value(&decision, Some((Tier::Container, &worker)), attempts, &notes);
                    let outcome = attempt(&st, &url, &job, job.sse || job.asynchronous, &route).await;
                    match outcome {
                        Attempt::Done(resp) => {
                            lock(&st.jobs).insert(&job.id, &url);
                            return finish(&st, &job, &decision, resp, Tier::Container, &worker, attempts, &notes);
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
            }
        }
    }
    let container_allowed = decision.primary == Tier::Container || decision.fallback == Some(Tier::Container);
    if let (Some(queue), true) = (st.queue.as_ref(), container_allowed) {
        let traceparent = job.trace.as_ref().map(TraceContext::header);
        match queue.enqueue(&job.id, &job.body, traceparent.as_deref()).await {
            Ok(()) => {
                info!(topic = %queue.topic, "no worker could take the job now; queued");
                notes.push("queued");
                st.metrics.jobs.with_label_values(&["queue", "2xx"]).inc();
                let body = serde_json::json!({"id": job.id, "kind": job.kind, "status": "queued", "topic": queue.topic});
                let mut resp = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                let at = format!("queue:{}", queue.topic);
                route_header(&mut resp, &decision, Some((Tier::Container, &at)), attempts, &notes);
                return resp;
            }
            Err(e) => warn!(topic = %queue.topic, error = %e, "queueing the job failed"),
        }
    }
    st.metrics.jobs.with_label_values(&["none", "5xx"]).inc();
    let mut resp = last.unwrap_or_else(|| {
        let why = if attempts == 0 {
            match decision.target.tier {
                Tier::Serverless if st.invoker.is_none() => {
                    format!("{} may only run serverless, and the router has no Lambda invoker (route.lambda)", job.kind)
                }
                _ => format!("no ready container worker serves {}{}", job.kind, if job.gpu { " with a GPU" } else { "" }),
            }
        } else {
            format!("no worker could take the job ({attempts} tried)")
        };
        refuse(&job.id, &job.kind, &JobError::new(ErrorCode::Overloaded, why))
    });
    route_header(&mut resp, &decision, None, attempts, &notes);
    resp
}

/// A final answer from `tier` (`at`: the worker or function instance): metrics, the closed
/// loop (when it ran where it was placed), the `x-kiln-route` header.
#[allow(clippy::too_many_arguments)]
fn finish(
    st: &RouteState,
    job: &Job,
    decision: &Decision,
    mut resp: Response,
    tier: Tier,
    at: &str,
    attempts: usize,
    notes: &[&str],
) -> Response {
    let latency = job.started.elapsed();
    st.metrics.latency.with_label_values(&[tier.as_str()]).observe(latency.as_secs_f64());
    st.metrics.jobs.with_label_values(&[tier.as_str(), status_class(resp.status())]).inc();
    // A streamed answer (SSE, and async on a container) starts before the job ends: its
    // latency here is not the job's.
    let measured = !job.sse && (tier == Tier::Serverless || !job.asynchronous);
    if resp.status().is_success() && measured && decision.target.tier == tier {
        lock(&st.policy).observe(tier, &job.kind, latency.as_secs_f64() * 1e3, decision.predicted_ms);
    }
    route_header(&mut resp, decision, Some((tier, at)), attempts, notes);
    resp
}

/// One invocation of the job's function. `Ok`: the final answer and the instance that gave
/// it; `Err`: why the other tier should try, and the answer to give if none is left. The
/// caller's trace context and `route` (the decision) travel as headers of an HTTP-shaped
/// event ([`serverless::http_event`]), as they do to a container worker, and so does the
/// authenticated tenant (the function trusts it with `lambda.trust_tenant_header`). An SSE
/// request is invoked with response streaming ([`invoke_streamed`]).
async fn invoke(st: &Arc<RouteState>, invoker: &Invoker, job: &Job, route: &str) -> Result<(Response, String), (&'static str, Option<Response>)> {
    lock(&st.view).invocation_started(&job.function);
    let timeout = Duration::from_millis(st.cfg.forward_timeout_ms);
    let traceparent = job.trace.as_ref().map(TraceContext::header);
    let mut headers = vec![("x-kiln-route", route)];
    if let Some(tp) = traceparent.as_deref() {
        headers.push(("traceparent", tp));
    }
    if let Some(t) = job.tenant.as_deref() {
        headers.push((crate::tenants::LAMBDA_HEADER, t));
    }
    let payload = serverless::http_event(&job.body, &headers);
    if job.sse {
        return invoke_streamed(st, invoker, job, &payload, timeout).await;
    }
    match invoker.invoke(&job.function, &payload, timeout).await {
        Ok(invoked) => answered(st, job, invoked),
        Err(e) => Err(invocation_failed(st, &job.function, &e)),
    }
}

/// An SSE request on the serverless tier: the function's events are passed on as they come
/// (`InvokeWithResponseStream`, [`streamed`]). Until the first piece arrives a failure is
/// retried on the other tier, and a result that comes first (a refusal, a short job, a
/// buffered function) is answered as in [`answered`]. After it the job is running there: a
/// stream that breaks off ends with a failed result (`internal`) and is not retried here —
/// the job may finish and store its result under its id, which a client's retry finds.
async fn invoke_streamed(
    st: &Arc<RouteState>,
    invoker: &Invoker,
    job: &Job,
    payload: &[u8],
    timeout: Duration,
) -> Result<(Response, String), (&'static str, Option<Response>)> {
    let mut answer = match streamed::invoke(invoker, &job.function, payload, timeout).await {
        Ok(a) => a,
        Err(e) => return Err(invocation_failed(st, &job.function, &e)),
    };
    let first = match answer.next().await {
        Some(Ok(Piece::Event(ev))) => ev,
        Some(Ok(Piece::Done(invoked))) => return answered(st, job, invoked),
        Some(Err(e)) => return Err(invocation_failed(st, &job.function, &e)),
        None => return Err(invocation_failed(st, &job.function, &InvokeFailure::Function("the answer ended without a result".into()))),
    };
    let instance = answer.instance().unwrap_or(&job.function).to_owned();
    let rest = Rest { answer, st: st.clone(), function: job.function.clone(), id: job.id.clone(), kind: job.kind.clone() };
    let rest = futures_util::stream::unfold(Some(rest), |rest| async move {
        let mut rest = rest?;
        let failed = match rest.answer.next().await {
            Some(Ok(Piece::Event(ev))) => return Some((ev, Some(rest))),
            Some(Ok(Piece::Done(invoked))) => {
                observed(&rest.st, &rest.function, &invoked);
                return Some((Event::Result(invoked.result), None));
            }
            Some(Err(e)) => e,
            None => InvokeFailure::Function("the answer ended without a result".into()),
        };
        invocation_failed(&rest.st, &rest.function, &failed);
        let why = format!("the function's answer broke off: {failed}; the job may still finish under its id");
        let r = JobResult::failed(rest.id, rest.kind, &JobError::new(ErrorCode::Internal, why), router_worker());
        Some((Event::Result(r), None))
    });
    let events = futures_util::stream::once(std::future::ready(first)).chain(rest);
    Ok((crate::sinks::http::sse(events), instance))
}

/// What the rest of a streamed answer needs once the request handler has answered.
struct Rest {
    answer: streamed::Streamed,
    st: Arc<RouteState>,
    function: String,
    id: String,
    kind: String,
}

/// An invocation that brought no usable answer: the view counts it, the label says why.
fn invocation_failed(st: &RouteState, function: &str, e: &InvokeFailure) -> (&'static str, Option<Response>) {
    lock(&st.view).invocation_failed(function);
    warn!(function, error = %e, "invocation failed");
    (e.label(), None)
}

/// A finished invocation: the instance and its cold start into the view's warm pool.
fn observed(st: &RouteState, function: &str, invoked: &Invoked) {
    lock(&st.view).observe_invocation(&serverless::observation(function, invoked, now_ms()));
    if invoked.cold_start() {
        st.metrics.cold_starts.inc();
    }
}

/// The answer to a job the function finished (or refused): its result, as one JSON body or
/// as the one event of an SSE answer. `too_long_for_tier` and `overloaded` go to the other
/// tier.
#[allow(clippy::result_large_err)] // the Err carries the answer to give when no tier is left
fn answered(st: &RouteState, job: &Job, invoked: Invoked) -> Result<(Response, String), (&'static str, Option<Response>)> {
    observed(st, &job.function, &invoked);
    let instance = invoked.instance_id();
    let code = invoked.result.error_code();
    let resp = if job.sse {
        crate::sinks::http::sse(futures_util::stream::once(std::future::ready(Event::Result(invoked.result))))
    } else {
        let status = crate::sinks::status_for(&invoked.result);
        let mut resp = (status, axum::Json(invoked.body)).into_response();
        if let Some(secs) = crate::sinks::retry_after(status) {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        resp
    };
    match code {
        Some(ErrorCode::TooLongForTier) => Err(("too_long_for_tier", Some(resp))),
        Some(ErrorCode::Overloaded) => Err(("overloaded", Some(resp))),
        _ => Ok((resp, instance)),
    }
}

/// `x-kiln-route` on the client's answer: where it ran (`tier=none` when nowhere; `worker`
/// is the container worker or the function instance), where it was placed, the rule, the
/// attempts and what went wrong on the way.
/// The `x-kiln-route` value: where the job ran (or runs) and why. The router answers with it
/// and sends it to the worker, whose job span records it (`kiln.route`).
fn route_value(decision: &Decision, ran: Option<(Tier, &str)>, attempts: usize, notes: &[&str]) -> String {
    let note = if notes.is_empty() { String::new() } else { format!("; note={}", notes.join(",")) };
    format!(
        "tier={}; worker={}; rule={}; placed={}; attempts={attempts}; policy={}{note}",
        ran.map_or("none", |(t, _)| t.as_str()),
        ran.map_or("", |(_, w)| w),
        decision.rule(),
        decision.target.tier.as_str(),
        decision.policy_version
    )
}

fn route_header(resp: &mut Response, decision: &Decision, ran: Option<(Tier, &str)>, attempts: usize, notes: &[&str]) {
    let value = route_value(decision, ran, attempts, notes);
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
pub async fn to_owner(st: Arc<RouteState>, method: reqwest::Method, id: &str, path: &str, headers: &HeaderMap) -> Response {
    let known = lock(&st.jobs).get(id);
    let mut urls: Vec<String> = known.clone().into_iter().collect();
    urls.extend(lock(&st.book).all().into_iter().filter(|u| Some(u) != known.as_ref()));
    for url in urls {
        let mut req = st.client.request(method.clone(), format!("{url}{path}"));
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            req = req.header(header::AUTHORIZATION.as_str(), auth.as_bytes());
        }
        let resp = match req.send().await {
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

/// One try on one worker; `route` goes along as its `x-kiln-route` header.
async fn attempt(st: &RouteState, url: &str, job: &Job, streaming: bool, route: &str) -> Attempt {
    let mut req = st
        .client
        .post(format!("{url}/v1/jobs"))
        .header(header::CONTENT_TYPE.as_str(), "application/json")
        .header("x-kiln-route", route)
        .body(job.body.clone());
    for name in PASSED_TO_WORKER {
        for v in job.headers.get_all(name) {
            req = req.header(name, v.as_bytes());
        }
    }
    if let Some(t) = &job.trace {
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
