//! `kiln lambda`: the AWS Lambda Runtime API, one invocation at a time, through the same
//! runtime as `kiln serve`.
//!
//! The event is a job envelope, or an HTTP request (function URL / API Gateway) whose body
//! is one; an HTTP-shaped event gets an HTTP-shaped response. With `lambda.response = stream`
//! the response streams NDJSON: every event as it happens, the result last.
//!
//! Jobs that cannot fit the function (a kind the tier does not take, a GPU request, a source
//! too large, too little scratch space in `/tmp`, too little time left) are refused up front
//! with `too_long_for_tier`, so the router sends them to the container tier. Warm state (the
//! runtime, codecs, caches) lives for the life of the instance and is reused across invocations.
//!
//! With `router.url` set, the instance posts its capacity report (tier `serverless`, worker
//! id = the instance id) to `{router.url}?function={AWS_LAMBDA_FUNCTION_NAME}` after each
//! invocation, bounded by [`REPORT_TIMEOUT`]: the router learns the warm instance and its
//! per-kind latencies even from invocations it did not make itself.

use crate::jobtable::JobEntry;
use crate::runtime::{Admission, Runtime};
use crate::sinks::lambda::{self as answer, Invocation};
use crate::tracectx::{route_value, with_caller, Caller, TraceContext};
use base64::Engine;
use kiln_jobs::store::parse_uri;
use kiln_jobs::{Accel, Envelope, ErrorCode, JobError};
use lambda_runtime::streaming::Body;
use lambda_runtime::{FunctionResponse, LambdaEvent};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// Time kept back from the invocation's deadline to answer before the function times out.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

/// Longest the capacity report after an invocation may delay its answer.
pub const REPORT_TIMEOUT: Duration = Duration::from_millis(300);

pub struct LambdaSource {
    rt: Arc<Runtime>,
    init_ms: f64,
    invocations: AtomicU64,
    /// This instance's id (see [`instance_id`]).
    instance_id: Arc<str>,
    /// Posts this instance's capacity report to the router (`router.url` set).
    report: Option<InstanceReport>,
}

/// The capacity report a function instance posts after each invocation.
struct InstanceReport {
    publisher: kiln_router_client::HttpPublisher,
    reporter: crate::capacity::Reporter,
}

impl InstanceReport {
    fn from_config(cfg: &crate::config::Config) -> Option<Self> {
        let url = cfg.router.url.as_deref().filter(|u| !u.is_empty())?;
        let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "kiln".into());
        let function: String = url::form_urlencoded::byte_serialize(function.as_bytes()).collect();
        let sep = if url.contains('?') { '&' } else { '?' };
        match kiln_router_client::HttpPublisher::new(format!("{url}{sep}function={function}")) {
            Ok(p) => Some(InstanceReport { publisher: p.with_token(cfg.router.token.clone()), reporter: crate::capacity::Reporter::new() }),
            Err(e) => {
                warn!(error = %e, "no capacity reports from this instance");
                None
            }
        }
    }

    async fn post(&self, rt: &Runtime, instance_id: &str) {
        let mut report = self.reporter.report(rt);
        report.worker_id = instance_id.to_owned();
        report.tier = kiln_router_client::Tier::Serverless;
        match tokio::time::timeout(REPORT_TIMEOUT, self.publisher.publish(&report)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "capacity report after the invocation failed"),
            Err(_) => warn!(ms = REPORT_TIMEOUT.as_millis() as u64, "capacity report after the invocation timed out"),
        }
    }
}

/// The id of this execution environment: its CloudWatch log stream name on AWS (one per
/// instance), else the worker id and a random suffix (a configured `worker.id` is shared
/// by every instance of a function).
fn instance_id(worker_id: &str) -> Arc<str> {
    match std::env::var("AWS_LAMBDA_LOG_STREAM_NAME") {
        Ok(s) if !s.is_empty() => s.into(),
        _ => format!("{worker_id}-{}", ulid::Ulid::new()).into(),
    }
}

/// What the event carried.
struct Incoming {
    body: Vec<u8>,
    /// An HTTP-shaped event (function URL, API Gateway) wants an HTTP-shaped answer.
    http: bool,
}

fn unwrap_event(payload: &Value) -> Result<Incoming, JobError> {
    if payload.get("kind").is_some() && payload.get("input").is_some() {
        return Ok(Incoming { body: serde_json::to_vec(payload).unwrap_or_default(), http: false });
    }
    if let Some(body) = payload.get("body") {
        let text = body.as_str().ok_or_else(|| JobError::invalid_spec("the request body is not a string"))?;
        let b64 = payload.get("isBase64Encoded").and_then(Value::as_bool).unwrap_or(false);
        let body = if b64 {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| JobError::invalid_spec(format!("the request body is not valid base64: {e}")))?
        } else {
            text.as_bytes().to_vec()
        };
        return Ok(Incoming { body, http: true });
    }
    Err(JobError::invalid_spec("the event is neither a job envelope nor an HTTP request carrying one"))
}

fn scratch_dir(configured: &str) -> PathBuf {
    if configured.is_empty() {
        std::env::temp_dir()
    } else {
        PathBuf::from(configured)
    }
}

/// Bytes an unprivileged process may still write under `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

impl LambdaSource {
    pub fn new(rt: Arc<Runtime>, init_ms: f64) -> Arc<Self> {
        let instance_id = instance_id(&rt.worker().id);
        let report = InstanceReport::from_config(rt.config());
        Arc::new(LambdaSource { rt, init_ms, invocations: AtomicU64::new(0), instance_id, report })
    }

    /// Refuses what this tier cannot finish; tightens the job's deadline to the time left.
    async fn fit(&self, env: &mut Envelope, remaining: Duration) -> Result<(), JobError> {
        let cfg = &self.rt.config().lambda;
        let refuse = |why: String| Err(JobError::new(ErrorCode::TooLongForTier, why));
        if !cfg.kinds.contains(&env.kind) {
            return refuse(format!("{} jobs run on the container tier", env.kind));
        }
        // What the job needs, from its validated spec. A spec that does not validate is
        // refused by `submit` with its own error; only the checks below that need no spec apply.
        let needs = self
            .rt
            .kinds()
            .get(&env.kind)
            .and_then(|kind| kind.prepare(&env.input, &self.rt.config().limits))
            .map(|job| job.needs())
            .unwrap_or_default();
        if needs.accel == Accel::Gpu {
            return refuse("the serverless tier has no GPU".into());
        }
        if remaining < Duration::from_millis(cfg.min_remaining_ms) + ANSWER_MARGIN {
            return refuse(format!("only {} ms left in this invocation", remaining.as_millis()));
        }
        let mut source_bytes = 0;
        if let Some(src) = &needs.source {
            let uri = parse_uri(src)?;
            // Through the job's (confined) store: a forbidden source is neither touched nor sized.
            if let Ok(Some(meta)) = self.rt.job_store().head(&uri).await {
                if meta.size > cfg.max_input_bytes {
                    return refuse(format!(
                        "the source is {} bytes; this tier takes at most {}",
                        meta.size, cfg.max_input_bytes
                    ));
                }
                source_bytes = meta.size;
            }
        }
        let scratch = scratch_dir(&cfg.scratch_dir);
        let need = cfg.min_scratch_bytes.max(source_bytes.saturating_mul(2));
        match free_bytes(&scratch) {
            Some(free) if free < need => {
                return refuse(format!(
                    "{} has {free} bytes free; this job needs {need}",
                    scratch.display()
                ));
            }
            Some(_) => {}
            None => warn!(dir = %scratch.display(), "cannot read the scratch space's free bytes"),
        }
        let budget = (remaining - ANSWER_MARGIN).as_millis() as u64;
        env.deadline_ms = Some(env.deadline_ms.map_or(budget, |d| d.min(budget)));
        Ok(())
    }

    async fn start(&self, payload: &Value, remaining: Duration, trace: Option<&TraceContext>) -> (Arc<JobEntry>, bool) {
        let incoming = match unwrap_event(payload) {
            Ok(i) => i,
            Err(e) => return (self.rt.refuse_now("unknown", &e), false),
        };
        let mut env = match Envelope::parse(&incoming.body) {
            Ok(env) => env,
            Err((_, e)) => return (self.rt.refuse_now("unknown", &e), incoming.http),
        };
        if let Err(e) = self.fit(&mut env, remaining).await {
            let kind = env.kind.clone();
            let mut entry_id = env.id.clone();
            if entry_id.as_deref().is_some_and(|id| kiln_jobs::envelope::validate_id(id).is_err()) {
                entry_id = None;
            }
            return (self.rt.refuse_with_id(entry_id, &kind, &e), incoming.http);
        }
        (self.rt.submit(env, Admission::Refuse, trace).await, incoming.http)
    }

    /// One invocation.
    pub async fn handle(self: Arc<Self>, event: LambdaEvent<Value>) -> Result<FunctionResponse<Value, Body>, lambda_runtime::Error> {
        let (payload, ctx) = event.into_parts();
        let n = self.invocations.fetch_add(1, Ordering::SeqCst) + 1;
        let inv = Invocation { number: n, init_ms: self.init_ms, instance_id: self.instance_id.clone() };
        let remaining = remaining_time(ctx.deadline, SystemTime::now());
        let started = Instant::now();
        let (trace, route) = invocation_context(&payload, ctx.xray_trace_id.as_deref());
        // The first invocation of this instance waited for its cold start.
        let caller = Caller { route, cold_start_ms: (n == 1).then_some(self.init_ms) };
        let start = with_caller(caller, self.start(&payload, remaining, trace.as_ref()));
        let (entry, http) = match invocation_tenant(&payload, self.rt.config().lambda.trust_tenant_header) {
            Some(tenant) => crate::auth::with_tenant(tenant, start).await,
            None => start.await,
        };
        info!(request_id = %ctx.request_id, job_id = %entry.id, cold_start = n == 1, "invocation");
        if self.rt.config().lambda.response == "stream" {
            if self.report.is_some() {
                // After the stream's last line (best effort: Lambda may freeze the instance
                // once the response is complete; the report then goes at the next thaw).
                let (me, done) = (self.clone(), entry.clone());
                tokio::spawn(async move {
                    done.wait().await;
                    if let Some(r) = &me.report {
                        r.post(&me.rt, &me.instance_id).await;
                    }
                });
            }
            return Ok(answer::stream(entry, inv));
        }
        let result = entry.wait().await;
        info!(job_id = %entry.id, ms = started.elapsed().as_secs_f64() * 1e3, status = result.status.as_str(), "invocation done");
        if let Some(r) = &self.report {
            r.post(&self.rt, &self.instance_id).await;
        }
        Ok(answer::buffered(&result, inv, http))
    }
}

/// The invocation's trace and routing decision: an HTTP event's `traceparent` and
/// `x-kiln-route` headers, else the trace of the invocation itself (`Lambda-Runtime-Trace-Id`).
fn invocation_context(payload: &Value, xray: Option<&str>) -> (Option<TraceContext>, Option<String>) {
    let header = |name: &str| payload.get("headers").and_then(|h| h.get(name)).and_then(Value::as_str);
    let trace = header("traceparent").and_then(TraceContext::child_of).or_else(|| xray.and_then(TraceContext::from_xray));
    let route = header("x-kiln-route").and_then(|v| route_value(v.as_bytes()));
    (trace, route)
}

/// The invocation's tenant: an HTTP event's `x-kiln-tenant` header (what `kiln route` sends
/// for the tenant whose token it accepted), when `trusted` and a valid tenant name.
fn invocation_tenant(payload: &Value, trusted: bool) -> Option<String> {
    if !trusted {
        return None;
    }
    let t = payload.get("headers")?.get(crate::tenants::LAMBDA_HEADER)?.as_str()?;
    crate::tokens::valid_tenant(t).then(|| t.to_owned())
}

/// Time left in the invocation. The Runtime API gives the deadline in epoch milliseconds;
/// local emulators (cargo-lambda's among them) send the function timeout instead, a value no
/// epoch deadline can have (before 2001), which is taken as relative.
fn remaining_time(deadline_ms: u64, now: SystemTime) -> Duration {
    const EPOCH_2001_MS: u64 = 978_307_200_000;
    if deadline_ms < EPOCH_2001_MS {
        return Duration::from_millis(deadline_ms);
    }
    let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms);
    deadline.duration_since(now).unwrap_or(Duration::ZERO)
}

/// Serves invocations until the Runtime API goes away.
pub async fn run(rt: Arc<Runtime>, init_ms: f64) -> anyhow::Result<()> {
    rt.mark_ready();
    info!(init_ms, worker_id = %rt.worker().id, "lambda runtime ready");
    let source = LambdaSource::new(rt, init_ms);
    lambda_runtime::run(lambda_runtime::service_fn(move |ev| source.clone().handle(ev)))
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deadlines_absolute_and_relative() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_428_873_000);
        assert_eq!(remaining_time(1_795_428_875_000, now), Duration::from_secs(2));
        assert_eq!(remaining_time(1_795_428_870_000, now), Duration::ZERO);
        assert_eq!(remaining_time(600_000, now), Duration::from_secs(600));
    }

    #[test]
    fn the_tenant_header_counts_only_when_trusted_and_valid() {
        let ev = |t: &str| serde_json::json!({"headers": {"x-kiln-tenant": t}, "body": "{}"});
        assert_eq!(invocation_tenant(&ev("acme"), true).as_deref(), Some("acme"));
        assert_eq!(invocation_tenant(&ev("acme"), false), None, "not trusted: nobody's");
        for bad in ["", "a b", "acme/../x", &"x".repeat(65)] {
            assert_eq!(invocation_tenant(&ev(bad), true), None, "{bad:?}");
        }
        assert_eq!(invocation_tenant(&serde_json::json!({"id": "j", "kind": "debug"}), true), None, "a plain envelope has no headers");
    }

    #[test]
    fn events_carry_envelopes_directly_or_in_http_bodies() {
        let env = json!({"kind": "thumbnail", "input": {}});
        let i = unwrap_event(&env).unwrap();
        assert!(!i.http);
        let http = json!({"requestContext": {}, "body": env.to_string(), "isBase64Encoded": false});
        let i = unwrap_event(&http).unwrap();
        assert!(i.http);
        assert_eq!(serde_json::from_slice::<Value>(&i.body).unwrap(), env);
        let b64 = base64::engine::general_purpose::STANDARD.encode(env.to_string());
        let i = unwrap_event(&json!({"body": b64, "isBase64Encoded": true})).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&i.body).unwrap(), env);
        assert_eq!(unwrap_event(&json!({"hello": 1})).err().unwrap().code, ErrorCode::InvalidSpec);
        assert!(unwrap_event(&json!({"body": "%%%", "isBase64Encoded": true})).is_err());
    }
}
