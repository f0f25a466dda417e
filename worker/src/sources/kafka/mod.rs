//! The Kafka source: a consumer-group member on the jobs topic, at least once. What it sends
//! back (results, events, dead letters) goes through the Kafka sink ([`crate::sinks::kafka`]).
//!
//! - **Commit watermark.** Jobs of one partition run concurrently; a partition's offset is
//!   stored (auto-committed by librdkafka) only up to just below its lowest unfinished job,
//!   and a job counts as finished only after its result is stored and the broker acknowledged
//!   the result message ([`offsets`]).
//! - **Redelivery is harmless.** A redelivered job whose result is stored is not rerun; its
//!   stored result is published again.
//! - **Poison** (not JSON, unknown kind, invalid spec) goes to the DLQ topic at once, with the
//!   error code and message in headers and the original bytes as the value. A retryable
//!   failure (store unavailable) is retried with exponential backoff, then dead-lettered.
//! - **Backpressure.** When the worker's queue is full, the assigned partitions are paused until
//!   there is room; librdkafka's prefetch is bounded (`kafka.prefetch_kbytes`), so memory does
//!   not grow with the backlog.
//! - **Revoke and SIGTERM.** A revoke waits (at most `kafka.revoke_drain_ms`) for the revoked
//!   partitions' jobs, commits, then lets the partitions go. SIGTERM stops intake, drains the
//!   runtime, commits, and leaves the group; a job the drain could not finish (or that failed
//!   retryably meanwhile) is handed back unanswered and uncommitted, for redelivery.
//! - **Tenants.** With `kafka.trust_tenant_header`, a message's `kiln-tenant` header is its
//!   job's tenant (`tenants.rs`: on the span, the result, the per-tenant share and metrics); a
//!   tenant over its share waits here like a full queue. Without it Kafka jobs are nobody's.

pub mod offsets;
pub mod props;

use crate::config::KafkaConfig;
use crate::jobtable::JobEntry;
use crate::runtime::{Admission, Runtime};
use crate::sinks::kafka::KafkaSink;
use crate::tracectx::TraceContext;
use kiln_router_client::WorkerState;
use offsets::{Offsets, Tp};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Statistics, TopicPartitionList};
use kiln_jobs::ErrorCode;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long a full queue is waited for before the partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_millis(200);

/// State shared by the consume loop, the job followers and the rebalance callback.
struct Shared {
    offsets: Mutex<Offsets>,
    changed: Condvar,
    revoke_drain: Duration,
    rt: Arc<Runtime>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Offsets> {
        self.offsets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks (this runs in librdkafka's rebalance callback) until the partitions' jobs are
    /// finished or the drain time is over.
    fn wait_for(&self, tps: &[Tp], limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut g = self.lock();
        loop {
            let left = g.in_flight_of(tps);
            let now = Instant::now();
            if left == 0 || now >= deadline {
                return left;
            }
            g = self.changed.wait_timeout(g, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// librdkafka callbacks: rebalance drain and statistics.
struct Ctx {
    shared: Arc<Shared>,
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        let lag = &self.shared.rt.metrics.kafka_consumer_lag;
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    lag.with_label_values(&[topic.as_str(), &p.to_string()]).set(part.consumer_lag);
                }
            }
        }
    }
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let tps = tps_of(tpl);
            let left = self.shared.wait_for(&tps, self.shared.revoke_drain);
            let started = Instant::now();
            let commit = consumer.commit_consumer_state(CommitMode::Sync);
            self.shared.rt.metrics.kafka_commit_seconds.observe(started.elapsed().as_secs_f64());
            match commit {
                Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => warn!(error = %e, "commit on revoke failed"),
            }
            if left > 0 {
                warn!(jobs = left, "partitions revoked with jobs unfinished; they will be redelivered");
            }
            info!(partitions = tps.len(), "partitions revoked");
            self.shared.lock().forget(&tps);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}

pub struct KafkaSource {
    cfg: KafkaConfig,
    shared: Arc<Shared>,
    consumer: StreamConsumer<Ctx>,
    sink: KafkaSink,
    /// Job followers still publishing.
    followers: tokio_util::task::TaskTracker,
}

/// One taken message, owned (the borrowed message is released at once).
struct Taken {
    tp: Tp,
    offset: i64,
    payload: Vec<u8>,
    /// The job's span in the producer's trace (from the `traceparent` header).
    trace: Option<TraceContext>,
    /// What results, events and dead letters carry downstream: the job's span as parent.
    traceparent: Option<String>,
    /// The routing decision the producer recorded (`x-kiln-route` header), for the job's span.
    route: Option<String>,
    /// The `kiln-tenant` header, when `kafka.trust_tenant_header` (see `tenants.rs`).
    tenant: Option<String>,
}

impl KafkaSource {
    pub fn new(rt: Arc<Runtime>, cfg: KafkaConfig) -> anyhow::Result<Arc<Self>> {
        let brokers = cfg.brokers.clone().ok_or_else(|| anyhow::anyhow!("kafka.brokers is not set"))?;
        let shared = Arc::new(Shared {
            offsets: Mutex::new(Offsets::default()),
            changed: Condvar::new(),
            revoke_drain: Duration::from_millis(cfg.revoke_drain_ms),
            rt,
        });
        let consumer: StreamConsumer<Ctx> = props::consumer_config(&cfg)
            .set("bootstrap.servers", &brokers)
            .set("group.id", &cfg.group)
            .set("enable.auto.commit", "true")
            // Stored offsets are committed every 100 ms: a worker killed with SIGKILL has its
            // acknowledged jobs redelivered for at most that long (tests/tests/faults.rs).
            .set("auto.commit.interval.ms", "100")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (cfg.session_timeout_ms / 10).max(100).to_string())
            .set("queued.max.messages.kbytes", cfg.prefetch_kbytes.to_string())
            .set("statistics.interval.ms", "2000")
            .set("fetch.wait.max.ms", "100")
            .create_with_context(Ctx { shared: shared.clone() })?;
        let producer: FutureProducer = props::client_config(&cfg)
            .set("bootstrap.servers", &brokers)
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "2")
            .create()?;
        let sink = KafkaSink::new(producer, cfg.topics.clone(), shared.rt.metrics.kafka_dlq.clone());
        Ok(Arc::new(KafkaSource { cfg, shared, consumer, sink, followers: tokio_util::task::TaskTracker::new() }))
    }

    fn rt(&self) -> &Arc<Runtime> {
        &self.shared.rt
    }

    /// Consumes until `stop` fires, then finishes what was taken and leaves the group.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> anyhow::Result<()> {
        self.consumer.subscribe(&[self.cfg.topics.jobs.as_str()])?;
        info!(topic = %self.cfg.topics.jobs, group = %self.cfg.group, "kafka source subscribed");
        loop {
            let taken = tokio::select! {
                m = self.consumer.recv() => match m {
                    Ok(m) => {
                        let trace = m.headers().and_then(|h| {
                            h.iter().find(|h| h.key == "traceparent").and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
                        }).and_then(TraceContext::child_of);
                        let tenant = if self.cfg.trust_tenant_header { tenant_header(&m) } else { None };
                        let route = m.headers().and_then(|h| {
                            h.iter().find(|h| h.key == "x-kiln-route").and_then(|h| h.value).and_then(crate::tracectx::route_value)
                        });
                        Taken {
                            tenant,
                            route,
                            tp: (m.topic().to_owned(), m.partition()),
                            offset: m.offset(),
                            payload: m.payload().unwrap_or_default().to_vec(),
                            traceparent: trace.as_ref().map(TraceContext::header),
                            trace,
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "kafka receive error");
                        continue;
                    }
                },
                _ = stop.cancelled() => break,
            };
            self.take(taken, &stop).await;
        }
        Ok(())
    }

    /// Hands one message to the runtime, pausing the partitions while the queue is full.
    async fn take(self: &Arc<Self>, t: Taken, stop: &CancellationToken) {
        self.shared.lock().begin(&t.tp, t.offset);
        if !self.rt().scheduler().has_room() {
            // A queue that frees up soon is waited for with partitions running (librdkafka's
            // prefetch is bounded); one that stays full pauses them, since each pause drops the
            // prefetched messages and a resume fetches them again.
            let sched = self.rt().scheduler();
            let soon = tokio::time::timeout(PAUSE_AFTER, sched.room()).await.is_ok();
            if !soon && !stop.is_cancelled() {
                let assigned = self.consumer.assignment().ok();
                if let Some(tpl) = &assigned {
                    if let Err(e) = self.consumer.pause(tpl) {
                        warn!(error = %e, "pausing partitions failed");
                    }
                    self.rt().metrics.kafka_paused_partitions.set(tpl.count() as i64);
                    debug!(partitions = tpl.count(), "queue full: partitions paused");
                }
                tokio::select! {
                    _ = sched.room() => {}
                    _ = stop.cancelled() => {}
                }
                if let Some(tpl) = &assigned {
                    if let Err(e) = self.consumer.resume(tpl) {
                        warn!(error = %e, "resuming partitions failed");
                    }
                    self.rt().metrics.kafka_paused_partitions.set(0);
                }
            }
        }
        let entry = self.submit(&t).await;
        let this = self.clone();
        self.followers.spawn(async move { this.follow(entry, t, 1).await });
    }

    /// Streams the job's events, waits for its result, retries or dead-letters it, publishes
    /// the result, and only then moves the partition's watermark.
    async fn follow(self: Arc<Self>, mut entry: Arc<JobEntry>, t: Taken, mut attempt: u32) {
        let tp = t.traceparent.as_deref();
        let result = loop {
            self.sink.forward_events(&entry, t.traceparent.clone());
            let mut result = (*entry.wait().await).clone();
            result.attempt = attempt;
            let Some(err) = result.error.clone() else { break result };
            if err.retryable && self.rt().state() == WorkerState::Draining {
                // Shutting down: the drain cancelled the job (or refused it, taken after
                // intake stopped), or it failed in a way a retry may cure. Retrying here
                // would only meet the closed scheduler; answering would acknowledge a job
                // that was never done. Neither the result nor the offset goes out: the
                // partition's watermark stays below this message, so the group's next
                // owner gets it again (resuming from its checkpoint, if it has one).
                info!(job_id = %result.id, partition = t.tp.1, offset = t.offset, code = %err.code, "worker draining: job left for redelivery");
                self.rt().metrics.kafka_released.inc();
                self.shared.lock().release(&t.tp, t.offset);
                self.shared.changed.notify_all();
                return;
            }
            if matches!(err.code, ErrorCode::InvalidSpec | ErrorCode::Unsupported) {
                self.dead_letter(&t, err.code, &err.message).await;
                break result;
            }
            if err.retryable && attempt < self.cfg.max_attempts {
                let wait = Duration::from_millis(self.cfg.retry_backoff_ms.saturating_mul(1 << (attempt - 1).min(16)));
                warn!(job_id = %result.id, attempt, wait_ms = wait.as_millis() as u64, error = %err.message, "retrying");
                self.rt().metrics.kafka_retries.with_label_values(&[result.kind.as_str()]).inc();
                tokio::time::sleep(wait).await;
                attempt += 1;
                entry = self.submit(&t).await;
                continue;
            }
            if err.retryable {
                self.dead_letter(&t, err.code, &format!("after {attempt} attempts: {}", err.message)).await;
            }
            break result;
        };
        self.sink.publish_result(&result, tp).await;
        let mark = self.shared.lock().finish(&t.tp, t.offset);
        self.shared.changed.notify_all();
        if let Some(mark) = mark {
            // Fails harmlessly when the partition was revoked meanwhile (it is redelivered).
            if let Err(e) = self.consumer.store_offset(&t.tp.0, t.tp.1, mark) {
                debug!(error = %e, "offset not stored");
            }
        }
    }

    /// The message's job, on behalf of its tenant when the header is trusted (a tenant over
    /// its share waits here, like a full queue).
    async fn submit(&self, t: &Taken) -> Arc<JobEntry> {
        let caller = crate::tracectx::Caller { route: t.route.clone(), cold_start_ms: None };
        let submit = crate::tracectx::with_caller(caller, self.rt().submit(&t.payload[..], Admission::Wait, t.trace.as_ref()));
        match &t.tenant {
            Some(tenant) => crate::auth::with_tenant(tenant.clone(), submit).await,
            None => submit.await,
        }
    }

    async fn dead_letter(&self, t: &Taken, code: ErrorCode, message: &str) {
        self.sink.dead_letter(&t.payload, code, message, t.traceparent.as_deref()).await;
        info!(code = %code, partition = t.tp.1, offset = t.offset, "message dead-lettered");
    }

    /// After intake stopped and the runtime drained: waits for the followers to publish,
    /// commits, and leaves the group.
    pub async fn finish(&self, limit: Duration) {
        self.followers.close();
        if tokio::time::timeout(limit, self.followers.wait()).await.is_err() {
            warn!(left = self.shared.lock().in_flight(), "kafka followers did not finish in time; their jobs will be redelivered");
        }
        let started = Instant::now();
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => warn!(error = %e, "final commit failed"),
        }
        self.rt().metrics.kafka_commit_seconds.observe(started.elapsed().as_secs_f64());
        self.consumer.unsubscribe();
        info!("kafka source left the group");
    }
}

/// A message's `kiln-tenant` header, when it is a valid tenant name.
fn tenant_header(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<String> {
    let v = m.headers()?.iter().find(|h| h.key == "kiln-tenant")?.value?;
    let t = std::str::from_utf8(v).ok()?;
    crate::tokens::valid_tenant(t).then(|| t.to_owned())
}
