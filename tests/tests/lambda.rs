//! End-to-end tests of `kiln lambda` under a real Lambda Runtime API emulator (cargo-lambda's,
//! installed by scripts/fetch-tools.sh into .tools/bin; the harness is kiln_tests::lambda).

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;

use kiln_tests::lambda::Function;
use kiln_tests::proc::{kiln, Proc};
use kiln_tests::workspace_root as root;

fn photo() -> PathBuf {
    let p = root().join("data/mate-backgrounds/usr/share/backgrounds/mate/nature/Dune.jpg");
    assert!(p.exists(), "{} is missing: run `bash scripts/fetch-photos.sh` (make test does)", p.display());
    p
}

fn thumb_job(id: &str) -> Value {
    json!({"id": id, "kind": "thumbnail", "input": {"source": photo(),
        "outputs": [{"name": "128.jpg", "width": 128, "height": 128, "fit": "inside", "format": "jpeg"}]}})
}

#[test]
fn buffered_invocations_reuse_the_warm_instance() {
    let f = Function::start(&[]);
    let first = f.invoke(&thumb_job("lt-1"));
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["worker"]["tier"], "serverless");
    assert_eq!(first["lambda"]["cold_start"], true);
    let out = first["outputs"][0]["uri"].as_str().unwrap().strip_prefix("file://").unwrap().to_owned();
    assert!(std::fs::read(&out).unwrap().starts_with(&[0xFF, 0xD8]), "a JPEG was stored");

    let second = f.invoke(&thumb_job("lt-2"));
    assert_eq!(second["status"], "succeeded");
    assert_eq!(second["lambda"]["cold_start"], false);
    assert_eq!(second["lambda"]["invocation"], 2);
    assert_eq!(second["lambda"]["init_ms"], first["lambda"]["init_ms"], "same instance");
    assert_eq!(second["worker"]["id"], first["worker"]["id"]);

    // A function-URL / API Gateway request carrying the envelope gets an HTTP-shaped answer.
    let http = f.invoke(&json!({"requestContext": {"http": {"method": "POST"}}, "isBase64Encoded": false,
        "body": thumb_job("lt-3").to_string()}));
    assert_eq!(http["statusCode"], 200, "{http}");
    let body: Value = serde_json::from_str(http["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], "lt-3");
    assert_eq!(body["status"], "succeeded");
}

#[test]
fn jobs_that_do_not_fit_are_refused_up_front() {
    let f = Function::start(&[("KILN_LAMBDA_MAX_INPUT_BYTES", "1000")]);
    let r = f.invoke(&thumb_job("big"));
    assert_eq!(r["error"]["code"], "too_long_for_tier", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("bytes"), "{r}");
    let r = f.invoke(&json!({"id": "tc", "kind": "transcode", "input": {"source": "x.mp4"}}));
    assert_eq!(r["error"]["code"], "too_long_for_tier");
    let r = f.invoke(&json!({"id": "g", "kind": "debug", "input": {"accel": "gpu"}}));
    assert_eq!(r["error"]["code"], "too_long_for_tier");
    // Bad events are results too, and the instance keeps serving.
    let r = f.invoke(&json!({"hello": "world"}));
    assert_eq!(r["error"]["code"], "invalid_spec");
    let r = f.invoke(&json!({"id": "ok", "kind": "debug", "input": {}}));
    assert_eq!(r["status"], "succeeded");
    assert!(f.dir.path().join("store/jobs/ok/result.json").exists());
}

#[test]
fn jobs_are_refused_when_tmp_lacks_the_space() {
    // More free scratch space than any disk has: every job is refused before it starts.
    let f = Function::start(&[("KILN_LAMBDA_MIN_SCRATCH_BYTES", "1000000000000000000")]);
    let r = f.invoke(&json!({"id": "s1", "kind": "debug", "input": {}}));
    assert_eq!(r["error"]["code"], "too_long_for_tier", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("bytes free"), "{r}");
    assert!(!f.dir.path().join("store/jobs/s1/result.json").exists(), "the job never ran");
}

#[test]
fn streaming_sends_events_as_ndjson_then_the_result() {
    let f = Function::start(&[("KILN_LAMBDA_RESPONSE", "stream")]);
    let gate = f.dir.path().join("gate");
    let job = json!({"id": "st", "kind": "debug", "input": {"hold_until": gate, "output": "o.txt"}});
    let resp = f.invoke_raw(&job);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["lambda-runtime-function-response-mode"], "streaming");
    let mut lines = BufReader::new(resp).lines();
    // The first event arrives while the job is still held: the stream is live, not buffered.
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "progress", "{first}");
    std::fs::write(&gate, b"open").unwrap();
    let rest: Vec<Value> = lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    let names: Vec<_> = rest.iter().map(|e| e["event"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(names, ["output", "progress", "result"], "{rest:?}");
    assert_eq!(rest[2]["status"], "succeeded");
    assert_eq!(rest[2]["lambda"]["cold_start"], true);

    let thumb = f.invoke_raw(&thumb_job("st-thumb"));
    let events: Vec<Value> = BufReader::new(thumb).lines().map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    let last = events.last().unwrap();
    assert_eq!(last["event"], "result");
    assert_eq!(last["status"], "succeeded", "{last}");
    assert!(events.iter().any(|e| e["event"] == "output"));
}

#[test]
fn without_lambda_variables_the_same_binary_serves_http() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Proc::spawn(
        kiln()
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .env_remove("KILN_MODE")
            .env("KILN_HTTP_ADDR", "127.0.0.1:0")
            .env("KILN_STORE_URL", format!("file://{}/", dir.path().display()))
            .env("KILN_LOG", "warn")
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(child.child().stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("kiln listening on ").expect("serve mode").to_owned();
    let r = reqwest::blocking::get(format!("{base}/healthz")).unwrap();
    assert_eq!(r.status(), 200);

    // KILN_MODE=lambda without the Runtime API is a clear error, not a panic.
    let out = kiln().env("KILN_MODE", "lambda").env_remove("AWS_LAMBDA_RUNTIME_API").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_LAMBDA_RUNTIME_API"));
}

/// The hostile matrix over Lambda: the function is confined like `kiln serve` (sources only
/// from `sources.allow`, outputs only under the store and `outputs.allow`); a forbidden source
/// or output is a `forbidden` result, nothing is written there, and the instance keeps serving.
#[test]
fn forbidden_sources_and_outputs_over_lambda_touch_nothing() {
    let f = Function::start(&[]);
    let outside = f.dir.path().join("secret.jpg");
    std::fs::copy(photo(), &outside).unwrap();
    let data = root().join("data");
    let job = |id: &str, source: String, output: Option<String>| {
        let mut j = json!({"id": id, "kind": "thumbnail", "input": {"source": source,
            "outputs": [{"name": "x.jpg", "width": 8, "height": 8, "format": "jpeg"}]}});
        if let Some(o) = output {
            j["output"] = json!(o);
        }
        j
    };
    let cases = [
        job("l-etc", "/etc/passwd".into(), None),
        job("l-outside", outside.display().to_string(), None),
        job("l-dots", format!("file://{}/%2e%2e/Cargo.toml", data.display()), None),
        job("l-zero", "/dev/zero".into(), None),
        job("l-bucket", "s3://other-bucket/x.jpg".into(), None),
        job("l-http", "http://169.254.169.254/latest/meta-data/".into(), None),
        job("l-out", photo().display().to_string(), Some(format!("file://{}/elsewhere/", f.dir.path().display()))),
        job("l-jobs", photo().display().to_string(), Some(format!("file://{}/store/jobs/victim/", f.dir.path().display()))),
    ];
    for c in &cases {
        let r = f.invoke(c);
        assert_eq!(r["error"]["code"], "forbidden", "{}: {r}", c["id"]);
    }
    assert!(!f.dir.path().join("elsewhere").exists());
    assert!(!f.dir.path().join("store/jobs/victim").exists());
    assert!(!f.dir.path().join("store/outputs").exists(), "no job wrote an output");
    // The instance keeps serving allowed work.
    let ok = f.invoke(&thumb_job("l-ok"));
    assert_eq!(ok["status"], "succeeded", "{ok}");
}
