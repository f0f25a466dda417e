//! End-to-end tests of `kiln route` (issue 16).
//!
//! `jobs_through_kiln_route`: two `kiln serve` workers pushing capacity to a router without
//! a serverless tier, jobs of the `debug` kind (KILN_DEBUG_KINDS=1) sent through it:
//! placement on both workers, the decision in `x-kiln-route` and the decision log, GPU work
//! never serverless, SSE and async passthrough, lookups forwarded, bad input, a policy
//! reload that sends the kind serverless (no invoker: a container answers), a worker killed
//! mid-run whose job finishes on the other with one stored result, and the router's metrics.
//!
//! `route_authenticates_like_serve`: tokens on the router and its worker: 401 without one,
//! the caller's token passed on to the worker, the tenant's pin applied, reports need the
//! worker's `router.token`, and no public address without tokens.
//!
//! `capacity_topic_and_the_kafka_queue`: a router and a Kafka-fed worker on a real broker:
//! a job sent before any worker is ready is queued on `kiln.jobs` (202) and run once the
//! worker comes; the worker's reports reach the router through the compacted
//! `kiln.capacity` topic alone (URL header included), a report follows a slot change, and a
//! clean shutdown ends with a draining report and a tombstone that the router honours.
//!
//! `both_tiers_through_kiln_route`: the same router with the serverless tier — `kiln` as a
//! function under cargo-lambda's emulator, invoked through the Lambda Invoke API — and one
//! container worker: small thumbnails run on the function (cold, then warm on the same
//! instance), a long job goes to the container, a source too big for the function is
//! refused there (`too_long_for_tier`) and finished on the container, a second function
//! instance with `router.url` posts its capacity report after an invocation the router did
//! not make, a dual-routed thumbnail's shadow copy runs on the container (answer discarded,
//! latency recorded, one stored result), and with the emulator gone the container answers.
//!
//! `sse_through_the_router_streams_the_functions_events`: an SSE request placed
//! on a streaming function (`lambda.response = stream`) is invoked with
//! response streaming (the emulator's Invoke answer read as it arrives,
//! `route.lambda_streaming = emulator`); its first event reaches the client while the job
//! still holds, the prelude names the instance, the rest follow, and the result feeds the
//! router's warm pool.

use kiln_tests::broker::Broker;
use kiln_tests::lambda::Function;
use kiln_tests::proc::{kiln, serve, spawn_listening, wait_ready, Proc};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn start_router(dir: &Path, policy: &Path, env: &[(&str, &str)]) -> (Proc, String) {
    let mut cmd = kiln();
    for (k, v) in env {
        cmd.env(k, v);
    }
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

fn start_worker(id: &str, store: &str, router: &str, dir: &Path, env: &[(&str, &str)]) -> (Proc, String) {
    let mut cmd = kiln();
    for (k, v) in env {
        cmd.env(k, v);
    }
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
    let (store_dir, store) = file_store(dir.path());
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"exercise_share": 0.0, "dual_share": 0.0, "kinds": {"debug": {"primary": "container", "fallback": "serverless"}}}"#,
    )
    .unwrap();
    let (_router, rbase) = start_router(dir.path(), &policy, &[]);
    let c = Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    assert_eq!(c.get(format!("{rbase}/healthz")).send().unwrap().status().as_u16(), 200);
    assert_eq!(c.get(format!("{rbase}/readyz")).send().unwrap().status().as_u16(), 503, "no worker yet");
    let (mut w1, b1) = start_worker("w1", &store, &rbase, dir.path(), &[]);
    let (mut w2, b2) = start_worker("w2", &store, &rbase, dir.path(), &[]);
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

fn metric(m: &str, line_start: &str) -> f64 {
    m.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

fn photo(name: &str) -> std::path::PathBuf {
    let p = kiln_tests::workspace_root().join("data/mate-backgrounds/usr/share/backgrounds/mate/nature").join(name);
    assert!(p.exists(), "{} is missing: run `bash scripts/fetch-photos.sh` (make test does)", p.display());
    p
}

/// A store directory `store/` under `dir` that the router's workers and functions share: its
/// path and its `file://` URL.
fn file_store(dir: &Path) -> (std::path::PathBuf, String) {
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let store = url::Url::from_directory_path(&store_dir).unwrap().to_string();
    (store_dir, store)
}

/// The router's environment for invoking the function under the emulator at `endpoint` (the
/// emulator ignores signatures, the SDK still wants credentials; SSE requests read its Invoke
/// answer as it arrives: `route.lambda_streaming = emulator`).
fn lambda_env(endpoint: &str) -> Vec<(&str, &str)> {
    vec![
        ("KILN_ROUTE_LAMBDA", endpoint),
        ("KILN_ROUTE_LAMBDA_STREAMING", "emulator"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

fn thumb(id: &str, photo: &Path) -> String {
    json!({"id": id, "kind": "thumbnail", "input": {"source": photo,
        "outputs": [{"name": "128.jpg", "width": 128, "height": 128, "fit": "inside", "format": "jpeg"}]}})
    .to_string()
}

#[test]
fn both_tiers_through_kiln_route() {
    let dir = tempfile::tempdir().unwrap();
    let (store_dir, store) = file_store(dir.path());
    let data = format!("file://{}/data/", kiln_tests::workspace_root().display());
    // Garden.jpg (265 kB) fits the function; Dune.jpg (1 MB) does not.
    let (small, big) = (photo("Garden.jpg"), photo("Dune.jpg"));
    let mut function = Function::start(&[("KILN_LAMBDA_MAX_INPUT_BYTES", "500000"), ("KILN_STORE_URL", store.as_str())]);
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"exercise_share": 0.0, "dual_share": 0.0, "cold_start_override": {"enabled": false},
            "serverless": {"function": "_"},
            "kinds": {"thumbnail": {"primary": "serverless", "fallback": "container"},
                      "debug": {"primary": "serverless", "fallback": "container"}},
            "durations": {"kinds": {"debug": {"base_ms": 100000.0, "per_unit_ms": 0.0}}}}"#,
    )
    .unwrap();
    let endpoint = function.endpoint();
    let (_router, rbase) = start_router(dir.path(), &policy, &lambda_env(&endpoint));
    // With a serverless tier the router is ready before any worker reports.
    wait_ready(&rbase, Duration::from_secs(30));
    let c = Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let (_w1, _) = start_worker("w1", &store, &rbase, dir.path(), &[("KILN_SOURCES_ALLOW", data.as_str())]);
    wait_until("w1's first report", || {
        let m = c.get(format!("{rbase}/metrics")).send().unwrap().text().unwrap();
        metric(&m, "kiln_route_capacity_reports_total{outcome=\"inserted\"}") >= 1.0
    });

    // A small thumbnail runs on the function: a cold start, then the same instance warm.
    let (status, route, text) = post(&c, &rbase, &thumb("sl-1", &small), &[]);
    assert_eq!(status, 200, "{route} {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["worker"]["tier"], "serverless", "{v}");
    assert_eq!(v["lambda"]["cold_start"], true, "{v}");
    assert_eq!((field(&route, "tier"), field(&route, "placed")), ("serverless", "serverless"), "{route}");
    let instance = v["lambda"]["instance_id"].as_str().unwrap().to_owned();
    assert_eq!(field(&route, "worker"), instance, "{route}");
    let out = v["outputs"][0]["uri"].as_str().unwrap().strip_prefix("file://").unwrap().to_owned();
    assert!(std::fs::read(&out).unwrap().starts_with(&[0xFF, 0xD8]), "a JPEG was stored");
    let (status, route, text) = post(&c, &rbase, &thumb("sl-2", &small), &[]);
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["lambda"]["cold_start"], false, "{v}");
    assert_eq!(field(&route, "worker"), instance, "warm: the same instance; {route}");

    // SSE on the serverless tier: the result as the one event.
    let (status, route, text) = post(&c, &rbase, &thumb("sl-sse", &small), &[("accept", "text/event-stream")]);
    assert_eq!(status, 200);
    assert!(text.contains("event: result") && text.contains("succeeded"), "{text}");
    assert_eq!(field(&route, "tier"), "serverless", "{route}");

    // A job too long for the function's timeout goes to the container.
    let long = json!({"id": "long-1", "kind": "debug", "input": {"hold_ms": 10, "output": "o.txt"}});
    let (status, route, text) = post(&c, &rbase, &long.to_string(), &[]);
    assert_eq!(status, 200, "{text}");
    assert_eq!((field(&route, "tier"), field(&route, "placed"), field(&route, "worker")), ("container", "container", "w1"), "{route}");
    let log = std::fs::read_to_string(dir.path().join("decisions.jsonl")).unwrap();
    let d: Value = log.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["job_id"] == "long-1").unwrap();
    assert!(d["reasons"].to_string().contains("too long for serverless"), "{d}");

    // A source too big for the function: refused there (too_long_for_tier), run on the
    // container under the same id, one stored result.
    let (status, route, text) = post(&c, &rbase, &thumb("big-1", &big), &[]);
    assert_eq!(status, 200, "{route} {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["worker"]["id"], "w1", "{v}");
    assert_eq!((field(&route, "tier"), field(&route, "placed"), field(&route, "attempts")), ("container", "serverless", "2"), "{route}");
    assert!(field(&route, "note").contains("too_long_for_tier"), "{route}");
    let stored: Vec<_> = walk(&store_dir).into_iter().filter(|p| p.ends_with("big-1/result.json")).collect();
    assert_eq!(stored.len(), 1, "{stored:?}");

    let m = c.get(format!("{rbase}/metrics")).send().unwrap().text().unwrap();
    assert_eq!(metric(&m, "kiln_route_cold_starts_total"), 1.0, "{m}");
    assert_eq!(metric(&m, "kiln_route_jobs_total{status=\"2xx\",tier=\"serverless\"}"), 3.0, "{m}");
    assert_eq!(metric(&m, "kiln_route_retries_total{reason=\"too_long_for_tier\"}"), 1.0, "{m}");

    // A function instance with the router's URL posts its capacity report after each
    // invocation, even one the router did not make: the router sees it as a warm instance.
    let reporting = Function::start(&[("KILN_ROUTER_URL", format!("{rbase}/v1/capacity").as_str())]);
    let direct = json!({"id": "direct-1", "kind": "debug", "input": {"hold_ms": 1, "output": "o.txt"}});
    let resp = reporting.invoke_raw(&direct);
    assert!(resp.status().is_success());
    let v: Value = resp.json().unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    wait_until("the instance's capacity report", || {
        let m = c.get(format!("{rbase}/metrics")).send().unwrap().text().unwrap();
        metric(&m, "kiln_route_capacity_reports_total{outcome=\"serverless_instance\"}") >= 1.0
    });
    drop(reporting);

    // Dual routing: a policy that copies every request to the other tier. The copy is sent
    // (the container runs it under the same id), its answer discarded, its latency recorded;
    // one result is stored.
    std::thread::sleep(Duration::from_millis(1100)); // a new mtime for the reload
    std::fs::write(
        &policy,
        r#"{"exercise_share": 0.0, "dual_share": 1.0, "cold_start_override": {"enabled": false},
            "serverless": {"function": "_"},
            "kinds": {"thumbnail": {"primary": "serverless", "fallback": "container"},
                      "debug": {"primary": "serverless", "fallback": "container"}},
            "durations": {"kinds": {"debug": {"base_ms": 100000.0, "per_unit_ms": 0.0}}}}"#,
    )
    .unwrap();
    wait_until("policy reloaded", || {
        // Too long for the function: no copy to make.
        let body = json!({"kind": "debug", "input": {"hold_ms": 1}});
        let (status, route, _) = post(&c, &rbase, &body.to_string(), &[]);
        status == 200 && field(&route, "policy") == "2"
    });
    let (status, route, text) = post(&c, &rbase, &thumb("dual-1", &small), &[]);
    assert_eq!(status, 200, "{route} {text}");
    assert_eq!((field(&route, "tier"), field(&route, "rule")), ("serverless", "primary"), "{route}");
    let log = std::fs::read_to_string(dir.path().join("decisions.jsonl")).unwrap();
    let d: Value = log.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["job_id"] == "dual-1").unwrap();
    assert_eq!((d["dual"].as_bool(), d["shadow"]["tier"].as_str()), (Some(true), Some("container")), "{d}");
    wait_until("the shadow copy answered", || {
        let m = c.get(format!("{rbase}/metrics")).send().unwrap().text().unwrap();
        metric(&m, "kiln_route_shadow_total{outcome=\"ok\",tier=\"container\"}") == 1.0
    });
    let m = c.get(format!("{rbase}/metrics")).send().unwrap().text().unwrap();
    assert_eq!(metric(&m, "kiln_route_shadow_latency_seconds_count{tier=\"container\"}"), 1.0, "{m}");
    let stored: Vec<_> = walk(&store_dir).into_iter().filter(|p| p.ends_with("dual-1/result.json")).collect();
    assert_eq!(stored.len(), 1, "{stored:?}");

    // The function gone: its thumbnails are answered by the container.
    function.stop_emulator();
    let (status, route, text) = post(&c, &rbase, &thumb("sl-3", &small), &[]);
    assert_eq!(status, 200, "{route} {text}");
    assert_eq!((field(&route, "tier"), field(&route, "placed")), ("container", "serverless"), "{route}");
    assert!(field(&route, "note").contains("unreachable"), "{route}");
}

#[test]
fn capacity_topic_and_the_kafka_queue() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = rt.block_on(Broker::start(1));
    let dir = tempfile::tempdir().unwrap();
    let (store_dir, store) = file_store(dir.path());
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"exercise_share": 0.0, "dual_share": 0.0, "kinds": {"debug": {"primary": "container", "fallback": null}}}"#)
        .unwrap();
    let (_router, rbase) = start_router(dir.path(), &policy, &[("KILN_KAFKA_BROKERS", broker.addr.as_str())]);
    // With a queue the router is ready before any worker.
    wait_ready(&rbase, Duration::from_secs(30));
    let c = Client::builder().timeout(Duration::from_secs(60)).build().unwrap();

    // No worker yet: queued on kiln.jobs.
    let body = json!({"id": "q-1", "kind": "debug", "input": {"hold_ms": 1, "output": "o.txt"}}).to_string();
    let (status, route, text) = post(&c, &rbase, &body, &[]);
    assert_eq!(status, 202, "{route} {text}");
    assert_eq!(field(&route, "worker"), "queue:kiln.jobs", "{route}");
    assert!(field(&route, "note").contains("queued"), "{route}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "queued", "{v}");
    let jobs = rt.block_on(broker.read_all("kiln.jobs"));
    assert!(jobs.iter().any(|(k, _, _)| k.as_deref() == Some("q-1")), "{jobs:?}");

    // A worker on the broker, reporting only through the capacity topic; a long interval, so
    // reports between ready and shutdown come from slot changes.
    let mut cmd = kiln();
    cmd.env("KILN_STORE_URL", store.as_str())
        .env("KILN_DEBUG_KINDS", "1")
        .env("KILN_WORKER_ID", "wk")
        .env("KILN_CPU_SLOTS", "2")
        .env("KILN_KAFKA_BROKERS", broker.addr.as_str())
        .env("KILN_KAFKA_GROUP", "route-test")
        .env("KILN_KAFKA_SESSION_TIMEOUT_MS", "2000")
        .env("KILN_KAFKA_REVOKE_DRAIN_MS", "1000")
        .env("KILN_ROUTER_INTERVAL_MS", "600000")
        .env("KILN_LOG", "warn")
        .env_remove("KILN_ROUTER_URL")
        .env_remove("KILN_CONFIG")
        .current_dir(dir.path());
    let (mut worker, wbase) = serve(&mut cmd);
    wait_ready(&wbase, Duration::from_secs(30));
    // The queued job runs on it.
    wait_until("q-1 stored", || store_dir.join("jobs/q-1/result.json").exists());
    wait_until("the worker's report through the topic", || {
        let m = c.get(format!("{rbase}/metrics")).send().unwrap().text().unwrap();
        metric(&m, "kiln_route_capacity_reports_total{outcome=\"inserted\"}") >= 1.0
    });
    // Placed on it directly now: the report's URL header is the address the router uses.
    let gate = dir.path().join("gate");
    let held = json!({"id": "k-1", "kind": "debug", "input": {"hold_until": gate, "output": "o.txt"}}).to_string();
    let (status, route, _) = post(&c, &rbase, &held, &[("prefer", "respond-async")]);
    assert_eq!(status, 202);
    assert_eq!((field(&route, "tier"), field(&route, "worker")), ("container", "wk"), "{route}");
    // A report with the slot taken follows (the interval is 10 minutes).
    wait_until("a report with the busy slot", || {
        let msgs = rt.block_on(broker.read_all("kiln.capacity"));
        msgs.iter().filter(|(k, _, _)| k.as_deref() == Some("wk")).any(|(_, v, h)| {
            let r: Value = serde_json::from_slice(v).unwrap_or_default();
            r["kinds"]["debug"]["busy"] == 1 && h.get("kiln-worker-url").is_some_and(|u| *u == wbase)
        })
    });
    std::fs::write(&gate, b"go").unwrap();
    wait_until("k-1 stored", || store_dir.join("jobs/k-1/result.json").exists());

    // A clean shutdown: draining, then the tombstone; the router forgets the worker.
    worker.signal("TERM");
    assert!(worker.wait_timeout(Duration::from_secs(60)).is_some_and(|s| s.success()), "the worker did not exit cleanly");
    let msgs = rt.block_on(broker.read_all("kiln.capacity"));
    let mine: Vec<_> = msgs.iter().filter(|(k, _, _)| k.as_deref() == Some("wk")).collect();
    assert!(mine.last().unwrap().1.is_empty(), "the last message is a tombstone");
    let draining: Value = serde_json::from_slice(&mine[mine.len() - 2].1).unwrap();
    assert_eq!(draining["state"], "draining", "{draining}");
    wait_until("the tombstone read", || {
        let m = c.get(format!("{rbase}/metrics")).send().unwrap().text().unwrap();
        metric(&m, "kiln_route_capacity_reports_total{outcome=\"tombstone\"}") >= 1.0
    });
    let body = json!({"id": "q-2", "kind": "debug", "input": {"hold_ms": 1}}).to_string();
    let (status, route, _) = post(&c, &rbase, &body, &[]);
    assert_eq!((status, field(&route, "worker")), (202, "queue:kiln.jobs"), "{route}");
}

const TOKEN: &str = "acme-token-0000000001";
const WORKER_TOKEN: &str = "pool-token-0000000002";

#[test]
fn route_authenticates_like_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = file_store(dir.path());
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"exercise_share": 0.0, "dual_share": 0.0, "tenants": {"acme": {"tier": "container"}},
            "kinds": {"debug": {"primary": "serverless", "fallback": "container"}}}"#,
    )
    .unwrap();
    let tokens = format!("acme:{TOKEN},pool:{WORKER_TOKEN}");
    let (_router, rbase) = start_router(dir.path(), &policy, &[("KILN_HTTP_TOKENS", tokens.as_str())]);
    let c = Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    // Health is open; the job API and capacity reports are not.
    assert_eq!(c.get(format!("{rbase}/healthz")).send().unwrap().status().as_u16(), 200);
    let r = c.post(format!("{rbase}/v1/capacity")).body("{}").send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (_w, _) = start_worker("wa", &store, &rbase, dir.path(), &[("KILN_HTTP_TOKENS", tokens.as_str()), ("KILN_ROUTER_TOKEN", WORKER_TOKEN)]);
    wait_ready(&rbase, Duration::from_secs(30));

    let body = json!({"id": "auth-1", "kind": "debug", "input": {"hold_ms": 1, "output": "o.txt"}}).to_string();
    let (status, _, text) = post(&c, &rbase, &body, &[]);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("unauthorized"), "{text}");
    let (status, _, _) = post(&c, &rbase, &body, &[("authorization", "Bearer wrong-token-00000000000")]);
    assert_eq!(status, 401);
    // The token authenticates at the router and again at the worker (passed on); acme's
    // pin keeps its debug jobs on containers.
    let bearer = format!("Bearer {TOKEN}");
    let (status, route, text) = post(&c, &rbase, &body, &[("authorization", bearer.as_str())]);
    assert_eq!(status, 200, "{route} {text}");
    assert_eq!((field(&route, "tier"), field(&route, "worker")), ("container", "wa"), "{route}");
    let log = std::fs::read_to_string(dir.path().join("decisions.jsonl")).unwrap();
    let d: Value = log.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["job_id"] == "auth-1").unwrap();
    assert_eq!(d["features"]["tenant"], "acme", "{d}");
    assert!(d["reasons"].to_string().contains("tenant acme pinned to container"), "{d}");
    // Lookups pass the token on too.
    let r = c.get(format!("{rbase}/v1/jobs/auth-1")).header("authorization", bearer.as_str()).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(c.get(format!("{rbase}/v1/jobs/auth-1")).send().unwrap().status().as_u16(), 401);

    // A public address without tokens: refused at start, like kiln serve.
    let out = kiln()
        .arg("route")
        .env("KILN_HTTP_ADDR", "0.0.0.0:0")
        .env_remove("KILN_HTTP_TOKENS")
        .env_remove("KILN_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.tokens") && err.contains("KILN_HTTP_AUTH=none"), "{err}");
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

/// A policy file in `dir` that places `debug` jobs on the function `_` (the emulator's), a
/// container as the fallback, with nothing left to chance (no exercised or dual share).
fn serverless_debug_policy(dir: &Path) -> std::path::PathBuf {
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"exercise_share": 0.0, "dual_share": 0.0, "cold_start_override": {"enabled": false},
            "serverless": {"function": "_"},
            "kinds": {"debug": {"primary": "serverless", "fallback": "container"}},
            "durations": {"kinds": {"debug": {"base_ms": 10.0, "per_unit_ms": 0.0}}}}"#,
    )
    .unwrap();
    policy
}

/// The tenant whose token the router accepted reaches the function (`x-kiln-tenant`, trusted
/// with `lambda.trust_tenant_header`): the function's result is stamped with it, stored so,
/// and a container worker sharing the store shows it to that tenant only.
#[test]
fn the_function_runs_a_tenants_job_as_that_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let (store_dir, store) = file_store(dir.path());
    let function = Function::start(&[("KILN_STORE_URL", store.as_str()), ("KILN_LAMBDA_TRUST_TENANT_HEADER", "true")]);
    let policy = serverless_debug_policy(dir.path());
    let other = "other-token-000000003";
    let tokens = format!("acme:{TOKEN},other:{other},pool:{WORKER_TOKEN}");
    let endpoint = function.endpoint();
    let mut env = lambda_env(&endpoint);
    env.push(("KILN_HTTP_TOKENS", tokens.as_str()));
    let (_router, rbase) = start_router(dir.path(), &policy, &env);
    wait_ready(&rbase, Duration::from_secs(30));
    let c = Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let (_w, _) = start_worker("wa", &store, &rbase, dir.path(), &[("KILN_HTTP_TOKENS", tokens.as_str()), ("KILN_ROUTER_TOKEN", WORKER_TOKEN)]);

    let acme = format!("Bearer {TOKEN}");
    let body = json!({"id": "owned-1", "kind": "debug", "input": {"hold_ms": 1, "output": "o.txt"}}).to_string();
    let (status, route, text) = post(&c, &rbase, &body, &[("authorization", acme.as_str())]);
    assert_eq!(status, 200, "{route} {text}");
    assert_eq!(field(&route, "tier"), "serverless", "{route}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((v["status"].as_str(), v["tenant"].as_str()), (Some("succeeded"), Some("acme")), "{v}");
    let stored = walk(&store_dir).into_iter().find(|p| p.ends_with("owned-1/result.json")).expect("result stored");
    let stored: Value = serde_json::from_slice(&std::fs::read(stored).unwrap()).unwrap();
    assert_eq!(stored["tenant"], "acme", "{stored}");

    // Looked up through the router (answered by the container worker from the shared store):
    // acme sees it, another tenant does not.
    wait_until("wa's first report", || {
        let m = c.get(format!("{rbase}/metrics")).header("authorization", acme.as_str()).send().unwrap().text().unwrap();
        metric(&m, "kiln_route_capacity_reports_total{outcome=\"inserted\"}") >= 1.0
    });
    let get = |bearer: &str| c.get(format!("{rbase}/v1/jobs/owned-1")).header("authorization", bearer).send().unwrap();
    let r = get(&acme);
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().unwrap()["tenant"], "acme");
    let r = get(&format!("Bearer {other}"));
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    assert!(matches!(status, 403 | 404) && !text.contains("succeeded"), "another tenant's job: {status} {text}");
}

/// The SSE events of a response body (`event: name` / `data: json` blocks), read until the
/// `result` event or the end (or, with `one`, the first event).
fn sse_events(reader: &mut impl std::io::BufRead, one: bool) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut name = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            return out;
        }
        let l = line.trim_end();
        if let Some(n) = l.strip_prefix("event:") {
            name = n.trim().to_owned();
        } else if let Some(d) = l.strip_prefix("data:") {
            let v: Value = serde_json::from_str(d.trim()).unwrap();
            out.push((std::mem::take(&mut name), v));
            if one || out.last().is_some_and(|(n, _)| n == "result") {
                return out;
            }
        }
    }
}

#[test]
fn sse_through_the_router_streams_the_functions_events() {
    let dir = tempfile::tempdir().unwrap();
    let (_store_dir, store) = file_store(dir.path());
    let function = Function::start(&[("KILN_STORE_URL", store.as_str()), ("KILN_LAMBDA_RESPONSE", "stream")]);
    let policy = serverless_debug_policy(dir.path());
    let endpoint = function.endpoint();
    let (_router, rbase) = start_router(dir.path(), &policy, &lambda_env(&endpoint));
    wait_ready(&rbase, Duration::from_secs(30));
    let c = Client::builder().timeout(Duration::from_secs(120)).build().unwrap();

    // The job holds until the gate opens: its first event reaches the client through the
    // router while it still runs on the function.
    let gate = dir.path().join("gate");
    let body = json!({"id": "streamed-1", "kind": "debug", "input": {"hold_until": gate, "output": "o.txt"}}).to_string();
    let r = c.post(format!("{rbase}/v1/jobs")).header("accept", "text/event-stream").body(body).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let route = route_of(r.headers());
    assert_eq!((field(&route, "tier"), field(&route, "placed")), ("serverless", "serverless"), "{route}");
    let instance = field(&route, "worker").to_owned();
    assert!(!instance.is_empty() && instance != "_", "the prelude named the instance: {route}");
    let mut reader = std::io::BufReader::new(r);
    let first = sse_events(&mut reader, true);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((first[0].0.as_str(), first[0].1["id"].as_str()), ("progress", Some("streamed-1")), "{first:?}");
    std::fs::write(&gate, b"open").unwrap();
    let rest = sse_events(&mut reader, false);
    let names: Vec<&str> = rest.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["output", "progress", "result"], "{rest:?}");
    assert_eq!(rest[0].1["name"], "o.txt", "{rest:?}");
    assert_eq!(rest[2].1["status"], "succeeded", "{rest:?}");
    assert_eq!(rest[2].1["worker"]["tier"], "serverless", "{rest:?}");

    // The stream's result fed the warm pool: the same instance answers warm, and one cold
    // start was seen.
    let body = json!({"id": "buffered-1", "kind": "debug", "input": {"hold_ms": 1}}).to_string();
    let (status, route, text) = post(&c, &rbase, &body, &[]);
    assert_eq!(status, 200, "{route} {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["lambda"]["instance_id"].as_str(), Some(instance.as_str()), "{v}");
    assert_eq!(v["lambda"]["cold_start"], false, "{v}");
    let m = c.get(format!("{rbase}/metrics")).send().unwrap().text().unwrap();
    assert_eq!(metric(&m, "kiln_route_cold_starts_total"), 1.0, "{m}");

    // A job the function refuses at once (a bad spec) is one result event: the refusal.
    let body = json!({"id": "refused-1", "kind": "debug", "input": {"hold_ms": "not a number"}}).to_string();
    let r = c.post(format!("{rbase}/v1/jobs")).header("accept", "text/event-stream").body(body).send().unwrap();
    let route = route_of(r.headers());
    let events = sse_events(&mut std::io::BufReader::new(r), false);
    assert_eq!(events.len(), 1, "{events:?} {route}");
    assert_eq!((events[0].0.as_str(), events[0].1["status"].as_str()), ("result", Some("failed")), "{events:?}");
    assert_eq!(events[0].1["error"]["code"], "invalid_spec", "{events:?}");
}
