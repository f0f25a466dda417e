//! Tenants end to end against `kiln serve` with two tenants' tokens: one tenant flooding the
//! worker gets `overloaded` (503 + Retry-After) past its share while the other's jobs are
//! still admitted and run to the end; per-tenant metrics count both; one tenant cannot see,
//! cancel, follow or reuse the id of the other's job.
//!
//! Jobs of the `debug` kind hold their slot until a gate file appears, so the test decides
//! when the flood ends; nothing waits on a fixed sleep.

use kiln_tests::proc::{kiln, serve, wait_ready};
use kiln_tests::scratch_dir;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ACME: &str = "acme-token-0000000001";
const BETA: &str = "beta-token-0000000002";

#[test]
fn one_tenant_flooding_does_not_starve_another_and_tenants_are_isolated() {
    let root = scratch_dir("tenants").canonicalize().unwrap();
    let gate = root.join("gate");
    let mut cmd = kiln();
    cmd.env("KILN_STORE_URL", format!("file://{}/", root.join("store").display()))
        .env("KILN_HTTP_TOKENS", format!("acme:{ACME},beta:{BETA}"))
        .env("KILN_CPU_SLOTS", "3")
        .env("KILN_QUEUE_DEPTH", "16")
        .env("KILN_TENANT_MAX_JOBS", "2")
        .env("KILN_DEBUG_KINDS", "1")
        .env("KILN_LOG", "warn")
        .env_remove("KILN_CONFIG");
    let (_proc, base) = serve(&mut cmd);
    wait_ready(&base, Duration::from_secs(60));
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let post = |token: &str, job: &Value, asynch: bool| {
        let mut req = client.post(format!("{base}/v1/jobs")).bearer_auth(token).body(job.to_string());
        if asynch {
            req = req.header("prefer", "respond-async");
        }
        let r = req.send().unwrap();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        (r.status().as_u16(), retry, r.json::<Value>().unwrap_or(Value::Null))
    };
    let held = |id: &str| json!({"id": id, "kind": "debug", "input": {"hold_until": gate}});

    // acme floods: two jobs in flight (its cap), the rest refused for acme only.
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..10 {
        let (st, retry, body) = post(ACME, &held(&format!("flood-{i}")), true);
        match st {
            202 => accepted += 1,
            503 => {
                refused += 1;
                assert_eq!(body["error"]["code"], "overloaded", "{body}");
                assert!(body["error"]["message"].as_str().unwrap().contains("acme"), "{body}");
                assert_eq!(retry.as_deref(), Some("1"));
            }
            other => panic!("flood-{i}: {other} {body}"),
        }
    }
    assert_eq!((accepted, refused), (2, 8));

    // beta's jobs are admitted and run to the end while acme's flood still holds its slots.
    for i in 0..3 {
        let (st, _, body) = post(BETA, &json!({"id": format!("beta-{i}"), "kind": "debug", "input": {}}), false);
        assert_eq!((st, body["status"].as_str()), (200, Some("succeeded")), "{body}");
        assert_eq!(body["tenant"], "beta", "{body}");
    }
    let get = |token: &str, path: &str| client.get(format!("{base}{path}")).bearer_auth(token).send().unwrap();
    let status = |token: &str, id: &str| get(token, &format!("/v1/jobs/{id}")).json::<Value>().unwrap()["status"].clone();
    assert_eq!(status(ACME, "flood-0"), "running", "acme's flood is still held");

    // Isolation: beta cannot see, follow, cancel or reuse the id of acme's job.
    assert_eq!(get(BETA, "/v1/jobs/flood-0").status().as_u16(), 404);
    assert_eq!(get(BETA, "/v1/jobs/flood-0/events").status().as_u16(), 404);
    let del = client.delete(format!("{base}/v1/jobs/flood-0")).bearer_auth(BETA).send().unwrap();
    assert_eq!(del.status().as_u16(), 404);
    assert_eq!(status(ACME, "flood-0"), "running", "beta's DELETE cancelled nothing");
    let (st, _, body) = post(BETA, &held("flood-1"), false);
    assert_eq!((st, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert_eq!(get(ACME, "/v1/jobs/beta-0").status().as_u16(), 404);
    assert_eq!(get(BETA, "/v1/jobs/beta-0").status().as_u16(), 200);

    // Per-tenant metrics.
    let metrics = client.get(format!("{base}/metrics")).send().unwrap().text().unwrap();
    for line in [
        "kiln_tenant_jobs_inflight{tenant=\"acme\"} 2",
        "kiln_tenant_rejected_total{tenant=\"acme\"} 8",
        "kiln_tenant_jobs_total{status=\"succeeded\",tenant=\"beta\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // The flood ends; acme's jobs finish and its share is free again.
    std::fs::write(&gate, b"").unwrap();
    let started = Instant::now();
    while status(ACME, "flood-0") != "succeeded" || status(ACME, "flood-1") != "succeeded" {
        assert!(started.elapsed() < Duration::from_secs(30), "acme's jobs did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (st, _, body) = post(ACME, &json!({"id": "acme-after", "kind": "debug", "input": {}}), false);
    assert_eq!(st, 200, "{body}");
    assert_eq!(get(BETA, "/v1/jobs/flood-0").status().as_u16(), 404, "a finished job keeps its tenant");
}
