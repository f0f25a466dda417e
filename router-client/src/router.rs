//! The full placement policy (seed §5 and §8): [`Router`] holds a [`PolicyConfig`], its
//! version, the [`ClosedLoop`] and a seeded random stream; [`decide`] is the pure rule
//! chain it runs, so a logged decision can be re-decided exactly (see [`crate::replay()`]).
//!
//! The rules, in the order they apply, with the reasons they add (`{…}` are filled in):
//!
//! 1. Serverless eligibility. `serverless tier disabled`; `gpu: never serverless`;
//!    `too long for serverless: predicted {ms} ms > {max} ms`;
//!    `too big for serverless: {bytes} bytes > {max} bytes`. Such a request never goes
//!    serverless (not as primary, fallback, overflow, exercise nor dual); the reason is
//!    added when it changed the kind's primary or fallback.
//! 2. Per-kind primary and fallback ([`crate::config::KindRule`]); when nothing else fires:
//!    `primary {tier} for {kind}`.
//! 3. Tenant pin: `tenant {t} pinned to {tier}` (or
//!    `tenant {t} pin to serverless ignored: {why}`). A pinned request is not overflowed,
//!    exercised nor dual-routed.
//! 4. No capacity on a container primary: `no ready container serves {kind}; fallback
//!    serverless`, or `no ready container serves {kind}; queued` (target without a worker:
//!    the pool's queue).
//! 5. Overflow, when the primary is under pressure: `overflow: {tier} queue {n} > {max}` or
//!    `overflow: {tier} p95 {ms} ms > {max} ms`, then `share {fraction}` when this request
//!    is in the moved fraction, else `kept on {tier} (share {fraction})`; held when the
//!    fallback is no better: `overflow held: {fallback} p95 {ms} ms >= {primary} p95 {ms} ms`,
//!    or has no ready worker: `overflow held: no ready container`.
//! 6. Deadline: `deadline: {tier} predicted {ms} ms > {budget} ms; {fallback} {ms} ms`.
//! 7. Cost (`cost.enabled`, see [`crate::cost`]): a request bound for the serverless tier
//!    while its kind's sustained rate is above the price crossing goes to a container
//!    worker with a free slot and no latency pressure: `cost: {kind} {rps} req/s > crossing
//!    {x} req/s; container {worker} has a free slot`.
//!    (7b) Exercised fallback: `exercise: fallback {tier} (share {share})`, only when the
//!    fallback is in a state to take it: not when it is loaded (a container fallback with no
//!    free slot on its best worker, a serverless fallback past its overflow queue depth):
//!    `exercise skipped: fallback {tier} loaded ({why})`; and a degraded fallback (its p95
//!    over the kind's overflow threshold or the deadline) gets a tenth of the share, enough
//!    samples to see it recover: `exercise skipped: fallback {tier} degraded ({why})`.
//! 8. Cold-start override: `cold-start override: {function} has no idle warm instance (warm
//!    {n}, in flight {m}); container {worker} {ms} ms < {cold} ms`.
//! 9. Dual routing: `dual: also {tier} (share {share})`.
//! 10. Pool queue (`pool_queue`): a batch or GPU request bound for a container worker whose
//!     predicted wait exceeds its run (every worker busy) goes to the pool's queue instead:
//!     `pool queue: every container busy ({worker} wait {ms} ms > run {ms} ms)`; a batch
//!     request goes there as soon as its best worker has no free slot: `pool queue: batch,
//!     {worker} has no free slot (wait {ms} ms, run {ms} ms)`.
//!
//! The container worker chosen is the ready, fresh one serving the kind (with a GPU when the
//! request needs one) with the least predicted latency (wait + run); ties go to the lowest
//! worker id.

use crate::closed_loop::ClosedLoop;
use crate::config::{ConfigError, PolicyConfig};
use crate::cost::RateMeter;
use crate::decision::{other, Candidate, Decision, Draws, LogRecord, Snapshot, Target};
use crate::features::{FeatureError, Priority, RequestFeatures};
use crate::report::Tier;
use crate::view::CapacityView;
use serde_json::Value;

/// A small deterministic generator (xorshift64*, seeded through splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn draws(&mut self) -> Draws {
        Draws { overflow: self.next_f64(), exercise: self.next_f64(), dual: self.next_f64() }
    }
}

fn tier_name(t: Tier) -> &'static str {
    t.as_str()
}

/// What the rules know of each tier for one request.
struct Tiers<'a> {
    /// Best container worker and its predicted latency.
    container: Option<(&'a Candidate, f64)>,
    /// Predicted run on a container when there is no worker (the pool's queue).
    container_run: f64,
    /// Predicted latency on the function (cold start included when no instance is idle).
    serverless: f64,
    /// Why the request cannot go serverless.
    serverless_block: Option<String>,
}

impl Tiers<'_> {
    fn latency(&self, tier: Tier) -> f64 {
        match tier {
            Tier::Container => self.container.map_or(self.container_run, |(_, l)| l),
            Tier::Serverless => self.serverless,
        }
    }

    /// Whether a request could be sent to `tier` right now (serverless allowed; a ready
    /// container worker exists).
    fn can_take(&self, tier: Tier) -> bool {
        match tier {
            Tier::Container => self.container.is_some(),
            Tier::Serverless => self.serverless_block.is_none(),
        }
    }

    fn target(&self, tier: Tier, function: &str) -> Target {
        match tier {
            Tier::Container => {
                self.container.map_or_else(Target::container_queue, |(c, _)| Target::worker(&c.worker_id))
            }
            Tier::Serverless => Target::function(function),
        }
    }
}

fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

fn assess<'a>(config: &PolicyConfig, f: &RequestFeatures, needs_gpu: bool, snap: &'a Snapshot) -> Tiers<'a> {
    let run_c = finite(f.predicted_ms * snap.ratio.container).max(0.0);
    let run_s = finite(f.predicted_ms * snap.ratio.serverless).max(0.0);
    let container = snap
        .containers
        .iter()
        .filter(|c| !needs_gpu || c.gpu)
        .filter_map(|c| {
            let per_job = if c.p50_ms > 0.0 { c.p50_ms } else { run_c };
            let lat = c.wait_ms(per_job) + run_c;
            lat.is_finite().then_some((c, lat))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let pool = &snap.serverless;
    let cold_ms = pool.cold_init_ms.filter(|v| v.is_finite() && *v >= 0.0).unwrap_or(config.serverless.cold_start_ms);
    let serverless = if pool.idle() > 0 { run_s } else { run_s + cold_ms };
    let s = &config.serverless;
    let serverless_block = if !s.enabled {
        Some("serverless tier disabled".to_owned())
    } else if needs_gpu {
        Some("gpu: never serverless".to_owned())
    } else if run_s > s.max_run_ms {
        Some(format!("too long for serverless: predicted {run_s:.0} ms > {:.0} ms", s.max_run_ms))
    } else if f.payload_bytes > s.max_payload_bytes {
        Some(format!("too big for serverless: {} bytes > {} bytes", f.payload_bytes, s.max_payload_bytes))
    } else {
        None
    };
    Tiers { container, container_run: run_c, serverless, serverless_block }
}

/// The primary's pressure: a reason when a threshold is crossed.
fn pressure(
    config: &PolicyConfig,
    f: &RequestFeatures,
    snap: &Snapshot,
    primary: Tier,
    needs_gpu: bool,
) -> Option<String> {
    let o = &config.rule(&f.kind).overflow;
    let (queue, p95) = match primary {
        Tier::Container => {
            let cands: Vec<&Candidate> = snap.containers.iter().filter(|c| !needs_gpu || c.gpu).collect();
            let queued: u64 = cands.iter().map(|c| u64::from(c.queued)).sum();
            // Before the loop has samples, the reports' p95 (slot-weighted) stand in.
            let slots: u64 = cands.iter().map(|c| u64::from(c.slots)).sum();
            let reported = (slots > 0)
                .then(|| cands.iter().map(|c| c.p95_ms * c.slots as f64).sum::<f64>() / slots as f64)
                .filter(|p| *p > 0.0);
            (queued, snap.p95_ms.container.or(reported))
        }
        Tier::Serverless => {
            let pool = &snap.serverless;
            (u64::from(pool.in_flight.saturating_sub(pool.warm)), snap.p95_ms.serverless)
        }
    };
    if let Some(max) = o.queue_depth {
        if queue > u64::from(max) {
            return Some(format!("overflow: {} queue {queue} > {max}", tier_name(primary)));
        }
    }
    match (p95, latency_limit(config, f)) {
        (Some(p), Some(l)) if p > l => Some(format!("overflow: {} p95 {p:.0} ms > {l:.0} ms", tier_name(primary))),
        _ => None,
    }
}

/// The lower of the kind's overflow p95 threshold and the request's deadline.
fn latency_limit(config: &PolicyConfig, f: &RequestFeatures) -> Option<f64> {
    match (config.rule(&f.kind).overflow.p95_ms, f.deadline_ms) {
        (Some(p), Some(d)) => Some(p.min(d as f64)),
        (Some(p), None) => Some(p),
        (None, Some(d)) => Some(d as f64),
        (None, None) => None,
    }
}

/// Why the fallback `fb` should not be exercised now: `Err(loaded)` (skip) or
/// `Ok(Some(degraded))` (a tenth of the share), `Ok(None)` when it is fine.
fn fallback_state(
    config: &PolicyConfig,
    f: &RequestFeatures,
    snap: &Snapshot,
    t: &Tiers<'_>,
    fb: Tier,
) -> Result<Option<String>, String> {
    let p95 = match fb {
        Tier::Container => {
            if let Some((c, _)) = t.container {
                if c.busy + c.queued >= c.slots {
                    return Err(format!("{} has no free slot", c.worker_id));
                }
                snap.p95_ms.container.or((c.p95_ms > 0.0).then_some(c.p95_ms))
            } else {
                None
            }
        }
        Tier::Serverless => {
            let pool = &snap.serverless;
            let waiting = pool.in_flight.saturating_sub(pool.warm);
            if let Some(max) = config.rule(&f.kind).overflow.queue_depth {
                if waiting > max {
                    return Err(format!("{waiting} invocations waiting > {max}"));
                }
            }
            snap.p95_ms.serverless
        }
    };
    Ok(match (p95, latency_limit(config, f)) {
        (Some(p), Some(l)) if p > l => Some(format!("p95 {p:.0} ms > {l:.0} ms")),
        _ => None,
    })
}

/// Places one request: the pure rule chain (module docs), given the policy, the request,
/// the capacity it saw and its three random draws.
pub fn decide(config: &PolicyConfig, version: u64, f: &RequestFeatures, snap: &Snapshot, draws: Draws) -> Decision {
    let rule = config.rule(&f.kind);
    let function = config.function(&f.kind);
    let needs_gpu = f.needs_gpu || rule.needs_gpu;
    let t = assess(config, f, needs_gpu, snap);
    let mut reasons: Vec<String> = Vec::new();
    let (mut primary, mut fallback) = (rule.primary, rule.fallback);

    // 3. Tenant pin.
    let mut pinned = false;
    if let Some(tenant) = f.tenant.as_deref() {
        if let Some(pin) = config.tenants.get(tenant).filter(|p| p.applies(&f.kind, f.priority)) {
            match (&t.serverless_block, pin.tier) {
                (Some(why), Tier::Serverless) => {
                    reasons.push(format!("tenant {tenant} pin to serverless ignored: {why}"))
                }
                _ => {
                    primary = pin.tier;
                    fallback = Some(other(pin.tier));
                    pinned = true;
                    reasons.push(format!("tenant {tenant} pinned to {}", tier_name(pin.tier)));
                }
            }
        }
    }

    // 1. Serverless eligibility.
    if let Some(why) = &t.serverless_block {
        let changed = primary == Tier::Serverless || fallback == Some(Tier::Serverless);
        if primary == Tier::Serverless {
            primary = Tier::Container;
            fallback = None;
        }
        if fallback == Some(Tier::Serverless) {
            fallback = None;
        }
        if changed && !reasons.iter().any(|r| r.ends_with(why.as_str())) {
            reasons.push(why.clone());
        }
    }
    // A fallback is usable when the request may go there and it can take it now.
    let usable = |tier: Option<Tier>| tier.filter(|&x| t.can_take(x));

    let mut tier = primary;
    let mut moved = false;
    let mut exercise = false;

    // 4. No capacity on a container primary.
    if primary == Tier::Container && t.container.is_none() {
        if let Some(fb) = usable(fallback) {
            tier = fb;
            moved = true;
            reasons.push(format!("no ready container serves {}; fallback {}", f.kind, tier_name(fb)));
        } else {
            reasons.push(format!("no ready container serves {}; queued", f.kind));
        }
    }

    // 5. Overflow.
    if !pinned && !moved {
        if let (Some(why), Some(fb)) = (pressure(config, f, snap, primary, needs_gpu), fallback) {
            let fraction = rule.overflow.fraction;
            let held = if !t.can_take(fb) {
                Some(if fb == Tier::Container {
                    "overflow held: no ready container".to_owned()
                } else {
                    "overflow held".to_owned()
                })
            } else {
                match (snap.p95_ms.get(fb), snap.p95_ms.get(primary)) {
                    (Some(pf), Some(pp)) if pf >= pp => Some(format!(
                        "overflow held: {} p95 {pf:.0} ms >= {} p95 {pp:.0} ms",
                        tier_name(fb),
                        tier_name(primary)
                    )),
                    _ => None,
                }
            };
            reasons.push(why);
            match held {
                Some(h) => reasons.push(h),
                None if draws.overflow < fraction => {
                    tier = fb;
                    moved = true;
                    reasons.push(format!("share {fraction}"));
                }
                None => reasons.push(format!("kept on {} (share {fraction})", tier_name(primary))),
            }
        }
    }

    // 6. Deadline.
    if !pinned && !moved {
        if let (Some(budget), Some(fb)) = (f.deadline_ms, usable(fallback)) {
            let (lp, lf) = (t.latency(primary), t.latency(fb));
            if lp > budget as f64 && lf <= budget as f64 {
                tier = fb;
                moved = true;
                reasons.push(format!(
                    "deadline: {} predicted {lp:.0} ms > {budget} ms; {} {lf:.0} ms",
                    tier_name(primary),
                    tier_name(fb)
                ));
            }
        }
    }

    // 7. Cost.
    let cost = &config.cost;
    if !pinned && !moved && tier == Tier::Serverless && cost.enabled {
        if let (Some(rps), Some((c, lat))) = (snap.kind_rps, t.container) {
            let crossing = cost.crossing_rps(t.container_run);
            let room = c.busy + c.queued < c.slots;
            let fits = f.deadline_ms.is_none_or(|d| lat <= d as f64);
            if rps > crossing && room && fits && pressure(config, f, snap, Tier::Container, needs_gpu).is_none() {
                tier = Tier::Container;
                moved = true;
                reasons.push(format!(
                    "cost: {} {rps:.1} req/s > crossing {crossing:.1} req/s; container {} has a free slot",
                    f.kind, c.worker_id
                ));
            }
        }
    }

    // 7b. Exercised fallback, when the fallback can take it.
    if !pinned && !moved && draws.exercise < config.exercise_share {
        if let Some(fb) = usable(fallback) {
            match fallback_state(config, f, snap, &t, fb) {
                Err(why) => reasons.push(format!("exercise skipped: fallback {} loaded ({why})", tier_name(fb))),
                Ok(Some(why)) if draws.exercise >= config.exercise_share / 10.0 => {
                    reasons.push(format!("exercise skipped: fallback {} degraded ({why})", tier_name(fb)))
                }
                Ok(_) => {
                    tier = fb;
                    exercise = true;
                    reasons.push(format!("exercise: fallback {} (share {})", tier_name(fb), config.exercise_share));
                }
            }
        }
    }

    // 8. Cold-start override.
    let co = &config.cold_start_override;
    if tier == Tier::Serverless
        && !exercise
        && co.enabled
        && (f.priority == Priority::Interactive || co.batch)
        && t.serverless_block.is_none()
        && snap.serverless.idle() == 0
    {
        if let Some((c, lat)) = t.container {
            if lat < t.serverless {
                tier = Tier::Container;
                reasons.push(format!(
                    "cold-start override: {function} has no idle warm instance (warm {}, in flight {}); container {} {lat:.0} ms < {:.0} ms",
                    snap.serverless.warm, snap.serverless.in_flight, c.worker_id, t.serverless
                ));
            }
        }
    }

    // GPU work never serverless, whatever happened above.
    if tier == Tier::Serverless && t.serverless_block.is_some() {
        tier = Tier::Container;
    }

    // 9. Dual routing.
    let mut shadow = None;
    if !pinned && !exercise && draws.dual < config.dual_share && t.can_take(other(tier)) {
        shadow = Some(t.target(other(tier), function));
        reasons.push(format!("dual: also {} (share {})", tier_name(other(tier)), config.dual_share));
    }

    // 10. Pool queue.
    let mut to_pool = false;
    if tier == Tier::Container && config.pool_queue && (f.priority == Priority::Batch || needs_gpu) {
        if let Some((c, _)) = t.container {
            let run = t.container_run;
            let wait = c.wait_ms(if c.p50_ms > 0.0 { c.p50_ms } else { run });
            if wait > run {
                to_pool = true;
                reasons.push(format!(
                    "pool queue: every container busy ({} wait {wait:.0} ms > run {run:.0} ms)",
                    c.worker_id
                ));
            } else if f.priority == Priority::Batch && wait > 0.0 {
                // The predicted wait is the worker's p50 per job, but what a queued job
                // really waits for is the rest of the jobs running there, unknown and, for
                // long batch work, heavy-tailed (a 30 min transcode). The pool's queue is
                // served by whichever slot frees first, so batch work never waits behind
                // one named worker.
                to_pool = true;
                reasons.push(format!(
                    "pool queue: batch, {} has no free slot (wait {wait:.0} ms, run {run:.0} ms)",
                    c.worker_id
                ));
            }
        }
    }

    if reasons.is_empty() {
        reasons.push(format!("primary {} for {}", tier_name(primary), f.kind));
    }
    Decision {
        job_id: f.job_id.clone(),
        kind: f.kind.clone(),
        primary,
        fallback,
        target: if to_pool { Target::container_queue() } else { t.target(tier, function) },
        reasons,
        exercise,
        dual: shadow.is_some(),
        predicted_ms: finite(t.latency(tier)),
        policy_version: version,
        shadow,
    }
}

/// The full policy: config, version, closed loop and random stream. One per router process
/// (or shared behind a lock); every method takes `now_ms` from the caller, none reads a
/// clock.
#[derive(Debug, Clone)]
pub struct Router {
    config: PolicyConfig,
    version: u64,
    closed_loop: ClosedLoop,
    rng: Rng,
    rates: RateMeter,
}

impl Router {
    /// A router with a validated config; `seed` fixes the random stream (exercise, dual and
    /// overflow draws).
    pub fn new(config: PolicyConfig, seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Router {
            version: config.version,
            closed_loop: ClosedLoop::new(config.closed_loop),
            config,
            rng: Rng::new(seed),
            rates: RateMeter::default(),
        })
    }

    pub fn from_json(text: &str, seed: u64) -> Result<Self, ConfigError> {
        Router::new(PolicyConfig::from_json(text)?, seed)
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn closed_loop(&self) -> &ClosedLoop {
        &self.closed_loop
    }

    /// Swaps in new parameters at run time; the closed loop's state is kept. The version
    /// becomes the old one plus one (or the config's own, when higher). An invalid config
    /// changes nothing.
    pub fn reload(&mut self, config: PolicyConfig) -> Result<u64, ConfigError> {
        config.validate()?;
        self.version = (self.version + 1).max(config.version);
        self.closed_loop.reconfigure(config.closed_loop);
        self.config = config;
        Ok(self.version)
    }

    pub fn reload_json(&mut self, text: &str) -> Result<u64, ConfigError> {
        self.reload(PolicyConfig::from_json(text)?)
    }

    /// Features of a job envelope with this policy's duration model.
    pub fn features(&self, envelope: &Value, payload_bytes: Option<u64>) -> Result<RequestFeatures, FeatureError> {
        RequestFeatures::from_envelope(envelope, &self.config.durations, payload_bytes)
    }

    /// Predicted run time of a request on a tier: the duration model's prediction scaled by
    /// the closed loop's observed/predicted ratio for that tier and kind.
    pub fn predicted_run_ms(&self, f: &RequestFeatures, tier: Tier) -> f64 {
        f.predicted_ms * self.closed_loop.ratio(tier, &f.kind)
    }

    /// What a decision for these features sees in the view now.
    pub fn snapshot(&self, f: &RequestFeatures, view: &CapacityView, now_ms: u64) -> Snapshot {
        let mut s = view.snapshot(&f.kind, self.config.function(&f.kind), &self.closed_loop, now_ms);
        let cost = &self.config.cost;
        if cost.enabled {
            s.kind_rps = Some(self.rates.rate(&f.kind, now_ms, cost.window_ms));
        }
        s
    }

    /// The kind's sustained request rate the cost rule sees (req/s over its window).
    pub fn kind_rps(&self, kind: &str, now_ms: u64) -> f64 {
        self.rates.rate(kind, now_ms, self.config.cost.window_ms)
    }

    /// Places one request, and returns the log line that can re-decide it.
    pub fn place_logged(&mut self, f: &RequestFeatures, view: &CapacityView, now_ms: u64) -> LogRecord {
        let snapshot = self.snapshot(f, view, now_ms);
        let draws = self.rng.draws();
        let decision = decide(&self.config, self.version, f, &snapshot, draws);
        self.rates.record(&f.kind, now_ms, self.config.cost.window_ms);
        tracing::debug!(job_id = %decision.job_id, kind = %decision.kind, tier = decision.target.tier.as_str(),
            reasons = ?decision.reasons, "placed");
        LogRecord { decision, features: f.clone(), snapshot, draws }
    }

    /// Places one request.
    pub fn place(&mut self, f: &RequestFeatures, view: &CapacityView, now_ms: u64) -> Decision {
        self.place_logged(f, view, now_ms).decision
    }

    /// Feeds the closed loop one finished request (latency where it ran, and the
    /// decision's `predicted_ms`).
    pub fn observe(&mut self, tier: Tier, kind: &str, latency_ms: f64, predicted_ms: f64) {
        self.closed_loop.observe(tier, kind, latency_ms, predicted_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_uniform_enough() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
        let mut r = Rng::new(1);
        let n = 20_000;
        let below = (0..n).filter(|_| r.next_f64() < 0.25).count();
        assert!((below as f64 / n as f64 - 0.25).abs() < 0.01);
        assert!((0..1000).map(|_| r.next_f64()).all(|x| (0.0..1.0).contains(&x)));
    }
}
