//! The closed loop, config reload, the decision log and its replay, warm-up hints.

mod common;

use common::*;
use kiln_router_client::*;
use serde_json::json;

fn container_share(r: &mut Router, v: &CapacityView, n: usize) -> f64 {
    let on = (0..n)
        .filter(|i| r.place(&feats(&i.to_string(), "render", 65.0), v, NOW).target.tier == Tier::Container)
        .count();
    on as f64 / n as f64
}

#[test]
fn a_degrading_tier_loses_traffic_within_a_few_observations_and_wins_it_back() {
    let mut c = quiet();
    let rule = c.kinds.get_mut("render").unwrap();
    rule.overflow.p95_ms = Some(150.0);
    rule.overflow.fraction = 0.5;
    let mut r = Router::new(c, 21).unwrap();
    let mut v = view(vec![worker("w1", "render", 8, 0, 0, 60.0)]);
    warm(&mut v, "kiln", 4);
    for _ in 0..50 {
        r.observe(Tier::Container, "render", 60.0, 65.0);
    }
    assert_eq!(container_share(&mut r, &v, 1000), 1.0);
    // Latency on the container tier rises; within 10 observations it loses about half.
    let mut lost_after = None;
    for i in 1..=10 {
        r.observe(Tier::Container, "render", 60.0 + 40.0 * i as f64, 65.0);
        if container_share(&mut r, &v, 400) < 0.7 {
            lost_after = Some(i);
            break;
        }
    }
    let n = lost_after.expect("container share did not fall within 10 observations");
    assert!(n <= 6, "took {n} observations");
    let share = container_share(&mut r, &v, 4000);
    assert!((share - 0.5).abs() < 0.03, "share {share}");
    let d = r.place(&feats("x", "render", 65.0), &v, NOW);
    assert!(d.reasons[0].starts_with("overflow: container p95 "), "{:?}", d.reasons);
    // Healthy again: the window forgets, traffic returns, no restart.
    for _ in 0..200 {
        r.observe(Tier::Container, "render", 60.0, 65.0);
    }
    assert_eq!(container_share(&mut r, &v, 1000), 1.0);
}

#[test]
fn duration_predictions_follow_observed_latency() {
    let mut r = Router::new(quiet(), 1).unwrap();
    let v = view(vec![]);
    let f = feats("j", "render", 40_000.0);
    let first = r.place(&f, &v, NOW);
    assert_eq!(first.target.tier, Tier::Serverless);
    // Runs on the function keep taking twice the prediction: the ratio rises until the
    // request is predicted too long for the function.
    let mut flipped = None;
    for i in 1..=20 {
        let d = r.place(&f, &v, NOW);
        if d.target.tier == Tier::Container {
            assert!(d.reasons[0].starts_with("too long for serverless: predicted "), "{:?}", d.reasons);
            flipped = Some(i);
            break;
        }
        r.observe(Tier::Serverless, "render", 80_000.0, d.predicted_ms);
    }
    assert!(flipped.is_some(), "prediction never crossed the serverless limit");
    assert!(r.closed_loop().ratio(Tier::Serverless, "render") > 1.5);
    assert_eq!(r.closed_loop().ratio(Tier::Container, "render"), 1.0);
    assert!(r.predicted_run_ms(&f, Tier::Serverless) > 60_000.0);
    assert_eq!(r.predicted_run_ms(&f, Tier::Container), 40_000.0);
}

#[test]
fn reload_bumps_the_version_and_keeps_the_loop() {
    let mut r = Router::new(quiet(), 1).unwrap();
    assert_eq!(r.version(), 1);
    for _ in 0..10 {
        r.observe(Tier::Serverless, "render", 70.0, 65.0);
    }
    let v = view(vec![]);
    assert_eq!(r.place(&feats("j", "render", 65.0), &v, NOW).target.tier, Tier::Serverless);
    assert_eq!(
        r.reload_json(r#"{"serverless": {"enabled": false}, "exercise_share": 0.0, "dual_share": 0.0}"#).unwrap(),
        2
    );
    let d = r.place(&feats("j", "render", 65.0), &v, NOW);
    assert_eq!((d.target.clone(), d.policy_version), (Target::container_queue(), 2));
    assert!(r.reload_json(r#"{"exercise_share": 2.0}"#).is_err());
    assert!(r.reload_json("not json").is_err());
    assert_eq!(r.version(), 2);
    assert!(!r.config().serverless.enabled, "a refused reload changes nothing");
    assert_eq!(r.reload(PolicyConfig { version: 10, ..quiet() }).unwrap(), 10);
    assert_eq!(r.closed_loop().p95(Tier::Serverless, "render"), Some(70.0));
}

/// A mixed workload through one router; returns the log lines.
fn mixed_log(r: &mut Router) -> Vec<String> {
    let mut v = view(vec![
        worker("w1", "thumbnail", 4, 1, 0, 60.0),
        worker("w2", "render", 2, 2, 9, 80.0),
        gpu_worker("g1", "infer", 2, 1, 0, 15.0),
        worker("w3", "transcode", 2, 0, 0, 5000.0),
    ]);
    warm(&mut v, "kiln", 1);
    let mut lines = Vec::new();
    for i in 0..2000u64 {
        let accel = if i % 3 == 0 { "gpu" } else { "auto" };
        let env = match i % 4 {
            0 => {
                json!({"id": format!("t{i}"), "kind": "thumbnail", "input": {"source_width": 4000, "source_height": 3000},
                        "deadline_ms": 150})
            }
            1 => {
                json!({"id": format!("r{i}"), "kind": "render", "input": {"pages": [{}, {}]}, "tenant": "acme", "priority": "batch"})
            }
            2 => json!({"id": format!("i{i}"), "kind": "infer",
                        "input": {"model": "detector", "images": ["a"], "accel": accel}}),
            _ => {
                json!({"id": format!("v{i}"), "kind": "transcode", "input": {"duration_s": 5 + i % 40, "ladder": [{}, {}]}})
            }
        };
        let f = r.features(&env, Some(1_000_000)).unwrap();
        if i % 7 == 0 {
            v.invocation_started("kiln");
        }
        let rec = r.place_logged(&f, &v, NOW);
        let lat = rec.decision.predicted_ms * (1.0 + (i % 5) as f64 * 0.3);
        r.observe(rec.decision.target.tier, &f.kind, lat, rec.decision.predicted_ms);
        lines.push(rec.to_json_line());
    }
    lines
}

#[test]
fn replay_with_the_same_policy_finds_no_difference() {
    // A large exercise share: the log's fallbacks are mostly loaded or degraded (the pool
    // has invocations piling up, the thumbnail workers' p95 passes the budget), where the
    // exercise rule skips or takes a tenth of the share, and the log must still hold some.
    let mut c = PolicyConfig { exercise_share: 0.2, ..PolicyConfig::default() };
    c.tenants
        .insert("acme".into(), TenantPin { tier: Tier::Container, kinds: vec![], priority: Some(Priority::Batch) });
    let mut r = Router::new(c, 77).unwrap();
    let lines = mixed_log(&mut r);
    let rep = r.replay(lines.iter().map(String::as_str));
    assert_eq!(rep.decisions, 2000);
    assert!(rep.unreadable.is_empty());
    assert_eq!(rep.differences(), 0, "{:?}", rep.changed.first());
    assert_eq!(rep.logged_by_tier, rep.replayed_by_tier);
    assert!(rep.logged_by_tier.serverless > 0 && rep.logged_by_tier.container > 0);
    assert!(rep.logged_exercise > 0 && rep.logged_exercise == rep.replayed_exercise);
    assert_eq!(rep.logged_dual, rep.replayed_dual);
    // Every log line is also a decision line.
    let rec = LogRecord::from_json_line(&lines[0]).unwrap();
    let d: Decision = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(d, rec.decision);
    assert_eq!(serde_json::from_str::<LogRecord>(&rec.to_json_line()).unwrap(), rec);
}

#[test]
fn replay_with_another_policy_counts_the_differences() {
    let mut r = Router::new(PolicyConfig::default(), 78).unwrap();
    let mut lines = mixed_log(&mut r);
    lines.insert(3, "not a decision".into());
    lines.insert(5, String::new());
    let other = PolicyConfig {
        serverless: ServerlessLimits { enabled: false, ..ServerlessLimits::default() },
        ..PolicyConfig::default()
    };
    let rep = replay(lines.iter().map(String::as_str), &other, 9);
    assert_eq!(rep.decisions, 2000);
    assert_eq!(rep.unreadable.len(), 1);
    assert_eq!(rep.unreadable[0].0, 4);
    assert_eq!(rep.replayed_by_tier.serverless, 0);
    assert_eq!(rep.replayed_dual, 0);
    assert!(rep.logged_by_tier.serverless > 0);
    assert_eq!(rep.tier_changes(), rep.logged_by_tier.serverless);
    assert!(rep.differences() >= rep.logged_by_tier.serverless);
    assert!(rep.changed.iter().all(|c| c.replayed.policy_version == 9));
    let c = rep.changed.iter().find(|c| c.logged.target.tier == Tier::Serverless).unwrap();
    assert!(c.replayed.reasons.iter().any(|r| r == "serverless tier disabled"), "{:?}", c.replayed.reasons);
}

#[test]
fn hints_suggest_prewarm_model_load_and_slots() {
    let c = PolicyConfig::default();
    let mut v = view(vec![worker("w1", "infer", 4, 2, 0, 15.0), worker("w0", "infer", 4, 3, 0, 15.0)]);
    warm(&mut v, "kiln", 1);
    let forecast = Forecast {
        at_ms: NOW + 30_000,
        headroom: 1.0,
        entries: vec![
            ForecastEntry { kind: "thumbnail".into(), model: None, rps: 50.0, predicted_ms: 64.0, needs_gpu: false },
            ForecastEntry {
                kind: "infer".into(),
                model: Some("detector".into()),
                rps: 100.0,
                predicted_ms: 20.0,
                needs_gpu: false,
            },
            ForecastEntry { kind: "render".into(), model: None, rps: 10.0, predicted_ms: 500.0, needs_gpu: false },
        ],
    };
    let h = hints(&v, &forecast, &c, NOW);
    assert_eq!(h.len(), 3, "{h:?}");
    assert_eq!(h[0].action, HintAction::PrewarmFunction { function: "kiln".into() });
    assert_eq!((h[0].count, h[0].tier), (3, Tier::Serverless));
    // infer: 2 slots needed, 3 free: only the model is missing.
    assert_eq!(h[1].action, HintAction::LoadModel { model: "detector".into() });
    assert_eq!(h[1].worker_id.as_deref(), Some("w1"));
    assert_eq!(h[2].action, HintAction::WarmKind);
    assert_eq!((h[2].kind.as_str(), h[2].count, h[2].by_ms), ("render", 5, NOW + 30_000));
    let line = serde_json::to_value(&h[1]).unwrap();
    assert_eq!(line["action"], "load_model");
    assert_eq!(line["model"], "detector");
    let back: WarmupHint = serde_json::from_value(line).unwrap();
    assert_eq!(back, h[1]);
    // Once the model is warm somewhere, no load hint.
    let mut r = worker("w1", "infer", 4, 2, 0, 15.0);
    r.seq = 2;
    r.warm.models = vec!["detector".into()];
    v.ingest_report(r, NOW);
    assert!(hints(&v, &forecast, &c, NOW).iter().all(|x| !matches!(x.action, HintAction::LoadModel { .. })));
}

/// Rough placement overhead (run with `--ignored --nocapture`; numbers from a debug build
/// are an upper bound): p50/p99 of `Router::place_logged` over 20 workers.
#[test]
#[ignore]
fn placement_overhead() {
    let mut r = Router::new(PolicyConfig::default(), 1).unwrap();
    let mut v = view((0..20).map(|i| worker(&format!("w{i:02}"), "thumbnail", 8, i % 9, i % 3, 60.0)).collect());
    warm(&mut v, "kiln", 4);
    let f = feats("j", "thumbnail", 64.0);
    let mut us: Vec<f64> = (0..20_000)
        .map(|_| {
            let t = std::time::Instant::now();
            std::hint::black_box(r.place_logged(&f, &v, NOW));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    us.sort_by(f64::total_cmp);
    println!("place_logged: p50 {:.1} us, p99 {:.1} us", us[us.len() / 2], us[us.len() * 99 / 100]);
}
