//! The serverless tier: a job invoked on the Lambda function through the Lambda Invoke API
//! (aws-sdk-lambda, `RequestResponse`). `route.lambda = "aws"` uses AWS's endpoint for the
//! region; an `http(s)://` value overrides the endpoint, so cargo-lambda's emulator serves
//! it locally. Credentials come from the standard AWS chain (a local emulator ignores the
//! signature, but the SDK still needs some: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`).
//!
//! The payload is the job envelope as the client sent it (same id: a retry on the other tier
//! is idempotent), carried as the body of an HTTP-shaped event (the function-URL payload,
//! format 2.0: [`http_event`]) whose headers pass on what a container worker gets as HTTP
//! headers: the caller's `traceparent` and the routing decision (`x-kiln-route`). Lambda's
//! own carriers do not survive the local emulator (cargo-lambda drops `X-Amz-Client-Context`
//! and replaces `X-Amzn-Trace-Id`), the payload does, there and on AWS. The tenant whose
//! token the router accepted goes along too (`tenants::LAMBDA_HEADER`), so the function stamps its
//! result with the owner a container worker would have. The function answers
//! such an event with an HTTP-shaped response, unwrapped by [`parse_answer`]. The function's answer is kiln's result with its `lambda` facts
//! (`cold_start`, `init_ms`, `invocation`, `instance_id`), which [`observation`] turns into
//! the [`InvocationObservation`] that keeps the router's view of the warm pool. A function
//! configured to stream (`lambda.response = stream`) answers NDJSON; its last line is the
//! result. An SSE request invokes with `InvokeWithResponseStream` instead
//! ([`super::streamed::invoke`]), whose answer is read as it comes ([`super::streamed`]).
//!
//! The SDK does not retry (one attempt): the router retries on the other tier instead.

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_sdk_lambda::Client;
use base64::Engine as _;
use kiln_jobs::JobResult;
use kiln_router_client::InvocationObservation;
use serde_json::Value;
use std::time::Duration;

/// Why an invocation brought no usable result back.
#[derive(Debug, thiserror::Error)]
pub enum InvokeFailure {
    /// The function's concurrency (or the account's) is exhausted.
    #[error("throttled: {0}")]
    Throttled(String),
    /// No answer in time.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The endpoint could not be reached, or refused the call.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The function ran but failed (an unhandled error, a crash, a timeout inside it), or
    /// answered something that is not a kiln result.
    #[error("function error: {0}")]
    Function(String),
}

impl InvokeFailure {
    /// The retry label (metrics, `x-kiln-route` notes).
    pub fn label(&self) -> &'static str {
        match self {
            InvokeFailure::Throttled(_) => "overloaded",
            InvokeFailure::Timeout(_) => "timeout",
            InvokeFailure::Unreachable(_) => "unreachable",
            InvokeFailure::Function(_) => "function_error",
        }
    }
}

/// A result the function answered with.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// The result as the function sent it (the `lambda` facts included).
    pub body: Value,
    pub result: JobResult,
}

impl Invoked {
    /// The instance that served it (`lambda.instance_id`, else the result's worker id).
    pub fn instance_id(&self) -> String {
        self.body
            .pointer("/lambda/instance_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| self.result.worker.id.clone())
    }

    pub fn cold_start(&self) -> bool {
        self.body.pointer("/lambda/cold_start").and_then(Value::as_bool).unwrap_or(false)
    }
}

/// What the view learns from one answered invocation.
pub fn observation(function: &str, invoked: &Invoked, finished_ms: u64) -> InvocationObservation {
    InvocationObservation {
        function: function.to_owned(),
        instance_id: invoked.instance_id(),
        cold_start: invoked.cold_start(),
        init_ms: invoked.body.pointer("/lambda/init_ms").and_then(Value::as_f64).unwrap_or(0.0),
        finished_ms,
    }
}

/// The invocation payload: `envelope` as the body of a function-URL event (payload format
/// 2.0) with `headers`, which the function reads as it reads a function URL's request.
pub fn http_event(envelope: &[u8], headers: &[(&str, &str)]) -> Vec<u8> {
    let (body, b64) = match std::str::from_utf8(envelope) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(envelope), true),
    };
    let headers: serde_json::Map<String, Value> =
        headers.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).chain([("content-type".to_owned(), Value::from("application/json"))]).collect();
    let event = serde_json::json!({
        "version": "2.0",
        "rawPath": "/v1/jobs",
        "headers": headers,
        "requestContext": {"http": {"method": "POST", "path": "/v1/jobs"}},
        "body": body,
        "isBase64Encoded": b64,
    });
    serde_json::to_vec(&event).unwrap_or_default()
}

/// Reads the function's answer: one JSON result, an HTTP-shaped response carrying it (the
/// answer to [`http_event`]), or NDJSON events whose last line is the result (a streaming
/// function).
pub fn parse_answer(payload: &[u8]) -> Result<Invoked, InvokeFailure> {
    if let Ok(v) = serde_json::from_slice::<Value>(payload) {
        if let (Some(_), Some(Value::String(inner))) = (v.get("statusCode"), v.get("body")) {
            if v.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(inner)
                    .map_err(|e| InvokeFailure::Function(format!("the answer's body is not valid base64: {e}")))?;
                return parse_result(&bytes);
            }
            return parse_result(inner.as_bytes());
        }
    }
    parse_result(payload)
}

/// A kiln result, or NDJSON events whose last line is one.
fn parse_result(payload: &[u8]) -> Result<Invoked, InvokeFailure> {
    let body: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(_) => {
            let last = payload
                .split(|b| *b == b'\n')
                .rev()
                .find(|l| !l.iter().all(u8::is_ascii_whitespace))
                .unwrap_or_default();
            let mut v: Value = serde_json::from_slice(last)
                .map_err(|e| InvokeFailure::Function(format!("the answer is not JSON: {e}")))?;
            if let Some(o) = v.as_object_mut() {
                o.remove("event");
            }
            v
        }
    };
    let result: JobResult = serde_json::from_value(body.clone())
        .map_err(|e| InvokeFailure::Function(format!("the answer is not a kiln result: {e}")))?;
    Ok(Invoked { body, result })
}

/// The Lambda Invoke API client.
pub struct Invoker {
    client: Client,
    /// `route.lambda_streaming = emulator`: the emulator's endpoint, whose Invoke answer is
    /// read as it arrives for SSE requests ([`super::streamed`]), and an HTTP client for it.
    emulator: Option<(String, reqwest::Client)>,
}

impl Invoker {
    /// A client for `route.lambda` (`aws` or an endpoint URL), `route.lambda_region` and
    /// `route.lambda_streaming`. Sends no request.
    pub async fn connect(target: &str, region: Option<&str>, streaming: &str) -> Invoker {
        let region = RegionProviderChain::first_try(region.filter(|r| !r.is_empty()).map(|r| Region::new(r.to_owned())))
            .or_default_provider()
            .or_else(Region::from_static("us-east-1"));
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(RetryConfig::disabled())
            .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(2)).build())
            .load()
            .await;
        let mut b = aws_sdk_lambda::config::Builder::from(&shared);
        if target != "aws" {
            b = b.endpoint_url(target);
        }
        let emulator = match (streaming, target) {
            ("emulator", endpoint) if endpoint != "aws" => Some((endpoint.trim_end_matches('/').to_owned(), reqwest::Client::new())),
            _ => None,
        };
        Invoker { client: Client::from_conf(b.build()), emulator }
    }

    /// Invokes `function` with `payload` and waits at most `timeout` for its answer.
    pub async fn invoke(&self, function: &str, payload: &[u8], timeout: Duration) -> Result<Invoked, InvokeFailure> {
        let call = self
            .client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(payload))
            .send();
        let out = match tokio::time::timeout(timeout, call).await {
            Err(_) => return Err(InvokeFailure::Timeout(timeout.as_millis() as u64)),
            Ok(Err(e)) => return Err(classify(e)),
            Ok(Ok(out)) => out,
        };
        let bytes: &[u8] = out.payload().map(|b| b.as_ref()).unwrap_or(&[]);
        if let Some(kind) = out.function_error() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(InvokeFailure::Function(format!("{kind}: {text}")));
        }
        parse_answer(bytes)
    }

    /// The Invoke API client ([`super::streamed::invoke`] uses it too).
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// The emulator's endpoint and an HTTP client for it, with `route.lambda_streaming =
    /// emulator`.
    pub(super) fn emulator(&self) -> Option<(&str, &reqwest::Client)> {
        self.emulator.as_ref().map(|(e, http)| (e.as_str(), http))
    }
}

/// Why the Invoke API refused a call: throttling (`TooManyRequestsException`) or anything else
/// (the function missing, not ready, the endpoint gone), or no answer in time.
pub(super) fn classify<E, R>(e: SdkError<E, R>) -> InvokeFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &e {
        SdkError::TimeoutError(_) => InvokeFailure::Timeout(0),
        SdkError::ServiceError(s) => {
            let err = s.err();
            let text = format!("{}: {}", err.code().unwrap_or("error"), err.message().unwrap_or_default());
            if err.code() == Some("TooManyRequestsException") {
                InvokeFailure::Throttled(text)
            } else {
                InvokeFailure::Unreachable(text)
            }
        }
        _ => InvokeFailure::Unreachable(aws_sdk_lambda::error::DisplayErrorContext(&e).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result_json(extra: &str) -> String {
        format!(
            r#"{{"id":"j","kind":"debug","status":"succeeded","outputs":[],"error":null,"attempt":1,"resumed":false,
               "timings":{{"queued_ms":0.1,"run_ms":1.0}},"worker":{{"id":"w-1","tier":"serverless","accel":"cpu"}}{extra}}}"#
        )
        .replace('\n', "") // one NDJSON line
    }

    #[test]
    fn answers_parse_buffered_or_streamed() {
        let buffered = result_json(r#","lambda":{"cold_start":true,"init_ms":42.0,"invocation":1,"instance_id":"i-1"}"#);
        let inv = parse_answer(buffered.as_bytes()).unwrap();
        assert_eq!(inv.result.id, "j");
        assert_eq!(inv.instance_id(), "i-1");
        assert!(inv.cold_start());
        let obs = observation("kiln", &inv, 7);
        assert_eq!((obs.instance_id.as_str(), obs.cold_start, obs.init_ms, obs.finished_ms), ("i-1", true, 42.0, 7));

        let last = result_json(r#","event":"result""#);
        let streamed = format!("{{\"event\":\"progress\",\"id\":\"j\",\"done\":1,\"total\":2,\"stage\":\"x\"}}\n{last}\n\n");
        let inv = parse_answer(streamed.as_bytes()).unwrap();
        assert_eq!(inv.instance_id(), "w-1", "no lambda facts: the worker id stands in");
        assert!(!inv.cold_start());
        assert!(inv.body.get("event").is_none());

        // The answer to an HTTP-shaped event: the result in the response's body.
        let http = serde_json::json!({"statusCode": 200, "headers": {"content-type": "application/json"}, "body": buffered});
        let inv = parse_answer(http.to_string().as_bytes()).unwrap();
        assert_eq!(inv.result.id, "j");
        assert_eq!(inv.instance_id(), "i-1");
        assert_eq!(inv.body["lambda"]["cold_start"], true, "the client gets the inner result");
        let b64 = serde_json::json!({"statusCode": 422, "body": base64::engine::general_purpose::STANDARD.encode(&buffered), "isBase64Encoded": true});
        assert_eq!(parse_answer(b64.to_string().as_bytes()).unwrap().result.id, "j");
        let bad = serde_json::json!({"statusCode": 502, "body": "gateway trouble"});
        assert!(matches!(parse_answer(bad.to_string().as_bytes()), Err(InvokeFailure::Function(_))));

        assert!(matches!(parse_answer(b"not json"), Err(InvokeFailure::Function(_))));
        assert!(matches!(parse_answer(br#"{"errorMessage":"boom"}"#), Err(InvokeFailure::Function(_))));
    }

    #[test]
    fn the_event_carries_the_envelope_and_the_headers() {
        let env = br#"{"id":"j","kind":"debug","input":{}}"#;
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let ev: Value = serde_json::from_slice(&http_event(env, &[("traceparent", tp), ("x-kiln-route", "tier=serverless; worker=f")])).unwrap();
        assert_eq!(ev["body"].as_str().map(str::as_bytes), Some(&env[..]));
        assert_eq!(ev["isBase64Encoded"], false);
        assert_eq!((ev["headers"]["traceparent"].as_str(), ev["headers"]["x-kiln-route"].as_str()), (Some(tp), Some("tier=serverless; worker=f")));
        // Bytes that are not UTF-8 go as base64.
        let ev: Value = serde_json::from_slice(&http_event(&[0xff, 0xfe], &[])).unwrap();
        assert_eq!((ev["body"].as_str(), ev["isBase64Encoded"].as_bool()), (Some("//4="), Some(true)));
    }
}
