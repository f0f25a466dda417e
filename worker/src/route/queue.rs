//! The container pool's queue: with `kafka.brokers` set, a job that no container worker can
//! take now (none ready, or every one tried failed) and that the decision allows on
//! containers is produced to `kafka.topics.jobs` (key = job id, the caller's `traceparent`
//! as a header) instead of failing; the Kafka-fed workers run it when they can. The caller
//! gets `202 Accepted` with `{"id", "kind", "status": "queued", "topic"}` and a `Location`
//! of `/v1/jobs/{id}` (a worker that shares the store answers it once the result is stored;
//! the result also goes to `kafka.topics.results`).

use crate::config::KafkaConfig;
use crate::sources::kafka::props;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

pub struct JobQueue {
    producer: FutureProducer,
    pub topic: String,
}

impl JobQueue {
    /// None without brokers or a jobs topic; an error when the producer cannot be built.
    pub fn from_config(cfg: &KafkaConfig) -> Result<Option<JobQueue>, rdkafka::error::KafkaError> {
        let Some(brokers) = cfg.brokers.as_deref() else { return Ok(None) };
        if cfg.topics.jobs.is_empty() {
            return Ok(None);
        }
        let producer = props::client_config(cfg)
            .set("bootstrap.servers", brokers)
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "1")
            .create()?;
        Ok(Some(JobQueue { producer, topic: cfg.topics.jobs.clone() }))
    }

    /// Produces one envelope; Ok once the broker acknowledged it.
    pub async fn enqueue(&self, id: &str, envelope: &[u8], traceparent: Option<&str>) -> Result<(), String> {
        let mut rec = FutureRecord::to(&self.topic).key(id).payload(envelope);
        if let Some(tp) = traceparent {
            rec = rec.headers(OwnedHeaders::new().insert(Header { key: "traceparent", value: Some(tp) }));
        }
        self.producer.send(rec, Duration::from_secs(5)).await.map(|_| ()).map_err(|(e, _)| e.to_string())
    }
}
