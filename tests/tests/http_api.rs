//! End-to-end tests of `kiln serve`: a real process on 127.0.0.1, a real HTTP client.
//!
//! Jobs of the `debug` kind (KILN_DEBUG_KINDS=1) hold their slot until a gate file appears,
//! so each test decides exactly when a job may finish; no test waits on a fixed sleep.

use kiln_tests::proc::{kiln, serve, Proc};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A `kiln serve` process, killed on drop.
struct Server {
    proc: Proc,
    base: String,
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Server {
    async fn start(env: &[(&str, &str)]) -> Server {
        Self::start_with(env, Stdio::inherit()).await
    }

    async fn start_with(env: &[(&str, &str)], stderr: Stdio) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = url_of(dir.path());
        let mut cmd = kiln();
        cmd.env("KILN_STORE_URL", &store)
            .env("KILN_DEBUG_KINDS", "1")
            .env("KILN_LOG", "warn")
            .env_remove("KILN_CONFIG")
            .current_dir(dir.path())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (proc, base) = serve(&mut cmd);
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let s = Server { proc, base, dir, client };
        s.wait_until(|| async { s.get("/readyz").await.0 == 200 }, "ready").await;
        s
    }

    /// Polls `cond` (bounded: 30 s) — for states only observable from outside.
    async fn wait_until<F, Fut>(&self, cond: F, what: &str)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !cond().await {
            assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn post(&self, body: &Value, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.post(self.url("/v1/jobs")).body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let h = r.headers().clone();
        let text = r.text().await.unwrap();
        (status, h, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Reads an SSE stream to its end: (event name, data) pairs.
    async fn sse(&self, mut resp: reqwest::Response) -> Vec<(String, Value)> {
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let mut buf = String::new();
        while let Some(chunk) = resp.chunk().await.unwrap() {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            if buf.contains("event: result") && buf.ends_with("\n\n") {
                break;
            }
        }
        let mut out = Vec::new();
        for block in buf.split("\n\n") {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(d).unwrap());
                }
            }
            if let (Some(n), Some(d)) = (name, data) {
                out.push((n, d));
            }
        }
        out
    }

    /// Waits for a job's result through its event stream.
    async fn result_of(&self, id: &str) -> Value {
        let resp = self.client.get(self.url(&format!("/v1/jobs/{id}/events"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let events = self.sse(resp).await;
        events.last().expect("events").1.clone()
    }

    fn gate(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("gate-{name}"))
    }

    fn open(&self, name: &str) {
        std::fs::write(self.gate(name), b"open").unwrap();
    }

    fn held(&self, id: &str, gate: &str) -> Value {
        json!({"id": id, "kind": "debug", "input": {"hold_until": self.gate(gate)}})
    }

    fn sigterm(&self) {
        self.proc.signal("TERM");
    }
}

fn url_of(p: &Path) -> String {
    format!("file://{}/", p.display())
}

#[tokio::test]
async fn sync_result_is_stored_and_idempotent() {
    let s = Server::start(&[]).await;
    let job = json!({"id": "sync-1", "kind": "debug", "input": {"output": "out.txt"}});
    let (code, _, r) = s.post(&job, &[]).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["id"], "sync-1");
    let uri = r["outputs"][0]["uri"].as_str().unwrap();
    let path = uri.strip_prefix("file://").unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), "sync-1");
    assert!(s.dir.path().join("jobs/sync-1/result.json").exists());

    // The same id again: the stored result, not a second run.
    std::fs::remove_file(path).unwrap();
    let (code, _, again) = s.post(&job, &[]).await;
    assert_eq!(code, 200);
    assert_eq!(again, r);
    assert!(!Path::new(path).exists(), "the job ran again");
    let (_, metrics) = s.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(metrics.contains("kiln_idempotent_hits_total{kind=\"debug\"} 1"), "{metrics}");
    assert!(metrics.contains("kiln_jobs_total{kind=\"debug\",status=\"succeeded\"} 1"), "{metrics}");
    assert!(metrics.contains("kiln_job_run_seconds_bucket"), "{metrics}");

    let (code, got) = s.get("/v1/jobs/sync-1").await;
    assert_eq!((code, &got), (200, &r));
    assert_eq!(s.get("/v1/jobs/nope").await.0, 404);
}

#[tokio::test]
async fn sse_streams_progress_output_then_result() {
    let s = Server::start(&[]).await;
    let job = json!({"id": "sse-1", "kind": "debug", "input": {"output": "a.txt"}});
    let resp = s
        .client
        .post(s.url("/v1/jobs"))
        .header("accept", "text/event-stream")
        .body(job.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = s.sse(resp).await;
    let names: Vec<_> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["progress", "output", "progress", "result"]);
    assert_eq!(events[1].1["name"], "a.txt");
    assert_eq!(events[3].1["status"], "succeeded");
    assert!(events.iter().all(|(_, d)| d["id"] == "sse-1"));
}

#[tokio::test]
async fn async_submit_then_cancel() {
    let s = Server::start(&[]).await;
    let (code, headers, body) = s.post(&s.held("async-1", "never"), &[("prefer", "respond-async")]).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(headers["location"], "/v1/jobs/async-1");
    let (code, st) = s.get("/v1/jobs/async-1").await;
    assert_eq!(code, 200);
    assert!(st["status"] == "running" || st["status"] == "queued", "{st}");

    let r = s.client.delete(s.url("/v1/jobs/async-1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.unwrap();
    assert_eq!(r["status"], "cancelled");
    assert_eq!(r["error"]["code"], "cancelled");
    // Cancelling again: already finished.
    let again = s.client.delete(s.url("/v1/jobs/async-1")).send().await.unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(s.client.delete(s.url("/v1/jobs/unknown")).send().await.unwrap().status(), 404);
    // A cancelled job is not final: the same id may run again.
    let (code, _, r) = s.post(&json!({"id": "async-1", "kind": "debug", "input": {}}), &[]).await;
    assert_eq!((code, r["status"].as_str()), (200, Some("succeeded")));
}

#[tokio::test]
async fn full_queue_answers_503_with_retry_after() {
    let s = Server::start(&[("KILN_CPU_SLOTS", "1"), ("KILN_QUEUE_DEPTH", "1")]).await;
    let async_hdr = [("prefer", "respond-async")];
    assert_eq!(s.post(&s.held("run", "g"), &async_hdr).await.0, 202);
    assert_eq!(s.post(&s.held("wait", "g"), &async_hdr).await.0, 202);
    let (code, headers, body) = s.post(&s.held("refused", "g"), &async_hdr).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"]["code"], "overloaded");
    let (_, cap) = s.get("/v1/capacity").await;
    assert_eq!(cap["kinds"]["debug"]["busy"], 1, "{cap}");
    assert_eq!(cap["kinds"]["debug"]["queued"], 1, "{cap}");
    s.open("g");
    assert_eq!(s.result_of("run").await["status"], "succeeded");
    assert_eq!(s.result_of("wait").await["status"], "succeeded");
    // The refused id was never taken: it runs now.
    let (code, _, r) = s.post(&json!({"id": "refused", "kind": "debug", "input": {}}), &[]).await;
    assert_eq!((code, r["status"].as_str()), (200, Some("succeeded")));
}

#[tokio::test]
async fn deadlines_fail_queued_and_running_jobs() {
    let s = Server::start(&[("KILN_CPU_SLOTS", "1")]).await;
    assert_eq!(s.post(&s.held("blocker", "g"), &[("prefer", "respond-async")]).await.0, 202);
    // Queued behind the blocker past its deadline.
    let (code, _, r) = s.post(&json!({"id": "q", "kind": "debug", "input": {}, "deadline_ms": 50}), &[]).await;
    assert_eq!(code, 504, "{r}");
    assert_eq!(r["error"]["code"], "deadline_exceeded");
    assert_eq!(r["timings"]["run_ms"], 0.0);
    s.open("g");
    assert_eq!(s.result_of("blocker").await["status"], "succeeded");
    // Running past its deadline: stopped, not waited for.
    let (code, _, r) = s.post(&json!({"id": "r", "kind": "debug", "input": {"hold_ms": 30000}, "deadline_ms": 100}), &[]).await;
    assert_eq!(code, 504, "{r}");
    assert!(r["timings"]["run_ms"].as_f64().unwrap() < 20_000.0, "{r}");
}

#[tokio::test]
async fn panics_and_bad_input_are_results_and_the_worker_keeps_serving() {
    let s = Server::start(&[]).await;
    let (code, _, r) = s.post(&json!({"id": "p", "kind": "debug", "input": {"panic": true}}), &[]).await;
    assert_eq!(code, 500, "{r}");
    assert_eq!(r["error"]["code"], "internal");
    assert!(r["error"]["message"].as_str().unwrap().contains("panicked"), "{r}");

    let bad = s.client.post(s.url("/v1/jobs")).body("{not json").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["error"]["code"], "invalid_spec");

    let (code, _, r) = s.post(&json!({"kind": "teleport", "input": {}}), &[]).await;
    assert_eq!((code, r["error"]["code"].as_str()), (422, Some("unsupported")));
    let (code, _, r) = s.post(&json!({"kind": "debug", "input": {"hold_ms": "x"}}), &[]).await;
    assert_eq!((code, r["error"]["code"].as_str()), (400, Some("invalid_spec")));
    let (code, _, r) = s.post(&json!({"id": "../etc", "kind": "debug", "input": {}}), &[]).await;
    assert_eq!((code, r["error"]["code"].as_str()), (400, Some("invalid_spec")));

    let (code, _, r) = s.post(&json!({"id": "after", "kind": "debug", "input": {}}), &[]).await;
    assert_eq!((code, r["status"].as_str()), (200, Some("succeeded")));
    assert_eq!(s.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn sigterm_drains_accepted_work_then_exits_zero() {
    let mut s = Server::start(&[("KILN_CPU_SLOTS", "1"), ("KILN_SHUTDOWN_GRACE_MS", "30000")]).await;
    let async_hdr = [("prefer", "respond-async")];
    assert_eq!(s.post(&s.held("d1", "g"), &async_hdr).await.0, 202);
    assert_eq!(s.post(&json!({"id": "d2", "kind": "debug", "input": {"output": "o.txt"}}), &async_hdr).await.0, 202);
    // Watch both jobs' events from before the signal.
    let w1 = s.client.get(s.url("/v1/jobs/d1/events")).send().await.unwrap();
    let w2 = s.client.get(s.url("/v1/jobs/d2/events")).send().await.unwrap();

    s.sigterm();
    s.wait_until(|| async { s.get("/readyz").await.0 == 503 }, "readyz to turn 503").await;
    let (code, _, r) = s.post(&json!({"id": "late", "kind": "debug", "input": {}}), &[]).await;
    assert_eq!((code, r["error"]["code"].as_str()), (503, Some("overloaded")));
    assert_eq!(s.get("/healthz").await.0, 200, "alive while draining");

    s.open("g");
    let e1 = s.sse(w1).await;
    let e2 = s.sse(w2).await;
    assert_eq!(e1.last().unwrap().1["status"], "succeeded");
    assert_eq!(e2.last().unwrap().1["status"], "succeeded");
    let status = s.proc.child().wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(s.dir.path().join("outputs/d2/o.txt").exists());
    assert!(s.dir.path().join("jobs/d2/result.json").exists());
}

#[tokio::test]
async fn sigterm_grace_cancels_what_cannot_finish() {
    let mut s = Server::start(&[("KILN_SHUTDOWN_GRACE_MS", "200")]).await;
    assert_eq!(s.post(&s.held("stuck", "never"), &[("prefer", "respond-async")]).await.0, 202);
    let w = s.client.get(s.url("/v1/jobs/stuck/events")).send().await.unwrap();
    s.sigterm();
    let events = s.sse(w).await;
    assert_eq!(events.last().unwrap().1["status"], "cancelled");
    assert_eq!(s.proc.child().wait().unwrap().code(), Some(0));
}

#[tokio::test]
async fn capacity_and_metrics_describe_the_worker() {
    let s = Server::start(&[("KILN_CPU_SLOTS", "3")]).await;
    let (code, cap) = s.get("/v1/capacity").await;
    assert_eq!(code, 200);
    assert_eq!(cap["state"], "ready");
    assert_eq!(cap["tier"], "container");
    assert_eq!(cap["kinds"]["thumbnail"]["slots"], 3);
    assert!(cap["seq"].as_u64().unwrap() >= 1);
    let (_, cap2) = s.get("/v1/capacity").await;
    assert!(cap2["seq"].as_u64() > cap["seq"].as_u64());
    let (code, m) = s.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(m.as_str().unwrap().contains("kiln_queue_depth 0"));
}

/// A minimal HTTP endpoint standing in for the router: records each POST body.
fn router_stub() -> (String, std::sync::mpsc::Receiver<Value>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/capacity", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Bounded: the test reads a handful of reports, then the process ends.
        for stream in listener.incoming().take(200) {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let Ok(n) = s.read(&mut chunk) else { break None };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(split) = text.find("\r\n\r\n") {
                    let len = text[..split]
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                        .unwrap_or(0);
                    if buf.len() >= split + 4 + len {
                        break Some(buf[split + 4..split + 4 + len].to_vec());
                    }
                }
            };
            // Record before answering: once kiln has its answer it may exit.
            if let Some(b) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                if tx.send(b).is_err() {
                    break;
                }
            }
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, rx)
}

#[tokio::test]
async fn capacity_reports_reach_the_router_until_draining() {
    let (url, rx) = router_stub();
    let mut s = Server::start(&[("KILN_ROUTER_URL", &url), ("KILN_ROUTER_INTERVAL_MS", "100")]).await;
    let recv = |rx: &std::sync::mpsc::Receiver<Value>| rx.recv_timeout(Duration::from_secs(30)).expect("a capacity report");
    let mut report = recv(&rx);
    while report["state"] != "ready" {
        report = recv(&rx);
    }
    assert_eq!(report["tier"], "container");
    assert!(report["kinds"]["thumbnail"]["slots"].as_u64().unwrap() >= 1);
    let next = recv(&rx);
    assert!(next["seq"].as_u64() > report["seq"].as_u64(), "sequence numbers grow");
    s.sigterm();
    assert_eq!(s.proc.child().wait().unwrap().code(), Some(0));
    let rest: Vec<Value> = rx.try_iter().collect();
    assert_eq!(rest.last().map(|r| r["state"].clone()), Some(json!("draining")), "the last report says draining");
}

#[tokio::test]
async fn a_traceparent_puts_the_job_into_the_callers_trace() {
    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut s = Server::start_with(&[("KILN_LOG", "info")], Stdio::from(logs.reopen().unwrap())).await;
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (code, _, r) = s.post(&json!({"id": "traced", "kind": "debug", "input": {}}), &[("traceparent", tp)]).await;
    assert_eq!(code, 200, "{r}");
    let (code, _, r) = s.post(&json!({"id": "untraced", "kind": "debug", "input": {}}), &[("traceparent", "garbage")]).await;
    assert_eq!(code, 200, "a malformed traceparent is ignored: {r}");
    s.sigterm();
    assert_eq!(s.proc.child().wait().unwrap().code(), Some(0));
    let text = std::fs::read_to_string(logs.path()).unwrap();
    // JSON log lines of the job carry the trace id, the caller's span as parent, and a new span.
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let traced: Vec<&Value> = lines.iter().filter(|l| l["span"]["job_id"] == "traced").collect();
    assert!(!traced.is_empty(), "no log line of the job:\n{text}");
    for l in &traced {
        assert_eq!(l["span"]["trace_id"], "0af7651916cd43dd8448eb211c80319c", "{l}");
        assert_eq!(l["span"]["parent_span_id"], "b7ad6b7169203331", "{l}");
        let span_id = l["span"]["span_id"].as_str().unwrap_or_default();
        assert!(span_id.len() == 16 && span_id != "b7ad6b7169203331", "{l}");
    }
    let untraced: Vec<&Value> = lines.iter().filter(|l| l["span"]["job_id"] == "untraced").collect();
    assert!(!untraced.is_empty() && untraced.iter().all(|l| l["span"].get("trace_id").is_none()), "{text}");
}
