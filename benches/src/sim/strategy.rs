//! The three deployment strategies of the seed's §7. The hybrid is placed by router-client's
//! full policy (`Router`, see sim/policy.rs); `HybridStaticPlace` keeps the old stateless
//! `kiln_router_client::place`, fed the same capacity reports, so the comparison stays
//! visible. There is no copy of either policy here: what the hybrid does is what
//! router-client does.
//!
//! What the old `place` lacks (and why `HybridStaticPlace` behaves as it does):
//! - no per-kind primary/fallback: `place` always prefers a warm container slot, so the
//!   container tier is everyone's primary and serverless is only the overflow;
//! - no overflow *fraction* (seed §5 "shifts a configurable fraction of traffic"): overflow is
//!   all-or-nothing per request;
//! - no exercised-fallback share (seed §8): nothing keeps the serverless tier warm, so with
//!   deadlines the cold-start override sends burst overflow to the container queue;
//! - no closed loop (seed §8): thresholds and duration predictions are not learned from
//!   observed latencies (the reports' p50 is the only feedback);
//! - `serverless_warm` is one boolean for the whole function, not a warm-pool size.

use super::constants as c;
use super::workload::{Kind, Request};
use kiln_router_client::{place, CapacityReport, Placement, PlacementRequest, Policy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Strategy {
    /// Everything on Lambda; GPU work is unservable (counted as rejected).
    Serverless,
    /// Everything on pods (a pull queue per pool: a free slot takes the next job).
    Container,
    /// Each request placed by router-client's `Router` (per-kind rules, overflow fraction,
    /// exercise, dual routing, closed loop).
    Hybrid,
    /// Each request placed by router-client's old stateless `place`.
    HybridStaticPlace,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Serverless => "serverless",
            Strategy::Container => "container",
            Strategy::Hybrid => "hybrid",
            Strategy::HybridStaticPlace => "hybrid-static-place",
        }
    }

    pub fn is_hybrid(self) -> bool {
        matches!(self, Strategy::Hybrid | Strategy::HybridStaticPlace)
    }
}

/// What the router knows of a request at admission. The duration estimate is the request's
/// true run time (an oracle predictor; the seed's router learns it, see the routing issue).
/// With `deadlines`, interactive requests carry their Table 1 budget as the deadline.
pub fn placement_request(req: &Request, deadlines: bool) -> PlacementRequest {
    let spec = req.kind.spec();
    PlacementRequest {
        kind: req.kind.name().to_owned(),
        est_run_ms: req.service_ms,
        // Inputs are far below the serverless limit (256 MiB) for every kind simulated here.
        input_bytes: 0,
        needs_gpu: spec.needs_gpu,
        interactive: spec.interactive,
        deadline_ms: if spec.interactive && deadlines { spec.budget_ms.map(|b| b as u64) } else { None },
    }
}

/// The policy's view of the serverless tier: router-client's defaults, with the expected cold
/// start from our constants and whether an idle warm instance exists now.
pub fn policy(idle_warm_instances: usize) -> Policy {
    Policy {
        serverless_cold_start_ms: c::LAMBDA_PLATFORM_COLD_P50_MS + c::KILN_COLD_P50_MS,
        serverless_warm: idle_warm_instances > 0,
        ..Policy::default()
    }
}

/// Counts every call of the real policy, and its reasons.
#[derive(Debug, Default)]
pub struct PolicyCalls {
    pub calls: u64,
    pub reasons: std::collections::BTreeMap<&'static str, u64>,
}

impl PolicyCalls {
    /// Places `req` with router-client's policy over the router's current view.
    pub fn place(&mut self, req: &Request, deadlines: bool, view: &[CapacityReport], idle_warm: usize, now_ms: u64) -> Placement {
        self.calls += 1;
        let p = place(&placement_request(req, deadlines), view, &policy(idle_warm), now_ms);
        *self.reasons.entry(p.reason).or_default() += 1;
        p
    }
}

/// Kinds the serverless tier cannot run at all in this model.
pub fn serverless_can_run(kind: Kind) -> bool {
    !kind.spec().needs_gpu
}
