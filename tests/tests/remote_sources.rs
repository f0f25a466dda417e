//! Remote `http://` sources end to end against `kiln serve`, with two small HTTP servers on
//! 127.0.0.1: `allowed` (its `/media/` prefix explicitly in `sources.allow`) and `other` (not
//! allowed). A source under the allowed prefix is fetched; a redirect out of the prefix or to
//! the other server, a host name that resolves to loopback, a body past `max_input_bytes`
//! and a server that stalls past `sources.http_timeout_ms` all fail, and the servers' request
//! logs show that nothing was fetched where it must not be.

use kiln_tests::proc::{kiln, serve, wait_ready};
use kiln_tests::scratch_dir;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A tiny HTTP/1.0 server on 127.0.0.1 with canned answers; logs every request path; stops
/// when dropped.
struct TinyServer {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

type Answer = Box<dyn Fn(&str, &mut TcpStream, &AtomicBool) + Send + Sync>;

impl TinyServer {
    fn start(answer: Answer) -> TinyServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2, answer) = (log.clone(), stop.clone(), Arc::new(answer));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let (log, stop, answer) = (log2.clone(), stop2.clone(), answer.clone());
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    // Skip the headers.
                    let mut h = String::new();
                    while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                        h.clear();
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    log.lock().unwrap().push(path.clone());
                    answer(&path, &mut conn, &stop);
                });
            }
        });
        TinyServer { port, log, stop }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for TinyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn tiny_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(4, 4, image::Rgb([10, 200, 10]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.0 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

#[test]
fn remote_sources_stay_inside_the_allowlist_and_the_limits() {
    let other = TinyServer::start(Box::new(|_, conn, _| {
        respond(conn, "200 OK", &[("Content-Type", "image/png".into())], &tiny_png());
    }));
    let other_port = other.port;
    let allowed = TinyServer::start(Box::new(move |path, conn, stop| match path {
        "/media/ok.png" | "/media/ok2.png" | "/private/x.png" => {
            let png = tiny_png();
            respond(conn, "200 OK", &[("Content-Type", "image/png".into()), ("Content-Length", png.len().to_string())], &png)
        }
        "/media/redir-in" => respond(conn, "302 Found", &[("Location", "/media/ok.png".into())], b""),
        "/media/redir-out" => {
            respond(conn, "302 Found", &[("Location", format!("http://127.0.0.1:{other_port}/secret.png"))], b"")
        }
        "/media/redir-private" => respond(conn, "301 Moved", &[("Location", "/private/x.png".into())], b""),
        "/media/loop" => respond(conn, "302 Found", &[("Location", "/media/loop".into())], b""),
        // No Content-Length: the bound must hold as the body streams.
        "/media/big" => respond(conn, "200 OK", &[], &vec![7u8; 50_000]),
        "/media/slow" => {
            respond(conn, "200 OK", &[("Content-Length", "1000".into())], b"\x89PNG");
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        _ => respond(conn, "404 Not Found", &[], b""),
    }));
    let a = allowed.port;

    let root = scratch_dir("remote").canonicalize().unwrap();
    let mut cmd = kiln();
    cmd.env("KILN_STORE_URL", format!("file://{}/", root.join("store").display()))
        .env("KILN_SOURCES_ALLOW", format!("http://127.0.0.1:{a}/media/,http://localhost:{a}/media/"))
        .env("KILN_MAX_INPUT_BYTES", "20000")
        .env("KILN_SOURCES_HTTP_TIMEOUT_MS", "1500")
        .env("KILN_LOG", "warn")
        .env_remove("KILN_CONFIG");
    let (_proc, base) = serve(&mut cmd);
    wait_ready(&base, Duration::from_secs(60));
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let thumb = |i: usize, source: String| {
        let job = json!({"id": format!("r{i}"), "kind": "thumbnail", "input": {"source": source,
            "outputs": [{"name": "a.png", "width": 2, "height": 2, "format": "png"}]}});
        let r = client.post(format!("{base}/v1/jobs")).body(job.to_string()).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("http://127.0.0.1:{a}/media/ok.png"), 200, ""),
        (format!("http://127.0.0.1:{a}/media/redir-in"), 200, ""),
        (format!("http://127.0.0.1:{a}/media/missing.png"), 422, "input_not_found"),
        // Out of the allowlist: directly, by redirect to another port, by redirect out of
        // the prefix, by a host name that resolves to loopback (not named by address).
        (format!("http://127.0.0.1:{other_port}/secret.png"), 403, "forbidden"),
        (format!("http://127.0.0.1:{a}/media/redir-out"), 403, "forbidden"),
        (format!("http://127.0.0.1:{a}/media/redir-private"), 403, "forbidden"),
        (format!("http://127.0.0.1:{a}/private/x.png"), 403, "forbidden"),
        (format!("http://127.0.0.1:{a}/media/..%2Fprivate/x.png"), 403, "forbidden"),
        (format!("http://localhost:{a}/media/ok2.png"), 403, "forbidden"),
        ("http://169.254.169.254/latest/meta-data/".to_string(), 403, "forbidden"),
        // Limits: a redirect loop, a body past max_input_bytes, a server that stalls.
        (format!("http://127.0.0.1:{a}/media/loop"), 422, "input_not_found"),
        (format!("http://127.0.0.1:{a}/media/big"), 413, "input_too_large"),
    ];
    for (i, (source, status, code)) in cases.iter().enumerate() {
        let (st, r) = thumb(i, source.clone());
        assert_eq!(st, *status, "{source}: {r:#}");
        if !code.is_empty() {
            assert_eq!(r["error"]["code"], *code, "{source}: {r:#}");
        }
    }
    let started = Instant::now();
    let (st, r) = thumb(99, format!("http://127.0.0.1:{a}/media/slow"));
    assert_eq!(st, 500, "{r:#}");
    assert!(r["error"]["message"].as_str().unwrap().contains("slow"), "{r:#}");
    assert!(started.elapsed() < Duration::from_secs(15), "the time limit did not hold: {:?}", started.elapsed());

    // Nothing was fetched from the other server or outside the allowed prefix.
    assert_eq!(other.requests(), Vec::<String>::new());
    let seen = allowed.requests();
    assert!(seen.iter().all(|p| p.starts_with("/media/") && p != "/media/ok2.png"), "{seen:?}");
    assert!(seen.contains(&"/media/redir-out".to_string()) && seen.contains(&"/media/ok.png".to_string()), "{seen:?}");
}
