//! Helpers shared by the policy tests: reports, features, quiet configs, warm pools.
#![allow(dead_code)]

use kiln_router_client::*;
use std::collections::BTreeMap;

pub const NOW: u64 = 10_000;

/// A ready container worker serving `kind`.
pub fn worker(id: &str, kind: &str, slots: u32, busy: u32, queued: u32, p50: f64) -> CapacityReport {
    let mut kinds = BTreeMap::new();
    kinds.insert(kind.to_owned(), KindCapacity { slots, busy, queued, p50_ms: p50, p95_ms: p50 * 2.0 });
    CapacityReport {
        worker_id: id.into(),
        tier: Tier::Container,
        region: "r".into(),
        state: WorkerState::Ready,
        seq: 1,
        ts_ms: NOW,
        ttl_ms: 5_000,
        kinds,
        gpus: vec![],
        warm: WarmSet::default(),
    }
}

pub fn gpu_worker(id: &str, kind: &str, slots: u32, busy: u32, queued: u32, p50: f64) -> CapacityReport {
    let mut r = worker(id, kind, slots, busy, queued, p50);
    r.gpus = vec![GpuCapacity { index: 0, name: "H200".into(), ..GpuCapacity::default() }];
    r
}

pub fn view(reports: Vec<CapacityReport>) -> CapacityView {
    let mut v = CapacityView::default();
    for r in reports {
        v.ingest_report(r, NOW);
    }
    v
}

/// `n` idle warm instances of `function`, seen just now.
pub fn warm(v: &mut CapacityView, function: &str, n: usize) {
    for i in 0..n {
        v.invocation_started(function);
        v.observe_invocation(&InvocationObservation {
            function: function.into(),
            instance_id: format!("{function}-{i}"),
            cold_start: true,
            init_ms: 900.0,
            finished_ms: NOW,
        });
    }
}

pub fn feats(job: &str, kind: &str, predicted_ms: f64) -> RequestFeatures {
    RequestFeatures { job_id: job.into(), kind: kind.into(), predicted_ms, ..RequestFeatures::default() }
}

/// The default policy without random exercise and dual routing.
pub fn quiet() -> PolicyConfig {
    PolicyConfig { exercise_share: 0.0, dual_share: 0.0, ..PolicyConfig::default() }
}

/// Draws that trigger nothing random.
pub fn no_draw() -> Draws {
    Draws { overflow: 0.999, exercise: 0.999, dual: 0.999 }
}

pub fn snap(v: &CapacityView, kind: &str, config: &PolicyConfig) -> Snapshot {
    v.snapshot(kind, config.function(kind), &ClosedLoop::new(config.closed_loop), NOW)
}

pub fn decide_now(config: &PolicyConfig, f: &RequestFeatures, v: &CapacityView, draws: Draws) -> Decision {
    decide(config, 1, f, &snap(v, &f.kind, config), draws)
}
