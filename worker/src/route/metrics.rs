//! The router's own Prometheus metrics: decisions by tier and rule
//! ([`kiln_router_client::Decision::rule`]), overflow share, per-tier latency, cold starts
//! seen, retries, capacity reports, and dual-routed shadow copies.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

pub struct RouteMetrics {
    registry: Registry,
    /// Decisions, by the tier placed on and the rule that chose it.
    pub decisions: IntCounterVec,
    /// Decisions that moved a request to its fallback tier by the overflow rule.
    pub overflowed: IntCounter,
    /// Jobs answered, by the tier that answered and the HTTP status class.
    pub jobs: IntCounterVec,
    /// End-to-end latency through the router, by the tier that answered.
    pub latency: HistogramVec,
    /// Cold starts seen in serverless results.
    pub cold_starts: IntCounter,
    /// Attempts retried elsewhere, by why.
    pub retries: IntCounterVec,
    /// Capacity reports received, by what the view did with them.
    pub reports: IntCounterVec,
    /// Requests refused before placement (bad input).
    pub invalid: IntCounter,
    /// Dual-routed shadow copies sent, by the tier that got the copy and whether it
    /// answered with success (`ok`) or not (`failed`); the answer itself is discarded.
    pub shadows: IntCounterVec,
    /// Latency of the shadow copies, by tier (the primary's is in `latency`).
    pub shadow_latency: HistogramVec,
}

fn buckets() -> Vec<f64> {
    vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]
}

impl RouteMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new("kiln_route_decisions_total", "Placement decisions, by tier and rule"),
            &["tier", "rule"],
        )
        .expect("static metric");
        let overflowed = IntCounter::new("kiln_route_overflowed_total", "Decisions moved to the fallback tier by overflow")
            .expect("static metric");
        let jobs = IntCounterVec::new(Opts::new("kiln_route_jobs_total", "Jobs answered, by tier and status class"), &["tier", "status"])
            .expect("static metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("kiln_route_latency_seconds", "Job latency through the router, by the tier that answered")
                .buckets(buckets()),
            &["tier"],
        )
        .expect("static metric");
        let cold_starts = IntCounter::new("kiln_route_cold_starts_total", "Serverless cold starts seen in results").expect("static metric");
        let retries = IntCounterVec::new(Opts::new("kiln_route_retries_total", "Attempts retried elsewhere, by reason"), &["reason"])
            .expect("static metric");
        let reports = IntCounterVec::new(Opts::new("kiln_route_capacity_reports_total", "Capacity reports received"), &["outcome"])
            .expect("static metric");
        let invalid = IntCounter::new("kiln_route_invalid_total", "Submissions refused before placement").expect("static metric");
        let shadows = IntCounterVec::new(
            Opts::new("kiln_route_shadow_total", "Dual-routed shadow copies, by tier and outcome (answers discarded)"),
            &["tier", "outcome"],
        )
        .expect("static metric");
        let shadow_latency = HistogramVec::new(
            HistogramOpts::new("kiln_route_shadow_latency_seconds", "Latency of dual-routed shadow copies, by tier")
                .buckets(buckets()),
            &["tier"],
        )
        .expect("static metric");
        for c in [
            Box::new(decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(overflowed.clone()),
            Box::new(jobs.clone()),
            Box::new(latency.clone()),
            Box::new(cold_starts.clone()),
            Box::new(retries.clone()),
            Box::new(reports.clone()),
            Box::new(invalid.clone()),
            Box::new(shadows.clone()),
            Box::new(shadow_latency.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        RouteMetrics {
            registry,
            decisions,
            overflowed,
            jobs,
            latency,
            cold_starts,
            retries,
            reports,
            invalid,
            shadows,
            shadow_latency,
        }
    }

    /// Prometheus text, with the overflow share (overflowed / decisions) as a gauge line.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut text = String::from_utf8(buf).unwrap_or_default();
        let total: u64 = self
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == "kiln_route_decisions_total")
            .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value() as u64))
            .sum();
        let share = if total == 0 { 0.0 } else { self.overflowed.get() as f64 / total as f64 };
        text.push_str("# HELP kiln_route_overflow_share Share of decisions moved to the fallback tier by overflow\n");
        text.push_str("# TYPE kiln_route_overflow_share gauge\n");
        text.push_str(&format!("kiln_route_overflow_share {share}\n"));
        text
    }
}

impl Default for RouteMetrics {
    fn default() -> Self {
        Self::new()
    }
}
