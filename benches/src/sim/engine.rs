//! The discrete-event engine: a binary heap of events keyed by (time, insertion order), integer
//! microseconds, a clock that never runs backwards, and the seeded random number source every
//! draw of the simulator comes from (ChaCha8, so one seed gives one run on any machine).

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Simulated time, microseconds since the start of the run.
pub type Micros = u64;

/// Seconds (f64) to microseconds, saturating at 0 for negative or NaN input.
pub fn us(seconds: f64) -> Micros {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1e6).round() as Micros
    } else {
        0
    }
}

/// Milliseconds (f64) to microseconds.
pub fn us_ms(ms: f64) -> Micros {
    us(ms / 1000.0)
}

/// Microseconds to seconds.
pub fn secs(t: Micros) -> f64 {
    t as f64 / 1e6
}

struct Entry<E> {
    at: Micros,
    seq: u64,
    ev: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Event queue and clock. Events at the same instant come out in the order they were
/// scheduled, so a run depends only on its inputs.
pub struct Engine<E> {
    heap: BinaryHeap<Reverse<Entry<E>>>,
    now: Micros,
    seq: u64,
    processed: u64,
    /// Events that asked for a time before `now` and were moved to `now` (a bug if not 0).
    clamped: u64,
}

impl<E> Default for Engine<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Engine<E> {
    pub fn new() -> Self {
        Engine { heap: BinaryHeap::new(), now: 0, seq: 0, processed: 0, clamped: 0 }
    }

    pub fn now(&self) -> Micros {
        self.now
    }

    /// Schedules `ev` at `at`; a time in the past is moved to now and counted in `clamped`.
    pub fn at(&mut self, at: Micros, ev: E) {
        let at = if at < self.now {
            self.clamped += 1;
            self.now
        } else {
            at
        };
        self.seq += 1;
        self.heap.push(Reverse(Entry { at, seq: self.seq, ev }));
    }

    /// Schedules `ev` `delay` microseconds from now.
    pub fn after(&mut self, delay: Micros, ev: E) {
        self.at(self.now.saturating_add(delay), ev);
    }

    /// The next event; advances the clock to its time (never backwards).
    pub fn pop(&mut self) -> Option<(Micros, E)> {
        let Reverse(e) = self.heap.pop()?;
        debug_assert!(e.at >= self.now, "event queue returned a past event");
        self.now = self.now.max(e.at);
        self.processed += 1;
        Some((self.now, e.ev))
    }

    pub fn processed(&self) -> u64 {
        self.processed
    }

    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    pub fn pending(&self) -> usize {
        self.heap.len()
    }
}

/// The simulator's random source: ChaCha8 from a 64-bit seed, with the few distributions the
/// models need (drawn by hand so the stream does not depend on a distributions crate).
pub struct SimRng(ChaCha8Rng);

/// Standard normal quantiles used to fit lognormals through two percentiles.
pub const Z95: f64 = 1.644_853_626_951_472_2;
pub const Z99: f64 = 2.326_347_874_040_841;

impl SimRng {
    pub fn new(seed: u64, stream: u64) -> Self {
        // Different streams of one seed must not overlap: mix the stream into the seed.
        SimRng(ChaCha8Rng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Log-uniform in [lo, hi] (both > 0).
    pub fn log_between(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * self.uniform()).exp()
    }

    /// Exponential with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.uniform()).ln()
    }

    /// Standard normal (Box-Muller; one value per call keeps the stream simple).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Lognormal with median `p50` and `pq` at standard-normal quantile `z`, capped at
    /// `cap_factor * pq` so one draw cannot dominate a run.
    pub fn lognormal(&mut self, p50: f64, pq: f64, z: f64, cap_factor: f64) -> f64 {
        let sigma = if pq > p50 && z > 0.0 { (pq / p50).ln() / z } else { 0.0 };
        (p50 * (sigma * self.normal()).exp()).min(pq * cap_factor)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_in_time_then_insertion_order_and_the_clock_never_runs_backwards() {
        let mut e = Engine::new();
        e.at(30, "c");
        e.at(10, "a");
        e.at(10, "b");
        e.at(20, "x");
        let mut seen = vec![];
        let mut last = 0;
        while let Some((t, ev)) = e.pop() {
            assert!(t >= last);
            last = t;
            seen.push(ev);
            if ev == "x" {
                e.at(5, "late"); // in the past: clamped to now
            }
        }
        assert_eq!(seen, vec!["a", "b", "x", "late", "c"]);
        assert_eq!(e.clamped(), 1);
    }

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<f64> = (0..5).map({
            let mut r = SimRng::new(7, 1);
            move |_| r.uniform()
        })
        .collect();
        let b: Vec<f64> = (0..5).map({
            let mut r = SimRng::new(7, 1);
            move |_| r.uniform()
        })
        .collect();
        let c = SimRng::new(7, 2).uniform();
        assert_eq!(a, b);
        assert_ne!(a[0], c);
    }

    #[test]
    fn lognormal_fit_hits_its_median() {
        let mut r = SimRng::new(1, 1);
        let mut v: Vec<f64> = (0..20_001).map(|_| r.lognormal(20.0, 60.0, Z99, 10.0)).collect();
        v.sort_by(f64::total_cmp);
        let median = v[10_000];
        assert!((median - 20.0).abs() < 1.0, "median {median}");
    }
}
