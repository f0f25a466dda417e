//! Logs, spans and metrics.
//!
//! Logs go to stderr through `tracing`: JSON when stderr is not a terminal (or when asked),
//! text otherwise. Spans also leave the process over OTLP when the standard
//! `OTEL_EXPORTER_OTLP_*` variables ask for it (otel.rs). Metrics follow
//! `kiln_<name>_<unit>[_total]` and are served at /metrics.

use crate::config::{LogConfig, LogFormat};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The span exporter, when one runs: flush it with [`Otel::shutdown`] before the process ends.
pub struct Otel(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Otel {
    /// Exports what is left, waiting at most `limit`.
    pub fn shutdown(self, limit: Duration) {
        if let Some(p) = self.0 {
            crate::otel::shutdown(p, limit);
        }
    }
}

/// Installs the global subscriber: the log layer (filtered by `log.level`) and, when
/// configured, the OTLP span layer (kiln's own spans at info and above, whatever the log
/// level). The exporter batches on the tokio runtime, so call this inside it for export.
/// Safe to call more than once (later calls install nothing).
pub fn init_logging(cfg: &LogConfig) -> Otel {
    let filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match cfg.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync> = if json {
        Box::new(fmt.json().with_current_span(true).with_span_list(false))
    } else {
        Box::new(fmt.compact())
    };
    let (otel, notes) = crate::otel::provider();
    let (provider, tracer) = match otel {
        Some((p, t)) => (Some(p), Some(t)),
        None => (None, None),
    };
    let spans = tracer.map(|t| tracing_opentelemetry::layer().with_tracer(t).with_filter(EnvFilter::new(crate::otel::SPAN_FILTER)));
    let installed = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(spans).try_init().is_ok();
    for note in notes {
        tracing::warn!("{note}");
    }
    if provider.is_some() && installed {
        tracing::info!("exporting spans over OTLP");
    }
    Otel(provider.filter(|_| installed))
}

/// Recent latencies of one job kind, for the p50/p95 of the capacity report.
#[derive(Default)]
struct Window {
    samples: VecDeque<f64>,
}

const WINDOW: usize = 512;

/// The worker's metrics.
pub struct Metrics {
    pub registry: Registry,
    pub jobs: IntCounterVec,
    pub run_seconds: HistogramVec,
    pub queue_wait_seconds: HistogramVec,
    pub rejected: IntCounterVec,
    pub queue_depth: IntGauge,
    pub running: IntGaugeVec,
    pub idempotent_hits: IntCounterVec,
    pub kafka_dlq: IntCounterVec,
    pub kafka_paused_partitions: IntGauge,
    pub kafka_consumer_lag: IntGaugeVec,
    pub kafka_commit_seconds: prometheus::Histogram,
    pub kafka_retries: IntCounterVec,
    pub kafka_released: IntCounter,
    windows: Mutex<HashMap<String, Window>>,
}

fn buckets() -> Vec<f64> {
    vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0]
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let jobs = IntCounterVec::new(Opts::new("kiln_jobs_total", "Jobs finished, by kind and status"), &["kind", "status"])
            .expect("static metric");
        let run_seconds = HistogramVec::new(
            HistogramOpts::new("kiln_job_run_seconds", "Time a job ran, from slot to stored result").buckets(buckets()),
            &["kind"],
        )
        .expect("static metric");
        let queue_wait_seconds = HistogramVec::new(
            HistogramOpts::new("kiln_job_queue_wait_seconds", "Time a job waited for a slot").buckets(buckets()),
            &["kind"],
        )
        .expect("static metric");
        let rejected = IntCounterVec::new(Opts::new("kiln_jobs_rejected_total", "Submissions refused at admission"), &["reason"])
            .expect("static metric");
        let queue_depth = IntGauge::new("kiln_queue_depth", "Jobs waiting for a slot").expect("static metric");
        let running = IntGaugeVec::new(Opts::new("kiln_jobs_running", "Jobs running, by kind"), &["kind"]).expect("static metric");
        let idempotent_hits =
            IntCounterVec::new(Opts::new("kiln_idempotent_hits_total", "Submissions answered from a stored result"), &["kind"])
                .expect("static metric");
        let kafka_dlq = IntCounterVec::new(Opts::new("kiln_kafka_dlq_total", "Messages sent to the dead-letter topic"), &["code"])
            .expect("static metric");
        let kafka_paused_partitions =
            IntGauge::new("kiln_kafka_paused_partitions", "Partitions paused for backpressure").expect("static metric");
        let kafka_consumer_lag = IntGaugeVec::new(
            Opts::new("kiln_kafka_consumer_lag", "Messages behind the partition's end, from librdkafka statistics"),
            &["topic", "partition"],
        )
        .expect("static metric");
        let kafka_commit_seconds = prometheus::Histogram::with_opts(
            HistogramOpts::new("kiln_kafka_commit_seconds", "Time of synchronous offset commits (revoke, shutdown)").buckets(buckets()),
        )
        .expect("static metric");
        let kafka_retries = IntCounterVec::new(Opts::new("kiln_kafka_retries_total", "Jobs retried after a retryable failure"), &["kind"])
            .expect("static metric");
        let kafka_released = IntCounter::new(
            "kiln_kafka_released_total",
            "Jobs left unanswered and uncommitted at shutdown, for the group to redeliver",
        )
        .expect("static metric");
        for c in [
            Box::new(kafka_released.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(kafka_dlq.clone()),
            Box::new(kafka_paused_partitions.clone()),
            Box::new(kafka_consumer_lag.clone()),
            Box::new(kafka_commit_seconds.clone()),
            Box::new(kafka_retries.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        for c in [
            Box::new(jobs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(run_seconds.clone()),
            Box::new(queue_wait_seconds.clone()),
            Box::new(rejected.clone()),
            Box::new(queue_depth.clone()),
            Box::new(running.clone()),
            Box::new(idempotent_hits.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            jobs,
            run_seconds,
            queue_wait_seconds,
            rejected,
            queue_depth,
            running,
            idempotent_hits,
            kafka_dlq,
            kafka_paused_partitions,
            kafka_consumer_lag,
            kafka_commit_seconds,
            kafka_retries,
            kafka_released,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Records a finished run for the latency window of its kind.
    pub fn observe_latency(&self, kind: &str, ms: f64) {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let win = w.entry(kind.to_owned()).or_default();
        if win.samples.len() == WINDOW {
            win.samples.pop_front();
        }
        win.samples.push_back(ms);
    }

    /// (p50, p95) of the recent runs of `kind`, in ms; zeros when none ran yet.
    pub fn percentiles(&self, kind: &str) -> (f64, f64) {
        let w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let Some(win) = w.get(kind) else { return (0.0, 0.0) };
        let mut v: Vec<f64> = win.samples.iter().copied().collect();
        if v.is_empty() {
            return (0.0, 0.0);
        }
        v.sort_by(f64::total_cmp);
        (percentile(&v, 0.50), percentile(&v, 0.95))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_window() {
        let m = Metrics::new();
        assert_eq!(m.percentiles("x"), (0.0, 0.0));
        for i in 1..=100 {
            m.observe_latency("x", i as f64);
        }
        assert_eq!(m.percentiles("x"), (50.0, 95.0));
        for _ in 0..WINDOW {
            m.observe_latency("x", 7.0);
        }
        assert_eq!(m.percentiles("x"), (7.0, 7.0));
    }

    #[test]
    fn metrics_render_in_prometheus_text() {
        let m = Metrics::new();
        m.jobs.with_label_values(&["thumbnail", "succeeded"]).inc();
        m.run_seconds.with_label_values(&["thumbnail"]).observe(0.01);
        let text = m.render();
        assert!(text.contains("kiln_jobs_total{kind=\"thumbnail\",status=\"succeeded\"} 1"), "{text}");
        assert!(text.contains("kiln_job_run_seconds_bucket"));
    }
}
