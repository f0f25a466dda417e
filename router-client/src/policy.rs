//! The hybrid placement policy: serverless for short, bursty, CPU-sized jobs; containers for
//! long, large or accelerated ones; overflow between tiers when one is full; a cold-start
//! override that keeps latency-critical jobs off a cold serverless tier.
//!
//! This is the simple, stateless entry point ([`place`]), kept with its signature and
//! behaviour for existing callers. The full policy of the seed (per-kind primary and
//! fallback, overflow fractions, tenant pins, exercised and dual-routed shares, the closed
//! loop, decision logs and replay) is [`crate::Router`].

use crate::report::{CapacityReport, Tier, WorkerState};
use serde::{Deserialize, Serialize};

/// What the router knows of a request before placing it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlacementRequest {
    pub kind: String,
    /// Estimated run time on one slot.
    pub est_run_ms: f64,
    pub input_bytes: u64,
    pub needs_gpu: bool,
    pub interactive: bool,
    pub deadline_ms: Option<u64>,
}

/// The serverless tier's limits and costs, as the router sees them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// Longest job the serverless tier accepts (function timeout minus a margin).
    pub serverless_max_run_ms: f64,
    /// Largest input the serverless tier accepts (/tmp and memory limits).
    pub serverless_max_input_bytes: u64,
    /// Expected cold start of a serverless instance.
    pub serverless_cold_start_ms: f64,
    /// Whether the serverless tier has warm instances now.
    pub serverless_warm: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            serverless_max_run_ms: 60_000.0,
            serverless_max_input_bytes: 256 * 1024 * 1024,
            serverless_cold_start_ms: 800.0,
            serverless_warm: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub tier: Tier,
    /// The container worker to send to, when the tier is `container`.
    pub worker_id: Option<String>,
    /// Estimated latency (wait + run) where placed.
    pub est_latency_ms: f64,
    /// Why, for logs and metrics.
    pub reason: &'static str,
}

/// Best container worker for the request: ready, fresh, serving the kind (and with a GPU
/// when one is needed); lowest estimated latency wins.
fn best_container(req: &PlacementRequest, reports: &[CapacityReport], now_ms: u64) -> Option<(String, f64, bool)> {
    reports
        .iter()
        .filter(|r| r.tier == Tier::Container && r.state == WorkerState::Ready && r.is_fresh(now_ms))
        .filter(|r| !req.needs_gpu || !r.gpus.is_empty())
        .filter_map(|r| {
            let k = r.kinds.get(&req.kind)?;
            if k.slots == 0 {
                return None;
            }
            let run = if k.p50_ms > 0.0 { k.p50_ms } else { req.est_run_ms };
            // Waiting work ahead of us, spread over the slots.
            let wait = (k.busy + k.queued) as f64 / k.slots as f64 * run;
            let has_room = k.free() > 0;
            Some((r.worker_id.clone(), if has_room { run } else { wait + run }, has_room))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// Places one request given the live container reports: the simple stateless entry point
/// (see [`crate::Router`] for the full policy).
pub fn place(req: &PlacementRequest, reports: &[CapacityReport], policy: &Policy, now_ms: u64) -> Placement {
    let serverless_ok = !req.needs_gpu
        && req.est_run_ms <= policy.serverless_max_run_ms
        && req.input_bytes <= policy.serverless_max_input_bytes;
    let cold = if policy.serverless_warm { 0.0 } else { policy.serverless_cold_start_ms };
    let serverless_latency = req.est_run_ms + cold;
    let container = best_container(req, reports, now_ms);

    match (container, serverless_ok) {
        (None, true) => Placement {
            tier: Tier::Serverless,
            worker_id: None,
            est_latency_ms: serverless_latency,
            reason: "no container capacity",
        },
        (None, false) => Placement {
            tier: Tier::Container,
            worker_id: None,
            est_latency_ms: f64::INFINITY,
            reason: "only the container tier can run it; queue for capacity",
        },
        (Some((id, lat, _)), false) => {
            Placement { tier: Tier::Container, worker_id: Some(id), est_latency_ms: lat, reason: "container only" }
        }
        (Some((id, lat, has_room)), true) => {
            let within_deadline = |l: f64| req.deadline_ms.is_none_or(|d| l <= d as f64);
            if has_room && within_deadline(lat) {
                Placement { tier: Tier::Container, worker_id: Some(id), est_latency_ms: lat, reason: "warm container slot" }
            } else if req.interactive && !policy.serverless_warm && !within_deadline(serverless_latency) {
                // Cold-start override: a cold function would miss the deadline anyway;
                // queue on the warm container.
                Placement { tier: Tier::Container, worker_id: Some(id), est_latency_ms: lat, reason: "cold-start override" }
            } else if serverless_latency < lat {
                Placement {
                    tier: Tier::Serverless,
                    worker_id: None,
                    est_latency_ms: serverless_latency,
                    reason: "overflow to serverless",
                }
            } else {
                Placement { tier: Tier::Container, worker_id: Some(id), est_latency_ms: lat, reason: "container queue is faster" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{GpuCapacity, KindCapacity, WarmSet};
    use std::collections::BTreeMap;

    fn report(id: &str, slots: u32, busy: u32, queued: u32, p50: f64, gpu: bool) -> CapacityReport {
        let mut kinds = BTreeMap::new();
        kinds.insert("thumbnail".into(), KindCapacity { slots, busy, queued, p50_ms: p50, p95_ms: p50 * 2.0 });
        CapacityReport {
            worker_id: id.into(),
            tier: Tier::Container,
            region: "r".into(),
            state: WorkerState::Ready,
            seq: 1,
            ts_ms: 1000,
            ttl_ms: 5000,
            kinds,
            gpus: if gpu { vec![GpuCapacity::default()] } else { vec![] },
            warm: WarmSet::default(),
        }
    }

    fn req() -> PlacementRequest {
        PlacementRequest { kind: "thumbnail".into(), est_run_ms: 20.0, interactive: true, ..Default::default() }
    }

    #[test]
    fn warm_container_slot_wins() {
        let p = place(&req(), &[report("a", 4, 4, 2, 20.0, false), report("b", 4, 1, 0, 20.0, false)], &Policy::default(), 2000);
        assert_eq!(p.tier, Tier::Container);
        assert_eq!(p.worker_id.as_deref(), Some("b"));
    }

    #[test]
    fn full_containers_overflow_to_a_warm_serverless_tier() {
        let policy = Policy { serverless_warm: true, ..Policy::default() };
        let p = place(&req(), &[report("a", 2, 2, 8, 20.0, false)], &policy, 2000);
        assert_eq!(p.tier, Tier::Serverless);
        assert_eq!(p.reason, "overflow to serverless");
    }

    #[test]
    fn cold_start_override_keeps_deadline_jobs_on_containers() {
        let mut r = req();
        r.deadline_ms = Some(150);
        let p = place(&r, &[report("a", 2, 2, 2, 20.0, false)], &Policy::default(), 2000);
        assert_eq!(p.tier, Tier::Container);
        assert_eq!(p.reason, "cold-start override");
    }

    #[test]
    fn gpu_and_long_jobs_never_go_serverless() {
        let mut r = req();
        r.needs_gpu = true;
        let p = place(&r, &[report("cpu", 4, 0, 0, 20.0, false)], &Policy::default(), 2000);
        assert_eq!((p.tier, p.worker_id), (Tier::Container, None));
        let p = place(&r, &[report("cpu", 4, 0, 0, 20.0, false), report("gpu", 1, 1, 5, 20.0, true)], &Policy::default(), 2000);
        assert_eq!(p.worker_id.as_deref(), Some("gpu"));
        let mut long = req();
        long.est_run_ms = 10.0 * 60_000.0;
        assert_eq!(place(&long, &[], &Policy::default(), 2000).tier, Tier::Container);
    }

    #[test]
    fn stale_and_draining_workers_are_ignored() {
        let mut draining = report("d", 8, 0, 0, 20.0, false);
        draining.state = WorkerState::Draining;
        let stale = report("s", 8, 0, 0, 20.0, false);
        let p = place(&req(), &[draining, stale], &Policy::default(), 10_000);
        assert_eq!(p.tier, Tier::Serverless);
    }
}
