//! Capacity in from the compacted topic `kafka.topics.capacity` (the workers' side is
//! worker/src/capacity_topic.rs), beside `POST /v1/capacity`: with `kafka.brokers` set,
//! `kiln route` reads every partition of the topic from the beginning (no consumer group:
//! every router replica needs every worker's report), so a new replica learns the pool from
//! the compacted history at once. A report goes into the view as a POSTed one does (the
//! `kiln-worker-url` header fills the address book); a tombstone (a key with no value)
//! removes that worker from the view.

use super::{lock, now_ms, RouteState};
use crate::capacity_topic::{ensure_topic, URL_HEADER};
use crate::config::KafkaConfig;
use crate::sources::kafka::props;
use kiln_router_client::CapacityReport;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Reads the capacity topic into the router's view until `stop` fires.
pub async fn consume(st: Arc<RouteState>, cfg: KafkaConfig, stop: CancellationToken) {
    let (Some(brokers), topic) = (cfg.brokers.clone(), cfg.topics.capacity.clone()) else { return };
    if topic.is_empty() {
        return;
    }
    if let Err(e) = ensure_topic(&cfg, &brokers, &topic).await {
        warn!(error = %e, %topic, "could not check the capacity topic");
    }
    let consumer: StreamConsumer = match props::client_config(&cfg)
        .set("bootstrap.servers", &brokers)
        // Required by librdkafka; nothing is committed (offsets are assigned, not stored).
        .set("group.id", format!("kiln-route-{}", ulid::Ulid::new()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
    {
        Ok(c) => c,
        Err(e) => return warn!(error = %e, "capacity topic consumer disabled"),
    };
    // Every partition, from the beginning; retried until the topic's metadata is there.
    let consumer = Arc::new(consumer);
    loop {
        let c = consumer.clone();
        let t = topic.clone();
        let parts = tokio::task::spawn_blocking(move || {
            let md = c.fetch_metadata(Some(&t), Duration::from_secs(5)).ok()?;
            let n = md.topics().iter().find(|x| x.name() == t)?.partitions().len();
            (n > 0).then_some(n)
        })
        .await
        .ok()
        .flatten();
        if let Some(n) = parts {
            let mut tpl = TopicPartitionList::new();
            for p in 0..n {
                let _ = tpl.add_partition_offset(&topic, p as i32, Offset::Beginning);
            }
            match consumer.assign(&tpl) {
                Ok(()) => {
                    info!(%topic, partitions = n, "reading capacity reports from the topic");
                    break;
                }
                Err(e) => warn!(error = %e, "capacity topic assignment failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
    loop {
        tokio::select! {
            m = consumer.recv() => match m {
                Ok(m) => take(&st, &m),
                Err(e) => {
                    warn!(error = %e, "capacity topic read failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = stop.cancelled() => return,
        }
    }
}

/// One message: a report into the view, or a tombstone out of it.
fn take(st: &RouteState, m: &BorrowedMessage<'_>) {
    let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else { return };
    let Some(payload) = m.payload() else {
        if lock(&st.view).remove_worker(&key) {
            info!(worker_id = %key, "worker left (tombstone)");
        }
        st.metrics.reports.with_label_values(&["tombstone"]).inc();
        return;
    };
    let report: CapacityReport = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            st.metrics.reports.with_label_values(&["invalid"]).inc();
            return warn!(worker_id = %key, error = %e, "not a capacity report on the topic");
        }
    };
    let url = m
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == URL_HEADER).and_then(|h| h.value))
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .map(|u| u.trim_end_matches('/').to_owned());
    if let Some(url) = url {
        lock(&st.book).set(&report.worker_id, &url);
    }
    let outcome = super::capacity::ingest(st, report, None, now_ms());
    st.metrics.reports.with_label_values(&[outcome]).inc();
}
