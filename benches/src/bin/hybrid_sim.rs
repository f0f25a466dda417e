//! `hybrid-sim`: the issue-18 simulator. Replays the seed paper's burst profile against
//! serverless-only, container-only and hybrid (router-client's `Router`; the old `place` as a
//! variant) deployments of kiln and
//! prints Table 3, the per-workload p95 (Fig 4), the cost sweep (Fig 6) and the closed loop.
//!
//! ```text
//! cargo run --release -p kiln-benches --bin hybrid-sim -- --seed 1 [--json] [--plots DIR]
//!     [--sweep sensitivity] [--quick] [--fit-only]
//! cargo run --release -p kiln-benches --bin hybrid-sim -- --seeds 5 [--json] [--fit-only]
//! ```
//!
//! `--fit-only` ignores samples.json's raw samples (the benches' `--samples` output) and draws
//! every service time from the fits through the summaries copied from RESULTS.md.
//!
//! `--seeds K` runs the burst scenario (serverless, container, hybrid, hybrid without the cost
//! rule) and the closed loop for seeds 1..=K and prints every metric as mean ± 95 % CI.

use anyhow::{anyhow, bail, Context, Result};
use kiln_benches::sim::{self, constants, experiments, report, seeds, workload, Options};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<()> {
    let mut seed = 1u64;
    let mut json = false;
    let mut plots: Option<PathBuf> = None;
    let mut opts = Options::default();
    let mut n_seeds: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seed" => seed = args.next().context("--seed needs a value")?.parse().context("--seed: not a number")?,
            "--json" => json = true,
            "--plots" => plots = Some(args.next().context("--plots needs a directory")?.into()),
            "--sweep" => match args.next().as_deref() {
                Some("sensitivity") => opts.sensitivity = true,
                other => bail!("--sweep: unknown sweep {other:?} (known: sensitivity)"),
            },
            "--quick" => opts.quick = true,
            "--fit-only" => opts.fit_only = true,
            "--seeds" => {
                let k: u64 = args.next().context("--seeds needs a count")?.parse().context("--seeds: not a number")?;
                if k == 0 {
                    bail!("--seeds: at least 1");
                }
                n_seeds = Some(k);
            }
            "-h" | "--help" => {
                println!("hybrid-sim [--seed N] [--json] [--plots DIR] [--sweep sensitivity] [--quick] [--fit-only] | --seeds K [--json] [--fit-only]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let t0 = Instant::now();
    if let Some(k) = n_seeds {
        let model = if opts.fit_only { workload::ServiceModel::load_fit_only() } else { workload::ServiceModel::load() };
        let model = model.map_err(|e| anyhow!(e))?;
        let list: Vec<u64> = (1..=k).collect();
        let s = seeds::run(&model, &list, constants::CLOSED_LOOP_S, constants::CLOSED_LOOP_SLOWDOWN_AT_S).map_err(|e| anyhow!(e))?;
        eprintln!("hybrid-sim: seeds 1..={k}, {:.1} s wall", t0.elapsed().as_secs_f64());
        if json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            println!("{}", seeds::tables(&s));
        }
        return Ok(());
    }
    let out = sim::run_all(seed, &opts).map_err(|e| anyhow!(e))?;
    eprintln!("hybrid-sim: seed {seed}, {} requests in the burst scenario, {:.1} s wall", out.main.reqs.len(), t0.elapsed().as_secs_f64());
    if let Some(dir) = &plots {
        let files = sim::plot::all(&out.main, Some(&out.sweep), Some(&out.closed_loop), dir).map_err(|e| anyhow!("plots: {e}"))?;
        for f in files {
            eprintln!("wrote {f}");
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out.json)?);
        return Ok(());
    }
    let rows: Vec<(&str, &report::StrategyStats)> =
        ["serverless", "container", "hybrid"].iter().filter_map(|n| out.main.stats.get(n).map(|s| (*n, s))).collect();
    println!("## Table 3 (seed {seed})\n\n{}", report::table3(&rows));
    let all: Vec<(&str, &report::StrategyStats)> = out.main.stats.iter().map(|(n, s)| (*n, s)).collect();
    println!("## p95 per workload (Fig 4)\n\n{}", report::per_workload_table(&all));
    println!("## Variants\n");
    for (n, s) in &all {
        println!(
            "- {n}: p95 {:?} ms, p99.9 burst {:?} ms, cost {:.3}, time to scale {:.0} s, short on serverless {:.1} %, cold starts {}, policy calls {}, exercised {}, dual copies {}, rules {:?}",
            s.p95_ms, s.p999_ms, s.cost, s.time_to_scale_s, s.serverless_share_short * 100.0, s.cold_starts, s.place_calls, s.exercised, s.shadows, s.place_reasons
        );
    }
    println!("\n## Cost sweep (Fig 6, one thumbnail endpoint, USD/h)\n");
    println!("| req/s | serverless | container | hybrid | hybrid on serverless | p95 S / C / H ms |\n|---:|---:|---:|---:|---:|---|");
    for p in &out.sweep.points {
        println!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.1} % | {:?} / {:?} / {:?} |",
            p.rps, p.serverless_usd_per_h, p.container_usd_per_h, p.hybrid_usd_per_h, p.hybrid_serverless_share * 100.0, p.serverless_p95_ms, p.container_p95_ms, p.hybrid_p95_ms
        );
    }
    println!("\ncrossing (container cheaper above): {:?} req/s\n", out.sweep.crossing_rps);
    let cl = &out.closed_loop;
    println!("## Closed loop (container service x{} at {} s, no bursts; short requests)\n", cl.factor, cl.slowdown_at_s);
    println!("| policy | p95 before / after (ms) | on serverless before / after | on containers 60 s before / 60 s after | moved within |\n|---|---|---|---|---|");
    for l in &cl.lines {
        println!(
            "| {} | {:?} / {:?} | {:.1} % / {:.1} % | {:.1} % / {:.1} % | {:?} s |",
            l.name, l.before_p95_ms, l.after_p95_ms, l.before_serverless_share * 100.0, l.after_serverless_share * 100.0,
            l.container_share_60s_before * 100.0, l.container_share_60s_after * 100.0, l.moved_within_s
        );
    }
    println!("\nPer 10 s window around the slowdown (p95 ms / on Lambda):\n");
    for l in &cl.lines {
        let around: Vec<String> = l
            .windows
            .iter()
            .filter(|w| w.t_s >= cl.slowdown_at_s - 30.0 && w.t_s <= cl.slowdown_at_s + 100.0)
            .map(|w| format!("{:.0}s {} / {:.0} %", w.t_s, w.short_p95_ms.map_or("-".into(), |p| format!("{p:.0}")), w.serverless_share * 100.0))
            .collect();
        println!("- {}: {}", l.name, around.join(", "));
    }
    println!();
    if !out.sensitivity.is_empty() {
        println!("## Sensitivity (S = serverless-only, C = container-only, H = hybrid)\n\n{}", experiments::sensitivity_table(&out.sensitivity));
    }
    Ok(())
}
