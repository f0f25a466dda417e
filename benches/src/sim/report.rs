//! From per-request outcomes to the seed's Table 3 rows and Figure 4 bars: per-workload
//! percentiles, the average p95, the p99.9 first byte under bursts, time to scale, and the
//! markdown tables the binary prints.
//!
//! Latency measured per workload (the seed's Table 1 contract): the response time for
//! thumbnail, metadata, auth and infer; the job init (first segment out) for transcode; the
//! first page for render, whose budget is "job latency, not request" (so render stays out of
//! the averages and its job completion is reported apart).

use super::arrivals::Profile;
use super::constants as c;
use super::cost::Bill;
use super::run::{RunResult, Served};
use super::workload::{Kind, Request};
use serde::Serialize;
use std::collections::BTreeMap;

/// Nearest-rank percentile of a sorted slice.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Kinds every strategy serves and that have a ms budget: the like-for-like average.
pub fn common_kinds() -> Vec<Kind> {
    Kind::ALL.iter().copied().filter(|k| !k.spec().needs_gpu && k.spec().budget_ms.is_some()).collect()
}

/// The latency the workload's contract is about, ms.
pub fn contract_latency(kind: Kind, first_byte_ms: f64, done_ms: f64) -> f64 {
    match kind {
        Kind::Transcode | Kind::Render => first_byte_ms,
        _ => done_ms,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadStats {
    pub requests: usize,
    pub served: usize,
    pub rejected: usize,
    pub on_serverless: usize,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub budget_ms: Option<f64>,
    pub within_budget: Option<f64>,
    /// Long jobs: p95 of job completion, seconds.
    pub job_p95_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StrategyStats {
    pub p95_ms: Option<f64>,
    pub p95_all_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub cost: f64,
    pub time_to_scale_s: f64,
    pub cost_usd: Bill,
    pub per_workload: BTreeMap<&'static str, WorkloadStats>,
    pub rejected_gpu: usize,
    pub rejected_throttled: usize,
    pub policy_sent_gpu_to_serverless: usize,
    pub serverless_share_short: f64,
    pub cold_starts: u64,
    pub place_calls: u64,
    /// Decisions by rule: `Decision::rule()` labels for the Router, `Placement::reason` for
    /// the old place.
    pub place_reasons: BTreeMap<&'static str, u64>,
    /// Router only: decisions that exercised the fallback, and dual-routed copies run.
    pub exercised: u64,
    pub shadows: u64,
    pub events: u64,
    pub clamped_events: u64,
    pub unfinished: usize,
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

fn in_window(r: &Request, warmup_s: f64, horizon_s: f64) -> bool {
    r.arrival_s >= warmup_s && r.arrival_s < horizon_s
}

/// First-byte latencies (sorted) of common short requests that arrived inside bursts.
pub fn burst_first_bytes(reqs: &[Request], run: &RunResult, warmup_s: f64, horizon_s: f64) -> Vec<f64> {
    let common = common_kinds();
    let mut v: Vec<f64> = reqs
        .iter()
        .zip(&run.outcomes)
        .filter(|(r, _)| r.in_burst && in_window(r, warmup_s, horizon_s) && common.contains(&r.kind))
        .filter(|(_, o)| matches!(o.served, Served::Serverless | Served::Container))
        .map(|(_, o)| o.first_byte_ms)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Seconds from a burst's onset to the end of the last second in which fewer than 95 % of
/// the common short requests met their budget (0: every second met it), averaged over the
/// bursts inside the measured window.
pub fn time_to_scale(reqs: &[Request], run: &RunResult, profile: &Profile, warmup_s: f64) -> f64 {
    let common = common_kinds();
    let mut per_burst = Vec::new();
    for &on in &profile.burst_onsets_s {
        if on < warmup_s || on >= profile.horizon_s {
            continue;
        }
        let secs = profile.burst_duration_s.ceil().max(1.0) as usize;
        let mut ok = vec![0usize; secs];
        let mut all = vec![0usize; secs];
        for (r, o) in reqs.iter().zip(&run.outcomes) {
            if r.arrival_s < on || r.arrival_s >= on + profile.burst_duration_s || !common.contains(&r.kind) {
                continue;
            }
            let b = ((r.arrival_s - on) as usize).min(secs - 1);
            all[b] += 1;
            let met = match (o.served, r.kind.spec().budget_ms) {
                (Served::Serverless | Served::Container, Some(budget)) => contract_latency(r.kind, o.first_byte_ms, o.done_ms) <= budget,
                _ => false,
            };
            if met {
                ok[b] += 1;
            }
        }
        let last_bad = (0..secs).rev().find(|&b| all[b] > 0 && (ok[b] as f64) < c::TIME_TO_SCALE_OK_SHARE * all[b] as f64);
        per_burst.push(last_bad.map_or(0.0, |b| b as f64 + 1.0));
    }
    if per_burst.is_empty() {
        0.0
    } else {
        per_burst.iter().sum::<f64>() / per_burst.len() as f64
    }
}

/// Everything one strategy's row needs. `serverless_bill` is the reference for `cost`.
pub fn stats(reqs: &[Request], run: &RunResult, profile: &Profile, warmup_s: f64, serverless_bill: Option<&Bill>) -> StrategyStats {
    let horizon_s = profile.horizon_s;
    let mut per_workload = BTreeMap::new();
    let (mut rej_gpu, mut rej_thr, mut rej_pol, mut unfinished) = (0, 0, 0, 0);
    let (mut short_n, mut short_sl) = (0usize, 0usize);
    for kind in Kind::ALL {
        let mut lat = Vec::new();
        let mut jobs = Vec::new();
        let (mut n, mut rejected, mut on_sl) = (0, 0, 0);
        for (r, o) in reqs.iter().zip(&run.outcomes) {
            if r.kind != kind || !in_window(r, warmup_s, horizon_s) {
                continue;
            }
            n += 1;
            match o.served {
                Served::Serverless | Served::Container => {
                    lat.push(contract_latency(kind, o.first_byte_ms, o.done_ms));
                    jobs.push(o.done_ms / 1000.0);
                    if o.served == Served::Serverless {
                        on_sl += 1;
                    }
                }
                Served::RejectedGpu => {
                    rejected += 1;
                    rej_gpu += 1;
                }
                Served::RejectedThrottled => {
                    rejected += 1;
                    rej_thr += 1;
                }
                Served::RejectedPolicyGpu => {
                    rejected += 1;
                    rej_pol += 1;
                }
                Served::Pending => unfinished += 1,
            }
        }
        if kind.spec().short {
            short_n += lat.len();
            short_sl += on_sl;
        }
        lat.sort_by(f64::total_cmp);
        jobs.sort_by(f64::total_cmp);
        let budget = kind.spec().budget_ms;
        let within = budget.filter(|_| !lat.is_empty()).map(|b| lat.iter().filter(|&&l| l <= b).count() as f64 / lat.len() as f64);
        let long = matches!(kind, Kind::Transcode | Kind::Render);
        per_workload.insert(
            kind.name(),
            WorkloadStats {
                requests: n,
                served: lat.len(),
                rejected,
                on_serverless: on_sl,
                p50_ms: percentile(&lat, 0.50).map(|x| round(x, 1)),
                p95_ms: percentile(&lat, 0.95).map(|x| round(x, 1)),
                p99_ms: percentile(&lat, 0.99).map(|x| round(x, 1)),
                budget_ms: budget,
                within_budget: within.map(|x| round(x, 4)),
                job_p95_s: if long { percentile(&jobs, 0.95).map(|x| round(x, 1)) } else { None },
            },
        );
    }
    let avg = |kinds: &[Kind]| {
        let v: Vec<f64> = kinds.iter().filter_map(|k| per_workload.get(k.name()).and_then(|w: &WorkloadStats| w.p95_ms)).collect();
        if v.is_empty() {
            None
        } else {
            Some(round(v.iter().sum::<f64>() / v.len() as f64, 1))
        }
    };
    let budgeted: Vec<Kind> = Kind::ALL.iter().copied().filter(|k| k.spec().budget_ms.is_some()).collect();
    let fb = burst_first_bytes(reqs, run, warmup_s, horizon_s);
    let cost = match serverless_bill {
        Some(b) if b.like_for_like() > 0.0 => round(run.bill.like_for_like() / b.like_for_like(), 3),
        _ => 1.0,
    };
    StrategyStats {
        p95_ms: avg(&common_kinds()),
        p95_all_ms: avg(&budgeted),
        p999_ms: percentile(&fb, 0.999).map(|x| round(x, 1)),
        cost,
        time_to_scale_s: round(time_to_scale(reqs, run, profile, warmup_s), 1),
        cost_usd: Bill {
            lambda_usd: round(run.bill.lambda_usd, 4),
            provisioned_usd: round(run.bill.provisioned_usd, 4),
            cpu_pods_usd: round(run.bill.cpu_pods_usd, 4),
            gpu_pods_usd: round(run.bill.gpu_pods_usd, 4),
        },
        per_workload,
        rejected_gpu: rej_gpu,
        rejected_throttled: rej_thr,
        policy_sent_gpu_to_serverless: rej_pol,
        serverless_share_short: if short_n > 0 { round(short_sl as f64 / short_n as f64, 4) } else { 0.0 },
        cold_starts: run.cold_starts,
        place_calls: run.policy.calls,
        place_reasons: run.policy.reasons.clone(),
        exercised: run.exercised,
        shadows: run.shadows,
        events: run.events,
        clamped_events: run.clamped,
        unfinished,
    }
}

fn ms(x: Option<f64>) -> String {
    x.map_or("—".into(), |v| format!("{v:.0}"))
}

/// Table 3 beside the seed's, markdown.
pub fn table3(rows: &[(&str, &StrategyStats)]) -> String {
    let seed = [("serverless", "476", "2150", "1.00", "<1"), ("container", "188", "470", "0.84", "45"), ("hybrid", "120", "230", "0.61", "<1")];
    let mut s = String::from("| metric | serverless-only | container-only | hybrid | seed: serverless / container / hybrid |\n|---|---:|---:|---:|---|\n");
    let get = |name: &str| rows.iter().find(|(n, _)| *n == name).map(|(_, st)| *st);
    let cell = |name: &str, f: &dyn Fn(&StrategyStats) -> String| get(name).map_or("—".into(), f);
    let line = |label: &str, f: &dyn Fn(&StrategyStats) -> String, seed_col: String| {
        format!("| {label} | {} | {} | {} | {seed_col} |\n", cell("serverless", f), cell("container", f), cell("hybrid", f))
    };
    s += &line("avg p95, thumbnail/metadata/auth (ms)", &|st| ms(st.p95_ms), format!("{} / {} / {} (all six)", seed[0].1, seed[1].1, seed[2].1));
    s += &line("avg p95, all budgeted workloads served (ms)", &|st| ms(st.p95_all_ms), "—".into());
    s += &line("p99.9 first byte under bursts (ms)", &|st| ms(st.p999_ms), format!("{} / {} / {}", seed[0].2, seed[1].2, seed[2].2));
    s += &line("cost (serverless-only = 1.00, GPU pods apart)", &|st| format!("{:.2}", st.cost), format!("{} / {} / {}", seed[0].3, seed[1].3, seed[2].3));
    s += &line("time to scale (s)", &|st| format!("{:.0}", st.time_to_scale_s), format!("{} / {} / {}", seed[0].4, seed[1].4, seed[2].4));
    s += &line("GPU work", &|st| if st.rejected_gpu > 0 { format!("no ({} rejected)", st.rejected_gpu) } else { "yes".into() }, "No / Yes / Yes".into());
    s
}

/// Figure 4 as a table: p95 per workload per strategy.
pub fn per_workload_table(rows: &[(&str, &StrategyStats)]) -> String {
    let mut s = String::from("| workload | budget ms | ");
    s += &rows.iter().map(|(n, _)| format!("{n} p95 ms")).collect::<Vec<_>>().join(" | ");
    s += " |\n|---|---:|";
    s += &"---:|".repeat(rows.len());
    s += "\n";
    for kind in Kind::ALL {
        let b = kind.spec().budget_ms.map_or("job".into(), |b| format!("{b:.0}"));
        s += &format!("| {} | {b} | ", kind.name());
        let cells: Vec<String> = rows.iter().map(|(_, st)| st.per_workload.get(kind.name()).map_or("—".into(), |w| ms(w.p95_ms))).collect();
        s += &cells.join(" | ");
        s += " |\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.95), Some(950.0));
        assert_eq!(percentile(&v, 0.999), Some(999.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(common_kinds(), vec![Kind::Thumbnail, Kind::Metadata, Kind::Auth]);
    }
}
