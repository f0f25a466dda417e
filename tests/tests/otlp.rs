//! Span export over OTLP, end to end: `kiln serve` configured only by the standard
//! `OTEL_EXPORTER_OTLP_*` variables exports to an OTLP/HTTP receiver the test runs on
//! 127.0.0.1, which decodes each request as the OTLP protobuf `ExportTraceServiceRequest`
//! (the opentelemetry-proto messages). Jobs arrive over HTTP and Kafka (a real tansu broker)
//! with a W3C `traceparent` and a routing decision (`x-kiln-route`); the exported job spans
//! must sit in the caller's trace under the caller's span and carry the tier, the routing
//! decision, the queue wait and the cache outcome. A job sent through `kiln route` carries
//! the router's decision to the worker (`x-kiln-route`), which lands on its span too.

use kiln_tests::broker::Broker;
use kiln_tests::proc::{kiln, serve, spawn_listening, wait_ready};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got: its path, headers and decoded body.
type Export = (String, Vec<(String, String)>, ExportTraceServiceRequest);

/// What the receiver got.
#[derive(Default)]
struct Received {
    requests: Vec<Export>,
}

/// An OTLP/HTTP receiver on 127.0.0.1 (HTTP/1.1 with keep-alive, protobuf bodies). Its
/// threads end with the test process.
fn receiver() -> (String, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Received::default()));
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let g = g.clone();
            std::thread::spawn(move || serve_conn(conn, &g));
        }
    });
    (addr, got)
}

fn serve_conn(conn: TcpStream, got: &Mutex<Received>) {
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let (status, reply) = match ExportTraceServiceRequest::decode(&body[..]) {
            Ok(req) => {
                got.lock().unwrap().requests.push((path, headers, req));
                ("200 OK", Vec::new())
            }
            Err(_) => ("400 Bad Request", Vec::new()),
        };
        let head = format!("HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n", reply.len());
        if out.write_all(head.as_bytes()).and_then(|_| out.write_all(&reply)).is_err() {
            return;
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn attr_str(span: &Span, key: &str) -> Option<String> {
    match attr(&span.attributes, key) {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn attr_num(span: &Span, key: &str) -> Option<f64> {
    match attr(&span.attributes, key) {
        Some(any_value::Value::DoubleValue(v)) => Some(*v),
        Some(any_value::Value::IntValue(v)) => Some(*v as f64),
        _ => None,
    }
}

fn spans(got: &Mutex<Received>) -> Vec<Span> {
    let g = got.lock().unwrap();
    g.requests.iter().flat_map(|(_, _, r)| r.resource_spans.iter()).flat_map(|rs| rs.scope_spans.iter()).flat_map(|ss| ss.spans.iter()).cloned().collect()
}

const HTTP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const HTTP_PARENT: &str = "00f067aa0ba902b7";
const AGAIN_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const KAFKA_TRACE: &str = "5759e988bd862e3fe1be46a994272793";
const KAFKA_PARENT: &str = "53995c3f42cd8ad8";
const ROUTED_TRACE: &str = "6e0c63257de34c926f9efcd03899aa3e";

#[tokio::test(flavor = "multi_thread")]
async fn job_spans_are_exported_over_otlp_in_the_callers_trace() {
    let (endpoint, got) = receiver();
    let broker = Broker::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    // A router in front: the worker reports to it, and one job goes through it.
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"exercise_share": 0.0, "dual_share": 0.0, "kinds": {"debug": {"primary": "container"}}}"#).unwrap();
    let mut rcmd = kiln();
    rcmd.arg("route")
        .env("KILN_HTTP_ADDR", "127.0.0.1:0")
        .env("KILN_ROUTE_POLICY", &policy)
        .env("KILN_LOG", "warn")
        .env_remove("KILN_CONFIG")
        .env_remove("KILN_ROUTE_LAMBDA")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .current_dir(dir.path());
    let (_router, rbase) = spawn_listening(&mut rcmd, "kiln route listening on ");
    let mut cmd = kiln();
    cmd.env("KILN_STORE_URL", format!("file://{}/", dir.path().display()))
        .env("KILN_DEBUG_KINDS", "1")
        // Spans leave the process whatever the log level.
        .env("KILN_LOG", "warn")
        .env("KILN_KAFKA_BROKERS", &broker.addr)
        .env("KILN_KAFKA_GROUP", "otlp-test")
        .env("KILN_KAFKA_SESSION_TIMEOUT_MS", "2000")
        .env("KILN_KAFKA_REVOKE_DRAIN_MS", "1000")
        .env("KILN_ROUTER_URL", format!("{rbase}/v1/capacity"))
        .env("KILN_ROUTER_INTERVAL_MS", "200")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-otlp-token=secret-123")
        .env("OTEL_SERVICE_NAME", "kiln-otlp-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("KILN_CONFIG")
        .current_dir(dir.path())
        .stderr(Stdio::inherit());
    let (mut proc, base) = serve(&mut cmd);
    wait_ready(&base, Duration::from_secs(30));
    let client = reqwest::Client::new();
    let post = |id: &str, trace: &str, route: Option<&str>| {
        let mut req = client
            .post(format!("{base}/v1/jobs"))
            .header("traceparent", format!("00-{trace}-{HTTP_PARENT}-01"))
            .body(json!({"id": id, "kind": "debug", "input": {}}).to_string());
        if let Some(r) = route {
            req = req.header("x-kiln-route", r);
        }
        req.send()
    };
    let r: Value = post("otlp-http", HTTP_TRACE, Some("tier=container; rule=otlp-test")).await.unwrap().json().await.unwrap();
    assert_eq!(r["status"], "succeeded", "{r}");
    // The same id again: answered from the stored result.
    let r: Value = post("otlp-http", AGAIN_TRACE, None).await.unwrap().json().await.unwrap();
    assert_eq!(r["status"], "succeeded", "{r}");

    let headers = OwnedHeaders::new()
        .insert(Header { key: "traceparent", value: Some(&format!("00-{KAFKA_TRACE}-{KAFKA_PARENT}-01")) })
        .insert(Header { key: "x-kiln-route", value: Some("tier=container; via=kafka") });
    let job = json!({"id": "otlp-kafka", "kind": "debug", "input": {}}).to_string();
    broker
        .producer()
        .send(FutureRecord::to("kiln.jobs").key("otlp-kafka").payload(&job).headers(headers), Duration::from_secs(10))
        .await
        .unwrap();
    let start = Instant::now();
    while !dir.path().join("jobs/otlp-kafka/result.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "the Kafka job was not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Through the router (503 until the worker's first capacity report arrives).
    let start = Instant::now();
    loop {
        let r = client
            .post(format!("{rbase}/v1/jobs"))
            .header("traceparent", format!("00-{ROUTED_TRACE}-{HTTP_PARENT}-01"))
            .body(json!({"id": "otlp-routed", "kind": "debug", "input": {}}).to_string())
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the router never placed the job: {}", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The exporter flushes on the way out.
    proc.signal("TERM");
    assert!(proc.wait_timeout(Duration::from_secs(60)).is_some_and(|s| s.success()), "kiln serve did not exit cleanly");

    let all = spans(&got);
    {
        let g = got.lock().unwrap();
        assert!(!g.requests.is_empty(), "nothing was exported");
        for (path, headers, req) in &g.requests {
            assert_eq!(path, "/v1/traces");
            assert!(headers.iter().any(|(k, v)| k == "x-otlp-token" && v == "secret-123"), "OTEL_EXPORTER_OTLP_HEADERS sent: {headers:?}");
            assert!(headers.iter().any(|(k, v)| k == "content-type" && v == "application/x-protobuf"), "{headers:?}");
            for rs in &req.resource_spans {
                let service = rs.resource.as_ref().and_then(|r| attr(&r.attributes, "service.name"));
                assert_eq!(service, Some(&any_value::Value::StringValue("kiln-otlp-test".into())));
            }
        }
    }
    let job_span = |trace: &str| {
        all.iter()
            .find(|s| s.name == "job" && hex(&s.trace_id) == trace)
            .unwrap_or_else(|| panic!("no job span in trace {trace}; got {:?}", all.iter().map(|s| (&s.name, hex(&s.trace_id))).collect::<Vec<_>>()))
            .clone()
    };

    let http = job_span(HTTP_TRACE);
    assert_eq!(hex(&http.parent_span_id), HTTP_PARENT, "the caller's span is the parent");
    assert_eq!(attr_str(&http, "job_id").as_deref(), Some("otlp-http"));
    assert_eq!(attr_str(&http, "kiln.tier").as_deref(), Some("container"));
    assert_eq!(attr_str(&http, "kiln.route").as_deref(), Some("tier=container; rule=otlp-test"));
    assert_eq!(attr_str(&http, "kiln.cache").as_deref(), Some("miss"));
    assert!(attr_num(&http, "kiln.queue_wait_ms").is_some_and(|ms| ms >= 0.0), "{:?}", http.attributes);
    assert_eq!(attr_str(&http, "span_id"), Some(hex(&http.span_id)), "the exported span id is the one kiln sends downstream");
    // The job's steps are its children in the same trace.
    let run = all.iter().find(|s| s.name == "run" && s.trace_id == http.trace_id).expect("a run span");
    assert_eq!(run.parent_span_id, http.span_id);

    let again = job_span(AGAIN_TRACE);
    assert_eq!(attr_str(&again, "kiln.cache").as_deref(), Some("hit"), "answered from the stored result");
    assert_eq!(attr_str(&again, "kiln.route"), None, "no routing decision was sent");

    let kafka = job_span(KAFKA_TRACE);
    assert_eq!(hex(&kafka.parent_span_id), KAFKA_PARENT);
    assert_eq!(attr_str(&kafka, "job_id").as_deref(), Some("otlp-kafka"));
    assert_eq!(attr_str(&kafka, "kiln.route").as_deref(), Some("tier=container; via=kafka"));
    assert_eq!(attr_str(&kafka, "kiln.cache").as_deref(), Some("miss"));

    let routed = job_span(ROUTED_TRACE);
    let route = attr_str(&routed, "kiln.route").unwrap_or_default();
    assert!(route.starts_with("tier=container; worker=") && route.contains("rule="), "the router's decision reached the worker: {route:?}");
}

const LAMBDA_TRACE: &str = "5a6b7c8d9e0f11223344556677889900";

/// Issue 16: a job `kiln route` places on the serverless tier joins the caller's trace too.
/// The router passes the trace context and its decision in the invocation's payload (an
/// HTTP-shaped event), which reaches the function through the Lambda Invoke API and
/// cargo-lambda's emulator; the function's exported job span sits in the caller's trace with
/// the router's decision and the serverless tier on it.
#[test]
fn a_job_routed_to_the_function_joins_the_callers_trace() {
    let (endpoint, got) = receiver();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/store/", dir.path().display());
    let function = kiln_tests::lambda::Function::start(&[
        ("KILN_STORE_URL", store.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "kiln-otlp-lambda"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"exercise_share": 0.0, "dual_share": 0.0, "cold_start_override": {"enabled": false},
            "serverless": {"function": "_"}, "kinds": {"thumbnail": {"primary": "serverless", "fallback": "container"}}}"#,
    )
    .unwrap();
    let mut rcmd = kiln();
    rcmd.arg("route")
        .env("KILN_HTTP_ADDR", "127.0.0.1:0")
        .env("KILN_ROUTE_POLICY", &policy)
        .env("KILN_ROUTE_LAMBDA", function.endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("KILN_LOG", "warn")
        .env_remove("KILN_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .current_dir(dir.path());
    let (_router, rbase) = spawn_listening(&mut rcmd, "kiln route listening on ");
    wait_ready(&rbase, Duration::from_secs(30));
    let photo = kiln_tests::workspace_root().join("data/mate-backgrounds/usr/share/backgrounds/mate/nature/Garden.jpg");
    assert!(photo.exists(), "{} (scripts/fetch-photos.sh)", photo.display());
    let job = json!({"id": "otlp-lambda", "kind": "thumbnail", "input": {"source": photo,
        "outputs": [{"name": "64.jpg", "width": 64, "height": 64, "fit": "inside", "format": "jpeg"}]}});
    let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let r = c
        .post(format!("{rbase}/v1/jobs"))
        .header("traceparent", format!("00-{LAMBDA_TRACE}-{HTTP_PARENT}-01"))
        .body(job.to_string())
        .send()
        .unwrap();
    let route = r.headers().get("x-kiln-route").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let v: Value = r.json().unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["worker"]["tier"], "serverless", "ran on the function: {v} ({route})");
    assert!(v["lambda"]["instance_id"].is_string(), "the client gets the function's result, unwrapped: {v}");

    // The function's exporter sends its spans on its schedule (100 ms here).
    let start = Instant::now();
    let span = loop {
        if let Some(s) = spans(&got).into_iter().find(|s| s.name == "job" && hex(&s.trace_id) == LAMBDA_TRACE) {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no job span in the caller's trace was exported by the function");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(attr_str(&span, "job_id").as_deref(), Some("otlp-lambda"));
    assert_eq!(attr_str(&span, "kiln.tier").as_deref(), Some("serverless"));
    assert!(attr_num(&span, "kiln.cold_start_ms").is_some_and(|ms| ms > 0.0), "the first invocation's cold start: {:?}", span.attributes);
    let decision = attr_str(&span, "kiln.route").unwrap_or_default();
    assert!(decision.starts_with("tier=serverless; worker=_") && decision.contains("rule=primary"), "the router's decision reached the function: {decision:?}");
    let parent = hex(&span.parent_span_id);
    assert!(!parent.is_empty() && parent != HTTP_PARENT, "the job span's parent is the router's span (a child of the caller's): {parent}");
}
