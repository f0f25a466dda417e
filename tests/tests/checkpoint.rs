//! Durable checkpoints across worker processes (worker/src/checkpoint.rs): a worker SIGKILLed
//! mid-job is resumed by another without recomputing recorded units; two workers given the
//! same job run it once; a changed spec under the same id is refused; the store going away
//! mid-job pauses the job, or fails it retryably, and nothing recorded is lost.
//!
//! The jobs are of the test-only `debug` kind with `units` (KILN_DEBUG_KINDS=1): each unit
//! stores `unit-NNNN.txt`, appends "{id} {unit}" to a log file when it computes (so the tests
//! count computations across processes), then is recorded in `state.json`. Media jobs use the
//! same machinery (tests/tests/render.rs resumes a real render).

use kiln_tests::moto::{Moto, Proxy, AWS_ENV};
use kiln_jobs::ObjectStore;
use kiln_tests::proc::{kiln, Proc};
use kiln_tests::{scratch_dir, workspace_root};
use kiln_worker::config::S3Config;
use kiln_worker::store::s3::S3Store;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A `kiln run` process with one job on stdin; stdout and stderr go to files.
struct Worker {
    proc: Proc,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Worker {
    fn start(dir: &Path, name: &str, job: &Value, env: &[(&str, &str)]) -> Worker {
        let stdin = dir.join(format!("{name}.in"));
        std::fs::write(&stdin, format!("{job}\n")).unwrap();
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let mut cmd = kiln();
        cmd.args(["run", "-"])
            .current_dir(workspace_root())
            .env_remove("KILN_CONFIG")
            .env("KILN_DEBUG_KINDS", "1")
            .env("KILN_LOG", "warn")
            .env("KILN_CHECKPOINT_LEASE_MS", "1500")
            .stdin(std::fs::File::open(&stdin).unwrap())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Worker { proc: Proc::spawn(&mut cmd), stdout, stderr }
    }

    /// Waits (bounded) for the process to exit and returns its one result.
    fn result(mut self) -> Value {
        if self.proc.wait_timeout(Duration::from_secs(120)).is_none() {
            panic!("kiln run did not finish; stderr:\n{}", self.stderr_text());
        }
        let out = std::fs::read_to_string(&self.stdout).unwrap();
        let line = out.lines().find(|l| !l.trim().is_empty()).unwrap_or_else(|| panic!("no result; stderr:\n{}", self.stderr_text()));
        serde_json::from_str(line).unwrap()
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn kill(&mut self) {
        self.proc.kill(); // SIGKILL
    }
}

/// Lines of a unit log ("{id} {unit}").
fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Polls (bounded: 60 s) until `cond` holds — for progress only observable from outside.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn units_job(id: &str, units: u32, unit_ms: u64, log: &Path) -> Value {
    json!({"id": id, "kind": "debug", "input": {"units": units, "unit_ms": unit_ms, "unit_log": log}})
}

fn unit_names(result: &Value) -> Vec<String> {
    result["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap().to_owned()).collect()
}

fn expected_names(n: u32) -> Vec<String> {
    (1..=n).map(|i| format!("unit-{i:04}.txt")).collect()
}

/// The units recorded in a filesystem store's `state.json`.
fn recorded_units(store: &Path, id: &str) -> BTreeSet<String> {
    let state: Value = serde_json::from_slice(&std::fs::read(store.join(format!("jobs/{id}/state.json"))).unwrap()).unwrap();
    state["units"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn a_sigkilled_job_is_resumed_by_another_worker_without_recomputing_recorded_units() {
    let dir = scratch_dir("ckpt-kill");
    let store = dir.join("store");
    let store_url = format!("file://{}/", store.display());
    let log = dir.join("units.log");
    let job = units_job("kill-1", 16, 60, &log);
    let env = [("KILN_STORE_URL", store_url.as_str())];

    let mut a = Worker::start(&dir, "a", &job, &env);
    wait_for("worker A to compute 5 units", || log_lines(&log).len() >= 5);
    a.kill();
    let recorded = recorded_units(&store, "kill-1");
    assert!(recorded.len() >= 4, "recorded before the kill: {recorded:?}");
    let computed_by_a = log_lines(&log).len();

    // A's lease (1.5 s) has not expired yet: B waits for it, then takes the job over.
    let b = Worker::start(&dir, "b", &job, &env).result();
    assert_eq!(b["status"], "succeeded", "{b:#}");
    assert_eq!(b["resumed"], true);
    assert_eq!(b["attempt"], 2);
    assert_eq!(b["units"]["restored"], recorded.len());
    assert_eq!(b["units"]["run"].as_u64().unwrap() as usize, 16 - recorded.len());
    assert_eq!(unit_names(&b), expected_names(16));

    // Every unit B computed was one A had not recorded; none recorded was computed again.
    let by_b: BTreeSet<String> =
        log_lines(&log)[computed_by_a..].iter().map(|l| l.split(' ').nth(1).unwrap().to_owned()).collect();
    assert_eq!(by_b.len(), 16 - recorded.len());
    assert!(by_b.is_disjoint(&recorded), "recomputed: {:?}", by_b.intersection(&recorded).collect::<Vec<_>>());
    // The outputs are whole and the same as an uninterrupted run's.
    for i in 1..=16 {
        let body = std::fs::read_to_string(store.join(format!("outputs/kill-1/unit-{i:04}.txt"))).unwrap();
        assert_eq!(body, format!("kill-1 unit-{i:04}"));
    }
}

#[test]
fn two_workers_given_the_same_job_run_it_once() {
    let dir = scratch_dir("ckpt-twice");
    let store_url = format!("file://{}/", dir.join("store").display());
    let log = dir.join("units.log");
    let job = units_job("twice-1", 10, 40, &log);
    let env = [("KILN_STORE_URL", store_url.as_str())];
    let a = Worker::start(&dir, "a", &job, &env);
    let b = Worker::start(&dir, "b", &job, &env);
    let (ra, rb) = (a.result(), b.result());
    for r in [&ra, &rb] {
        assert_eq!(r["status"], "succeeded", "{r:#}");
        assert_eq!(unit_names(r), expected_names(10));
    }
    // Each unit was computed exactly once, by whichever worker held the lease; the other
    // answered with the stored result.
    let lines = log_lines(&log);
    let distinct: BTreeSet<_> = lines.iter().collect();
    assert_eq!(lines.len(), 10, "{lines:?}");
    assert_eq!(distinct.len(), 10);
    assert_eq!(ra, rb, "both workers answer with the one stored result");
}

#[test]
fn a_changed_spec_under_the_same_id_is_refused_and_the_original_resumes() {
    let dir = scratch_dir("ckpt-spec");
    let store_url = format!("file://{}/", dir.join("store").display());
    let log = dir.join("units.log");
    let env = [("KILN_STORE_URL", store_url.as_str())];
    // A deadline stops the first attempt after a few units; its lease is released.
    let mut job = units_job("spec-1", 12, 50, &log);
    job["deadline_ms"] = json!(260);
    let first = Worker::start(&dir, "a", &job, &env).result();
    assert_eq!(first["error"]["code"], "deadline_exceeded", "{first:#}");
    assert!(!log_lines(&log).is_empty(), "no unit ran before the deadline");

    let changed = units_job("spec-1", 13, 50, &log);
    let refused = Worker::start(&dir, "b", &changed, &env).result();
    assert_eq!(refused["status"], "failed");
    assert_eq!(refused["error"]["code"], "invalid_spec");
    assert!(refused["error"]["message"].as_str().unwrap().contains("spec hash mismatch"), "{refused:#}");

    // The same spec in another key order is the same spec: it resumes.
    let same = json!({"id": "spec-1", "kind": "debug", "input": {"unit_log": log, "unit_ms": 50, "units": 12}});
    let resumed = Worker::start(&dir, "c", &same, &env).result();
    assert_eq!(resumed["status"], "succeeded", "{resumed:#}");
    assert_eq!(resumed["resumed"], true);
    assert!(resumed["units"]["restored"].as_u64().unwrap() >= 1);
    assert_eq!(unit_names(&resumed), expected_names(12));
}

/// The environment of a worker whose store is `s3://{bucket}/` through `endpoint`.
fn s3_env(endpoint: &str, bucket: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = AWS_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.push(("KILN_STORE_URL".into(), format!("s3://{bucket}/")));
    env.push(("KILN_S3_ENDPOINT".into(), endpoint.to_owned()));
    env.push(("KILN_S3_PATH_STYLE".into(), "true".into()));
    env.push(("KILN_S3_REGION".into(), "us-east-1".into()));
    env
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// An object's bytes, read through kiln's own S3 store (moto refuses unsigned reads).
fn s3_get(moto: &Moto, bucket: &str, key: &str) -> Vec<u8> {
    let cfg = S3Config { endpoint: Some(moto.endpoint()), path_style: true, region: Some("us-east-1".into()) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = S3Store::connect(&cfg).await;
        let url = url::Url::parse(&format!("s3://{bucket}/{key}")).unwrap();
        store.get(&url, 1 << 30).await.unwrap_or_else(|e| panic!("reading s3://{bucket}/{key}: {e}")).to_vec()
    })
}

fn s3_recorded_units(moto: &Moto, bucket: &str, id: &str) -> BTreeSet<String> {
    let body = s3_get(moto, bucket, &format!("jobs/{id}/state.json"));
    let state: Value = serde_json::from_slice(&body).unwrap();
    state["units"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn on_s3_a_sigkilled_job_resumes_on_a_second_worker() {
    let moto = Moto::start();
    moto.create_bucket("ckpt");
    let dir = scratch_dir("ckpt-s3-kill");
    let log = dir.join("units.log");
    let job = units_job("s3-kill-1", 12, 80, &log);
    let env = s3_env(&moto.endpoint(), "ckpt");

    let mut a = Worker::start(&dir, "a", &job, &as_refs(&env));
    wait_for("worker A to compute 4 units", || log_lines(&log).len() >= 4);
    a.kill();
    let recorded = s3_recorded_units(&moto, "ckpt", "s3-kill-1");
    assert!(recorded.len() >= 3, "{recorded:?}");
    let computed_by_a = log_lines(&log).len();

    let b = Worker::start(&dir, "b", &job, &as_refs(&env)).result();
    assert_eq!(b["status"], "succeeded", "{b:#}");
    assert_eq!(b["resumed"], true);
    assert_eq!(b["units"]["restored"], recorded.len());
    let by_b: BTreeSet<String> =
        log_lines(&log)[computed_by_a..].iter().map(|l| l.split(' ').nth(1).unwrap().to_owned()).collect();
    assert!(by_b.is_disjoint(&recorded));
    assert_eq!(by_b.len() + recorded.len(), 12);
    for i in 1..=12 {
        let body = s3_get(&moto, "ckpt", &format!("outputs/s3-kill-1/unit-{i:04}.txt"));
        assert_eq!(body, format!("s3-kill-1 unit-{i:04}").into_bytes());
    }
}

#[test]
fn the_store_going_away_mid_job_pauses_it_until_the_store_returns() {
    let moto = Moto::start();
    moto.create_bucket("outage");
    let mut proxy = Proxy::new(moto.port);
    let dir = scratch_dir("ckpt-outage");
    let log = dir.join("units.log");
    let job = units_job("outage-1", 10, 60, &log);
    let env = s3_env(&proxy.endpoint(), "outage");

    let w = Worker::start(&dir, "a", &job, &as_refs(&env));
    wait_for("3 units", || log_lines(&log).len() >= 3);
    proxy.stop();
    // The worker says, clearly, that it is waiting for the store.
    wait_for("the worker to report the outage", || w.stderr_text().contains("store unavailable; waiting for it to return"));
    proxy.start();
    let r = w.result();
    assert_eq!(r["status"], "succeeded", "{r:#}");
    assert_eq!(r["resumed"], false, "the job paused, it did not restart");
    assert_eq!(r["units"]["run"], 10);
    assert_eq!(unit_names(&r), expected_names(10));
    assert_eq!(s3_recorded_units(&moto, "outage", "outage-1").len(), 10);
    assert_eq!(log_lines(&log).len(), 10, "no unit was computed twice");
}

#[test]
fn a_store_outage_longer_than_the_wait_fails_retryably_and_a_retry_resumes() {
    let moto = Moto::start();
    moto.create_bucket("longout");
    let mut proxy = Proxy::new(moto.port);
    let dir = scratch_dir("ckpt-longout");
    let log = dir.join("units.log");
    let job = units_job("longout-1", 10, 60, &log);
    let mut env = s3_env(&proxy.endpoint(), "longout");
    env.push(("KILN_CHECKPOINT_STORE_WAIT_MS".into(), "300".into()));

    let w = Worker::start(&dir, "a", &job, &as_refs(&env));
    wait_for("3 units", || log_lines(&log).len() >= 3);
    proxy.stop();
    let failed = w.result();
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["error"]["code"], "internal");
    assert!(failed["error"]["message"].as_str().unwrap().contains("unavailable"), "{failed:#}");

    proxy.start();
    // What was recorded before the outage survived it.
    let recorded = s3_recorded_units(&moto, "longout", "longout-1");
    assert!(recorded.len() >= 2, "{recorded:?}");
    let r = Worker::start(&dir, "b", &job, &as_refs(&env)).result();
    assert_eq!(r["status"], "succeeded", "{r:#}");
    assert_eq!(r["resumed"], true);
    assert_eq!(r["units"]["restored"], recorded.len());
    assert_eq!(unit_names(&r), expected_names(10));
}

/// A render page with an image, a rectangle and text: enough work that a SIGKILL lands mid-job
/// (PNG pages are composited; PDF pages alone are vectors, too quick to be caught mid-job).
fn render_page(i: usize) -> Value {
    let photo = workspace_root().join("data/mate-backgrounds/usr/share/backgrounds/mate/nature/Dune.jpg");
    json!({"width": 900, "height": 1200, "dpi": 150, "background": "#fbfaf5", "layers": [
        {"type": "image", "source": photo, "x": 60, "y": 60, "width": 780, "height": 520, "rotate": (i % 7) as f64},
        {"type": "rect", "x": 40, "y": 640, "width": 820, "height": 200, "fill": "#ffcc0040", "stroke": "#333333", "stroke_width": 3},
        {"type": "text", "x": 70, "y": 680, "text": format!("Page {i} of a resumed render"), "size": 48}
    ]})
}

#[test]
fn a_sigkilled_render_resumes_on_another_worker_and_assembles_the_same_pdf() {
    kiln_tests::ensure_corpus();
    let dir = scratch_dir("ckpt-render");
    let store = dir.join("store");
    let store_url = format!("file://{}/", store.display());
    let env = [("KILN_STORE_URL", store_url.as_str()), ("KILN_ACCEL", "cpu")];
    let pages: Vec<Value> = (1..=40).map(render_page).collect();
    let job = |id: &str| {
        json!({"id": id, "kind": "render", "output": format!("file://{}/{id}/", dir.join("out").display()),
               "input": {"pages": pages, "format": "pdf+png", "accel": "cpu"}})
    };

    // The reference: the same document, uninterrupted.
    let whole = Worker::start(&dir, "ref", &job("render-ref"), &env).result();
    assert_eq!(whole["status"], "succeeded", "{whole:#}");
    assert_eq!(whole["units"]["run"], 40);

    let mut a = Worker::start(&dir, "a", &job("render-kill"), &env);
    let state = store.join("jobs/render-kill/state.json");
    wait_for("worker A to record 5 pages", || state.exists() && recorded_units(&store, "render-kill").len() >= 5);
    a.kill();
    let recorded = recorded_units(&store, "render-kill");
    assert!(recorded.len() < 40, "the job ended before the kill");

    let b = Worker::start(&dir, "b", &job("render-kill"), &env).result();
    assert_eq!(b["status"], "succeeded", "{b:#}");
    assert_eq!(b["resumed"], true);
    assert_eq!(b["units"]["restored"], recorded.len());
    assert_eq!(b["units"]["run"].as_u64().unwrap() as usize, 40 - recorded.len(), "recorded pages were rendered again");
    let pdf = |id: &str| std::fs::read(dir.join(format!("out/{id}/document.pdf"))).unwrap();
    assert!(pdf("render-kill") == pdf("render-ref"), "the resumed PDF differs from the uninterrupted one");
}
