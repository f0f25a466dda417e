//! Faults, end to end on 127.0.0.1 with real processes:
//! - SIGTERM while jobs are stuck in calls that never return (a FIFO nobody writes to, read
//!   on one of the runtime's blocking threads as a hung store call would, and on the job's own
//!   thread as a hung decoder would): `kiln serve` still exits, the jobs answered `cancelled`;
//! - `kill -9` of a Kafka-consuming `kiln serve` in a loop, restarted each time with the same
//!   `kafka.instance_id` (static membership), with the tally printed: jobs produced, results,
//!   duplicates, lost (none may be lost). `KILN_KILL_LOOP_KILLS` and `KILN_KILL_LOOP_JOBS`
//!   size the ignored long version that benches/kill_loop.sh runs (50 kills);
//! - deadline, cancel and overload on real media jobs: thumbnail, transcode, render, and infer
//!   (the real detector through ONNX Runtime, cut mid-decode and mid-batch-wait).
//! - SIGTERM under Kafka load with real jobs: what the grace cannot finish is handed back
//!   (no result, no commit) and a second consumer finishes it, a render resuming its pages.
//! - the S3 store (moto behind a proxy) going away mid-render under `kiln serve`: a short
//!   outage pauses the render, a long one fails it retryably and a retry resumes it;
//! - the Kafka broker (tansu on durable S3 storage) killed and restarted on the same port
//!   under a consumer: nothing acknowledged lost, jobs after it answered.

use kiln_tests::broker::Broker;
use kiln_tests::proc::{kiln, serve, wait_ready, Proc};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What `serve` may take past SIGTERM at most: the grace period, the wait for the cancelled
/// jobs' answers (5 s), the wrap-up after the drain (8 s), the runtime's and the span
/// exporter's shutdown (1 s each), and slack for a loaded machine. Not a speed claim: a
/// bound that tells "ends" from "hangs" (before the fix it never ended on its own).
const EXIT_BOUND_PAST_GRACE: Duration = Duration::from_secs(25);

fn mkfifo(p: &Path) {
    let ok = Command::new("mkfifo").arg(p).status().expect("mkfifo runs");
    assert!(ok.success(), "mkfifo {}", p.display());
}

/// Opens `fifo` for writing once a reader has it open (until then a non-blocking open fails
/// with ENXIO): the proof that the job's read has started. The writer is kept open and never
/// writes, so the read blocks for good.
fn writer_once_read(fifo: &Path) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    const O_NONBLOCK: i32 = 0o4000;
    let start = Instant::now();
    loop {
        match std::fs::OpenOptions::new().write(true).custom_flags(O_NONBLOCK).open(fifo) {
            Ok(f) => return f,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(30), "nobody started reading {}: {e}", fifo.display());
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Follows a job's event stream (opened now, read on a thread) to its `result` event.
fn watch(client: &reqwest::blocking::Client, base: &str, id: &str) -> std::thread::JoinHandle<Value> {
    let mut resp = client.get(format!("{base}/v1/jobs/{id}/events")).send().unwrap();
    assert_eq!(resp.status(), 200, "events of {id}");
    std::thread::spawn(move || {
        let mut buf = String::new();
        let mut chunk = [0u8; 4096];
        while !(buf.contains("event: result") && buf.ends_with("\n\n")) {
            match resp.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
        let block = buf.split("\n\n").find(|b| b.contains("event: result")).unwrap_or_else(|| panic!("no result event in {buf:?}"));
        let data = block.lines().find_map(|l| l.strip_prefix("data: ")).expect("a data line");
        serde_json::from_str(data).unwrap()
    })
}

#[test]
fn sigterm_ends_serve_when_jobs_are_stuck_in_calls_that_never_return() {
    let dir = tempfile::tempdir().unwrap();
    let store_fifo = dir.path().join("store.fifo");
    let thread_fifo = dir.path().join("thread.fifo");
    mkfifo(&store_fifo);
    mkfifo(&thread_fifo);
    let grace = Duration::from_millis(500);
    let mut cmd = kiln();
    cmd.env("KILN_STORE_URL", format!("file://{}/", dir.path().display()))
        .env("KILN_DEBUG_KINDS", "1")
        .env("KILN_LOG", "warn")
        .env("KILN_CPU_SLOTS", "2")
        .env("KILN_SHUTDOWN_GRACE_MS", grace.as_millis().to_string())
        .env_remove("KILN_CONFIG")
        .current_dir(dir.path())
        .stderr(Stdio::inherit());
    let (mut proc, base) = serve(&mut cmd);
    wait_ready(&base, Duration::from_secs(30));
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let jobs = [("stuck-store", json!({"stuck_read": store_fifo})), ("stuck-thread", json!({"stuck_read_here": thread_fifo}))];
    for (id, input) in &jobs {
        let body = json!({"id": id, "kind": "debug", "input": input}).to_string();
        let r = client.post(format!("{base}/v1/jobs")).header("prefer", "respond-async").body(body).send().unwrap();
        assert_eq!(r.status(), 202, "{id}");
    }
    let _writers = [writer_once_read(&store_fifo), writer_once_read(&thread_fifo)];
    let watchers: Vec<_> = jobs.iter().map(|(id, _)| (*id, watch(&client, &base, id))).collect();

    let signalled = Instant::now();
    proc.signal("TERM");
    let status = proc.wait_timeout(grace + EXIT_BOUND_PAST_GRACE);
    let took = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("kiln serve still ran {took:?} after SIGTERM (grace {grace:?})"));
    assert_eq!(status.code(), Some(0), "a drain that had to cancel still exits 0");
    for (id, w) in watchers {
        let r = w.join().unwrap();
        assert_eq!(r["status"], "cancelled", "{id}: {r}");
        assert_eq!(r["error"]["code"], "cancelled", "{id}: {r}");
    }
    eprintln!("kiln serve exited {took:?} after SIGTERM with a {grace:?} grace and two stuck jobs");
}

/// What a kill loop saw.
#[derive(Debug)]
struct Tally {
    produced: usize,
    results: usize,
    duplicates: usize,
    lost: usize,
    kills: usize,
    /// Jobs a worker may hold unacknowledged when it dies: its slots, its queue, and what
    /// finishes within one offset-commit interval.
    in_flight_bound: usize,
    wall: Duration,
    /// From each consumer's start to its first stored result: `[0]` is the group's first join,
    /// the others rejoins after a SIGKILL.
    first_result: Vec<Duration>,
}

const SLOTS: usize = 2;
const QUEUE: usize = 4;
/// Each job holds its slot this long, so a commit interval (100 ms) finishes at most
/// SLOTS * 100 / HOLD_MS jobs.
const HOLD_MS: u64 = 20;
const COMMIT_INTERVAL_MS: u64 = 100;
/// The consumers' `kafka.session_timeout_ms`: how long the broker keeps a dead member that is
/// not static.
const SESSION_TIMEOUT_MS: u64 = 6000;

/// A Kafka-consuming `kiln serve` of the kill loop's group; a static member (`instance`) or not.
fn consumer(broker: &Broker, store: &Path, instance: Option<&str>) -> Proc {
    let mut cmd = kiln();
    match instance {
        Some(id) => cmd.env("KILN_KAFKA_INSTANCE_ID", id),
        None => cmd.env_remove("KILN_KAFKA_INSTANCE_ID"),
    };
    cmd.env("KILN_STORE_URL", format!("file://{}/", store.display()))
        .env("KILN_KAFKA_BROKERS", &broker.addr)
        .env("KILN_KAFKA_GROUP", "kill-loop")
        .env("KILN_KAFKA_SESSION_TIMEOUT_MS", SESSION_TIMEOUT_MS.to_string())
        .env("KILN_KAFKA_REVOKE_DRAIN_MS", "1000")
        .env("KILN_CPU_SLOTS", SLOTS.to_string())
        .env("KILN_QUEUE_DEPTH", QUEUE.to_string())
        .env("KILN_DEBUG_KINDS", "1")
        .env("KILN_LOG", "warn")
        .env_remove("KILN_CONFIG")
        .stderr(Stdio::inherit());
    serve(&mut cmd).0
}

/// Results stored so far (each job stores its result before it is published).
fn stored(store: &Path) -> usize {
    std::fs::read_dir(store.join("jobs"))
        .map(|d| d.filter_map(Result::ok).filter(|e| e.path().join("result.json").exists()).count())
        .unwrap_or(0)
}

fn wait_stored(store: &Path, at_least: usize, what: &str) {
    let start = Instant::now();
    while stored(store) < at_least {
        assert!(start.elapsed() < Duration::from_secs(120), "{what}: {} of {at_least} results stored", stored(store));
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Produces `jobs` jobs, then starts a consumer, waits until it has stored a few more results
/// (so every restart is shown to rejoin and work) and kills it with SIGKILL, `kills` times;
/// a last consumer finishes the rest and drains. Then every result on the topic is counted.
async fn kill_loop(kills: usize, jobs: usize, instance: Option<&str>) -> Tally {
    let broker = Broker::start(2).await;
    let store = tempfile::tempdir().unwrap();
    let p = broker.producer();
    for i in 0..jobs {
        let id = format!("j{i}");
        let job = json!({"id": id, "kind": "debug", "input": {"hold_ms": HOLD_MS}});
        broker.produce(&p, &id, job.to_string().as_bytes()).await;
    }
    let step = (jobs / (2 * kills.max(1))).max(1);
    let started = Instant::now();
    let mut first_result = Vec::with_capacity(kills);
    for k in 0..kills {
        let before = stored(store.path());
        let spawned = Instant::now();
        let mut w = consumer(&broker, store.path(), instance);
        wait_stored(store.path(), (before + 1).min(jobs), &format!("after restart {k}"));
        first_result.push(spawned.elapsed());
        wait_stored(store.path(), (before + step).min(jobs), &format!("after restart {k}"));
        w.kill();
    }
    let mut last = consumer(&broker, store.path(), instance);
    wait_stored(store.path(), jobs, "the last consumer");
    let all = broker.read_all("kiln.results").await;
    let wall = started.elapsed();
    last.signal("TERM");
    assert!(last.wait_timeout(Duration::from_secs(60)).is_some_and(|s| s.success()), "the last consumer did not drain");
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for (_, v, _) in &all {
        let r: Value = serde_json::from_slice(v).unwrap();
        assert_eq!(r["status"], "succeeded", "{r}");
        *per_id.entry(r["id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    let lost = (0..jobs).filter(|i| !per_id.contains_key(&format!("j{i}"))).count();
    let duplicates = per_id.values().map(|c| c - 1).sum();
    let per_interval = SLOTS * COMMIT_INTERVAL_MS as usize / HOLD_MS as usize;
    Tally { produced: jobs, results: all.len(), duplicates, lost, kills, in_flight_bound: SLOTS + QUEUE + per_interval, wall, first_result }
}

fn report(t: &Tally) {
    eprintln!(
        "kill loop: produced {} results {} duplicates {} lost {} kills {} wall {:.1} s ({:.2} s per kill; in-flight bound per kill {})",
        t.produced,
        t.results,
        t.duplicates,
        t.lost,
        t.kills,
        t.wall.as_secs_f64(),
        t.wall.as_secs_f64() / t.kills.max(1) as f64,
        t.in_flight_bound
    );
    let ms = |d: &Duration| d.as_millis();
    let mut rejoins: Vec<u128> = t.first_result.iter().skip(1).map(ms).collect();
    rejoins.sort_unstable();
    eprintln!(
        "kill loop: first result {} ms after the group's first join; after a restart median {} ms, max {} ms (session timeout {} ms)",
        t.first_result.first().map_or(0, ms),
        rejoins.get(rejoins.len() / 2).copied().unwrap_or(0),
        rejoins.last().copied().unwrap_or(0),
        SESSION_TIMEOUT_MS
    );
}

/// Static membership: a consumer restarted with the same `kafka.instance_id` takes its dead
/// predecessor's place at once instead of waiting for the broker to expire that member (a
/// session timeout), so each restart is served about as soon as the group's very first join
/// was (tansu's own join window is half the session timeout plus 3 s for either). Without
/// `group.instance.id` a restart is served a whole session timeout later than the first join.
fn assert_rejoins_without_the_session_timeout(t: &Tally) {
    let session_timeout = Duration::from_millis(SESSION_TIMEOUT_MS);
    let Some((first, restarts)) = t.first_result.split_first() else { return };
    for (k, took) in restarts.iter().enumerate() {
        assert!(
            *took < *first + session_timeout / 2,
            "restart {} was served {took:?} after it started, the first join {first:?}: it waited for the dead member's session ({:?})",
            k + 1,
            session_timeout
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loop_loses_nothing_and_redelivers_at_most_what_was_in_flight() {
    let t = kill_loop(5, 200, Some("kill-loop-0")).await;
    report(&t);
    assert_eq!(t.lost, 0, "{t:?}");
    assert!(t.duplicates <= t.kills * t.in_flight_bound, "{t:?}");
    assert_rejoins_without_the_session_timeout(&t);
}

/// The long version (benches/kill_loop.sh): `KILN_KILL_LOOP_KILLS` kills (50) over
/// `KILN_KILL_LOOP_JOBS` jobs (1200).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: benches/kill_loop.sh"]
async fn kill_9_loop_bench() {
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    // KILN_KILL_LOOP_STATIC=0: no `kafka.instance_id`, to compare a dynamic member's rejoins.
    let instance = (env("KILN_KILL_LOOP_STATIC", 1) != 0).then_some("kill-loop-0");
    let t = kill_loop(env("KILN_KILL_LOOP_KILLS", 50), env("KILN_KILL_LOOP_JOBS", 1200), instance).await;
    report(&t);
    assert_eq!(t.lost, 0, "{t:?}");
}

/// A `kiln serve` of real job kinds only (no debug kind) in `dir`, with one slot and a queue of
/// one, so the test decides what waits and what is refused.
fn media_worker(dir: &Path) -> (Proc, String) {
    let mut cmd = kiln();
    cmd.env("KILN_STORE_URL", format!("file://{}/store/", dir.display()))
        .env("KILN_LOG", "warn")
        .env("KILN_CPU_SLOTS", "1")
        .env("KILN_QUEUE_DEPTH", "1")
        .env_remove("KILN_DEBUG_KINDS")
        .env_remove("KILN_CONFIG")
        .current_dir(dir)
        .stderr(Stdio::inherit());
    let (proc, base) = serve(&mut cmd);
    wait_ready(&base, Duration::from_secs(30));
    (proc, base)
}

/// Polls `GET /v1/jobs/{id}` (bounded: 120 s) until `done` holds for its status.
fn poll(client: &reqwest::blocking::Client, base: &str, id: &str, done: impl Fn(&str) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let v: Value = client.get(format!("{base}/v1/jobs/{id}")).send().unwrap().json().unwrap();
        if done(v["status"].as_str().unwrap_or_default()) {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{id} stuck at {v}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `POST /v1/jobs` (with `Prefer: respond-async` when `asynchronous`): the status, whether a
/// Retry-After came with it, and the body.
fn post_job(client: &reqwest::blocking::Client, base: &str, env: &Value, asynchronous: bool) -> (u16, bool, Value) {
    let mut req = client.post(format!("{base}/v1/jobs")).body(env.to_string());
    if asynchronous {
        req = req.header("prefer", "respond-async");
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").is_some();
    let body: Value = r.json().unwrap();
    (status, retry_after, body)
}

fn terminal(s: &str) -> bool {
    matches!(s, "succeeded" | "failed" | "cancelled")
}

#[test]
fn deadline_cancel_and_overload_on_real_media_jobs() {
    let dir = tempfile::tempdir().unwrap();
    // Sources and outputs inside the store: `serve` confines jobs to it.
    let d = &dir.path().join("store");
    std::fs::create_dir_all(d).unwrap();
    let clip = d.join("clip.mp4");
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=30"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
        .arg(&clip)
        .status()
        .expect("ffmpeg CLI");
    assert!(st.success());
    let original = kiln_tests::workspace_root().join("data/mate-backgrounds/usr/share/backgrounds/mate/abstract/Elephants_5640x3172.jpg");
    assert!(original.exists(), "{} (scripts/fetch-photos.sh)", original.display());
    let photo = d.join("photo.jpg");
    std::fs::copy(&original, &photo).unwrap();
    let (_w, base) = media_worker(dir.path());
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let transcode = |id: &str, deadline: Option<u64>| {
        let mut env = json!({"id": id, "kind": "transcode", "output": format!("file://{}/out/{id}/", d.display()),
            "input": {"source": clip, "segment_seconds": 2, "accel": "cpu", "preset": "ultrafast",
                "ladder": [{"height": 360, "bitrate_kbps": 800}, {"height": 240, "bitrate_kbps": 400}]}});
        if let Some(ms) = deadline {
            env["deadline_ms"] = json!(ms);
        }
        env
    };
    let thumbnail = |id: &str, deadline: Option<u64>| {
        let mut env = json!({"id": id, "kind": "thumbnail", "input": {"source": photo, "outputs": [{"name": "t.jpg", "width": 256}]}});
        if let Some(ms) = deadline {
            env["deadline_ms"] = json!(ms);
        }
        env
    };
    let render = |id: &str, deadline: Option<u64>| {
        let mut env = json!({"id": id, "kind": "render", "output": format!("file://{}/out/{id}/", d.display()), "input": {"format": "pdf+png", "pages": [
            {"width": 1240, "height": 1754, "dpi": 150, "layers": [
                {"type": "rect", "x": 100, "y": 100, "width": 600, "height": 400, "fill": "#3366cc"},
                {"type": "text", "x": 100, "y": 800, "text": "faults", "size": 40, "font": "mono"}]}]}});
        if let Some(ms) = deadline {
            env["deadline_ms"] = json!(ms);
        }
        env
    };
    let post = |env: &Value, asynchronous: bool| post_job(&client, &base, env, asynchronous);

    // Deadlines: a transcode that cannot finish in 100 ms (30 s of video: ~290 ms for 6 s on
    // an idle 2-core host), a thumbnail and a render in 1 ms.
    for env in [transcode("tc-deadline", Some(100)), thumbnail("th-deadline", Some(1)), render("rd-deadline", Some(1))] {
        let (_, _, r) = post(&env, false);
        assert_eq!(r["error"]["code"], "deadline_exceeded", "{r}");
    }

    // Overload and cancel: a transcode runs in the only slot, a thumbnail fills the queue, a
    // render is refused with 503 + Retry-After; cancelling the transcode lets the thumbnail run.
    assert_eq!(post(&transcode("tc-cancel", None), true).0, 202);
    poll(&client, &base, "tc-cancel", |s| s == "running" || terminal(s));
    assert_eq!(post(&thumbnail("th-queued", None), true).0, 202);
    let (status, retry_after, r) = post(&render("rd-over", None), false);
    assert_eq!((status, r["error"]["code"].as_str()), (503, Some("overloaded")), "{r}");
    assert!(retry_after, "503 carries Retry-After");
    let del = client.delete(format!("{base}/v1/jobs/tc-cancel")).send().unwrap();
    assert!(del.status().is_success(), "DELETE: {}", del.status());
    let r = poll(&client, &base, "tc-cancel", terminal);
    assert_eq!(r["status"], "cancelled", "{r}");
    assert_eq!(r["error"]["code"], "cancelled", "{r}");
    let r = poll(&client, &base, "th-queued", terminal);
    assert_eq!(r["status"], "succeeded", "{r}");

    // Still serving: each kind runs to the end.
    for env in [thumbnail("th-after", None), render("rd-after", None), transcode("tc-after", None)] {
        let (status, _, r) = post(&env, false);
        assert_eq!((status, r["status"].as_str()), (200, Some("succeeded")), "{r}");
    }
}

/// Video frame timestamps of a media playlist, through ffprobe's HLS demuxer (every segment,
/// in playlist order).
fn playlist_frames(playlist: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json", "-select_streams", "v:0", "-show_entries", "packet=pts_time"])
        .arg(playlist)
        .output()
        .expect("ffprobe");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut t: Vec<f64> = v["packets"].as_array().map(|a| a.iter().filter_map(|p| p["pts_time"].as_str()?.parse().ok()).collect()).unwrap_or_default();
    t.sort_by(f64::total_cmp);
    t
}

#[test]
fn a_transcode_killed_mid_ladder_resumes_on_another_worker_with_a_continuous_playlist() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (secs, rate) = (12u32, 30u32);
    let clip = d.join("clip.mp4");
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc2=size=640x360:rate={rate}:duration={secs}")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=440:sample_rate=48000:duration={secs}")])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"])
        .arg(&clip)
        .status()
        .expect("ffmpeg CLI");
    assert!(st.success());
    let store = d.join("store");
    let out = d.join("out");
    let job = json!({"id": "tc-resume", "kind": "transcode", "output": format!("file://{}/", out.display()),
        "input": {"source": clip, "segment_seconds": 1, "accel": "cpu", "preset": "ultrafast",
            "ladder": [{"height": 360, "bitrate_kbps": 800}, {"height": 180, "bitrate_kbps": 200}]}});
    let start = |name: &str| {
        let stdout = d.join(format!("{name}.out"));
        let mut cmd = kiln();
        cmd.args(["run", "-"])
            .env("KILN_STORE_URL", format!("file://{}/", store.display()))
            .env("KILN_WORKER_ID", name)
            .env("KILN_CHECKPOINT_LEASE_MS", "1500")
            .env("KILN_LOG", "warn")
            .env_remove("KILN_CONFIG")
            .env_remove("KILN_DEBUG_KINDS")
            .current_dir(d)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(Stdio::inherit());
        let mut p = Proc::spawn(&mut cmd);
        {
            use std::io::Write;
            let mut stdin = p.child().stdin.take().unwrap();
            writeln!(stdin, "{job}").unwrap();
        }
        (p, stdout)
    };
    let recorded = || -> usize {
        std::fs::read(store.join("jobs/tc-resume/state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|s| s["units"].as_object().map(|u| u.len()))
            .unwrap_or(0)
    };

    let (mut a, _) = start("worker-a");
    let t = Instant::now();
    while recorded() < 3 {
        assert!(t.elapsed() < Duration::from_secs(120), "worker A recorded {} segments", recorded());
        assert!(a.child().try_wait().unwrap().is_none(), "worker A ended before it could be killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    a.kill();
    let before = recorded();
    assert!(before < secs as usize, "the kill came after the last segment ({before})");

    let (mut b, stdout) = start("worker-b");
    assert!(b.wait_timeout(Duration::from_secs(180)).is_some(), "worker B did not finish");
    let text = std::fs::read_to_string(&stdout).unwrap();
    let r: Value = serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap();
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["resumed"], true, "{r}");
    assert_eq!(r["worker"]["id"], "worker-b");
    assert!(r["units"]["restored"].as_u64().unwrap_or(0) >= before as u64, "{r}");

    // Each rung's playlist plays straight through the resume: every source frame once, in
    // order, no gap longer than a frame, from the start to the end.
    let master = std::fs::read_to_string(out.join("master.m3u8")).unwrap();
    let variants: Vec<&str> = master.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(variants.len(), 2, "{master}");
    let frame = 1.0 / rate as f64;
    for v in variants {
        let t = playlist_frames(&out.join(v));
        assert_eq!(t.len(), (secs * rate) as usize, "{v}: frames");
        let gap = t.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        assert!(gap < 1.5 * frame, "{v}: a {gap:.3} s gap in the video");
        let span = t[t.len() - 1] - t[0] + frame;
        assert!((span - secs as f64).abs() < 2.0 * frame, "{v}: {span:.3} s of video");
    }
}

/// `GET {base}/metrics`: the value of an unlabelled gauge.
fn gauge(client: &reqwest::blocking::Client, base: &str, name: &str) -> Option<f64> {
    let text = client.get(format!("{base}/metrics")).send().ok()?.text().ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls (bounded: 60 s) until `cond` holds; `what` names it in the failure.
fn poll_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The same detections (labels; scores and boxes within what batching changes in float
/// sums: a batch of three and a batch of one need not agree to the last bit).
fn same_detections(got: &Value, want: &Value) {
    let (g, w) = (got.as_array().expect("detections"), want.as_array().expect("detections"));
    assert_eq!(g.len(), w.len(), "{got} vs {want}");
    for (a, b) in g.iter().zip(w) {
        assert_eq!(a["label"], b["label"], "{got} vs {want}");
        assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-3, "{got} vs {want}");
        for k in 0..4 {
            assert!((a["box"][k].as_f64().unwrap() - b["box"][k].as_f64().unwrap()).abs() < 1.0, "{got} vs {want}");
        }
    }
}

/// Deadline, cancel and overload on the infer kind (the real detector, nudenet's 320n.onnx,
/// through ONNX Runtime; scripts/fetch-tools.sh), landing mid-job on both of infer's waits:
/// decoding images on the job's thread (holding a CPU slot) and waiting for a batch on the
/// model's thread (without one). `max_delay_ms` is the longest allowed (10 s), so a batch
/// waits as long as a job that announced itself is still decoding: job `long` decodes 256
/// large JPEGs, and every one-image job behind it waits in the batch `long` will join.
/// Two CPU slots, two job threads, a queue of one.
#[test]
fn deadline_cancel_and_overload_on_a_real_infer_job() {
    let tools = kiln_tests::workspace_root().join(".tools");
    let (ort, model) = (tools.join("onnxruntime/libonnxruntime.so"), tools.join("models/320n.onnx"));
    assert!(ort.exists() && model.exists(), "{} / {} missing: run scripts/fetch-tools.sh", ort.display(), model.display());
    let mate = kiln_tests::data_dir().join("mate-backgrounds/usr/share/backgrounds/mate");
    let (big, small) = (mate.join("abstract/Elephants_5640x3172.jpg"), mate.join("nature/Dune.jpg"));
    assert!(big.exists() && small.exists(), "photos missing under {} (scripts/fetch-photos.sh)", mate.display());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kiln.toml");
    std::fs::write(
        &cfg,
        format!(
            "[infer]\nort_dylib = {:?}\n[[models]]\nname = \"detector\"\nuri = {:?}\ntask = \"detect\"\ninput_size = [320, 320]\n\
             letterbox = true\npad_align = \"top_left\"\nscale = 255.0\nscore_threshold = 0.05\nmax_batch = 16\nmax_delay_ms = 10000\nwarm = true\n",
            ort.display().to_string(),
            format!("file://{}", model.display())
        ),
    )
    .unwrap();
    let mut cmd = kiln();
    cmd.env("KILN_CONFIG", &cfg)
        .env("KILN_STORE_URL", format!("file://{}/store/", dir.path().display()))
        .env("KILN_SOURCES_ALLOW", format!("file://{}/", mate.display()))
        .env("KILN_LOG", "warn")
        .env("KILN_CPU_SLOTS", "2")
        .env("KILN_JOB_THREADS", "2")
        .env("KILN_QUEUE_DEPTH", "1")
        .env_remove("KILN_DEBUG_KINDS")
        .current_dir(dir.path())
        .stderr(Stdio::inherit());
    let (_w, base) = serve(&mut cmd);
    wait_ready(&base, Duration::from_secs(60));
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let infer = |id: &str, images: Vec<String>, deadline: Option<u64>| {
        let mut env = json!({"id": id, "kind": "infer", "input": {"model": "detector", "images": images}});
        if let Some(ms) = deadline {
            env["deadline_ms"] = json!(ms);
        }
        env
    };
    let one = || vec![format!("file://{}", small.display())];
    let post = |env: &Value, asynchronous: bool| post_job(&client, &base, env, asynchronous);
    let status_of = |id: &str| -> String {
        let v: Value = client.get(format!("{base}/v1/jobs/{id}")).send().unwrap().json().unwrap();
        v["status"].as_str().unwrap_or_default().to_owned()
    };

    // A control: one image, answered at once (nothing else announced, so no batch waits).
    let (status, _, r) = post(&infer("warm", one(), None), false);
    assert_eq!((status, r["status"].as_str()), (200, Some("succeeded")), "{r}");
    let solo_ms = r["timings"]["run_ms"].as_f64().unwrap_or(0.0);
    let detections = r["inference"][0]["detections"].clone();
    assert!(detections.is_array(), "{r}");

    // `long`: 256 large JPEGs, decoded one by one on the job's thread (its CPU slot held).
    let long: Vec<String> = (0..256).map(|_| format!("file://{}", big.display())).collect();
    assert_eq!(post(&infer("long", long, None), true).0, 202);
    poll(&client, &base, "long", |s| s == "running" || terminal(s));
    assert_eq!(status_of("long"), "running");

    // Deadline while waiting for a batch: the one image decodes at once, then its batch waits
    // for `long` (up to 10 s); the deadline (1.5 s) ends the job, not the batch window.
    let t = Instant::now();
    let (status, _, r) = post(&infer("dl", one(), Some(1500)), false);
    let took = t.elapsed();
    assert_eq!((status, r["error"]["code"].as_str()), (504, Some("deadline_exceeded")), "{r}");
    assert!(took < Duration::from_secs(8), "the deadline answered after {took:?}: the batch window, not the deadline, ended it");
    assert_eq!(status_of("long"), "running", "`long` ended before the deadline case could land mid-job");

    // Cancel while waiting for a batch, and overload meanwhile: `held` waits in the batch
    // without a CPU slot but with its job thread; `queued` finds no thread and waits in the
    // queue; the next job finds the queue full: 503 + Retry-After.
    assert_eq!(post(&infer("held", one(), None), true).0, 202);
    poll_until("`held` waiting for its batch", || status_of("held") == "running" && gauge(&client, &base, "kiln_jobs_waiting") == Some(1.0));
    assert_eq!(post(&infer("queued", one(), None), true).0, 202);
    let (status, retry_after, r) = post(&infer("refused", one(), None), false);
    assert_eq!((status, r["error"]["code"].as_str()), (503, Some("overloaded")), "{r}");
    assert!(retry_after, "503 carries Retry-After");
    let t = Instant::now();
    assert!(client.delete(format!("{base}/v1/jobs/held")).send().unwrap().status().is_success());
    let r = poll(&client, &base, "held", terminal);
    assert_eq!((r["status"].as_str(), r["error"]["code"].as_str()), (Some("cancelled"), Some("cancelled")), "{r}");
    let cancel_took = t.elapsed();
    assert!(cancel_took < Duration::from_secs(5), "a job waiting for its batch took {cancel_took:?} to answer a cancel");

    // Cancel mid-decode: `long` is still decoding (its images hold its batch open); once it
    // is cancelled, nobody is on the way and the batch `queued` waits in runs.
    assert_eq!(status_of("long"), "running", "`long` ended before it could be cancelled mid-job");
    assert!(client.delete(format!("{base}/v1/jobs/long")).send().unwrap().status().is_success());
    let r = poll(&client, &base, "long", terminal);
    assert_eq!((r["status"].as_str(), r["error"]["code"].as_str()), (Some("cancelled"), Some("cancelled")), "{r}");
    let r = poll(&client, &base, "queued", terminal);
    assert_eq!(r["status"], "succeeded", "{r}");
    same_detections(&r["inference"][0]["detections"], &detections);

    // Still serving, nothing leaked: every slot and thread comes back, and a lone job is
    // answered without waiting for a batch.
    poll_until("every CPU slot free", || gauge(&client, &base, "kiln_cpu_slots_busy") == Some(0.0) && gauge(&client, &base, "kiln_jobs_started") == Some(0.0));
    let (status, _, r) = post(&infer("after", one(), None), false);
    assert_eq!((status, r["status"].as_str()), (200, Some("succeeded")), "{r}");
    same_detections(&r["inference"][0]["detections"], &detections);
    eprintln!(
        "infer faults: a lone job {solo_ms:.0} ms; deadline 1.5 s answered after {took:?}; cancel in a batch wait answered after {cancel_took:?}; after: {:.0} ms",
        r["timings"]["run_ms"].as_f64().unwrap_or(0.0)
    );
}

/// A page of a render that takes a while on the CPU (a photo composited, rotated, under a
/// translucent rectangle and text), so a SIGTERM lands mid-document.
fn heavy_page(photo: &Path, i: usize) -> Value {
    json!({"width": 900, "height": 1200, "dpi": 150, "background": "#fbfaf5", "layers": [
        {"type": "image", "source": photo, "x": 60, "y": 60, "width": 780, "height": 520, "rotate": (i % 7) as f64},
        {"type": "rect", "x": 40, "y": 640, "width": 820, "height": 200, "fill": "#ffcc0040", "stroke": "#333333", "stroke_width": 3},
        {"type": "text", "x": 70, "y": 680, "text": format!("Page {i}"), "size": 48}
    ]})
}

/// Units recorded in a filesystem store's `state.json` for job `id` (0 while there is none).
fn recorded_units(store: &Path, id: &str) -> usize {
    std::fs::read(store.join(format!("jobs/{id}/state.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|s| s["units"].as_object().map(|u| u.len()))
        .unwrap_or(0)
}

/// SIGTERM on a Kafka-consuming `kiln serve` with a backlog of real jobs accepted: twelve
/// AVIF thumbnails of a 3840×2160 photo and a 60-page render (checkpointed per page), two CPU
/// slots, a queue of four, a 1.5 s grace. The worker stops taking messages, finishes what it
/// can within the grace, and what it cannot (the render, mid-document) is neither answered
/// nor acknowledged: its pages stay recorded and its offset uncommitted. It exits 0 within
/// the grace plus a small bound. A second consumer in the same group then takes everything
/// left; the whole results topic is counted per job id: none lost, none dead-lettered, every
/// result a success, the render answered once and resumed from the pages the first worker
/// recorded; a job answered twice only as at-least-once allows (finished behind the
/// handed-back render on its partition, redelivered, its stored result published again).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_kafka_load_finishes_or_hands_back_every_job() {
    // Enough pages that the render outlasts the grace even with its pages on both cores
    // (render jobs borrow idle CPU slots).
    const RENDER_PAGES: usize = 60;
    let mate = kiln_tests::data_dir().join("mate-backgrounds/usr/share/backgrounds/mate");
    let (big, page_photo) = (mate.join("abstract/Elephants_3840x2160.jpg"), mate.join("nature/Dune.jpg"));
    assert!(big.exists() && page_photo.exists(), "photos missing under {} (scripts/fetch-photos.sh)", mate.display());
    let broker = Broker::start(2).await;
    let store = tempfile::tempdir().unwrap();
    let grace = Duration::from_millis(1500);
    let consumer = || {
        let mut cmd = kiln();
        cmd.env("KILN_STORE_URL", format!("file://{}/", store.path().display()))
            .env("KILN_SOURCES_ALLOW", format!("file://{}/", mate.display()))
            .env("KILN_KAFKA_BROKERS", &broker.addr)
            .env("KILN_KAFKA_GROUP", "sigterm-load")
            .env("KILN_KAFKA_SESSION_TIMEOUT_MS", "3000")
            .env("KILN_KAFKA_REVOKE_DRAIN_MS", "1000")
            .env("KILN_CPU_SLOTS", "2")
            .env("KILN_QUEUE_DEPTH", "4")
            .env("KILN_SHUTDOWN_GRACE_MS", grace.as_millis().to_string())
            .env("KILN_ACCEL", "cpu")
            .env("KILN_LOG", "warn")
            .env_remove("KILN_DEBUG_KINDS")
            .env_remove("KILN_CONFIG")
            .stderr(Stdio::inherit());
        serve(&mut cmd)
    };
    // The worker's gauges, read off the runtime (a blocking client refuses to run on it).
    let gauge_of = |base: &str, name: &'static str| {
        let base = base.to_owned();
        std::thread::spawn(move || gauge(&reqwest::blocking::Client::new(), &base, name)).join().unwrap().unwrap_or(0.0)
    };
    let p = broker.producer();
    let mut ids = Vec::new();
    let render = json!({"id": "doc", "kind": "render",
        "input": {"format": "pdf+png", "accel": "cpu", "pages": (0..RENDER_PAGES).map(|i| heavy_page(&page_photo, i)).collect::<Vec<_>>()}});
    broker.produce(&p, "doc", render.to_string().as_bytes()).await;
    ids.push("doc".to_owned());
    for i in 0..12 {
        let id = format!("thumb{i}");
        let job = json!({"id": id, "kind": "thumbnail", "input": {"source": big,
            "outputs": [{"name": "t.avif", "width": 1280, "height": 1280, "fit": "inside", "format": "avif"}]}});
        broker.produce(&p, &id, job.to_string().as_bytes()).await;
        ids.push(id);
    }

    let (mut first, base) = consumer();
    // Under load: the render has recorded pages and still has most of its document to go,
    // and jobs wait in the queue behind it and the thumbnail in the other slot.
    let t = Instant::now();
    while recorded_units(store.path(), "doc") < 2 || gauge_of(&base, "kiln_queue_depth") < 2.0 {
        assert!(t.elapsed() < Duration::from_secs(90), "the render recorded {} pages", recorded_units(store.path(), "doc"));
        assert!(first.child().try_wait().unwrap().is_none(), "the first worker ended on its own");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stored_before = stored(store.path());
    let (started, queued) = (gauge_of(&base, "kiln_jobs_started"), gauge_of(&base, "kiln_queue_depth"));
    let signalled = Instant::now();
    first.signal("TERM");
    let status = first.wait_timeout(grace + Duration::from_secs(10));
    let exit_took = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("the worker still ran {exit_took:?} after SIGTERM (grace {grace:?})"));
    assert_eq!(status.code(), Some(0), "a drain exits 0");
    let recorded = recorded_units(store.path(), "doc");
    assert!(recorded < RENDER_PAGES, "the render finished within the grace: the SIGTERM did not land mid-job");
    let on_first = broker.read_all("kiln.results").await;
    for (_, v, _) in &on_first {
        let r: Value = serde_json::from_slice(v).unwrap();
        assert_eq!(r["status"], "succeeded", "the first worker answered a job it did not finish: {r}");
    }
    let answered_first = on_first.len();

    // The second consumer takes what the first handed back.
    let (mut second, _) = consumer();
    let results = broker.reader("kiln.results");
    let want: std::collections::BTreeSet<String> = ids.iter().cloned().collect();
    let got = tokio::task::spawn_blocking(move || {
        kiln_tests::broker::collect(&results, |g| {
            let seen: std::collections::BTreeSet<String> = g
                .iter()
                .filter_map(|(_, v, _)| serde_json::from_slice::<Value>(v).ok())
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect();
            want.is_subset(&seen)
        })
    })
    .await
    .unwrap();
    drop(got);
    second.signal("TERM");
    assert!(second.wait_timeout(grace + Duration::from_secs(10)).is_some_and(|s| s.success()), "the second worker did not drain");
    let all = broker.read_all("kiln.results").await;
    let mut per_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, v, _) in &all {
        let r: Value = serde_json::from_slice(v).unwrap();
        assert_eq!(r["status"], "succeeded", "{r}");
        per_id.entry(r["id"].as_str().unwrap_or_default().to_owned()).or_default().push(r);
    }
    let duplicates: usize = per_id.values().map(|rs| rs.len() - 1).sum();
    let lost = ids.iter().filter(|id| !per_id.contains_key(id.as_str())).count();
    let dead_letters = broker.read_all("kiln.dlq").await.len();
    eprintln!(
        "sigterm under load: exited {exit_took:?} after SIGTERM (grace {grace:?}); produced {} jobs, answered by the first worker {answered_first} \
         (at the signal: results stored {stored_before}, jobs started {started}, queued {queued}), render pages recorded {recorded}/{RENDER_PAGES}; \
         results {} duplicates {duplicates} lost {lost} dead letters {dead_letters}",
        ids.len(),
        all.len()
    );
    assert_eq!(lost, 0, "{per_id:#?}");
    assert_eq!(per_id.len(), ids.len(), "results for ids never produced: {:?}", per_id.keys());
    assert_eq!(dead_letters, 0, "a shutdown dead-lettered jobs");
    // At least once: the handed-back render holds its partition's watermark, so jobs behind
    // it that the first worker finished are delivered again; the second worker finds their
    // stored results and publishes them again, without running them (same worker, same
    // timings). Only those can be duplicated.
    for (id, rs) in &per_id {
        if rs.len() > 1 {
            assert!(rs.iter().all(|r| r == &rs[0]), "{id} was run again, not republished: {rs:#?}");
        }
    }
    assert!(duplicates <= answered_first, "{duplicates} duplicates, but the first worker answered only {answered_first}");
    let doc = &per_id["doc"];
    assert_eq!(doc.len(), 1, "{doc:#?}");
    assert_eq!(doc[0]["resumed"], true, "{}", doc[0]);
    assert!(doc[0]["units"]["restored"].as_u64().unwrap_or(0) >= recorded as u64, "{}", doc[0]);
    assert!(exit_took < grace + Duration::from_secs(5), "exit took {exit_took:?} with a {grace:?} grace");
}

/// An object's bytes through kiln's own S3 store straight at moto (not through the proxy);
/// `None` when absent or unreadable.
fn s3_object(moto: &kiln_tests::moto::Moto, uri: &str) -> Option<Vec<u8>> {
    use kiln_jobs::ObjectStore;
    let cfg = kiln_worker::config::S3Config { endpoint: Some(moto.endpoint()), path_style: true, region: Some("us-east-1".into()) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = kiln_worker::store::s3::S3Store::connect(&cfg).await;
        store.get(&url::Url::parse(uri).unwrap(), 1 << 30).await.ok().map(|b| b.to_vec())
    })
}

/// Pages recorded in `s3://{bucket}/jobs/{id}/state.json` (0 while there is none).
fn s3_units(moto: &kiln_tests::moto::Moto, bucket: &str, id: &str) -> usize {
    s3_object(moto, &format!("s3://{bucket}/jobs/{id}/state.json"))
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|s| s["units"].as_object().map(|u| u.len()))
        .unwrap_or(0)
}

/// The object store failing under a real checkpointed kind: `kiln serve` renders multi-page
/// documents into an S3 store (moto_server) reached through a proxy the test stops and starts.
/// - An outage shorter than `checkpoint.store_wait_ms` pauses the render (the worker logs that
///   it waits for the store) and the render then finishes as one attempt, every page once.
///   Meanwhile the worker keeps serving: /healthz answers, and a thumbnail, whose result cannot
///   be stored, fails at once with a retryable `internal` instead of hanging or claiming success.
/// - An outage longer than the wait fails the render with a retryable `internal` naming the
///   store; once the store is back, the same id resumes from the pages recorded before the
///   outage and succeeds, and the worker that saw both outages serves a thumbnail.
#[test]
fn the_store_failing_mid_render_pauses_or_fails_retryably_and_a_retry_resumes() {
    use kiln_tests::moto::{Moto, Proxy, AWS_ENV};
    let mate = kiln_tests::data_dir().join("mate-backgrounds/usr/share/backgrounds/mate");
    let photo = mate.join("nature/Dune.jpg");
    assert!(photo.exists(), "{} missing (scripts/fetch-photos.sh)", photo.display());
    let moto = Moto::start();
    moto.create_bucket("kiln");
    let mut proxy = Proxy::new(moto.port);
    let dir = tempfile::tempdir().unwrap();
    let endpoint = proxy.endpoint();
    let worker = |name: &str, store_wait_ms: u64, lease_ms: u64| {
        let log = dir.path().join(format!("{name}.log"));
        let mut cmd = kiln();
        cmd.env("KILN_STORE_URL", "s3://kiln/")
            .env("KILN_S3_ENDPOINT", &endpoint)
            .env("KILN_S3_PATH_STYLE", "true")
            .env("KILN_S3_REGION", "us-east-1")
            .env("KILN_SOURCES_ALLOW", format!("file://{}/", mate.display()))
            .env("KILN_CHECKPOINT_STORE_WAIT_MS", store_wait_ms.to_string())
            .env("KILN_CHECKPOINT_LEASE_MS", lease_ms.to_string())
            .env("KILN_CPU_SLOTS", "2")
            .env("KILN_ACCEL", "cpu")
            .env("KILN_LOG", "warn")
            .env_remove("KILN_DEBUG_KINDS")
            .env_remove("KILN_CONFIG")
            .current_dir(dir.path())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in AWS_ENV {
            cmd.env(k, v);
        }
        let (proc, base) = serve(&mut cmd);
        wait_ready(&base, Duration::from_secs(60));
        (proc, base, log)
    };
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let render = |id: &str| {
        json!({"id": id, "kind": "render", "input": {"format": "pdf+png", "accel": "cpu",
            "pages": (0..16).map(|i| heavy_page(&photo, i)).collect::<Vec<_>>()}})
    };
    let thumbnail = |id: &str| {
        json!({"id": id, "kind": "thumbnail", "input": {"source": photo, "outputs": [{"name": "t.jpg", "width": 256}]}})
    };
    let post = |base: &str, env: &Value, asynchronous: bool| {
        let mut req = client.post(format!("{base}/v1/jobs")).body(env.to_string());
        if asynchronous {
            req = req.header("prefer", "respond-async");
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().unwrap();
        (status, body)
    };
    let wait_units = |id: &str, n: usize| {
        poll_until(&format!("{id}: {n} pages recorded"), || s3_units(&moto, "kiln", id) >= n);
    };

    // A short outage: the render pauses and carries on.
    let (_a, base, log) = worker("a", 30_000, 30_000);
    assert_eq!(post(&base, &render("short"), true).0, 202);
    wait_units("short", 2);
    proxy.stop();
    let out_at = Instant::now();
    poll_until("the worker to say it waits for the store", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("store unavailable; waiting for it to return")
    });
    assert_eq!(kiln_tests::proc::http_status(&base, "/healthz"), Some(200));
    let t = Instant::now();
    let (status, r) = post(&base, &thumbnail("thumb-in-outage"), false);
    let thumb_took = t.elapsed();
    assert_eq!((status, r["error"]["code"].as_str(), r["error"]["retryable"].as_bool()), (500, Some("internal"), Some(true)), "{r}");
    assert_eq!(client.get(format!("{base}/v1/jobs/short")).send().unwrap().json::<Value>().unwrap()["status"], "running");
    proxy.start();
    let outage = out_at.elapsed();
    let r = poll(&client, &base, "short", terminal);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!((r["resumed"].as_bool(), r["units"]["run"].as_u64()), (Some(false), Some(16)), "paused, not restarted: {r}");
    assert!(s3_object(&moto, "s3://kiln/jobs/short/result.json").is_some(), "the result is stored");
    let (status, r) = post(&base, &thumbnail("thumb-after-short"), false);
    assert_eq!((status, r["status"].as_str()), (200, Some("succeeded")), "{r}");

    // A long outage: the render fails retryably; its recorded pages survive; a retry resumes.
    // A short lease: the failed attempt cannot release its lease while the store is away, so
    // the retry waits that lease out.
    let (_b, base, _) = worker("b", 1500, 3000);
    assert_eq!(post(&base, &render("long"), true).0, 202);
    wait_units("long", 2);
    proxy.stop();
    let r = poll(&client, &base, "long", terminal);
    assert_eq!((r["status"].as_str(), r["error"]["code"].as_str(), r["error"]["retryable"].as_bool()), (Some("failed"), Some("internal"), Some(true)), "{r}");
    assert!(r["error"]["message"].as_str().unwrap_or_default().contains("unavailable"), "{r}");
    assert_eq!(kiln_tests::proc::http_status(&base, "/readyz"), Some(200), "the worker still serves");
    proxy.start();
    let recorded = s3_units(&moto, "kiln", "long");
    assert!((2..16).contains(&recorded), "{recorded} pages recorded before the outage");
    let (status, r) = post(&base, &render("long"), false);
    assert_eq!((status, r["status"].as_str()), (200, Some("succeeded")), "{r}");
    assert_eq!((r["resumed"].as_bool(), r["units"]["restored"].as_u64()), (Some(true), Some(recorded as u64)), "{r}");
    assert_eq!(r["units"]["run"].as_u64(), Some(16 - recorded as u64), "{r}");
    let pdf = s3_object(&moto, "s3://kiln/outputs/long/document.pdf").expect("the resumed document is stored");
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
    let (status, r) = post(&base, &thumbnail("thumb-after-long"), false);
    assert_eq!((status, r["status"].as_str()), (200, Some("succeeded")), "{r}");
    eprintln!("store outages: a {outage:?} outage paused the render; a thumbnail during it failed internal in {thumb_took:?}; the long outage's retry restored {recorded} of 16 pages");
}

/// Ids of the jobs whose result is stored in a filesystem store.
fn stored_ids(store: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(store.join("jobs"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().join("result.json").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the results topic (bounded: 90 s) until every one of `ids` has a result.
async fn results_for(broker: &Broker, ids: Vec<String>) {
    let c = broker.reader("kiln.results");
    tokio::task::spawn_blocking(move || {
        kiln_tests::broker::collect(&c, |g| {
            let seen: std::collections::BTreeSet<String> = g
                .iter()
                .filter_map(|(_, v, _)| serde_json::from_slice::<Value>(v).ok())
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect();
            ids.iter().all(|id| seen.contains(id))
        })
    })
    .await
    .unwrap();
}

/// The Kafka broker restarted under a consuming `kiln serve`: tansu, on durable storage (an S3
/// bucket on moto, as a real broker keeps its log on disk), is killed (SIGKILL) while
/// thumbnails are in flight and started again on the same port, where it finds its topics,
/// messages, committed offsets and group. The worker neither crashes nor hangs; the in-flight
/// jobs finish and their results reach the results topic once the broker is back (nothing
/// acknowledged is lost, at most the in-flight jobs are answered twice); the results written
/// before the restart are still there; every job produced after it is answered; and the worker
/// still drains and exits 0 on SIGTERM.
///
/// On memory storage (everything gone at the restart, topics recreated with new ids) the
/// bundled librdkafka 2.12.1 intermittently killed the worker with SIGSEGV in its metadata
/// cache update (`rd_kafka_metadata_update_op`, like confluentinc/librdkafka#5280); that is not
/// a restart a production broker makes.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_broker_is_rejoined_and_jobs_produced_after_it_are_answered() {
    let mate = kiln_tests::data_dir().join("mate-backgrounds/usr/share/backgrounds/mate");
    let (small, big) = (mate.join("nature/Dune.jpg"), mate.join("abstract/Elephants_3840x2160.jpg"));
    assert!(small.exists() && big.exists(), "photos missing under {} (scripts/fetch-photos.sh)", mate.display());
    let mut broker = Broker::start_durable(2).await;
    let store = tempfile::tempdir().unwrap();
    let mut cmd = kiln();
    cmd.env("KILN_STORE_URL", format!("file://{}/", store.path().display()))
        .env("KILN_SOURCES_ALLOW", format!("file://{}/", mate.display()))
        .env("KILN_KAFKA_BROKERS", &broker.addr)
        .env("KILN_KAFKA_GROUP", "broker-restart")
        .env("KILN_KAFKA_SESSION_TIMEOUT_MS", "3000")
        .env("KILN_KAFKA_REVOKE_DRAIN_MS", "1000")
        .env("KILN_CPU_SLOTS", "2")
        .env("KILN_SHUTDOWN_GRACE_MS", "5000")
        .env("KILN_LOG", "warn")
        .env_remove("KILN_DEBUG_KINDS")
        .env_remove("KILN_CONFIG")
        .stderr(Stdio::inherit());
    let (mut w, _) = serve(&mut cmd);
    let thumb = |id: &str, photo: &Path, format: &str, size: u32| {
        json!({"id": id, "kind": "thumbnail", "input": {"source": photo,
            "outputs": [{"name": format!("t.{format}"), "width": size, "height": size, "fit": "inside", "format": format}]}})
        .to_string()
    };
    // Before: the worker answers.
    let p = broker.producer();
    let before: Vec<String> = (0..4).map(|i| format!("before{i}")).collect();
    for id in &before {
        broker.produce(&p, id, thumb(id, &small, "webp", 256).as_bytes()).await;
    }
    results_for(&broker, before.clone()).await;

    // In flight: slow thumbnails (AVIF of a 4K photo); the broker dies once the first is done.
    let inflight: Vec<String> = (0..6).map(|i| format!("inflight{i}")).collect();
    for id in &inflight {
        broker.produce(&p, id, thumb(id, &big, "avif", 1280).as_bytes()).await;
    }
    drop(p);
    let t = Instant::now();
    while !inflight.iter().any(|id| stored_ids(store.path()).contains(id)) {
        assert!(t.elapsed() < Duration::from_secs(60), "no in-flight job finished");
        std::thread::sleep(Duration::from_millis(10));
    }
    let done_at_kill = inflight.iter().filter(|id| stored_ids(store.path()).contains(*id)).count();
    broker.stop();
    let down_at = Instant::now();
    broker.restart().await;
    let down_for = down_at.elapsed();
    assert!(w.child().try_wait().unwrap().is_none(), "the worker died with the broker");

    // After: jobs produced to the restarted broker are all answered.
    let p = broker.producer();
    let after: Vec<String> = (0..6).map(|i| format!("after{i}")).collect();
    let t = Instant::now();
    for id in &after {
        broker.produce(&p, id, thumb(id, &small, "webp", 256).as_bytes()).await;
    }
    results_for(&broker, after.clone()).await;
    let rejoin_took = t.elapsed();

    // The in-flight jobs all finished here (each result stored), whatever became of their
    // result messages.
    let t = Instant::now();
    while !inflight.iter().all(|id| stored_ids(store.path()).contains(id)) {
        assert!(t.elapsed() < Duration::from_secs(60), "in-flight jobs never finished: {:?}", stored_ids(store.path()));
        std::thread::sleep(Duration::from_millis(10));
    }
    w.signal("TERM");
    let t = Instant::now();
    let status = w.wait_timeout(Duration::from_secs(20));
    let exit_took = t.elapsed();
    assert!(status.is_some_and(|s| s.success()), "the worker did not drain and exit 0 within 20 s of SIGTERM");
    let all = broker.read_all("kiln.results").await;
    let tally = kiln_tests::tally::Tally::of(all.iter().map(|(_, v, _)| v.as_slice()));
    let count = |ids: &[String]| ids.iter().filter(|id| tally.per_id.contains_key(id.as_str())).count();
    let dups = |ids: &[String]| ids.iter().map(|id| tally.per_id.get(id.as_str()).map_or(0, |n| n.saturating_sub(1))).sum::<usize>();
    eprintln!(
        "broker restart: down {down_for:?} (kill, restart on the same port, durable storage); {done_at_kill} of {} in-flight jobs done at the kill; \
         results: before {} of {} (duplicates {}), in flight {} of {} (duplicates {}), after {} of {} (duplicates {}), answered {rejoin_took:?} after producing; \
         exit {exit_took:?} after SIGTERM",
        inflight.len(),
        count(&before),
        before.len(),
        dups(&before),
        count(&inflight),
        inflight.len(),
        dups(&inflight),
        count(&after),
        after.len(),
        dups(&after),
    );
    assert_eq!(count(&before), before.len(), "the broker lost results written before its restart");
    assert_eq!(count(&inflight), inflight.len(), "an in-flight job's result never reached the restarted broker");
    assert_eq!(count(&after), after.len());
    assert_eq!(dups(&before) + dups(&after), 0, "jobs finished before the restart, or produced after it, answered twice");
    assert!(dups(&inflight) <= inflight.len(), "more duplicates than jobs in flight");
    for id in before.iter().chain(&inflight).chain(&after) {
        assert_eq!(tally.last[id]["status"], "succeeded", "{}", tally.last[id]);
    }
}
