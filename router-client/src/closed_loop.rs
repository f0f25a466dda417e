//! The closed loop (seed §6.2 and §8, "Routing is a control problem"): observed latencies
//! per tier and kind feed a rolling p95 (the last `window` samples) and an observed/predicted
//! ratio (EWMA) that scales duration predictions. Overflow checks read the p95, predictions
//! read the ratio, so a tier that degrades loses traffic within a few observations, with no
//! restart. No clock inside: the window is counted in samples.

use crate::config::LoopConfig;
use crate::decision::TierPair;
use crate::report::Tier;
use std::collections::{HashMap, VecDeque};

/// Bounds of the observed/predicted ratio.
pub const RATIO_MIN: f64 = 0.05;
pub const RATIO_MAX: f64 = 50.0;

/// The last `capacity` latencies of one tier and kind, kept both in arrival order (to drop
/// the oldest) and sorted (so a quantile is an index, not a sort per decision: an
/// observation costs one binary-search insert and one remove, O(window) memmoves of f64s).
#[derive(Debug, Clone, Default)]
pub struct Window {
    samples: VecDeque<f64>,
    sorted: Vec<f64>,
    capacity: usize,
}

impl Window {
    pub fn new(capacity: usize) -> Self {
        let cap = capacity.min(4096);
        Window { samples: VecDeque::with_capacity(cap), sorted: Vec::with_capacity(cap), capacity: capacity.max(1) }
    }

    pub fn push(&mut self, v: f64) {
        while self.samples.len() >= self.capacity {
            self.pop_oldest();
        }
        self.samples.push_back(v);
        let at = self.sorted.partition_point(|x| x.total_cmp(&v).is_lt());
        self.sorted.insert(at, v);
    }

    fn pop_oldest(&mut self) {
        if let Some(old) = self.samples.pop_front() {
            let at = self.sorted.partition_point(|x| x.total_cmp(&old).is_lt());
            if self.sorted.get(at).is_some_and(|x| x.total_cmp(&old).is_eq()) {
                self.sorted.remove(at);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Nearest-rank quantile (q in [0, 1]); None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let v = &self.sorted;
        if v.is_empty() {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
        v.get(rank.saturating_sub(1).min(v.len() - 1)).copied()
    }

    fn resize(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.samples.len() > self.capacity {
            self.pop_oldest();
        }
    }
}

#[derive(Debug, Clone)]
struct Series {
    window: Window,
    ratio: f64,
    observations: u64,
}

/// Per tier and kind: rolling latencies and the observed/predicted ratio.
#[derive(Debug, Clone)]
pub struct ClosedLoop {
    config: LoopConfig,
    series: HashMap<(Tier, String), Series>,
}

impl ClosedLoop {
    pub fn new(config: LoopConfig) -> Self {
        ClosedLoop { config, series: HashMap::new() }
    }

    /// New window size and weights (a policy reload); the samples are kept.
    pub fn reconfigure(&mut self, config: LoopConfig) {
        self.config = config;
        for s in self.series.values_mut() {
            s.window.resize(config.window);
        }
    }

    /// One finished request: its latency where it ran, and what was predicted for it there
    /// (the decision's `predicted_ms`). Non-finite or negative values are ignored.
    pub fn observe(&mut self, tier: Tier, kind: &str, latency_ms: f64, predicted_ms: f64) {
        if !(latency_ms.is_finite() && latency_ms >= 0.0) {
            return;
        }
        let window = self.config.window;
        let s = self.series.entry((tier, kind.to_owned())).or_insert_with(|| Series {
            window: Window::new(window),
            ratio: 1.0,
            observations: 0,
        });
        s.window.push(latency_ms);
        s.observations += 1;
        if predicted_ms.is_finite() && predicted_ms > 0.0 {
            // The prediction already carried the current ratio: move the ratio toward
            // ratio × observed/predicted.
            let target = s.ratio * (latency_ms / predicted_ms);
            let a = self.config.ratio_alpha;
            s.ratio = ((1.0 - a) * s.ratio + a * target).clamp(RATIO_MIN, RATIO_MAX);
        }
    }

    /// Rolling p95 of a tier for a kind, once `min_samples` are in.
    pub fn p95(&self, tier: Tier, kind: &str) -> Option<f64> {
        let s = self.series.get(&(tier, kind.to_owned()))?;
        if s.window.len() < self.config.min_samples.max(1) {
            return None;
        }
        s.window.quantile(0.95)
    }

    /// Observed/predicted duration ratio of a tier for a kind (1.0 before any observation).
    pub fn ratio(&self, tier: Tier, kind: &str) -> f64 {
        self.series.get(&(tier, kind.to_owned())).map_or(1.0, |s| s.ratio)
    }

    pub fn observations(&self, tier: Tier, kind: &str) -> u64 {
        self.series.get(&(tier, kind.to_owned())).map_or(0, |s| s.observations)
    }

    pub fn p95_pair(&self, kind: &str) -> TierPair<Option<f64>> {
        TierPair { container: self.p95(Tier::Container, kind), serverless: self.p95(Tier::Serverless, kind) }
    }

    pub fn ratio_pair(&self, kind: &str) -> TierPair<f64> {
        TierPair { container: self.ratio(Tier::Container, kind), serverless: self.ratio(Tier::Serverless, kind) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_bounded_and_p95_is_nearest_rank() {
        let mut w = Window::new(100);
        for i in 1..=300 {
            w.push(i as f64);
        }
        assert_eq!(w.len(), 100);
        assert_eq!(w.quantile(0.95), Some(295.0));
        assert_eq!(w.quantile(0.0), Some(201.0));
        assert_eq!(Window::new(3).quantile(0.5), None);
    }

    #[test]
    fn the_sorted_copy_matches_a_sort_of_the_window() {
        // Unordered values with repeats, through a small window and a resize.
        let mut w = Window::new(7);
        let mut x: u64 = 12345;
        for i in 0..500 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            w.push(((x >> 33) % 50) as f64);
            if i == 300 {
                w.resize(4);
            }
            let mut want: Vec<f64> = w.samples.iter().copied().collect();
            want.sort_by(f64::total_cmp);
            assert_eq!(w.sorted, want, "after {i}");
        }
        assert_eq!(w.len(), 4);
    }

    #[test]
    fn p95_needs_min_samples_and_ratio_tracks_observed() {
        let mut l = ClosedLoop::new(LoopConfig { window: 50, min_samples: 5, ratio_alpha: 0.5 });
        for _ in 0..4 {
            l.observe(Tier::Serverless, "thumbnail", 40.0, 20.0);
        }
        assert_eq!(l.p95(Tier::Serverless, "thumbnail"), None);
        l.observe(Tier::Serverless, "thumbnail", 40.0, 20.0);
        assert_eq!(l.p95(Tier::Serverless, "thumbnail"), Some(40.0));
        // Predictions that keep missing by 2x (the caller does not apply the ratio here)
        // push the ratio up, bounded.
        assert!(l.ratio(Tier::Serverless, "thumbnail") > 2.0);
        assert!(l.ratio(Tier::Serverless, "thumbnail") <= RATIO_MAX);
        assert_eq!(l.ratio(Tier::Container, "thumbnail"), 1.0);
        l.observe(Tier::Container, "thumbnail", f64::NAN, 1.0);
        assert_eq!(l.observations(Tier::Container, "thumbnail"), 0);
    }
}
