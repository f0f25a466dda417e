//! Warm-up hints (router → workers), beyond the seed, which leaves predictive pre-warming as
//! future work (§10): ahead of a forecast burst, suggest a model to load on a container
//! worker, more slots warmed for a kind in the container pool, or function instances to
//! pre-warm. Workers answer through their capacity reports (the model appears in
//! `warm.models`, slots in `kinds`). Only the type and the suggestion live here; sending
//! them and acting on them are the router's and the worker's.

use crate::config::PolicyConfig;
use crate::report::{Tier, WorkerState};
use crate::view::CapacityView;
use serde::{Deserialize, Serialize};

/// What to warm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum HintAction {
    /// Load a model on a container worker (`worker_id`).
    LoadModel { model: String },
    /// Warm more slots for the kind in the container pool (extra `count` slots).
    WarmKind,
    /// Pre-warm `count` more instances of the function.
    PrewarmFunction { function: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmupHint {
    #[serde(flatten)]
    pub action: HintAction,
    pub kind: String,
    pub tier: Tier,
    /// The worker addressed; None: the pool (its scaler, or any worker that takes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Slots or instances wanted beyond those warm now.
    pub count: u32,
    /// When the burst is expected.
    pub by_ms: u64,
    pub reason: String,
}

/// Expected load of one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastEntry {
    pub kind: String,
    #[serde(default)]
    pub model: Option<String>,
    /// Requests per second expected.
    pub rps: f64,
    /// Predicted run time per request (ms).
    pub predicted_ms: f64,
    #[serde(default)]
    pub needs_gpu: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// When the burst starts.
    pub at_ms: u64,
    pub entries: Vec<ForecastEntry>,
    /// Concurrency wanted over Little's law (default 1.0 when 0).
    #[serde(default)]
    pub headroom: f64,
}

/// Suggests warm-ups so the forecast load finds warm capacity on its kind's primary tier:
/// concurrency needed = rps × predicted_ms / 1000 × headroom (Little's law), against the
/// idle warm instances of the function or the free slots of the ready container workers.
/// For an infer entry naming a model that no ready worker holds warm, the worker with the
/// most free slots for the kind is asked to load it.
pub fn hints(view: &CapacityView, forecast: &Forecast, config: &PolicyConfig, now_ms: u64) -> Vec<WarmupHint> {
    let headroom = if forecast.headroom > 0.0 && forecast.headroom.is_finite() { forecast.headroom } else { 1.0 };
    let mut out = Vec::new();
    for e in &forecast.entries {
        let work = e.rps * e.predicted_ms / 1000.0 * headroom;
        if !(work.is_finite() && work > 0.0) {
            continue;
        }
        let needed = work.ceil().min(u32::MAX as f64) as u32;
        let rule = config.rule(&e.kind);
        let serverless_ok = config.serverless.enabled
            && !(e.needs_gpu || rule.needs_gpu)
            && e.predicted_ms <= config.serverless.max_run_ms;
        if rule.primary == Tier::Serverless && serverless_ok {
            let function = config.function(&e.kind);
            let idle = view.pool(function, now_ms).idle();
            if needed > idle {
                out.push(WarmupHint {
                    action: HintAction::PrewarmFunction { function: function.to_owned() },
                    kind: e.kind.clone(),
                    tier: Tier::Serverless,
                    worker_id: None,
                    count: needed - idle,
                    by_ms: forecast.at_ms,
                    reason: format!(
                        "forecast {:.1} rps x {:.0} ms needs {needed} warm, {idle} idle",
                        e.rps, e.predicted_ms
                    ),
                });
            }
            continue;
        }
        let gpu = e.needs_gpu || rule.needs_gpu;
        let cands: Vec<_> = view.candidates(&e.kind, now_ms).into_iter().filter(|c| !gpu || c.gpu).collect();
        let free: u32 = cands.iter().map(|c| c.slots.saturating_sub(c.busy + c.queued)).sum();
        if needed > free {
            out.push(WarmupHint {
                action: HintAction::WarmKind,
                kind: e.kind.clone(),
                tier: Tier::Container,
                worker_id: None,
                count: needed - free,
                by_ms: forecast.at_ms,
                reason: format!(
                    "forecast {:.1} rps x {:.0} ms needs {needed} slots, {free} free",
                    e.rps, e.predicted_ms
                ),
            });
        }
        if let Some(model) = &e.model {
            let warm_somewhere = view
                .workers(now_ms)
                .filter(|r| r.state == WorkerState::Ready && r.tier == Tier::Container)
                .any(|r| r.warm.models.iter().any(|m| m == model));
            let best = cands
                .iter()
                .max_by_key(|c| (c.slots.saturating_sub(c.busy + c.queued), std::cmp::Reverse(c.worker_id.clone())));
            if let (false, Some(c)) = (warm_somewhere, best) {
                out.push(WarmupHint {
                    action: HintAction::LoadModel { model: model.clone() },
                    kind: e.kind.clone(),
                    tier: Tier::Container,
                    worker_id: Some(c.worker_id.clone()),
                    count: 1,
                    by_ms: forecast.at_ms,
                    reason: format!("model {model} warm on no ready worker"),
                });
            }
        }
    }
    out
}
