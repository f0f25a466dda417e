//! Capacity reports on the compacted Kafka topic `kafka.topics.capacity` (DESIGN.md,
//! "Kafka"): one message per report, key = worker id, the report's JSON as the value and the
//! worker's advertised URL in the `kiln-worker-url` header; on a clean shutdown a last
//! `draining` report, then a tombstone (the key with no value), so compaction forgets the
//! worker and every router drops it at once. `kiln serve` publishes here whenever
//! `kafka.brokers` is set and the topic name is not empty; `kiln route` reads it
//! (worker/src/route/capacity_topic.rs).
//!
//! Reports go out on `router.interval_ms`, on every state change (warming → ready →
//! draining) and when the scheduler's slots change ([`SlotWatch`]). Publishing runs on its
//! own task and never waits on job work; a broker that does not answer costs a warning.
//!
//! The topic is created compacted (`cleanup.policy=compact`) when it does not exist.

use crate::capacity::Reporter;
use crate::config::KafkaConfig;
use crate::runtime::Runtime;
use crate::slot_watch::SlotWatch;
use crate::sources::kafka::props;
use kiln_router_client::WorkerState;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The header that carries the worker's base URL.
pub const URL_HEADER: &str = "kiln-worker-url";

/// Creates `topic` compacted, with one partition, unless it exists.
pub async fn ensure_topic(cfg: &KafkaConfig, brokers: &str, topic: &str) -> Result<(), rdkafka::error::KafkaError> {
    let admin: AdminClient<DefaultClientContext> = props::client_config(cfg).set("bootstrap.servers", brokers).create()?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    for r in admin.create_topics(&[new], &opts).await? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => warn!(topic = %t, error = %code, "could not create the capacity topic"),
        }
    }
    Ok(())
}

/// Publishes reports to the capacity topic until `stop` fires, then a `draining` report and
/// the tombstone. `url`: the worker's advertised base URL (the router forwards jobs there).
pub async fn publish_loop(rt: Arc<Runtime>, reporter: Arc<Reporter>, url: String, stop: CancellationToken) {
    let cfg = rt.config().kafka.clone();
    let (Some(brokers), topic) = (cfg.brokers.clone(), cfg.topics.capacity.clone()) else { return };
    let producer: FutureProducer = match props::client_config(&cfg)
        .set("bootstrap.servers", &brokers)
        .set("message.timeout.ms", "5000")
        .set("linger.ms", "0")
        .create()
    {
        Ok(p) => p,
        Err(e) => return warn!(error = %e, "capacity topic publisher disabled"),
    };
    if let Err(e) = ensure_topic(&cfg, &brokers, &topic).await {
        warn!(error = %e, %topic, "could not check the capacity topic; publishing anyway");
    }
    let key = rt.worker().id.clone();
    let send = |value: Option<Vec<u8>>| {
        let producer = producer.clone();
        let (topic, key, url) = (topic.clone(), key.clone(), url.clone());
        async move {
            let headers = OwnedHeaders::new().insert(Header { key: URL_HEADER, value: Some(url.as_str()) });
            let mut rec: FutureRecord<'_, String, Vec<u8>> = FutureRecord::to(&topic).key(&key).headers(headers);
            rec.payload = value.as_ref();
            match producer.send(rec, Duration::from_secs(5)).await {
                Ok(_) => true,
                Err((e, _)) => {
                    warn!(error = %e, %topic, "capacity report to the topic failed");
                    false
                }
            }
        }
    };
    let mut state = rt.subscribe_state();
    let mut slots = SlotWatch::new(rt.clone());
    let mut tick = tokio::time::interval(Duration::from_millis(rt.config().router.interval_ms));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = state.changed() => if r.is_err() { break },
            _ = slots.changed() => {}
            _ = stop.cancelled() => break,
        }
        let report = reporter.report(&rt);
        let Ok(json) = serde_json::to_vec(&report) else { continue };
        if send(Some(json)).await {
            debug!(seq = report.seq, "capacity report sent to the topic");
        }
    }
    let mut last = reporter.report(&rt);
    last.state = WorkerState::Draining;
    if let Ok(json) = serde_json::to_vec(&last) {
        send(Some(json)).await;
    }
    if send(None).await {
        debug!(worker_id = %key, "capacity tombstone sent");
    }
}
