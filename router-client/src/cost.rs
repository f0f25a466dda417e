//! The cost rule (seed §5, "the mechanism by which sustained traffic that would be expensive
//! on FaaS is migrated to containers"; §7.3 and Figure 6, the hybrid tracking the lower
//! envelope of the two tiers' cost curves).
//!
//! A kind's *sustained* rate is the number of its requests this router placed (any tier)
//! in the last `window_ms`, per second ([`RateMeter`]). The *crossing* is the rate at which
//! the kind's serverless bill pays for one more container worker:
//!
//! ```text
//! crossing_rps = container_usd_per_s / serverless_usd_per_request(predicted run)
//! ```
//!
//! Above it, a request bound for the serverless tier goes to a container worker that has a
//! free slot now (warm room: it waits for nothing) and whose latency is healthy (no overflow
//! pressure on the container tier). Nothing is queued for cost, and a container worker that
//! is cheaper per request only when full (`container_usd_per_s × run / slots`) must also be
//! cheaper than an invocation, or the rule never fires. The container tier's own autoscaler
//! then sees the busy slots and adds pods, which makes more warm room: the traffic follows
//! the cheaper tier without the router managing pods.
//!
//! Off by default ([`CostRule::enabled`]): the router cannot know the deployment's pod price.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Prices and window of the cost rule. Defaults: AWS Lambda x86 list prices (us-east-1),
/// a 2 GB function, and a 2-vCPU pod with two job slots at c7i.large's on-demand price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CostRule {
    pub enabled: bool,
    /// The rate is averaged over this window (and a burst shorter than it counts for less).
    pub window_ms: u64,
    pub serverless_usd_per_request: f64,
    pub serverless_usd_per_gb_s: f64,
    pub serverless_memory_gb: f64,
    /// Price of one container worker (pod) per hour.
    pub container_usd_per_hour: f64,
    /// Job slots of one container worker.
    pub container_slots: u32,
}

impl Default for CostRule {
    fn default() -> Self {
        CostRule {
            enabled: false,
            window_ms: 60_000,
            serverless_usd_per_request: 0.20 / 1_000_000.0,
            serverless_usd_per_gb_s: 0.000_016_666_7,
            serverless_memory_gb: 2.0,
            container_usd_per_hour: 0.08925,
            container_slots: 2,
        }
    }
}

impl CostRule {
    /// One invocation running `run_ms` (billed per started ms).
    pub fn serverless_usd_per_request(&self, run_ms: f64) -> f64 {
        let billed_s = run_ms.max(0.0).ceil() / 1000.0;
        self.serverless_usd_per_request + billed_s * self.serverless_memory_gb * self.serverless_usd_per_gb_s
    }

    /// One request of `run_ms` on a fully used container worker.
    pub fn container_usd_per_request(&self, run_ms: f64) -> f64 {
        self.container_usd_per_hour / 3600.0 * run_ms.max(0.0) / 1000.0 / f64::from(self.container_slots.max(1))
    }

    /// The sustained rate above which serverless traffic of requests running `run_ms` pays
    /// for a container worker; infinite when containers are not cheaper per request.
    pub fn crossing_rps(&self, run_ms: f64) -> f64 {
        let s = self.serverless_usd_per_request(run_ms);
        if s.is_nan() || s <= 0.0 || self.container_usd_per_request(run_ms) >= s {
            return f64::INFINITY;
        }
        self.container_usd_per_hour / 3600.0 / s
    }

    pub fn validate(&self) -> Result<(), String> {
        let prices = [
            self.serverless_usd_per_request,
            self.serverless_usd_per_gb_s,
            self.serverless_memory_gb,
            self.container_usd_per_hour,
        ];
        if !prices.iter().all(|p| p.is_finite() && *p >= 0.0) {
            return Err("cost: prices and memory must be finite, >= 0".into());
        }
        if self.window_ms < 1000 || self.container_slots == 0 {
            return Err("cost: window_ms >= 1000 and container_slots >= 1".into());
        }
        Ok(())
    }
}

/// Requests placed per kind in 1 s buckets, over a sliding window.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    kinds: BTreeMap<String, VecDeque<(u64, u32)>>,
}

impl RateMeter {
    /// One request of `kind` placed at `now_ms`; buckets older than the window are dropped.
    pub fn record(&mut self, kind: &str, now_ms: u64, window_ms: u64) {
        let sec = now_ms / 1000;
        let q = self.kinds.entry(kind.to_owned()).or_default();
        match q.back_mut() {
            Some((s, n)) if *s >= sec => *n = n.saturating_add(1),
            _ => q.push_back((sec, 1)),
        }
        while q.front().is_some_and(|(s, _)| s * 1000 + window_ms <= now_ms) {
            q.pop_front();
        }
    }

    /// Requests of `kind` per second over the window ending at `now_ms`.
    pub fn rate(&self, kind: &str, now_ms: u64, window_ms: u64) -> f64 {
        let n: u64 = self
            .kinds
            .get(kind)
            .map_or(0, |q| q.iter().filter(|(s, _)| s * 1000 + window_ms > now_ms).map(|(_, n)| u64::from(*n)).sum());
        n as f64 / (window_ms.max(1) as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_by_hand() {
        let c = CostRule::default();
        // 25 ms on 2 GB: 0.2e-6 + 0.025 * 2 * 16.6667e-6 = 1.0333e-6 USD.
        let s = c.serverless_usd_per_request(25.0);
        assert!((s - 1.033_335e-6).abs() < 1e-11, "{s}");
        // A pod-second: 0.08925 / 3600 = 24.79e-6 USD -> 23.99 req/s.
        let x = c.crossing_rps(25.0);
        assert!((x - 23.99).abs() < 0.01, "{x}");
        // Containers dearer per request than an invocation: never.
        let dear = CostRule { container_usd_per_hour: 1000.0, ..c.clone() };
        assert!(dear.crossing_rps(25.0).is_infinite());
        assert!(CostRule { container_slots: 0, ..c }.validate().is_err());
    }

    #[test]
    fn rate_over_a_sliding_window() {
        let mut m = RateMeter::default();
        for i in 0..600 {
            m.record("t", 1_000_000 + i * 100, 60_000); // 10 req/s for 60 s
        }
        let r = m.rate("t", 1_060_000, 60_000);
        assert!((r - 10.0).abs() < 0.2, "{r}");
        assert_eq!(m.rate("t", 1_200_000, 60_000), 0.0);
        assert_eq!(m.rate("other", 1_060_000, 60_000), 0.0);
    }
}
