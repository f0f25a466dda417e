//! The placement policy's parameters ([`PolicyConfig`]): per-kind primary and fallback
//! tiers with their overflow rule, tenant pins, the serverless tier's limits, the exercised
//! and dual-routed shares, the cold-start override, the duration model and the closed
//! loop's window.
//!
//! Every field has a default, so a config file names only what it changes. It deserialises
//! with serde from JSON ([`PolicyConfig::from_json`]) or from TOML with the caller's `toml`
//! crate (`toml::from_str::<PolicyConfig>(text)` then [`PolicyConfig::validate`]); a
//! [`crate::Router`] reloads it at run time and bumps its version.
//!
//! ```toml
//! exercise_share = 0.02
//! dual_share = 0.01
//! [kinds.thumbnail]
//! primary = "serverless"
//! fallback = "container"
//! overflow = { fraction = 0.3, p95_ms = 150.0, queue_depth = 8 }
//! [tenants.acme]
//! tier = "container"
//! priority = "batch"
//! ```

use crate::cost::CostRule;
use crate::features::{DurationModel, Priority};
use crate::report::Tier;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("policy config is not valid JSON for a PolicyConfig: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("policy config: {0}")]
    Invalid(String),
}

/// When the primary tier is under pressure, shift `fraction` of the kind's traffic to the
/// fallback (seed §5, "Fallback and overflow").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Overflow {
    /// Share of requests moved while a threshold is crossed, in [0, 1].
    pub fraction: f64,
    /// Primary pressure: containers' total queued jobs, or the function's invocations in
    /// flight beyond its warm pool. Overflow when above. None: not checked.
    pub queue_depth: Option<u32>,
    /// Primary's rolling p95 for the kind above this (or above the request's deadline,
    /// whichever is lower). None: only the deadline counts.
    pub p95_ms: Option<f64>,
}

impl Default for Overflow {
    fn default() -> Self {
        Overflow { fraction: 0.3, queue_depth: Some(8), p95_ms: None }
    }
}

/// Placement rule of one job kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KindRule {
    pub primary: Tier,
    /// None: this kind runs on the primary tier only.
    pub fallback: Option<Tier>,
    /// The serverless function serving the kind (default: `serverless.function`).
    pub function: Option<String>,
    /// Every request of this kind needs a GPU (whatever its spec says).
    pub needs_gpu: bool,
    pub overflow: Overflow,
}

impl Default for KindRule {
    fn default() -> Self {
        KindRule {
            primary: Tier::Container,
            fallback: Some(Tier::Serverless),
            function: None,
            needs_gpu: false,
            overflow: Overflow::default(),
        }
    }
}

/// A tenant's placement preference (seed §5, "Per-tenant policy overrides"), honoured when
/// the pinned tier can run the request and has capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantPin {
    pub tier: Tier,
    /// Kinds the pin applies to; empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Only requests of this priority; None: all.
    #[serde(default)]
    pub priority: Option<Priority>,
}

impl TenantPin {
    pub fn applies(&self, kind: &str, priority: Priority) -> bool {
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind)) && self.priority.is_none_or(|p| p == priority)
    }
}

/// What the serverless tier can take, and what a cold start costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerlessLimits {
    /// Off: nothing goes serverless.
    pub enabled: bool,
    /// Default function name.
    pub function: String,
    /// Longest predicted run accepted (function timeout minus a margin).
    pub max_run_ms: f64,
    /// Largest input accepted (/tmp and memory limits).
    pub max_payload_bytes: u64,
    /// Cold start assumed until the pool has seen some.
    pub cold_start_ms: f64,
    /// An instance not seen for this long is no longer counted warm.
    pub idle_lifetime_ms: u64,
}

impl Default for ServerlessLimits {
    fn default() -> Self {
        ServerlessLimits {
            enabled: true,
            function: "kiln".into(),
            max_run_ms: 60_000.0,
            max_payload_bytes: 256 * 1024 * 1024,
            cold_start_ms: 800.0,
            idle_lifetime_ms: 5 * 60_000,
        }
    }
}

/// Seed §5, "Cold-start mitigation".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ColdStartOverride {
    pub enabled: bool,
    /// Also for batch requests (by default only interactive ones are moved).
    pub batch: bool,
}

impl Default for ColdStartOverride {
    fn default() -> Self {
        ColdStartOverride { enabled: true, batch: false }
    }
}

/// The closed loop's memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoopConfig {
    /// Latencies kept per tier and kind for the rolling p95.
    pub window: usize,
    /// Fewer samples than this: no p95 yet (reports' p95 stand in for containers).
    pub min_samples: usize,
    /// Weight of a new observation in the observed/predicted ratio (EWMA), in (0, 1].
    pub ratio_alpha: f64,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig { window: 200, min_samples: 5, ratio_alpha: 0.1 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyConfig {
    /// Version of the first policy a router loads (every reload adds one).
    pub version: u64,
    pub kinds: BTreeMap<String, KindRule>,
    /// Rule of kinds not listed.
    pub default_kind: KindRule,
    pub tenants: BTreeMap<String, TenantPin>,
    pub serverless: ServerlessLimits,
    /// Share of every kind's traffic sent to its fallback on purpose (seed §8).
    pub exercise_share: f64,
    /// Share sent to both tiers (seed §6.2).
    pub dual_share: f64,
    pub cold_start_override: ColdStartOverride,
    /// Batch and GPU requests whose best container worker would make them wait longer than
    /// they run, and batch requests whose best worker has no free slot, go to the pool's
    /// queue (`Target::container_queue`) instead of queueing behind one worker's jobs
    /// (head-of-line blocking behind a long transcode).
    pub pool_queue: bool,
    /// Sustained serverless traffic above the price crossing moves to containers with warm
    /// room (see [`crate::cost`]); off by default.
    pub cost: CostRule,
    pub durations: DurationModel,
    pub closed_loop: LoopConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let mut kinds = BTreeMap::new();
        kinds.insert(
            "thumbnail".into(),
            KindRule {
                primary: Tier::Serverless,
                fallback: Some(Tier::Container),
                overflow: Overflow { fraction: 0.3, queue_depth: Some(8), p95_ms: Some(150.0) },
                ..KindRule::default()
            },
        );
        kinds.insert(
            "infer".into(),
            KindRule { overflow: Overflow { p95_ms: Some(250.0), ..Overflow::default() }, ..KindRule::default() },
        );
        kinds.insert("render".into(), KindRule::default());
        kinds.insert(
            "transcode".into(),
            KindRule {
                overflow: Overflow { fraction: 0.2, queue_depth: Some(4), p95_ms: None },
                ..KindRule::default()
            },
        );
        PolicyConfig {
            version: 1,
            kinds,
            default_kind: KindRule::default(),
            tenants: BTreeMap::new(),
            serverless: ServerlessLimits::default(),
            exercise_share: 0.02,
            dual_share: 0.01,
            cold_start_override: ColdStartOverride::default(),
            pool_queue: true,
            cost: CostRule::default(),
            durations: DurationModel::default(),
            closed_loop: LoopConfig::default(),
        }
    }
}

fn check_share(name: &str, v: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!("{name} = {v} is not in [0, 1]")))
    }
}

impl PolicyConfig {
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let c: PolicyConfig = serde_json::from_str(text)?;
        c.validate()?;
        Ok(c)
    }

    pub fn rule(&self, kind: &str) -> &KindRule {
        self.kinds.get(kind).unwrap_or(&self.default_kind)
    }

    /// The serverless function serving a kind.
    pub fn function(&self, kind: &str) -> &str {
        self.rule(kind).function.as_deref().unwrap_or(&self.serverless.function)
    }

    /// Shares in [0, 1], positive finite limits and costs, a window of at least one sample.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_share("exercise_share", self.exercise_share)?;
        check_share("dual_share", self.dual_share)?;
        for (name, rule) in
            self.kinds.iter().map(|(k, r)| (k.as_str(), r)).chain([("default_kind", &self.default_kind)])
        {
            check_share(&format!("kinds.{name}.overflow.fraction"), rule.overflow.fraction)?;
            if rule.overflow.p95_ms.is_some_and(|p| !(p.is_finite() && p > 0.0)) {
                return Err(ConfigError::Invalid(format!("kinds.{name}.overflow.p95_ms must be positive")));
            }
            if rule.fallback == Some(rule.primary) {
                return Err(ConfigError::Invalid(format!("kinds.{name}: fallback equals primary")));
            }
        }
        let s = &self.serverless;
        if !(s.max_run_ms.is_finite() && s.max_run_ms >= 0.0 && s.cold_start_ms.is_finite() && s.cold_start_ms >= 0.0) {
            return Err(ConfigError::Invalid("serverless.max_run_ms and cold_start_ms must be finite, >= 0".into()));
        }
        let costs = self.durations.kinds.values().chain([&self.durations.other]);
        for c in costs {
            if ![c.base_ms, c.per_unit_ms, c.default_units].iter().all(|v| v.is_finite() && *v >= 0.0) {
                return Err(ConfigError::Invalid("durations: costs must be finite, >= 0".into()));
            }
        }
        self.cost.validate().map_err(ConfigError::Invalid)?;
        let l = &self.closed_loop;
        if l.window == 0 || !(l.ratio_alpha > 0.0 && l.ratio_alpha <= 1.0) {
            return Err(ConfigError::Invalid("closed_loop: window >= 1 and ratio_alpha in (0, 1]".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_json_fills_defaults_and_validates() {
        let c = PolicyConfig::from_json(
            r#"{"exercise_share": 0.05, "kinds": {"thumbnail": {"primary": "container", "fallback": null}},
                "tenants": {"acme": {"tier": "container", "priority": "batch"}}}"#,
        )
        .unwrap();
        assert_eq!(c.exercise_share, 0.05);
        assert_eq!(c.rule("thumbnail").primary, Tier::Container);
        assert_eq!(c.rule("thumbnail").fallback, None);
        assert_eq!(c.rule("unknown").primary, Tier::Container);
        assert_eq!(c.function("thumbnail"), "kiln");
        assert!(c.tenants["acme"].applies("render", Priority::Batch));
        assert!(!c.tenants["acme"].applies("render", Priority::Interactive));
        assert!(PolicyConfig::default().validate().is_ok());
    }

    #[test]
    fn invalid_configs_are_refused() {
        assert!(matches!(PolicyConfig::from_json(r#"{"dual_share": 1.5}"#), Err(ConfigError::Invalid(_))));
        assert!(matches!(PolicyConfig::from_json(r#"{"closed_loop": {"window": 0}}"#), Err(ConfigError::Invalid(_))));
        let same = r#"{"kinds": {"x": {"primary": "container", "fallback": "container"}}}"#;
        assert!(matches!(PolicyConfig::from_json(same), Err(ConfigError::Invalid(_))));
        assert!(matches!(PolicyConfig::from_json("{"), Err(ConfigError::Parse(_))));
        assert!(matches!(
            PolicyConfig::from_json(r#"{"kinds": {"x": {"primary": "edge"}}}"#),
            Err(ConfigError::Parse(_))
        ));
    }
}
