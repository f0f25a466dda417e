//! End-to-end tests of `kiln route` (issue 16): two `kiln serve` workers pushing capacity to
//! a router, jobs of the `debug` kind (KILN_DEBUG_KINDS=1) sent through it.
//!
//! One test, one stack (start-up dominates the cost): placement on both workers, the
//! decision in `x-kiln-route` and the decision log, GPU work never serverless, SSE and
//! async passthrough, lookups forwarded, bad input, a policy reload that sends the kind
//! serverless (which fails over to a container), a worker killed mid-run whose job
//! finishes on the other with one stored result, and the router's metrics.

use kiln_tests::proc::{kiln, serve, spawn_listening, wait_ready, Proc};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn start_router(dir: &Path, policy: &Path) -> (Proc, String) {
    let mut cmd = kiln();
    cmd.arg("route")
        .env("KILN_HTTP_ADDR", "127.0.0.1:0")
        .env("KILN_ROUTE_POLICY", policy)
        .env("KILN_ROUTE_DECISION_LOG", dir.join("decisions.jsonl"))
        .env("KILN_ROUTE_SEED", "7")
        .env("KILN_ROUTE_FORWARD_TIMEOUT_MS", "30000")
        .env("KILN_LOG", "warn")
        .env_remove("KILN_CONFIG")
        .current_dir(dir);
    spawn_listening(&mut cmd, "kiln route listening on ")
}

fn start_worker(id: &str, store: &str, router: &str, dir: &Path) -> (Proc, String) {
    let mut cmd = kiln();
    cmd.env("KILN_STORE_URL", store)
        .env("KILN_DEBUG_KINDS", "1")
        .env("KILN_WORKER_ID", id)
        .env("KILN_CPU_SLOTS", "4")
        .env("KILN_ROUTER_URL", format!("{router}/v1/capacity"))
        .env("KILN_ROUTER_INTERVAL_MS", "200")
        .env("KILN_LOG", "warn")
        .env_remove("KILN_CONFIG")
        .current_dir(dir);
    let (proc, base) = serve(&mut cmd);
    wait_ready(&base, Duration::from_secs(30));
    (proc, base)
}

fn route_of(h: &reqwest::header::HeaderMap) -> String {
    h.get("x-kiln-route").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn field<'a>(route: &'a str, key: &str) -> &'a str {
    route.split("; ").find_map(|kv| kv.strip_prefix(&format!("{key}="))).unwrap_or("")
}

fn post(c: &Client, base: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut req = c.post(format!("{base}/v1/jobs")).body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().expect("router answers");
    let status = r.status().as_u16();
    let route = route_of(r.headers());
    (status, route, r.text().unwrap_or_default())
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn jobs_through_kiln_route() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let store = url::Url::from_directory_path(&store_dir).unwrap().to_string();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"exercise_share": 0.0, "dual_share": 0.0, "kinds": {"debug": {"primary": "container", "fallback": "serverless"}}}"#,
    )
    .unwrap();
    let (_router, rbase) = start_router(dir.path(), &policy);
    let c = Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    assert_eq!(c.get(format!("{rbase}/healthz")).send().unwrap().status().as_u16(), 200);
    assert_eq!(c.get(format!("{rbase}/readyz")).send().unwrap().status().as_u16(), 503, "no worker yet");
    let (mut w1, b1) = start_worker("w1", &store, &rbase, dir.path());
    let (mut w2, b2) = start_worker("w2", &store, &rbase, dir.path());
    wait_ready(&rbase, Duration::from_secs(30));
    // Both workers heard from (a report every 200 ms each).
    std::thread::sleep(Duration::from_millis(500));

    // Jobs land on both workers (4 at once: least-loaded placement spreads them).
    let workers: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|i| {
                let (c, rbase) = (&c, &rbase);
                s.spawn(move || {
                    let body = json!({"id": format!("r-{i}"), "kind": "debug", "input": {"hold_ms": 300, "output": "o.txt"}});
                    let (status, route, text) = post(c, rbase, &body.to_string(), &[]);
                    assert_eq!(status, 200, "{text}");
                    let v: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(v["status"], "succeeded", "{v}");
                    assert_eq!(field(&route, "tier"), "container", "{route}");
                    assert_eq!(field(&route, "placed"), "container", "{route}");
                    assert_eq!(field(&route, "worker"), v["worker"]["id"].as_str().unwrap(), "{route}");
                    field(&route, "worker").to_owned()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(workers.iter().any(|w| w == "w1") && workers.iter().any(|w| w == "w2"), "{workers:?}");

    // The decision log has one line per job, with the decision's target.
    let log = std::fs::read_to_string(dir.path().join("decisions.jsonl")).unwrap();
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|l| l["job_id"] == "r-0" && l["target"]["tier"] == "container"), "{log}");

    // GPU work never goes serverless (and no worker here has a GPU: refused, 503).
    let gpu = json!({"id": "g-1", "kind": "debug", "input": {"hold_ms": 1, "accel": "gpu"}});
    let (status, route, text) = post(&c, &rbase, &gpu.to_string(), &[]);
    assert_eq!(status, 503, "{text}");
    assert_eq!(field(&route, "placed"), "container", "{route}");
    assert_eq!(field(&route, "tier"), "none", "{route}");
    assert_eq!(field(&route, "rule"), "no container", "{route}");
    let log = std::fs::read_to_string(dir.path().join("decisions.jsonl")).unwrap();
    let g: Value = log.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["job_id"] == "g-1").unwrap();
    assert_eq!(g["target"]["tier"], "container", "{g}");
    assert!(g["fallback"].is_null(), "{g}");
    assert!(g["reasons"].to_string().contains("gpu: never serverless"), "{g}");

    // Bad input: the worker's failed result, 400, never a crash.
    let (status, _, text) = post(&c, &rbase, "{not json", &[]);
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "invalid_spec", "{v}");
    let (status, _, _) = post(&c, &rbase, r#"{"id": "x", "input": {}}"#, &[]);
    assert_eq!(status, 400, "no kind");

    // SSE passed through: events, then the result.
    let body = json!({"id": "sse-1", "kind": "debug", "input": {"hold_ms": 50, "output": "o.txt"}});
    let (status, route, text) = post(&c, &rbase, &body.to_string(), &[("accept", "text/event-stream")]);
    assert_eq!(status, 200);
    assert!(text.contains("event: result") && text.contains("succeeded"), "{text}");
    assert_eq!(field(&route, "tier"), "container", "{route}");

    // Async: 202 + Location, then GET through the router reaches the worker that took it.
    let body = json!({"id": "async-1", "kind": "debug", "input": {"hold_ms": 50, "output": "o.txt"}});
    let (status, _, _) = post(&c, &rbase, &body.to_string(), &[("prefer", "respond-async")]);
    assert_eq!(status, 202);
    wait_until("async-1 done", || {
        let r = c.get(format!("{rbase}/v1/jobs/async-1")).send().unwrap();
        r.status().as_u16() == 200 && r.text().unwrap().contains("succeeded")
    });
    let ev = c.get(format!("{rbase}/v1/jobs/async-1/events")).send().unwrap().text().unwrap();
    assert!(ev.contains("event: result"), "{ev}");
    assert_eq!(c.get(format!("{rbase}/v1/jobs/nope")).send().unwrap().status().as_u16(), 404);

    // A worker killed mid-run: the job finishes on the other, one stored result.
    let gate = dir.path().join("gate");
    let body = json!({"id": "kill-1", "kind": "debug", "input": {"hold_until": gate, "output": "o.txt"}});
    let waiter = {
        let (c, rbase, body) = (c.clone(), rbase.clone(), body.to_string());
        std::thread::spawn(move || post(&c, &rbase, &body, &[]))
    };
    let mut holder = String::new();
    wait_until("kill-1 running somewhere", || {
        for (name, b) in [("w1", &b1), ("w2", &b2)] {
            if c.get(format!("{b}/v1/jobs/kill-1")).send().is_ok_and(|r| r.status().as_u16() == 200) {
                holder = name.to_owned();
                return true;
            }
        }
        false
    });
    if holder == "w1" {
        w1.kill();
    } else {
        w2.kill();
    }
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&gate, b"go").unwrap();
    let (status, route, text) = waiter.join().unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_ne!(v["worker"]["id"], holder.as_str(), "{v}");
    assert_eq!(field(&route, "attempts"), "2", "{route}");
    assert!(field(&route, "note").contains("unreachable"), "{route}");
    let stored: Vec<_> = walk(&store_dir).into_iter().filter(|p| p.ends_with("kill-1/result.json")).collect();
    assert_eq!(stored.len(), 1, "{stored:?}");

    // Metrics count the decisions.
    let m = c.get(format!("{rbase}/metrics")).send().unwrap().text().unwrap();
    let decisions: f64 = m
        .lines()
        .filter(|l| l.starts_with("kiln_route_decisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(decisions >= 10.0, "{m}");
    assert!(m.contains("kiln_route_retries_total{reason=\"unreachable\"} 1"), "{m}");
    assert!(m.contains("kiln_route_overflow_share"), "{m}");
    assert!(m.contains("kiln_route_latency_seconds_bucket{tier=\"container\""), "{m}");

    // A policy reload (mtime) that sends debug serverless: no invoker, so a container answers.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &policy,
        r#"{"exercise_share": 0.0, "dual_share": 0.0, "cold_start_override": {"enabled": false},
            "kinds": {"debug": {"primary": "serverless", "fallback": "container"}}}"#,
    )
    .unwrap();
    wait_until("policy reloaded", || {
        let body = json!({"kind": "debug", "input": {"hold_ms": 1}});
        let (status, route, _) = post(&c, &rbase, &body.to_string(), &[]);
        status == 200 && field(&route, "placed") == "serverless"
    });
    let body = json!({"id": "s-1", "kind": "debug", "input": {"hold_ms": 1}});
    let (status, route, _) = post(&c, &rbase, &body.to_string(), &[]);
    assert_eq!(status, 200);
    assert_eq!(field(&route, "tier"), "container", "{route}");
    assert!(field(&route, "note").contains("serverless unavailable"), "{route}");
    assert_eq!(field(&route, "policy"), "2", "{route}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
