//! Table 3 and the closed loop over several seeds: each seed draws new arrivals, service
//! times, cold starts and policy draws; every metric is reported as its mean with a 95 %
//! confidence interval (Student's t over the seeds, so it says how much the seed moves the
//! number, not how the model errs), plus min and max.

use super::experiments::{burst_scenario, closed_loop, parallel};
use super::workload::ServiceModel;
use super::{default_profile, Config};
use serde::Serialize;
use std::collections::BTreeMap;

/// Strategies of the burst scenario run for every seed.
pub const STRATEGIES: [&str; 4] = ["serverless", "container", "hybrid", "hybrid_no_cost"];

#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub mean: f64,
    /// Half-width of the 95 % interval (t quantile, n - 1 degrees of freedom); 0 for n = 1.
    pub ci95: f64,
    pub min: f64,
    pub max: f64,
    pub values: Vec<f64>,
}

/// Two-sided 95 % Student t quantile for `df` degrees of freedom.
pub fn t95(df: usize) -> f64 {
    const T: [f64; 10] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228];
    match df {
        0 => 0.0,
        1..=10 => T[df - 1],
        11..=20 => 2.086,
        21..=30 => 2.042,
        _ => 1.96,
    }
}

impl Estimate {
    pub fn of(values: Vec<f64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        let ci95 = t95(values.len() - 1) * (var / n).sqrt();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Estimate { mean, ci95, min, max, values })
    }
}

/// Metric -> estimate, per strategy (or closed-loop policy).
pub type Table = BTreeMap<String, BTreeMap<&'static str, Estimate>>;

#[derive(Debug, Clone, Serialize)]
pub struct Seeds {
    pub seeds: Vec<u64>,
    /// Where each workload's service times come from (raw samples or the fallback fit).
    pub service_time_sources: serde_json::Value,
    pub table3: Table,
    pub closed_loop: Table,
}

fn push(t: &mut BTreeMap<String, BTreeMap<&'static str, Vec<f64>>>, who: &str, metric: &'static str, v: Option<f64>) {
    if let Some(v) = v.filter(|v| v.is_finite()) {
        t.entry(who.to_owned()).or_default().entry(metric).or_default().push(v);
    }
}

fn estimates(raw: BTreeMap<String, BTreeMap<&'static str, Vec<f64>>>) -> Table {
    raw.into_iter()
        .map(|(who, m)| (who, m.into_iter().filter_map(|(k, v)| Estimate::of(v).map(|e| (k, e))).collect()))
        .collect()
}

/// Runs the burst scenario (STRATEGIES) and the closed loop for every seed.
pub fn run(model: &ServiceModel, seeds: &[u64], horizon_s: f64, slowdown_at_s: f64) -> Result<Seeds, String> {
    let profile = default_profile();
    let cfg = Config::default();
    let per_seed = parallel(seeds, |&seed| -> Result<_, String> {
        let main = burst_scenario(model, &profile, &cfg, seed, &STRATEGIES)?;
        let cl = closed_loop(model, &cfg, seed, horizon_s, slowdown_at_s)?;
        Ok((main.stats, cl))
    });
    let mut t3 = BTreeMap::new();
    let mut cl = BTreeMap::new();
    for r in per_seed {
        let (stats, lines) = r?;
        for (name, s) in &stats {
            push(&mut t3, name, "p95_ms", s.p95_ms);
            push(&mut t3, name, "p95_all_ms", s.p95_all_ms);
            push(&mut t3, name, "p999_ms", s.p999_ms);
            push(&mut t3, name, "cost", Some(s.cost));
            push(&mut t3, name, "time_to_scale_s", Some(s.time_to_scale_s));
            push(&mut t3, name, "serverless_share_short", Some(s.serverless_share_short));
            let init = s.per_workload.get("transcode").and_then(|w| w.p95_ms).map(|ms| ms / 1000.0);
            push(&mut t3, name, "transcode_init_p95_s", init);
        }
        for l in &lines.lines {
            push(&mut cl, l.name, "before_p95_ms", l.before_p95_ms);
            push(&mut cl, l.name, "after_p95_ms", l.after_p95_ms);
            push(&mut cl, l.name, "before_serverless_share", Some(l.before_serverless_share));
            push(&mut cl, l.name, "after_serverless_share", Some(l.after_serverless_share));
            // Seeds where nothing moved count as the whole post-slowdown span.
            push(&mut cl, l.name, "moved_within_s", Some(l.moved_within_s.unwrap_or(horizon_s - slowdown_at_s)));
        }
    }
    Ok(Seeds { seeds: seeds.to_vec(), service_time_sources: model.sources(), table3: estimates(t3), closed_loop: estimates(cl) })
}

/// "mean ± ci (min–max)" with `d` decimals.
pub fn cell(e: Option<&Estimate>, d: usize) -> String {
    e.map_or("—".into(), |e| format!("{:.d$} ± {:.d$} ({:.d$}–{:.d$})", e.mean, e.ci95, e.min, e.max))
}

/// The markdown tables of a multi-seed run.
pub fn tables(s: &Seeds) -> String {
    let mut out = format!("Seeds {:?}: mean ± 95 % CI half-width (min–max)\n\n", s.seeds);
    out += "| metric | serverless-only | container-only | hybrid (Router) | hybrid, no cost rule |\n|---|---|---|---|---|\n";
    for (metric, label, d) in [
        ("p95_ms", "avg p95, thumbnail/metadata/auth (ms)", 0),
        ("p999_ms", "p99.9 first byte under bursts (ms)", 0),
        ("cost", "cost (serverless-only = 1)", 3),
        ("time_to_scale_s", "time to scale (s)", 1),
        ("transcode_init_p95_s", "transcode job init p95 (s)", 1),
        ("serverless_share_short", "short work on Lambda (share)", 3),
    ] {
        out += &format!("| {label} |");
        for st in STRATEGIES {
            out += &format!(" {} |", cell(s.table3.get(st).and_then(|m| m.get(metric)), d));
        }
        out += "\n";
    }
    out += "\n| closed loop | p95 before (ms) | p95 after (ms) | Lambda share before | Lambda share after | moved within (s) |\n|---|---|---|---|---|---|\n";
    for (name, m) in &s.closed_loop {
        out += &format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            cell(m.get("before_p95_ms"), 0),
            cell(m.get("after_p95_ms"), 0),
            cell(m.get("before_serverless_share"), 3),
            cell(m.get("after_serverless_share"), 3),
            cell(m.get("moved_within_s"), 0)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_by_hand() {
        let e = Estimate::of(vec![1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        // mean 3, sd sqrt(2.5), se 0.7071, t(4) 2.776 -> 1.963
        assert!((e.mean - 3.0).abs() < 1e-12);
        assert!((e.ci95 - 1.963).abs() < 1e-3, "{}", e.ci95);
        assert_eq!((e.min, e.max), (1.0, 5.0));
        assert_eq!(Estimate::of(vec![7.0]).unwrap().ci95, 0.0);
        assert!(Estimate::of(vec![]).is_none());
    }
}
