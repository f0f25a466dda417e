//! The Lambda side of results: a buffered response (the result, or an HTTP-shaped answer for
//! function-URL and API Gateway events), or an NDJSON stream of every event with the result
//! last. Each result carries the invocation's facts (`lambda: {cold_start, init_ms,
//! invocation, instance_id}`), which is how the router learns the serverless tier's warm pool.

use super::status_for;
use crate::jobtable::JobEntry;
use futures_util::StreamExt;
use kiln_jobs::{Event, JobResult};
use lambda_runtime::streaming::{channel, Body};
use lambda_runtime::{FunctionResponse, StreamResponse};
use serde_json::{json, Value};
use std::sync::Arc;
use tracing::warn;

/// What this invocation adds to its result.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// 1 for the instance's first invocation (its cold start).
    pub number: u64,
    /// Process start → runtime ready, in ms.
    pub init_ms: f64,
    /// The instance (execution environment) that served it: the same for every invocation
    /// of one instance, different across instances.
    pub instance_id: Arc<str>,
}

impl Invocation {
    /// The result as JSON with the `lambda` field added.
    pub fn annotate(&self, result: &JobResult) -> Value {
        let mut v = serde_json::to_value(result).unwrap_or(Value::Null);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("lambda".into(), json!({"cold_start": self.number == 1, "init_ms": self.init_ms, "invocation": self.number,
                "instance_id": &*self.instance_id}));
        }
        v
    }
}

/// The buffered answer: the annotated result, wrapped as an HTTP response for HTTP-shaped events.
pub fn buffered(result: &JobResult, inv: Invocation, http: bool) -> FunctionResponse<Value, Body> {
    let body = inv.annotate(result);
    if http {
        return FunctionResponse::BufferedResponse(json!({
            "statusCode": status_for(result).as_u16(),
            "headers": {"content-type": "application/json"},
            "body": body.to_string(),
        }));
    }
    FunctionResponse::BufferedResponse(body)
}

/// The streamed answer: one JSON line per event, the annotated result last; its metadata
/// prelude names the instance (`x-kiln-instance`). A caller that goes away cancels the job
/// rather than let it work for nobody.
pub fn stream(entry: Arc<JobEntry>, inv: Invocation) -> FunctionResponse<Value, Body> {
    let (mut tx, rx) = channel();
    let instance = inv.instance_id.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(entry.events());
        while let Some(ev) = events.next().await {
            let line = match &ev {
                Event::Result(r) => {
                    let mut v = inv.annotate(r);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("event".into(), Value::from("result"));
                    }
                    v
                }
                other => serde_json::to_value(other).unwrap_or(Value::Null),
            };
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            if tx.send_data(bytes.into()).await.is_err() {
                warn!(job_id = %entry.id, "stream closed by the caller; cancelling the job");
                entry.cancel.cancel();
                break;
            }
        }
    });
    let mut resp = StreamResponse::from(rx);
    let headers = &mut resp.metadata_prelude.headers;
    headers.insert("content-type", axum::http::HeaderValue::from_static("application/x-ndjson"));
    // The router names the instance before the result arrives (route/streamed.rs).
    if let Ok(v) = axum::http::HeaderValue::from_str(&instance) {
        headers.insert("x-kiln-instance", v);
    }
    FunctionResponse::StreamingResponse(resp)
}
