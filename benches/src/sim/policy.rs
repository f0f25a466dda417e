//! The hybrid's router: router-client's full placement policy ([`Router`] and its
//! [`CapacityView`]) driven by the simulator, with no copy of the policy here. This module
//! only translates: a [`PolicyConfig`] built from constants.rs and the seed's Table 1, a
//! simulated request into [`RequestFeatures`], and the simulated tiers' events into the view
//! (pods' CapacityReports as published, Lambda invocations as started and answered) and into
//! the closed loop (`Router::observe` with each finished request's latency).
//!
//! What the view sees is what a real router sees: reports every `REPORT_INTERVAL_MS`, on
//! state changes and `SLOT_REPORT_DELAY_MS` after a slot change (kiln's slot watch), the
//! router's own placements on each worker since that
//! worker's last report (`CapacityView::placed`, as `kiln route` calls it), and the
//! function's warm pool only from invocation results.

use super::constants as c;
use super::workload::{Kind, Request};
use super::Config;
use kiln_router_client::{
    CapacityReport, CapacityView, ColdStartOverride, CostRule, Decision, InvocationObservation, KindRule, LoopConfig,
    Overflow, PolicyConfig, Priority, RequestFeatures, Router, ServerlessLimits, Tier,
};
use std::collections::BTreeMap;

/// The Lambda function's name in the policy and the view.
pub const FUNCTION: &str = "kiln";

/// The knobs of the policy the sensitivity sweep and the closed loop move.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PolicyKnobs {
    pub short_overflow_fraction: f64,
    pub exercise_share: f64,
    pub dual_share: f64,
    /// Primary tier of the short kinds (fallback: the other one). Serverless by default; the
    /// closed-loop experiment puts them on containers (seed §5: sustained traffic migrated to
    /// containers), so that a container slowdown has traffic to move.
    pub short_primary: Tier,
    /// Feed the closed loop (false: the same policy, static; the view still gets reports).
    pub observe: bool,
    /// router-client's cost rule (prices from `Config::prices`, the CPU pod's price and slots).
    pub cost_rule: bool,
    /// Overflow on the rolling p95 and on queue depth (false: a static configuration, the
    /// kinds' primaries and the exercised share only).
    pub latency_overflow: bool,
}

impl Default for PolicyKnobs {
    fn default() -> Self {
        PolicyKnobs {
            short_overflow_fraction: c::SHORT_OVERFLOW_FRACTION,
            exercise_share: c::EXERCISE_SHARE,
            dual_share: c::DUAL_SHARE,
            short_primary: Tier::Serverless,
            observe: true,
            cost_rule: true,
            latency_overflow: true,
        }
    }
}

/// The PolicyConfig of the simulated deployment: one rule per Table 1 workload.
pub fn policy_config(cfg: &Config) -> PolicyConfig {
    let k = cfg.policy;
    let mut kinds = BTreeMap::new();
    for kind in Kind::ALL {
        let spec = kind.spec();
        let rule = if spec.needs_gpu {
            // GPU work: containers only (the policy refuses it on serverless anyway).
            KindRule {
                primary: Tier::Container,
                fallback: None,
                function: None,
                needs_gpu: true,
                overflow: Overflow { fraction: 0.0, queue_depth: None, p95_ms: None },
            }
        } else if spec.short {
            KindRule {
                primary: k.short_primary,
                fallback: Some(match k.short_primary {
                    Tier::Serverless => Tier::Container,
                    Tier::Container => Tier::Serverless,
                }),
                function: None,
                needs_gpu: false,
                overflow: if k.latency_overflow {
                    Overflow {
                        fraction: k.short_overflow_fraction,
                        queue_depth: Some(c::SHORT_OVERFLOW_QUEUE_DEPTH),
                        p95_ms: spec.budget_ms,
                    }
                } else {
                    Overflow { fraction: 0.0, queue_depth: None, p95_ms: None }
                },
            }
        } else {
            // Render: long, a working set; containers first, serverless when the pool queues.
            KindRule {
                primary: Tier::Container,
                fallback: Some(Tier::Serverless),
                function: None,
                needs_gpu: false,
                overflow: Overflow {
                    fraction: c::RENDER_OVERFLOW_FRACTION,
                    queue_depth: Some(c::RENDER_OVERFLOW_QUEUE_DEPTH),
                    p95_ms: None,
                },
            }
        };
        kinds.insert(spec.name.to_owned(), rule);
    }
    PolicyConfig {
        kinds,
        serverless: ServerlessLimits {
            enabled: true,
            function: FUNCTION.into(),
            max_run_ms: c::POLICY_SERVERLESS_MAX_RUN_MS,
            max_payload_bytes: ServerlessLimits::default().max_payload_bytes,
            cold_start_ms: cfg.platform_cold_p50_ms + c::KILN_COLD_P50_MS,
            idle_lifetime_ms: (cfg.keep_alive_s * 1000.0) as u64,
        },
        exercise_share: k.exercise_share,
        dual_share: k.dual_share,
        cold_start_override: ColdStartOverride { enabled: true, batch: false },
        cost: CostRule {
            enabled: k.cost_rule,
            window_ms: c::COST_WINDOW_MS,
            serverless_usd_per_request: cfg.prices.lambda_per_request,
            serverless_usd_per_gb_s: cfg.prices.lambda_per_gb_s,
            serverless_memory_gb: cfg.prices.lambda_memory_gb,
            container_usd_per_hour: cfg.prices.cpu_pod_per_h,
            container_slots: c::CPU_POD_SLOTS,
        },
        closed_loop: LoopConfig { window: c::LOOP_WINDOW, min_samples: c::LOOP_MIN_SAMPLES, ratio_alpha: c::LOOP_RATIO_ALPHA },
        ..PolicyConfig::default()
    }
}

/// What the router knows of a request at admission. The duration is the request's true run
/// time (an oracle predictor, as for the old policy; the closed loop's ratio still scales it
/// per tier). With `deadlines`, interactive requests carry their Table 1 budget.
pub fn features(req: &Request, deadlines: bool) -> RequestFeatures {
    let spec = req.kind.spec();
    RequestFeatures {
        job_id: String::new(),
        kind: spec.name.to_owned(),
        predicted_ms: req.service_ms,
        // Inputs are far below the serverless limit (256 MiB) for every kind simulated here.
        payload_bytes: 0,
        deadline_ms: if spec.interactive && deadlines { spec.budget_ms.map(|b| b as u64) } else { None },
        needs_gpu: spec.needs_gpu,
        tenant: None,
        priority: if spec.interactive { Priority::Interactive } else { Priority::Batch },
        model: None,
    }
}

/// One router for one run: the policy, its view, and counts of what it decided.
#[derive(Debug)]
pub struct SimRouter {
    pub router: Router,
    pub view: CapacityView,
    observe: bool,
    deadlines: bool,
    /// Decisions by `Decision::rule()` label.
    pub rules: BTreeMap<&'static str, u64>,
    pub calls: u64,
    pub exercised: u64,
    pub dual: u64,
}

impl SimRouter {
    pub fn new(cfg: &Config, seed: u64) -> Result<Self, String> {
        let config = policy_config(cfg);
        let idle = config.serverless.idle_lifetime_ms;
        let router = Router::new(config, seed).map_err(|e| format!("policy config: {e}"))?;
        Ok(SimRouter {
            router,
            view: CapacityView::new(idle),
            observe: cfg.policy.observe,
            deadlines: cfg.deadlines,
            rules: BTreeMap::new(),
            calls: 0,
            exercised: 0,
            dual: 0,
        })
    }

    pub fn place(&mut self, req: &Request, now_ms: u64) -> Decision {
        self.calls += 1;
        let d = self.router.place(&features(req, self.deadlines), &self.view, now_ms);
        *self.rules.entry(d.rule()).or_default() += 1;
        self.exercised += u64::from(d.exercise);
        self.dual += u64::from(d.dual);
        d
    }

    /// The router sent a request to this worker (it counts as queued there until the
    /// worker's next report).
    pub fn placed(&mut self, worker_id: &str, now_ms: u64) {
        self.view.placed(worker_id, now_ms);
    }

    pub fn report(&mut self, report: CapacityReport, now_ms: u64) {
        self.view.ingest_report(report, now_ms);
    }

    /// A pod left (the tombstone a draining kiln worker publishes).
    pub fn worker_gone(&mut self, id: &str) {
        self.view.remove_worker(id);
    }

    pub fn invoked(&mut self) {
        self.view.invocation_started(FUNCTION);
    }

    pub fn invocation_done(&mut self, instance: usize, cold_ms: f64, now_ms: u64) {
        self.view.observe_invocation(&InvocationObservation {
            function: FUNCTION.into(),
            instance_id: format!("i{instance}"),
            cold_start: cold_ms > 0.0,
            init_ms: cold_ms,
            finished_ms: now_ms,
        });
    }

    /// A finished request (or a dual-routed copy, with `predicted_ms` 0: its latency enters
    /// the rolling p95, not the duration ratio).
    pub fn finished(&mut self, tier: Tier, kind: Kind, latency_ms: f64, predicted_ms: f64) {
        if self.observe {
            self.router.observe(tier, kind.name(), latency_ms, predicted_ms);
        }
    }
}
