//! End-to-end tests of `kiln run`: JSONL, JSON and stdin in; JSONL results out; exit codes.

use kiln_tests::proc::kiln as kiln_cmd;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

fn kiln(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = kiln_cmd()
        .args(args)
        .env("KILN_STORE_URL", format!("file://{}/store/", dir.display()))
        .env("KILN_DEBUG_KINDS", "1")
        .env_remove("KILN_CONFIG")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn results(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn by_id<'a>(rs: &'a [Value], id: &str) -> &'a Value {
    rs.iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("no result for {id}: {rs:?}"))
}

#[test]
fn jsonl_with_bad_lines_runs_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = [
        r#"{"id":"a","kind":"debug","input":{"output":"a.txt"}}"#,
        "this is not json",
        r#"{"id":"b","kind":"nope","input":{}}"#,
        "",
        r#"{"id":"c","kind":"debug","input":{"output":"c.txt"},"output":"file:///__DIR__/custom/"}"#,
    ]
    .join("\n")
    .replace("/__DIR__", &dir.path().display().to_string());
    std::fs::write(dir.path().join("jobs.jsonl"), jsonl).unwrap();
    let out = kiln(dir.path(), &["run", "jobs.jsonl"], None);
    assert_eq!(out.status.code(), Some(1), "a failed job makes the exit code 1");
    let rs = results(&out);
    assert_eq!(rs.len(), 4, "{rs:?}");
    assert_eq!(by_id(&rs, "a")["status"], "succeeded");
    assert_eq!(by_id(&rs, "b")["error"]["code"], "unsupported");
    assert_eq!(by_id(&rs, "c")["status"], "succeeded");
    let bad = rs.iter().find(|r| r["kind"] == "unknown").unwrap();
    assert_eq!(bad["error"]["code"], "invalid_spec");
    assert!(dir.path().join("store/outputs/a/a.txt").exists());
    assert!(dir.path().join("custom/c.txt").exists());
}

#[test]
fn json_array_and_pretty_json_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let array = r#"[
      {"id": "x1", "kind": "debug", "input": {}},
      {"id": "x2", "kind": "debug", "input": {}}
    ]"#;
    let out = kiln(dir.path(), &["run", "-"], Some(array));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(results(&out).len(), 2);

    let pretty = "{\n  \"id\": \"p1\",\n  \"kind\": \"debug\",\n  \"input\": {}\n}\n";
    let out = kiln(dir.path(), &["run", "-"], Some(pretty));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(results(&out)[0]["id"], "p1");
}

#[test]
fn a_second_run_returns_stored_results_without_rerunning() {
    let dir = tempfile::tempdir().unwrap();
    let job = r#"{"id":"once","kind":"debug","input":{"output":"o.txt"}}"#;
    let first = results(&kiln(dir.path(), &["run", "-"], Some(job)));
    let out_file = dir.path().join("store/outputs/once/o.txt");
    std::fs::remove_file(&out_file).unwrap();
    let second = results(&kiln(dir.path(), &["run", "-"], Some(job)));
    assert_eq!(first, second);
    assert!(!out_file.exists(), "the job ran a second time");
}

#[test]
fn many_jobs_through_a_small_queue() {
    let dir = tempfile::tempdir().unwrap();
    let jobs: String = (0..300).map(|i| format!("{{\"id\":\"m{i}\",\"kind\":\"debug\",\"input\":{{}}}}\n")).collect();
    let mut child = {
        let mut c = kiln_cmd();
        c.args(["run", "-"])
            .env("KILN_STORE_URL", format!("file://{}/store/", dir.path().display()))
            .env("KILN_DEBUG_KINDS", "1")
            .env("KILN_QUEUE_DEPTH", "4")
            .env("KILN_CPU_SLOTS", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(jobs.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let rs = results(&out);
    assert_eq!(rs.len(), 300, "every job is run even though the queue holds 4: `kiln run` waits for room");
    assert!(rs.iter().all(|r| r["status"] == "succeeded"));
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = kiln_cmd()
        .args(["run", "-"])
        .env("KILN_HTTP_ADDR", "not-an-address")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.addr"), "{err}");
    let v = kiln_cmd().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("kiln "));
    let probe = kiln_cmd().arg("probe").output().unwrap();
    let probe: Value = serde_json::from_slice(&probe.stdout).unwrap();
    assert!(probe["cpu"]["logical_cores"].as_u64().unwrap() >= 1);
    assert!(probe["kinds"].as_array().unwrap().iter().any(|k| k == "thumbnail"));
}

#[test]
fn logs_are_json_with_job_spans_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = kiln_cmd()
        .args(["run", "-"])
        .env("KILN_STORE_URL", format!("file://{}/store/", dir.path().display()))
        .env("KILN_DEBUG_KINDS", "1")
        .env("KILN_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(br#"{"id":"logged","kind":"debug","input":{}}"#)?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    let done = lines.iter().find(|l| l["fields"]["message"] == "job succeeded").expect("a job log line");
    assert_eq!(done["span"]["job_id"], "logged", "{done}");
    assert_eq!(done["span"]["kind"], "debug");
}

/// FFmpeg (and the ~125 libraries it pulls in) is loaded on the first video call, not at start
/// (kernels/build.rs): a command that touches no video never maps libavcodec, and `kiln probe`,
/// which lists the codecs, loads it then. Read from the dynamic loader's own trace.
#[test]
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn ffmpeg_is_loaded_on_first_video_use_not_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let loads = |args: &[&str]| {
        let out = kiln_cmd()
            .args(args)
            .env("LD_DEBUG", "files")
            .env("KILN_STORE_URL", format!("file://{}/store/", dir.path().display()))
            .env_remove("KILN_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "kiln {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let trace = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(trace.contains("file=libc.so.6"), "the loader's trace is there");
        (trace.contains("file=libavcodec.so"), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (at_start, _) = loads(&["--version"]);
    assert!(!at_start, "libavcodec was loaded by `kiln --version`");
    let (when_used, probe) = loads(&["probe"]);
    assert!(when_used, "`kiln probe` did not load libavcodec");
    let probe: Value = serde_json::from_str(&probe).unwrap();
    assert!(probe["video"]["libavcodec"].as_str().is_some_and(|v| !v.is_empty()), "{}", probe["video"]);
    assert!(probe["video"]["encoders"].as_array().is_some_and(|e| e.iter().any(|c| c == "libx264")), "{}", probe["video"]);
}
