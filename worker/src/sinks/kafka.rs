//! The Kafka side of results: the result on the results topic (key = job id, retried until the
//! broker acknowledges it, since the job's offset waits on that), the job's events on the
//! events topic (best effort), and poison input on the dead-letter topic with the error in
//! headers. Every message carries the job's span as `traceparent` when it has one.

use crate::config::KafkaTopics;
use crate::jobtable::JobEntry;
use futures_util::StreamExt;
use kiln_jobs::{ErrorCode, JobResult};
use prometheus::IntCounterVec;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// How long one send may wait for the broker before it is retried.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest pause between two tries of an acknowledged send.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct KafkaSink {
    producer: FutureProducer,
    topics: KafkaTopics,
    /// `kiln_kafka_dlq_total{code}`.
    dead_letters: IntCounterVec,
}

fn trace_headers(traceparent: Option<&str>) -> OwnedHeaders {
    match traceparent {
        Some(tp) => OwnedHeaders::new().insert(Header { key: "traceparent", value: Some(tp) }),
        None => OwnedHeaders::new(),
    }
}

fn error_headers(code: ErrorCode, message: &str, traceparent: Option<&str>) -> OwnedHeaders {
    let mut h = OwnedHeaders::new()
        .insert(Header { key: "kiln-error-code", value: Some(code.as_str()) })
        .insert(Header { key: "kiln-error-message", value: Some(message) });
    if let Some(tp) = traceparent {
        h = h.insert(Header { key: "traceparent", value: Some(tp) });
    }
    h
}

impl KafkaSink {
    pub fn new(producer: FutureProducer, topics: KafkaTopics, dead_letters: IntCounterVec) -> Self {
        KafkaSink { producer, topics, dead_letters }
    }

    /// Streams the job's events to the events topic in the background, the result included as
    /// the last event. Best effort: the acknowledged copy of the result is the one
    /// [`KafkaSink::publish_result`] sends.
    pub fn forward_events(&self, entry: &Arc<JobEntry>, traceparent: Option<String>) {
        let producer = self.producer.clone();
        let topic = self.topics.events.clone();
        let events = entry.events();
        let id = entry.id.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(ev) = events.next().await {
                let Ok(body) = serde_json::to_vec(&ev) else { continue };
                let rec = FutureRecord::to(&topic).key(&id).payload(&body).headers(trace_headers(traceparent.as_deref()));
                if let Err((e, _)) = producer.send(rec, Duration::from_secs(5)).await {
                    debug!(error = %e, "event not delivered");
                }
            }
        });
    }

    /// Publishes the result and waits for the broker's acknowledgement, retrying until it
    /// comes: the job's offset is not released before.
    pub async fn publish_result(&self, result: &JobResult, traceparent: Option<&str>) {
        let body = match serde_json::to_vec(result) {
            Ok(b) => b,
            Err(e) => return warn!(error = %e, "result not serialisable"),
        };
        let mut delay = Duration::from_millis(100);
        loop {
            let rec = FutureRecord::to(&self.topics.results).key(&result.id).payload(&body).headers(trace_headers(traceparent));
            match self.producer.send(rec, SEND_TIMEOUT).await {
                Ok(_) => return,
                Err((e, _)) => {
                    warn!(job_id = %result.id, error = %e, "publishing the result failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Sends the original bytes of a poison message to the dead-letter topic, with the error
    /// code and message in headers, and waits for the acknowledgement (retrying until it comes).
    pub async fn dead_letter(&self, payload: &[u8], code: ErrorCode, message: &str, traceparent: Option<&str>) {
        self.dead_letters.with_label_values(&[code.as_str()]).inc();
        let mut delay = Duration::from_millis(100);
        loop {
            let rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topics.dlq).payload(payload).headers(error_headers(code, message, traceparent));
            match self.producer.send(rec, SEND_TIMEOUT).await {
                Ok(_) => return,
                Err((e, _)) => {
                    warn!(error = %e, "dead-lettering failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
