//! The hostile matrix of issue 19, end to end against the real binary: `kiln serve` over
//! HTTP (confined, with and without bearer tokens) and `kiln run` (not confined).
//!
//! Each case asserts the answer (status and code) and, where something could have been
//! written, that nothing was written outside the store and the allowed output roots (the
//! fixture directory and its parents are scanned). The fixture, per test:
//!
//! ```text
//! {root}/store/            KILN_STORE_URL
//! {root}/media/            KILN_SOURCES_ALLOW: ok.png, big.bin, fifo, link-out → ../secret.png,
//!                          link-zero → /dev/zero, dir-out → ..
//! {root}/out/              KILN_OUTPUTS_ALLOW
//! {root}/secret.png        outside every root
//! ```

use kiln_tests::{kiln_bin, run_jobs, scratch_dir};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN_A: &str = "acme-token-0000000001";
const TOKEN_A2: &str = "acme-token-0000000002";
const TOKEN_B: &str = "beta-token-0000000003";

struct Fixture {
    root: PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let root = scratch_dir(tag).canonicalize().unwrap();
        let media = root.join("media");
        for d in ["store", "media", "out"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let png = tiny_png();
        std::fs::write(media.join("ok.png"), &png).unwrap();
        std::fs::write(root.join("secret.png"), &png).unwrap();
        std::fs::write(media.join("big.bin"), vec![7u8; 5000]).unwrap();
        let fifo = media.join("fifo");
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success(), "mkfifo failed");
        std::os::unix::fs::symlink(root.join("secret.png"), media.join("link-out")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", media.join("link-zero")).unwrap();
        std::os::unix::fs::symlink(&root, media.join("dir-out")).unwrap();
        Fixture { root }
    }

    fn p(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    fn url(&self, rel: &str) -> String {
        format!("file://{}", self.p(rel))
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("KILN_STORE_URL".into(), format!("file://{}/", self.p("store"))),
            ("KILN_SOURCES_ALLOW".into(), format!("file://{}/", self.p("media"))),
            ("KILN_OUTPUTS_ALLOW".into(), format!("file://{}/", self.p("out"))),
        ]
    }

    /// Every file under the fixture's root and its parent dirs (two levels up, not
    /// recursive there) whose name is `name`.
    fn files_named(&self, name: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        walk(&self.root, &mut |p| {
            if p.file_name().is_some_and(|n| n == name) {
                found.push(p.to_path_buf());
            }
        });
        let mut up = self.root.parent();
        for _ in 0..3 {
            let Some(dir) = up else { break };
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    if e.file_name() == name {
                        found.push(e.path());
                    }
                }
            }
            up = dir.parent();
        }
        found
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

/// A 4×4 opaque PNG.
fn tiny_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(4, 4, image::Rgb([200, 30, 30]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn thumb(id: &str, source: &str, name: &str) -> Value {
    json!({"id": id, "kind": "thumbnail", "input": {"source": source,
        "outputs": [{"name": name, "width": 2, "height": 2, "format": "png"}]}})
}

/// A `kiln serve` process on 127.0.0.1, killed on drop.
struct Server {
    child: Child,
    base: String,
    client: reqwest::blocking::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_cmd(env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(kiln_bin());
    cmd.arg("serve")
        .env("KILN_HTTP_ADDR", "127.0.0.1:0")
        .env("KILN_LOG", "warn")
        .env("KILN_DEBUG_KINDS", "1")
        .env_remove("KILN_CONFIG")
        .env_remove("KILN_HTTP_TOKENS")
        .env_remove("KILN_HTTP_TOKENS_FILE")
        .env_remove("KILN_HTTP_AUTH")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Server {
    fn start(env: &[(String, String)]) -> Server {
        let mut child = serve_cmd(env).spawn().expect("spawn kiln serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line.trim().strip_prefix("kiln listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}")).to_owned();
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let s = Server { child, base, client };
        let start = Instant::now();
        while s.client.get(format!("{}/readyz", s.base)).send().map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
            assert!(start.elapsed() < Duration::from_secs(60), "never ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn post_as(&self, job: &Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.post(format!("{}/v1/jobs", self.base)).body(job.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    fn post(&self, job: &Value) -> (u16, Value) {
        self.post_as(job, None)
    }

    fn get(&self, path: &str, token: Option<&str>) -> reqwest::blocking::Response {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().unwrap()
    }
}

fn code(r: &Value) -> &str {
    r["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {r:#}"))
}

#[test]
fn serve_forbids_sources_outside_the_roots_whether_or_not_they_exist() {
    let f = Fixture::new("sec-src");
    let s = Server::start(&f.env());
    // Allowed: a file in sources.allow works; a missing one there is input_not_found.
    let (st, r) = s.post(&thumb("ok", &f.p("media/ok.png"), "a.png"));
    assert_eq!((st, r["status"].as_str()), (200, Some("succeeded")), "{r:#}");
    let (st, r) = s.post(&thumb("missing-in", &f.p("media/missing.png"), "a.png"));
    assert_eq!((st, code(&r)), (422, "input_not_found"), "{r:#}");

    let media = f.url("media");
    let hostile = [
        "/etc/passwd".to_string(),
        "file:///etc/passwd".to_string(),
        "file:///etc/no-such-file".to_string(),
        f.p("secret.png"),
        f.p("no-such.png"),
        format!("{media}/../secret.png"),
        format!("{media}/%2e%2e/secret.png"),
        format!("{media}/..%2Fsecret.png"),
        format!("{media}/x/..%2F..%2F..%2Fsecret.png"),
        format!("{media}/link-out"),
        format!("{media}/dir-out/secret.png"),
        format!("{media}/dir-out/no-such.png"),
        format!("{}/jobs/ok/result.json", f.url("store")),
        "/dev/zero".to_string(),
        "s3://some-other-bucket/x.png".to_string(),
    ];
    for (i, src) in hostile.iter().enumerate() {
        let (st, r) = s.post(&thumb(&format!("h{i}"), src, "a.png"));
        assert_eq!((st, code(&r)), (403, "forbidden"), "{src}: {r:#}");
    }
    // A watermark is a source too.
    let job = json!({"id": "wm", "kind": "thumbnail", "input": {"source": f.p("media/ok.png"),
        "outputs": [{"name": "a.png", "width": 2, "height": 2}], "watermark": {"source": f.p("secret.png")}}});
    let (st, r) = s.post(&job);
    assert_eq!((st, code(&r)), (403, "forbidden"), "{r:#}");
    // The same answer for an existing and a missing file outside the roots (only the
    // path in the message differs).
    let (_, a) = s.post(&thumb("same-1", &f.p("secret.png"), "a.png"));
    let (_, b) = s.post(&thumb("same-2", &f.p("secret-nope.png"), "a.png"));
    let msg = |r: &Value, p: &str| r["error"]["message"].as_str().unwrap().replace(p, "P");
    assert_eq!(msg(&a, "secret.png"), msg(&b, "secret-nope.png"));
}

#[test]
fn serve_forbids_outputs_outside_the_roots_and_writes_nothing_there() {
    let f = Fixture::new("sec-out");
    let s = Server::start(&f.env());
    let src = f.p("media/ok.png");
    // Names that would climb out of the output prefix: invalid_spec, at admission.
    for (i, name) in ["%2e%2e/%2e%2e/%2e%2e/x.png", "..%2F..%2F..%2Fx.png", "../x.png", "/x.png", "a/%2E%2E/%2e%2e/x.png", "x%00.png"]
        .iter()
        .enumerate()
    {
        let (st, r) = s.post(&thumb(&format!("n{i}"), &src, name));
        assert_eq!((st, code(&r)), (400, "invalid_spec"), "{name}: {r:#}");
    }
    // Prefixes outside the store and outputs.allow, or onto the worker's own records.
    let prefixes = [
        f.url("elsewhere/"),
        "file:///tmp/".to_string(),
        format!("{}/../", f.url("out")),
        format!("{}/%2e%2e/", f.url("out")),
        format!("{}/..%2F/", f.url("out")),
        format!("{}/jobs/victim/", f.url("store")),
        format!("{}/dir-out/", f.url("media")),
        "s3://some-other-bucket/out/".to_string(),
    ];
    for (i, prefix) in prefixes.iter().enumerate() {
        let mut job = thumb(&format!("p{i}"), &src, "x.png");
        job["output"] = json!(prefix);
        let (st, r) = s.post(&job);
        assert_eq!((st, code(&r)), (403, "forbidden"), "{prefix}: {r:#}");
    }
    // Nothing named x.png anywhere under the fixture or in its parents.
    assert_eq!(f.files_named("x.png"), Vec::<PathBuf>::new());
    assert!(!f.root.join("store/jobs/victim").exists());

    // Allowed: outputs.allow, and the store's default outputs.
    let mut job = thumb("allowed", &src, "y.png");
    job["output"] = json!(f.url("out/allowed/"));
    let (st, r) = s.post(&job);
    assert_eq!(st, 200, "{r:#}");
    assert!(f.root.join("out/allowed/y.png").is_file());
    let (st, _) = s.post(&thumb("default", &src, "z.png"));
    assert_eq!(st, 200);
    assert!(f.root.join("store/outputs/default/z.png").is_file());
}

#[test]
fn fifos_and_devices_are_answered_promptly_and_free_the_slot() {
    let f = Fixture::new("sec-fifo");
    let mut env = f.env();
    env.push(("KILN_CPU_SLOTS".into(), "1".into()));
    let s = Server::start(&env);
    let started = Instant::now();
    for (i, src) in [f.p("media/fifo"), f.p("media/link-zero")].iter().enumerate() {
        let (st, r) = s.post(&thumb(&format!("f{i}"), src, "a.png"));
        assert_eq!((st, code(&r)), (403, "forbidden"), "{src}: {r:#}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    // The one slot is free again.
    let (st, r) = s.post(&thumb("after", &f.p("media/ok.png"), "a.png"));
    assert_eq!(st, 200, "{r:#}");
}

#[test]
fn reads_stop_at_max_input_bytes_whatever_the_size_says() {
    let f = Fixture::new("sec-big");
    let mut env = f.env();
    env.push(("KILN_MAX_INPUT_BYTES".into(), "2000".into()));
    // /proc files are regular files whose size says 0 and whose content is longer:
    // the bound holds as the bytes stream, not from the metadata.
    env[1].1 = format!("{},file:///proc/", env[1].1);
    let s = Server::start(&env);
    let (st, r) = s.post(&thumb("big", &f.p("media/big.bin"), "a.png"));
    assert_eq!((st, code(&r)), (413, "input_too_large"), "{r:#}");
    assert_eq!(std::fs::metadata("/proc/self/maps").unwrap().len(), 0, "this case needs a /proc file that says 0 bytes");
    let (st, r) = s.post(&thumb("proc", "/proc/self/maps", "a.png"));
    assert_eq!((st, code(&r)), (413, "input_too_large"), "{r:#}");
}

/// What a slow client gets back on a raw connection: the response's first bytes, or
/// nothing when the worker closed the connection without one. Panics when the connection is
/// still open after `within` (the read timeout is the bound: no sleeping).
fn answer_or_close(stream: &mut std::net::TcpStream, within: Duration) -> String {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the worker kept a slow connection open for {within:?} ({e}); read so far: {:?}", String::from_utf8_lossy(&got)),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn slow_and_oversized_clients_are_cut_off_without_holding_the_worker() {
    use std::io::Write;
    let f = Fixture::new("sec-slow");
    let mut env = f.env();
    for (k, v) in [
        ("KILN_HTTP_HEADER_TIMEOUT_MS", "500"),
        ("KILN_HTTP_BODY_TIMEOUT_MS", "500"),
        ("KILN_HTTP_MAX_BODY_BYTES", "4096"),
        ("KILN_CPU_SLOTS", "1"),
        ("KILN_QUEUE_DEPTH", "1"),
    ] {
        env.push((k.into(), v.into()));
    }
    let mut s = Server::start(&env);
    // A new connection per request: the worker closes idle connections after the header timeout.
    s.client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(0).build().unwrap();
    let addr = s.base.trim_start_matches("http://").to_owned();
    let job = |id: &str| json!({"id": id, "kind": "debug", "input": {}});
    // Slow clients: four stop halfway through their headers, four after 10 of 1000 body bytes.
    let head = "POST /v1/jobs HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\n";
    let mut half_headers = Vec::new();
    let mut half_bodies = Vec::new();
    for _ in 0..4 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.write_all(head.as_bytes()).unwrap();
        half_headers.push(c);
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.write_all(format!("{head}Content-Length: 1000\r\n\r\n{{\"id\": \"x").as_bytes()).unwrap();
        half_bodies.push(c);
    }
    // With one slot and a queue of one, a job still runs while they stall.
    let (st, r) = s.post(&job("while-slow"));
    assert_eq!((st, r["status"].as_str()), (200, Some("succeeded")), "{r:#}");
    for mut c in half_bodies {
        let answer = answer_or_close(&mut c, Duration::from_secs(20));
        assert!(answer.starts_with("HTTP/1.1 408"), "a stalled body gets 408: {answer:?}");
        assert!(answer.contains("deadline_exceeded"), "{answer:?}");
    }
    for mut c in half_headers {
        let answer = answer_or_close(&mut c, Duration::from_secs(20));
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "stalled headers: closed, or 408: {answer:?}");
    }
    // Oversized bodies (the limit is 4096), 200 kB with a length and chunked (no length):
    // 413 and no job. The client writes all of it before reading: the worker reads and drops
    // the rest of a refused body (bounded), so the answer arrives instead of a reset.
    let pad = "x".repeat(200_000);
    let body = format!("{{\"id\":\"big\",\"kind\":\"debug\",\"input\":{{\"pad\":\"{pad}\"}}}}");
    let mut chunked = format!("{head}Transfer-Encoding: chunked\r\n\r\n");
    for part in pad.as_bytes().chunks(2000) {
        chunked.push_str(&format!("{:x}\r\n{}\r\n", part.len(), String::from_utf8_lossy(part)));
    }
    chunked.push_str("0\r\n\r\n");
    for req in [format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()), chunked] {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let answer = answer_or_close(&mut c, Duration::from_secs(20));
        assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("input_too_large"), "{answer:?}");
    }
    let r = s.get("/v1/jobs/big", None);
    assert_eq!(r.status().as_u16(), 404, "an oversized request made no job");
    // And the worker still serves.
    let (st, r) = s.post(&job("after"));
    assert_eq!((st, r["status"].as_str()), (200, Some("succeeded")), "{r:#}");
    let ok = s.get("/healthz", None);
    assert_eq!(ok.status().as_u16(), 200);
}

#[test]
fn tokens_guard_the_api_and_rotate() {
    let f = Fixture::new("sec-auth");
    let tokens_file = f.root.join("tokens");
    std::fs::write(&tokens_file, format!("# tenants\nbeta:{TOKEN_B}\n")).unwrap();
    let mut env = f.env();
    env.push(("KILN_HTTP_TOKENS".into(), format!("acme:{TOKEN_A},acme:{TOKEN_A2}")));
    env.push(("KILN_HTTP_TOKENS_FILE".into(), tokens_file.display().to_string()));
    let s = Server::start(&env);
    let job = |id: &str| json!({"id": id, "kind": "debug", "input": {}});

    // Missing, wrong, or not a bearer token: 401 with a Bearer challenge.
    for (i, token) in [None, Some("wrong-token-000000000"), Some(""), Some(&TOKEN_A[1..])].iter().enumerate() {
        let mut req = s.client.post(format!("{}/v1/jobs", s.base)).body(job(&format!("u{i}")).to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{token:?}");
        let challenge = r.headers().get("www-authenticate").expect("WWW-Authenticate").to_str().unwrap().to_owned();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }
    let r = s.client.post(format!("{}/v1/jobs", s.base)).basic_auth("acme", Some(TOKEN_A)).body(job("basic").to_string()).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Nothing ran for them.
    assert_eq!(s.get("/v1/jobs/u0", Some(TOKEN_A)).status().as_u16(), 404);

    // Every configured token is valid at once (rotation), from the list and the file.
    for (i, t) in [TOKEN_A, TOKEN_A2, TOKEN_B].iter().enumerate() {
        let (st, r) = s.post_as(&job(&format!("ok{i}")), Some(t));
        assert_eq!(st, 200, "{r:#}");
    }
    for path in ["/v1/capacity", "/v1/jobs/ok0", "/v1/jobs/ok0/events"] {
        assert_eq!(s.get(path, None).status().as_u16(), 401, "{path}");
        // ok0 is acme's: any of acme's tokens sees it, beta's does not (tenants.rs).
        assert_eq!(s.get(path, Some(TOKEN_A2)).status().as_u16(), 200, "{path}");
    }
    assert_eq!(s.get("/v1/capacity", Some(TOKEN_B)).status().as_u16(), 200);
    assert_eq!(s.get("/v1/jobs/ok0", Some(TOKEN_B)).status().as_u16(), 404);
    assert_eq!(s.get("/v1/jobs/ok2", Some(TOKEN_B)).status().as_u16(), 200);
    let del = s.client.delete(format!("{}/v1/jobs/ok0", s.base)).send().unwrap();
    assert_eq!(del.status().as_u16(), 401);
    // Health and metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(s.get(path, None).status().as_u16(), 200, "{path}");
    }
    // The tokens file is re-read when it changes: beta's token rotates without a restart.
    let rotated = "beta-token-0000000009";
    let tmp = f.root.join("tokens.new");
    std::fs::write(&tmp, format!("beta:{rotated}\n")).unwrap();
    std::fs::rename(&tmp, &tokens_file).unwrap();
    let started = Instant::now();
    while s.post_as(&job("rot"), Some(rotated)).0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(20), "the rotated token never became valid");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.post_as(&job("old-beta"), Some(TOKEN_B)).0, 401, "the removed token is refused");
    assert_eq!(s.post_as(&job("still-acme"), Some(TOKEN_A)).0, 200, "http.tokens are unaffected");
    drop(s);

    // Rotated out: a worker started with the new token only refuses the old one; and
    // /metrics can be closed too.
    let mut env = f.env();
    env.push(("KILN_HTTP_TOKENS".into(), format!("acme:{TOKEN_A2}")));
    env.push(("KILN_HTTP_METRICS_AUTH".into(), "true".into()));
    let s = Server::start(&env);
    assert_eq!(s.post_as(&job("old"), Some(TOKEN_A)).0, 401);
    assert_eq!(s.post_as(&job("new"), Some(TOKEN_A2)).0, 200);
    assert_eq!(s.get("/metrics", None).status().as_u16(), 401);
    assert_eq!(s.get("/metrics", Some(TOKEN_A2)).status().as_u16(), 200);
    assert_eq!(s.get("/healthz", None).status().as_u16(), 200);
}

/// Starts `kiln serve` with `env`; waits (bounded) for it to listen or exit.
/// `Ok(first stdout line)` when it listens (then kills it), `Err((code, stderr))` when it exits.
fn start_or_exit(env: &[(String, String)]) -> Result<String, (Option<i32>, String)> {
    let mut cmd = serve_cmd(env);
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    if line.starts_with("kiln listening on") {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(line);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    Err((status.code(), err))
}

#[test]
fn serve_refuses_a_public_address_without_tokens() {
    let f = Fixture::new("sec-bind");
    let mut env = f.env();
    env.push(("KILN_HTTP_ADDR".into(), "0.0.0.0:0".into()));
    let (code, err) = start_or_exit(&env).expect_err("served 0.0.0.0 without tokens");
    assert_ne!(code, Some(0));
    assert!(err.contains("http.tokens") && err.contains("KILN_HTTP_AUTH=none"), "{err}");
    // On purpose: http.auth = none.
    let mut open = env.clone();
    open.push(("KILN_HTTP_AUTH".into(), "none".into()));
    start_or_exit(&open).expect("KILN_HTTP_AUTH=none serves");
    // With tokens.
    let mut tok = env.clone();
    tok.push(("KILN_HTTP_TOKENS".into(), format!("acme:{TOKEN_A}")));
    start_or_exit(&tok).expect("serves with tokens");
    // A weak token is refused, naming the key.
    let mut weak = env.clone();
    weak.push(("KILN_HTTP_TOKENS".into(), "acme:short".into()));
    let (_, err) = start_or_exit(&weak).expect_err("weak token accepted");
    assert!(err.contains("http.tokens") && !err.contains("short\""), "{err}");
    // Loopback without tokens stays open (local use, the other e2e tests).
    start_or_exit(&f.env()).expect("loopback without tokens serves");
}

#[test]
fn kiln_run_reads_local_paths_but_refuses_fifos_and_traversing_names() {
    let f = Fixture::new("sec-run");
    let store = f.root.join("store");
    let env = [("KILN_STORE_URL", format!("file://{}/", store.display()))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let started = Instant::now();
    let jobs = [
        thumb("local", &f.p("secret.png"), "a.png"),
        thumb("fifo", &f.p("media/fifo"), "a.png"),
        thumb("dots", &f.p("secret.png"), "%2e%2e/%2e%2e/%2e%2e/x.png"),
        thumb("slash", &f.p("secret.png"), "..%2F..%2F..%2Fx.png"),
    ];
    let jsonl: Vec<String> = jobs.iter().map(Value::to_string).collect();
    let results = run_jobs(&jsonl.join("\n"), &env);
    assert!(started.elapsed() < Duration::from_secs(60));
    let by = |id: &str| results.iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("{results:#?}")).clone();
    assert_eq!(by("local")["status"], "succeeded", "{:#}", by("local"));
    assert_eq!(code(&by("fifo")), "forbidden");
    assert_eq!(code(&by("dots")), "invalid_spec");
    assert_eq!(code(&by("slash")), "invalid_spec");
    assert_eq!(f.files_named("x.png"), Vec::<PathBuf>::new());
}
