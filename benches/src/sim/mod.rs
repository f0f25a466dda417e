//! The hybrid simulator of issue 18: a deterministic discrete-event model of kiln's two tiers
//! (Lambda image function, Kubernetes pods) serving the seed paper's six workloads, under three
//! strategies (serverless-only, container-only, hybrid placed by router-client's `Router`; the
//! old stateless `place` kept as the `hybrid_static_place` variant), to
//! rerun the argument of the seed's Table 3 and Figures 4-7 with kiln's measured service times.
//!
//! Layout: `constants` (every number, with its source), `engine` (event queue, clock, RNG),
//! `workload` (Table 1, service times), `arrivals` (Fig 7 profile, steady sweep), `tiers`
//! (Lambda, pods, HPA, reports), `strategy` (the strategies), `policy` (the Router, its
//! PolicyConfig and view, fed by the simulation), `run` (the
//! event loop), `cost`, `report` (Table 3, Fig 4), `plot` (Figs 5-7, closed loop, SVG),
//! `experiments` (the default scenario, the cost sweep, the closed loop, the sensitivity sweep),
//! `seeds` (Table 3 and the closed loop over several seeds, with confidence intervals).

pub mod arrivals;
pub mod constants;
pub mod cost;
pub mod engine;
pub mod experiments;
pub mod plot;
pub mod policy;
pub mod report;
pub mod run;
pub mod seeds;
pub mod strategy;
pub mod tiers;
pub mod workload;

use constants as c;
use serde::Serialize;

/// The knobs of one run (defaults from constants.rs; the sensitivity sweep moves them).
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Provisioned Lambda instances (serverless and hybrid; never for container-only).
    pub provisioned: usize,
    pub cpu_pod_start_s: f64,
    pub gpu_pod_start_s: f64,
    pub prices: cost::Prices,
    /// Container service times are multiplied by `.1` from `.0` seconds on (closed loop).
    pub slowdown: Option<(f64, f64)>,
    /// Old `place` only (hybrid_static_place): the router adds its own placements to the last
    /// report of a pod until the next one (false: it sees the reports only, up to 2 s old).
    /// The Router's CapacityView counts its own placements itself (`CapacityView::placed`).
    pub track_placements: bool,
    /// Interactive requests carry their Table 1 budget as a deadline (false: no deadlines,
    /// which switches off the old `place`'s cold-start override).
    pub deadlines: bool,
    /// Hybrid: when the policy picks a container worker with no free slot, the router puts the
    /// job on the pool's pull queue (Kafka) instead of that worker's queue.
    pub pull_when_full: bool,
    /// Statistics and bills start here.
    pub warmup_s: f64,
    pub keep_alive_s: f64,
    pub platform_cold_p50_ms: f64,
    pub platform_cold_p99_ms: f64,
    /// The hybrid Router's knobs (overflow fraction, exercise and dual shares, closed loop).
    pub policy: policy::PolicyKnobs,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            provisioned: 0,
            cpu_pod_start_s: c::CPU_POD_START_S,
            gpu_pod_start_s: c::GPU_POD_START_S,
            prices: cost::Prices::default(),
            slowdown: None,
            track_placements: true,
            deadlines: true,
            pull_when_full: false,
            warmup_s: c::WARMUP_S,
            keep_alive_s: c::LAMBDA_KEEP_ALIVE_S,
            platform_cold_p50_ms: c::LAMBDA_PLATFORM_COLD_P50_MS,
            platform_cold_p99_ms: c::LAMBDA_PLATFORM_COLD_P99_MS,
            policy: policy::PolicyKnobs::default(),
        }
    }
}

/// The seed's Figure 7 profile with the default constants.
pub fn default_profile() -> arrivals::Profile {
    let mut mix = [0.0; 6];
    for k in workload::Kind::ALL {
        mix[k.index()] = k.spec().mix;
    }
    arrivals::Profile {
        horizon_s: c::SCENARIO_S,
        baseline_rps: c::BASELINE_RPS,
        amplitude: c::BASELINE_AMPLITUDE,
        period_s: c::BASELINE_PERIOD_S,
        burst_onsets_s: c::BURST_ONSETS_S.to_vec(),
        burst_duration_s: c::BURST_DURATION_S,
        burst_ramp_s: c::BURST_RAMP_S,
        burst_multiplier: c::BURST_MULTIPLIER,
        mix,
    }
}

/// What the binary runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A short scenario (tests): 1,200 s, bursts at 400 and 800 s, a 2-point cost sweep, a
    /// 600 s closed loop.
    pub quick: bool,
    pub sensitivity: bool,
    /// Ignore samples.json's raw samples: every service time from the fits through the
    /// summaries copied from RESULTS.md (`--fit-only`).
    pub fit_only: bool,
}

/// Every experiment's results, plus the plots' inputs.
pub struct Output {
    pub json: serde_json::Value,
    pub main: experiments::Main,
    pub sweep: experiments::Sweep,
    pub closed_loop: experiments::ClosedLoop,
    pub sensitivity: Vec<experiments::SensitivityRow>,
}

/// The profile of a run: the default one, or the short one of `Options::quick`.
pub fn profile_for(opts: &Options) -> arrivals::Profile {
    let mut p = default_profile();
    if opts.quick {
        p.horizon_s = 1200.0;
        p.burst_onsets_s = vec![400.0, 800.0];
        p.baseline_rps = 20.0;
    }
    p
}

/// Runs everything for `seed`. Deterministic: the same seed gives the same JSON.
pub fn run_all(seed: u64, opts: &Options) -> Result<Output, String> {
    let model = if opts.fit_only { workload::ServiceModel::load_fit_only()? } else { workload::ServiceModel::load()? };
    let profile = profile_for(opts);
    let mut cfg = Config::default();
    if opts.quick {
        cfg.warmup_s = 200.0;
    }
    let names: Vec<&str> = experiments::VARIANTS.iter().map(|v| v.name).collect();
    let main = experiments::burst_scenario(&model, &profile, &cfg, seed, &names)?;
    let rates: Vec<f64> = if opts.quick { vec![1.0, 30.0] } else { c::SWEEP_RPS.to_vec() };
    let sweep = experiments::cost_sweep(&model, &Config::default(), seed, &rates)?;
    let (cl_horizon, cl_at) = if opts.quick { (600.0, 300.0) } else { (c::CLOSED_LOOP_S, c::CLOSED_LOOP_SLOWDOWN_AT_S) };
    let closed_loop = experiments::closed_loop(&model, &Config::default(), seed, cl_horizon, cl_at)?;
    let sensitivity = if opts.sensitivity { experiments::sensitivity(&model, seed)? } else { vec![] };

    let pick = |names: &[&str]| -> serde_json::Map<String, serde_json::Value> {
        names
            .iter()
            .filter_map(|n| main.stats.get(n).map(|s| (n.to_string(), serde_json::to_value(s).unwrap_or(serde_json::Value::Null))))
            .collect()
    };
    let mut fig4 = serde_json::Map::new();
    for (name, st) in &main.stats {
        let m: serde_json::Map<String, serde_json::Value> =
            st.per_workload.iter().map(|(k, w)| (k.to_string(), serde_json::json!(w.p95_ms))).collect();
        fig4.insert(name.to_string(), serde_json::Value::Object(m));
    }
    let json = serde_json::json!({
        "seed": seed,
        "quick": opts.quick,
        "strategies": pick(&["serverless", "container", "hybrid"]),
        "variants": pick(&["hybrid_no_cost", "hybrid_static_place", "hybrid_static_place_nodeadline", "hybrid_static_place_pull", "serverless_pc", "hybrid_pc"]),
        "policy_config": serde_json::to_value(policy::policy_config(&cfg)).unwrap_or(serde_json::Value::Null),
        "service_time_sources": model.sources(),
        "seed_table3": {
            "serverless": {"p95_ms": 476, "p999_ms": 2150, "cost": 1.00, "time_to_scale_s": "<1"},
            "container": {"p95_ms": 188, "p999_ms": 470, "cost": 0.84, "time_to_scale_s": 45},
            "hybrid": {"p95_ms": 120, "p999_ms": 230, "cost": 0.61, "time_to_scale_s": "<1"}
        },
        "per_workload_p95_ms": fig4,
        "cost_sweep": sweep,
        "closed_loop": closed_loop,
        "sensitivity": sensitivity,
        "requests": main.reqs.len(),
        "profile": {
            "horizon_s": profile.horizon_s, "warmup_s": cfg.warmup_s, "baseline_rps": profile.baseline_rps,
            "burst_onsets_s": profile.burst_onsets_s, "burst_duration_s": profile.burst_duration_s,
            "burst_multiplier": profile.burst_multiplier,
        },
        "config": cfg,
        "definitions": {
            "p95_ms": "mean over thumbnail, metadata, auth (the budgeted workloads all three strategies serve) of each workload's p95 response time",
            "p95_all_ms": "mean over every budgeted workload the strategy serves (transcode: time to first segment)",
            "p999_ms": "p99.9 first byte of thumbnail/metadata/auth requests that arrived inside a burst",
            "cost": "(Lambda + provisioned + CPU pods) / the same for serverless-only; GPU pods in cost_usd.gpu_pods_usd",
            "time_to_scale_s": "mean over bursts of the seconds from onset to the end of the last second in which < 95 % of short requests met their budget"
        }
    });
    Ok(Output { json, main, sweep, closed_loop, sensitivity })
}
