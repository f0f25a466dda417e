//! The experiments the binary runs: the burst scenario under every strategy (Table 3, Figs 4,
//! 5, 7), the steady-throughput cost sweep (Fig 6), the closed-loop experiment (container
//! service time doubles mid-run), and the sensitivity sweep.

use super::arrivals::{steady, Profile};
use super::constants as c;
use super::engine::us;
use super::report::{self, percentile, StrategyStats};
use super::run::{simulate, RunResult, Served};
use super::strategy::Strategy;
use super::workload::{Kind, Request, ServiceModel};
use super::policy::PolicyKnobs;
use super::Config;
use serde::Serialize;
use std::collections::BTreeMap;

/// One configuration of the burst scenario.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    pub name: &'static str,
    pub strategy: Strategy,
    /// Provisioned concurrency (constants::DEFAULT_PROVISIONED).
    pub provisioned: bool,
    /// Interactive requests carry their budget as a deadline.
    pub deadlines: bool,
    /// Queued work goes to the pool's pull queue (Config::pull_when_full).
    pub pull: bool,
    /// The Router's cost rule (PolicyKnobs::cost_rule).
    pub cost_rule: bool,
}

const fn v(name: &'static str, strategy: Strategy, provisioned: bool, deadlines: bool, pull: bool) -> Variant {
    Variant { name, strategy, provisioned, deadlines, pull, cost_rule: true }
}

/// The configurations of the burst scenario: the three strategies of Table 3 (the hybrid
/// placed by router-client's Router), the hybrid placed by the old stateless `place`
/// (as before the Router landed, with its no-deadline and pull-queue variants, which showed
/// what that policy lacked), serverless and the Router hybrid with provisioned concurrency,
/// and the Router hybrid without its cost rule.
pub const VARIANTS: [Variant; 9] = [
    v("serverless", Strategy::Serverless, false, true, false),
    v("container", Strategy::Container, false, true, false),
    v("hybrid", Strategy::Hybrid, false, true, false),
    Variant { cost_rule: false, ..v("hybrid_no_cost", Strategy::Hybrid, false, true, false) },
    v("hybrid_static_place", Strategy::HybridStaticPlace, false, true, false),
    v("hybrid_static_place_nodeadline", Strategy::HybridStaticPlace, false, false, false),
    v("hybrid_static_place_pull", Strategy::HybridStaticPlace, false, true, true),
    v("serverless_pc", Strategy::Serverless, true, true, false),
    v("hybrid_pc", Strategy::Hybrid, true, true, false),
];

/// Runs `f` on every item on its own thread (the runs are independent and each is
/// deterministic, so the results do not depend on the scheduling); results in item order.
pub fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.iter().map(|item| scope.spawn(|| f(item))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

pub struct Main {
    pub reqs: Vec<Request>,
    pub profile: Profile,
    pub warmup_s: f64,
    pub runs: BTreeMap<&'static str, RunResult>,
    pub stats: BTreeMap<&'static str, StrategyStats>,
}

/// The burst scenario under `variants` (names from VARIANTS; "serverless" is always run: it
/// is the cost reference).
pub fn burst_scenario(model: &ServiceModel, profile: &Profile, cfg: &Config, seed: u64, variants: &[&str]) -> Result<Main, String> {
    let reqs = profile.generate(model, seed);
    let chosen: Vec<&Variant> = VARIANTS.iter().filter(|v| v.name == "serverless" || variants.contains(&v.name)).collect();
    let results = parallel(&chosen, |v| {
        let mut cfg = cfg.clone();
        cfg.deadlines = cfg.deadlines && v.deadlines;
        cfg.pull_when_full = cfg.pull_when_full || v.pull;
        cfg.policy.cost_rule = cfg.policy.cost_rule && v.cost_rule;
        cfg.provisioned = if v.provisioned { cfg.provisioned.max(c::DEFAULT_PROVISIONED) } else { cfg.provisioned };
        simulate(&reqs, profile.horizon_s, v.strategy, &cfg, seed)
    });
    let mut runs = BTreeMap::new();
    for (v, run) in chosen.iter().zip(results) {
        runs.insert(v.name, run?);
    }
    let mut stats = BTreeMap::new();
    let reference = runs.get("serverless").map(|r| r.bill);
    for (name, run) in &runs {
        stats.insert(*name, report::stats(&reqs, run, profile, cfg.warmup_s, reference.as_ref()));
    }
    Ok(Main { reqs, profile: profile.clone(), warmup_s: cfg.warmup_s, runs, stats })
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub rps: f64,
    pub serverless_usd_per_h: f64,
    pub container_usd_per_h: f64,
    pub hybrid_usd_per_h: f64,
    pub container_p95_ms: Option<f64>,
    pub hybrid_p95_ms: Option<f64>,
    pub serverless_p95_ms: Option<f64>,
    pub hybrid_serverless_share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub kind: &'static str,
    pub points: Vec<SweepPoint>,
    /// Where container-only becomes cheaper than serverless-only (log-linear interpolation).
    pub crossing_rps: Option<f64>,
}

fn p95_of(reqs: &[Request], run: &RunResult, from_s: f64) -> Option<f64> {
    let mut v: Vec<f64> =
        reqs.iter().zip(&run.outcomes).filter(|(r, o)| r.arrival_s >= from_s && matches!(o.served, Served::Serverless | Served::Container)).map(|(_, o)| o.done_ms).collect();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.95).map(|x| (x * 10.0).round() / 10.0)
}

/// Fig 6: cost per hour of one thumbnail endpoint at steady throughput.
pub fn cost_sweep(model: &ServiceModel, cfg: &Config, seed: u64, rates: &[f64]) -> Result<Sweep, String> {
    let mut points = Vec::new();
    let mut cfg = cfg.clone();
    cfg.warmup_s = c::SWEEP_WARMUP_S;
    let horizon = c::SWEEP_WARMUP_S + c::SWEEP_S;
    let per_rate = parallel(rates, |&rps| -> Result<SweepPoint, String> {
        let profile = steady(Kind::Thumbnail, rps, horizon);
        let reqs = profile.generate(model, seed);
        let per_h = |r: &RunResult| (r.bill.like_for_like() / (c::SWEEP_S / 3600.0) * 1e4).round() / 1e4;
        let s = simulate(&reqs, horizon, Strategy::Serverless, &cfg, seed)?;
        let k = simulate(&reqs, horizon, Strategy::Container, &cfg, seed)?;
        let h = simulate(&reqs, horizon, Strategy::Hybrid, &cfg, seed)?;
        let served = h.outcomes.iter().filter(|o| o.served == Served::Serverless).count();
        Ok(SweepPoint {
            rps,
            serverless_usd_per_h: per_h(&s),
            container_usd_per_h: per_h(&k),
            hybrid_usd_per_h: per_h(&h),
            serverless_p95_ms: p95_of(&reqs, &s, c::SWEEP_WARMUP_S),
            container_p95_ms: p95_of(&reqs, &k, c::SWEEP_WARMUP_S),
            hybrid_p95_ms: p95_of(&reqs, &h, c::SWEEP_WARMUP_S),
            hybrid_serverless_share: if reqs.is_empty() { 0.0 } else { (served as f64 / reqs.len() as f64 * 1e4).round() / 1e4 },
        })
    });
    for p in per_rate {
        points.push(p?);
    }
    let mut crossing = None;
    for w in points.windows(2) {
        let d0 = w[0].container_usd_per_h - w[0].serverless_usd_per_h;
        let d1 = w[1].container_usd_per_h - w[1].serverless_usd_per_h;
        if d0 > 0.0 && d1 <= 0.0 {
            let f = d0 / (d0 - d1);
            let x = (w[0].rps.ln() + f * (w[1].rps.ln() - w[0].rps.ln())).exp();
            crossing = Some((x * 10.0).round() / 10.0);
            break;
        }
    }
    Ok(Sweep { kind: "thumbnail", points, crossing_rps: crossing })
}

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub t_s: f64,
    pub short_p95_ms: Option<f64>,
    pub serverless_share: f64,
    pub cpu_pods: u32,
}

/// One policy's run in the closed-loop experiment.
#[derive(Debug, Clone, Serialize)]
pub struct LoopLine {
    pub name: &'static str,
    pub windows: Vec<Window>,
    pub before_p95_ms: Option<f64>,
    pub after_p95_ms: Option<f64>,
    pub before_serverless_share: f64,
    pub after_serverless_share: f64,
    /// Short requests placed on containers in the first 60 s after the slowdown, and in the
    /// 60 s before it.
    pub container_share_60s_before: f64,
    pub container_share_60s_after: f64,
    /// Seconds from the slowdown to the end of the first 10 s window whose serverless share
    /// is at least half-way from the minute before the slowdown to the mean after it; None
    /// when the share after rose by less than 5 points (nothing moved).
    pub moved_within_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClosedLoop {
    pub slowdown_at_s: f64,
    pub factor: f64,
    /// "adaptive" (Router, closed loop fed), "static" (the same Router config, no observe),
    /// "static_config" (no latency-driven rule), "static_place" (the old stateless place).
    pub lines: Vec<LoopLine>,
    pub note: &'static str,
}

fn loop_line(name: &'static str, reqs: &[Request], run: &RunResult, horizon_s: f64, at_s: f64) -> LoopLine {
    let short = |r: &Request| r.kind.spec().short;
    let served = |o: &super::run::Outcome| matches!(o.served, Served::Serverless | Served::Container);
    // (p95, share on serverless) of short requests arriving in [a, b).
    let span = |a: f64, b: f64| {
        let mut lat = Vec::new();
        let mut sl = 0usize;
        for (r, o) in reqs.iter().zip(&run.outcomes) {
            if short(r) && r.arrival_s >= a && r.arrival_s < b && served(o) {
                lat.push(o.done_ms);
                sl += usize::from(o.served == Served::Serverless);
            }
        }
        let share = if lat.is_empty() { 0.0 } else { sl as f64 / lat.len() as f64 };
        lat.sort_by(f64::total_cmp);
        (percentile(&lat, 0.95).map(|x| (x * 10.0).round() / 10.0), (share * 1e4).round() / 1e4)
    };
    let window_s = c::CLOSED_LOOP_WINDOW_S;
    let n = (horizon_s / window_s) as usize;
    let windows: Vec<Window> = (0..n)
        .map(|w| {
            let (a, b) = (w as f64 * window_s, (w + 1) as f64 * window_s);
            let (p95, share) = span(a, b);
            let cpu_pods = run.series.iter().find(|s| us(s.t_s) >= us(b)).map_or(0, |s| s.pods[0]);
            Window { t_s: b, short_p95_ms: p95, serverless_share: share, cpu_pods }
        })
        .collect();
    let (before_p95, before_share) = span(120.0, at_s);
    let (after_p95, after_share) = span(at_s + 120.0, horizon_s);
    let r4 = |x: f64| (x * 1e4).round() / 1e4;
    let share_60s_before = span(at_s - 60.0, at_s).1;
    let half = share_60s_before + 0.5 * (after_share - share_60s_before);
    let moved_within_s = (after_share - share_60s_before > 0.05)
        .then(|| {
            windows.iter().find(|w: &&Window| w.t_s > at_s && w.serverless_share >= half).map(|w| w.t_s - at_s)
        })
        .flatten();
    LoopLine {
        name,
        windows,
        before_p95_ms: before_p95,
        after_p95_ms: after_p95,
        before_serverless_share: before_share,
        after_serverless_share: after_share,
        container_share_60s_before: r4(1.0 - share_60s_before),
        container_share_60s_after: r4(1.0 - span(at_s, at_s + 60.0).1),
        moved_within_s,
    }
}

/// Mid-run, container service times double (no bursts; the short kinds primary on
/// containers, constants::CLOSED_LOOP_SHORT_PRIMARY). Three policies see the same requests: the Router with its closed loop fed ("adaptive"), the same Router config with
/// `observe` never called ("static"; it still reads the pods' reports), the same Router
/// with no latency-driven rule at all ("static_config": a fixed placement), and the old `place`.
pub fn closed_loop(model: &ServiceModel, cfg: &Config, seed: u64, horizon_s: f64, slowdown_at_s: f64) -> Result<ClosedLoop, String> {
    let mut profile = super::default_profile();
    profile.horizon_s = horizon_s;
    profile.burst_onsets_s.clear();
    let mut cfg = cfg.clone();
    cfg.warmup_s = 0.0;
    cfg.slowdown = Some((slowdown_at_s, c::CLOSED_LOOP_SLOWDOWN));
    cfg.policy.short_primary = c::CLOSED_LOOP_SHORT_PRIMARY;
    let reqs = profile.generate(model, seed);
    // (name, strategy, observe, latency-driven rules)
    let policies = [
        ("adaptive", Strategy::Hybrid, true, true),
        ("static", Strategy::Hybrid, false, true),
        ("static_config", Strategy::Hybrid, false, false),
        ("static_place", Strategy::HybridStaticPlace, true, true),
    ];
    let runs = parallel(&policies, |&(name, strategy, observe, latency)| -> Result<LoopLine, String> {
        let mut cfg = cfg.clone();
        cfg.policy.observe = observe;
        cfg.policy.latency_overflow = latency;
        cfg.deadlines = latency;
        let run = simulate(&reqs, profile.horizon_s, strategy, &cfg, seed)?;
        Ok(loop_line(name, &reqs, &run, profile.horizon_s, slowdown_at_s))
    });
    let lines = runs.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(ClosedLoop {
        slowdown_at_s,
        factor: c::CLOSED_LOOP_SLOWDOWN,
        lines,
        note: "short kinds primary container, fallback serverless; adaptive = Router with observe(); static = same PolicyConfig, observe() never called (the pods' reports, with their p95, still reach the view); static_config = same Router, observe() never called, no p95/queue overflow and no deadlines (a fixed placement: primaries, exercise, cold-start override, cost); static_place = old place()",
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct SensitivityRow {
    pub knob: &'static str,
    pub value: String,
    /// (p95 common, p99.9 burst first byte, cost relative, time to scale) per strategy.
    pub serverless: [Option<f64>; 4],
    pub container: [Option<f64>; 4],
    pub hybrid: [Option<f64>; 4],
}

fn row_of(knob: &'static str, value: String, m: &Main) -> SensitivityRow {
    let get = |n: &str| m.stats.get(n).map_or([None; 4], |s| [s.p95_ms, s.p999_ms, Some(s.cost), Some(s.time_to_scale_s)]);
    SensitivityRow { knob, value, serverless: get("serverless"), container: get("container"), hybrid: get("hybrid") }
}

/// One knob at a time around the default scenario.
pub fn sensitivity(model: &ServiceModel, seed: u64) -> Result<Vec<SensitivityRow>, String> {
    let base = super::default_profile();
    let cfg = Config::default();
    let three = ["serverless", "container", "hybrid"];
    let mut rows = Vec::new();
    rows.push(row_of("default", "-".into(), &burst_scenario(model, &base, &cfg, seed, &three)?));
    for mult in [5.0, 20.0] {
        let mut p = base.clone();
        p.burst_multiplier = mult;
        rows.push(row_of("burst multiplier", format!("{mult}x (default {})", c::BURST_MULTIPLIER), &burst_scenario(model, &p, &cfg, seed, &three)?));
    }
    for start in [10.0, 120.0] {
        let cfg = Config { cpu_pod_start_s: start, ..Config::default() };
        rows.push(row_of("CPU pod start", format!("{start} s (default {})", c::CPU_POD_START_S), &burst_scenario(model, &base, &cfg, seed, &three)?));
    }
    for f in [0.5, 2.0] {
        let cfg = Config { prices: cfg.prices.scaled(f), ..Config::default() };
        rows.push(row_of("serverless price x", format!("{f}"), &burst_scenario(model, &base, &cfg, seed, &three)?));
    }
    for pc in [5usize, 20] {
        let cfg = Config { provisioned: pc, ..Config::default() };
        rows.push(row_of("provisioned concurrency", format!("{pc} (serverless and hybrid)"), &burst_scenario(model, &base, &cfg, seed, &three)?));
    }
    for cold in [300.0, 1500.0] {
        let cfg = Config { platform_cold_p50_ms: cold, platform_cold_p99_ms: cold * 2.5, ..Config::default() };
        rows.push(row_of("platform cold start p50", format!("{cold} ms (default {})", c::LAMBDA_PLATFORM_COLD_P50_MS), &burst_scenario(model, &base, &cfg, seed, &three)?));
    }
    for f in [0.1, 0.6] {
        let cfg = Config { policy: PolicyKnobs { short_overflow_fraction: f, ..PolicyKnobs::default() }, ..Config::default() };
        rows.push(row_of("short overflow fraction (hybrid)", format!("{f} (default {})", c::SHORT_OVERFLOW_FRACTION), &burst_scenario(model, &base, &cfg, seed, &three)?));
    }
    {
        let cfg = Config { policy: PolicyKnobs { cost_rule: false, ..PolicyKnobs::default() }, ..Config::default() };
        rows.push(row_of("cost rule (hybrid)", "off (default on)".into(), &burst_scenario(model, &base, &cfg, seed, &three)?));
    }
    for e in [0.0, 0.1] {
        let cfg = Config { policy: PolicyKnobs { exercise_share: e, ..PolicyKnobs::default() }, ..Config::default() };
        rows.push(row_of("exercise share (hybrid)", format!("{e} (default {})", c::EXERCISE_SHARE), &burst_scenario(model, &base, &cfg, seed, &three)?));
    }
    Ok(rows)
}

pub fn sensitivity_table(rows: &[SensitivityRow]) -> String {
    let f = |x: Option<f64>, d: usize| x.map_or("—".into(), |v| format!("{v:.d$}"));
    let mut s = String::from(
        "| knob | value | p95 S / C / H (ms) | p99.9 burst S / C / H (ms) | cost S / C / H | time to scale S / C / H (s) |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let col = |i: usize, d: usize| format!("{} / {} / {}", f(r.serverless[i], d), f(r.container[i], d), f(r.hybrid[i], d));
        s += &format!("| {} | {} | {} | {} | {} | {} |\n", r.knob, r.value, col(0, 0), col(1, 0), col(2, 2), col(3, 0));
    }
    s
}
