//! End-to-end throughput of small thumbnail jobs through Kafka: a tansu broker on 127.0.0.1,
//! 1 then 2 `kiln serve` workers in one group, M jobs produced as fast as the producer goes;
//! reports jobs/s and the produce → result latency (p50/p99) read from the results topic.
//!
//! Usage: cargo run --release -p kiln-benches --bin kafka_bench -- [JOBS] [PARTITIONS]
//! (needs target/release/kiln, .tools/bin/tansu and the mate-backgrounds photos:
//! `make build-release fixtures`)

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn round(root: &Path, workers: usize, jobs: usize, partitions: i32, photos: &[PathBuf]) -> anyhow::Result<(f64, f64, f64)> {
    let port = free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let _broker = Killed(
        Command::new(root.join(".tools/bin/tansu"))
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start tansu")?,
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("broker did not start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let addr = format!("127.0.0.1:{port}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &addr).create()?;
    let topics = [
        NewTopic::new("kiln.jobs", partitions, TopicReplication::Fixed(1)),
        NewTopic::new("kiln.results", 1, TopicReplication::Fixed(1)),
        NewTopic::new("kiln.events", 1, TopicReplication::Fixed(1)),
        NewTopic::new("kiln.dlq", 1, TopicReplication::Fixed(1)),
    ];
    for r in admin.create_topics(&topics, &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("create {t}: {e}"))?;
    }
    let store = std::env::temp_dir().join(format!("kiln-kafka-bench-{port}"));
    let mut procs = Vec::new();
    for _ in 0..workers {
        let mut child = Command::new(root.join("target/release/kiln"))
            .arg("serve")
            .env("KILN_HTTP_ADDR", "127.0.0.1:0")
            .env("KILN_STORE_URL", format!("file://{}/", store.display()))
            .env("KILN_KAFKA_BROKERS", &addr)
            .env("KILN_KAFKA_SESSION_TIMEOUT_MS", "2000")
            .env("KILN_KAFKA_REVOKE_DRAIN_MS", "1000")
            .env("KILN_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        procs.push(Killed(child));
    }
    let results: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &addr).set("group.id", "bench-reader").create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("kiln.results", 0, Offset::Beginning)?;
    results.assign(&tpl)?;
    // Let the group form before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &addr).set("linger.ms", "1").create()?;
    let mut sent_at = HashMap::new();
    let t0 = Instant::now();
    for i in 0..jobs {
        let id = format!("kb-{workers}-{i}");
        let src = &photos[i % photos.len()];
        let body = serde_json::json!({"id": id, "kind": "thumbnail", "input": {"source": src,
            "outputs": [{"name": "256.jpg", "width": 256, "height": 256, "fit": "inside", "format": "jpeg", "quality": 80}]}})
        .to_string();
        sent_at.insert(id.clone(), Instant::now());
        producer
            .send(FutureRecord::to("kiln.jobs").key(&id).payload(&body), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
    }
    let mut lat = Vec::new();
    while lat.len() < jobs {
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("only {} of {jobs} results after 600 s", lat.len());
        }
        if let Some(m) = results.poll(Duration::from_millis(100)) {
            let m = m?;
            let id = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            if let Some(t) = sent_at.remove(&id) {
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
                if v["status"] != "succeeded" {
                    bail!("job {id} failed: {v}");
                }
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    drop(procs);
    let _ = std::fs::remove_dir_all(&store);
    Ok((jobs as f64 / wall, pct(&lat, 0.5), pct(&lat, 0.99)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let jobs: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(600);
    let partitions: i32 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(4);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("data/mate-backgrounds/usr/share/backgrounds/mate");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(dir.join("nature"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    photos.sort();
    if photos.is_empty() {
        bail!("no photos: run `make fixtures`");
    }
    println!("| workers | jobs | partitions | jobs/s | p50 ms (produce → result) | p99 ms |");
    println!("|---|---|---|---|---|---|");
    for workers in [1, 2] {
        let (rate, p50, p99) = round(&root, workers, jobs, partitions, &photos).await?;
        println!("| {workers} | {jobs} | {partitions} | {rate:.1} | {p50:.0} | {p99:.0} |");
    }
    Ok(())
}
