//! The placement decision, as DESIGN.md ("Placement") writes it, and the decision-log line
//! that carries what is needed to re-decide it (features, capacity snapshot, random draws).
//!
//! A [`Decision`] serialises to exactly the DESIGN.md object (plus `shadow`, the second
//! target, present only when `dual` is true). A [`LogRecord`] is a superset of it: the same
//! top-level fields, flattened, and `features`, `snapshot` and `draws` beside them, so every
//! log line is also a readable decision line.

use crate::features::RequestFeatures;
use crate::report::Tier;
use serde::{Deserialize, Serialize};

/// One value per tier (rolling p95, duration ratio, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TierPair<T> {
    pub container: T,
    pub serverless: T,
}

impl<T: Copy> TierPair<T> {
    pub fn get(&self, tier: Tier) -> T {
        match tier {
            Tier::Container => self.container,
            Tier::Serverless => self.serverless,
        }
    }
}

impl<T> TierPair<T> {
    pub fn get_mut(&mut self, tier: Tier) -> &mut T {
        match tier {
            Tier::Container => &mut self.container,
            Tier::Serverless => &mut self.serverless,
        }
    }
}

/// The other tier.
pub fn other(tier: Tier) -> Tier {
    match tier {
        Tier::Container => Tier::Serverless,
        Tier::Serverless => Tier::Container,
    }
}

/// Where a request goes: a container worker (or, with no `worker_id`, the container pool's
/// queue: Kafka), or a serverless function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub tier: Tier,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

impl Target {
    pub fn worker(id: impl Into<String>) -> Self {
        Target { tier: Tier::Container, worker_id: Some(id.into()), function: None }
    }
    /// The container pool's queue (no ready worker serves the request now).
    pub fn container_queue() -> Self {
        Target { tier: Tier::Container, worker_id: None, function: None }
    }
    pub fn function(name: impl Into<String>) -> Self {
        Target { tier: Tier::Serverless, worker_id: None, function: Some(name.into()) }
    }
}

/// One placement, as logged, put on the job's span and sent on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub job_id: String,
    pub kind: String,
    /// The tier the request's kind (or its tenant's pin) prefers.
    pub primary: Tier,
    /// Where a failed or `too_long_for_tier` attempt is retried; `null` when the request can
    /// run on one tier only (GPU work, too long or too big for serverless).
    pub fallback: Option<Tier>,
    pub target: Target,
    /// Human-readable, in the order the rules fired.
    pub reasons: Vec<String>,
    /// Sent to the fallback tier on purpose, to keep that path exercised.
    pub exercise: bool,
    /// Also sent to `shadow`; the second answer is discarded, both latencies recorded.
    pub dual: bool,
    /// Predicted latency at the target (wait + cold start + run), in ms.
    pub predicted_ms: f64,
    pub policy_version: u64,
    /// The second target of a dual-routed request (only when `dual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Target>,
}

impl Decision {
    /// One JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        // Serialising plain structs of strings, numbers and enums cannot fail; keep a
        // fallback anyway rather than unwrap.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A stable label for the rule that chose the target (for metrics: "decisions by tier
    /// and reason"): the label of the last reason, dual routing aside; see [`reason_label`].
    pub fn rule(&self) -> &'static str {
        self.reasons.iter().rev().map(|r| reason_label(r)).find(|l| *l != "dual").unwrap_or("primary")
    }

    /// Whether two decisions place the request the same way (target, tiers, exercise,
    /// dual), whatever their reasons, predictions and policy versions.
    pub fn same_placement(&self, other: &Decision) -> bool {
        self.target == other.target
            && self.primary == other.primary
            && self.fallback == other.fallback
            && self.exercise == other.exercise
            && self.dual == other.dual
            && self.shadow == other.shadow
    }
}

/// The stable label of one reason string (the reasons themselves carry numbers).
pub fn reason_label(reason: &str) -> &'static str {
    const PREFIXES: [(&str, &str); 17] = [
        ("pool queue", "pool queue"),
        ("cost:", "cost"),
        ("exercise skipped", "exercise skipped"),
        ("overflow held", "overflow held"),
        ("overflow:", "overflow"),
        ("share ", "overflow"),
        ("kept on ", "overflow not drawn"),
        ("cold-start override", "cold-start override"),
        ("exercise:", "exercise"),
        ("dual:", "dual"),
        ("gpu:", "gpu"),
        ("too long for serverless", "too long for serverless"),
        ("too big for serverless", "too big for serverless"),
        ("serverless tier disabled", "serverless disabled"),
        ("no ready container", "no container"),
        ("deadline:", "deadline"),
        ("primary ", "primary"),
    ];
    if reason.starts_with("tenant ") {
        return if reason.contains(" ignored: ") { "tenant pin ignored" } else { "tenant pin" };
    }
    PREFIXES.iter().find(|(p, _)| reason.starts_with(p)).map_or("other", |(_, l)| l)
}

/// The uniform draws in [0, 1) one decision consumed. Every decision draws all three, in
/// this order, whichever rules fire, so the random stream does not depend on the branches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Draws {
    pub overflow: f64,
    pub exercise: f64,
    pub dual: f64,
}

/// A container worker that could take the request, as seen when it was placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub worker_id: String,
    #[serde(default)]
    pub gpu: bool,
    pub slots: u32,
    pub busy: u32,
    pub queued: u32,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

impl Candidate {
    /// Predicted wait before a new request starts here, given a run time per job.
    pub fn wait_ms(&self, run_ms: f64) -> f64 {
        if self.slots == 0 {
            return f64::INFINITY;
        }
        let ahead = (self.busy + self.queued) as f64;
        let slots = self.slots as f64;
        if ahead < slots {
            0.0
        } else {
            // Jobs ahead of us beyond the free slots, drained `slots` at a time.
            ((ahead - slots) / slots + 1.0).floor() * run_ms
        }
    }
}

/// The serverless function's warm pool, as seen when a request was placed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolStats {
    pub function: String,
    /// Instances seen within their idle lifetime.
    pub warm: u32,
    /// Invocations started and not yet answered.
    pub in_flight: u32,
    /// Mean init time of the cold starts seen, when any.
    #[serde(default)]
    pub cold_init_ms: Option<f64>,
}

impl PoolStats {
    /// in-flight / warm (1.0 or more: every warm instance is busy; infinite when none).
    pub fn occupancy(&self) -> f64 {
        if self.warm == 0 {
            f64::INFINITY
        } else {
            self.in_flight as f64 / self.warm as f64
        }
    }
    /// Warm instances free to take a request without a cold start.
    pub fn idle(&self) -> u32 {
        self.warm.saturating_sub(self.in_flight)
    }
}

/// The capacity summary one decision saw: enough to re-decide it in a replay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub now_ms: u64,
    /// Ready, fresh container workers serving the request's kind, by worker id.
    pub containers: Vec<Candidate>,
    pub serverless: PoolStats,
    /// The closed loop's rolling p95 per tier for this kind (None: too few samples).
    pub p95_ms: TierPair<Option<f64>>,
    /// The closed loop's observed/predicted duration ratio per tier for this kind.
    pub ratio: TierPair<f64>,
    /// The kind's sustained request rate (req/s over the cost rule's window) when the cost
    /// rule is on; None: the rule does not fire (and older logs replay unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind_rps: Option<f64>,
}

/// One decision-log line: the decision, and what it was decided from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    #[serde(flatten)]
    pub decision: Decision,
    pub features: RequestFeatures,
    pub snapshot: Snapshot,
    pub draws: Draws,
}

impl LogRecord {
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn from_json_line(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_json_matches_design() {
        let d = Decision {
            job_id: "j1".into(),
            kind: "thumbnail".into(),
            primary: Tier::Serverless,
            fallback: Some(Tier::Container),
            target: Target::worker("w1"),
            reasons: vec!["overflow: container p95 212 ms > 150 ms".into(), "share 0.3".into()],
            exercise: false,
            dual: false,
            predicted_ms: 18.0,
            policy_version: 7,
            shadow: None,
        };
        let v: serde_json::Value = serde_json::from_str(&d.to_json_line()).unwrap();
        let want = serde_json::json!({"job_id":"j1","kind":"thumbnail","primary":"serverless","fallback":"container",
            "target":{"tier":"container","worker_id":"w1"},"reasons":["overflow: container p95 212 ms > 150 ms","share 0.3"],
            "exercise":false,"dual":false,"predicted_ms":18.0,"policy_version":7});
        assert_eq!(v, want);
        assert!(!d.to_json_line().contains('\n'));
        assert_eq!(d.rule(), "overflow");
        let f = Target::function("kiln");
        assert_eq!(serde_json::to_value(&f).unwrap(), serde_json::json!({"tier":"serverless","function":"kiln"}));
    }

    #[test]
    fn reason_labels_are_stable() {
        for (reason, label) in [
            ("overflow: container queue 12 > 8", "overflow"),
            ("kept on container (share 0.3)", "overflow not drawn"),
            ("overflow held: container p95 300 ms >= serverless p95 212 ms", "overflow held"),
            ("cold-start override: kiln has no idle warm instance (warm 0, in flight 0); container w1 64 ms < 864 ms", "cold-start override"),
            ("tenant acme pinned to container", "tenant pin"),
            ("tenant g pin to serverless ignored: gpu: never serverless", "tenant pin ignored"),
            ("no ready container serves render; queued", "no container"),
            ("primary container for render", "primary"),
            ("something new", "other"),
        ] {
            assert_eq!(reason_label(reason), label, "{reason}");
        }
        let d = |reasons: &[&str]| Decision {
            job_id: String::new(),
            kind: "k".into(),
            primary: Tier::Container,
            fallback: None,
            target: Target::container_queue(),
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            exercise: false,
            dual: false,
            predicted_ms: 0.0,
            policy_version: 1,
            shadow: None,
        };
        assert_eq!(d(&["gpu: never serverless", "dual: also serverless (share 0.1)"]).rule(), "gpu");
        assert_eq!(d(&["dual: also serverless (share 0.1)"]).rule(), "primary");
    }

    #[test]
    fn candidate_wait_and_pool_occupancy() {
        let c =
            Candidate { worker_id: "w".into(), gpu: false, slots: 4, busy: 3, queued: 0, p50_ms: 10.0, p95_ms: 20.0 };
        assert_eq!(c.wait_ms(10.0), 0.0);
        let full = Candidate { busy: 4, queued: 4, ..c.clone() };
        assert_eq!(full.wait_ms(10.0), 20.0);
        let p = PoolStats { function: "f".into(), warm: 4, in_flight: 2, cold_init_ms: None };
        assert_eq!((p.occupancy(), p.idle()), (0.5, 2));
        assert!(PoolStats::default().occupancy().is_infinite());
    }
}
