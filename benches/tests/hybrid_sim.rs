//! The simulator's invariants (issue 18): every request finishes or is counted as rejected,
//! time never runs backwards, the same seed gives the same output, the hybrid strategy is
//! placed by router-client's `Router` (and the old variant by its stateless `place`).

use kiln_benches::sim::policy::{features, policy_config, SimRouter};
use kiln_benches::sim::run::{simulate, Served};
use kiln_benches::sim::strategy::{placement_request, policy, Strategy};
use kiln_benches::sim::workload::{Kind, Request, ServiceModel};
use kiln_benches::sim::{profile_for, run_all, Config, Options};
use kiln_router_client::{place, reason_label, Router, Tier};

/// Every label `Decision::rule()` can return (router-client's `reason_label`).
const ROUTER_RULES: [&str; 18] = [
    "pool queue",
    "cost",
    "exercise skipped",
    "overflow held",
    "overflow",
    "overflow not drawn",
    "cold-start override",
    "exercise",
    "dual",
    "gpu",
    "too long for serverless",
    "too big for serverless",
    "serverless disabled",
    "no container",
    "deadline",
    "primary",
    "tenant pin",
    "tenant pin ignored",
];

fn quick_requests(seed: u64) -> (Vec<Request>, f64) {
    let model = ServiceModel::load().expect("samples.json");
    let profile = profile_for(&Options { quick: true, ..Options::default() });
    (profile.generate(&model, seed), profile.horizon_s)
}

#[test]
fn every_request_finishes_or_is_rejected_and_time_never_runs_backwards() {
    let (reqs, horizon) = quick_requests(5);
    assert!(reqs.len() > 10_000, "{} requests", reqs.len());
    for strategy in [Strategy::Serverless, Strategy::Container, Strategy::Hybrid, Strategy::HybridStaticPlace] {
        let cfg = Config { warmup_s: 200.0, ..Config::default() };
        let run = simulate(&reqs, horizon, strategy, &cfg, 5).expect("policy config");
        assert_eq!(run.outcomes.len(), reqs.len(), "{strategy:?}: dual copies are not outcomes");
        assert_eq!(run.clamped, 0, "{strategy:?}: an event was scheduled in the past");
        let mut rejected = 0;
        for (r, o) in reqs.iter().zip(&run.outcomes) {
            match o.served {
                Served::Pending => panic!("{strategy:?}: request {} ({:?}) never finished", r.id, r.kind),
                Served::Serverless | Served::Container => {
                    assert!(o.first_byte_ms >= 0.0 && o.done_ms + 1e-6 >= o.first_byte_ms, "{strategy:?}: {o:?}");
                    assert!(o.done_ms + 0.01 >= r.service_ms, "{strategy:?}: done {} < service {}", o.done_ms, r.service_ms);
                }
                Served::RejectedGpu => {
                    assert_eq!(strategy, Strategy::Serverless);
                    assert!(r.kind.spec().needs_gpu);
                    rejected += 1;
                }
                Served::RejectedThrottled | Served::RejectedPolicyGpu => panic!("{strategy:?}: unexpected {:?}", o.served),
            }
        }
        if strategy == Strategy::Serverless {
            assert!(rejected > 0, "GPU work must be counted as unservable");
        }
        // Time series stamps never go backwards either.
        assert!(run.series.windows(2).all(|w| w[0].t_s <= w[1].t_s));
    }
}

#[test]
fn the_hybrid_strategy_calls_the_real_router() {
    let (reqs, horizon) = quick_requests(9);
    let cfg = Config { warmup_s: 200.0, ..Config::default() };
    let run = simulate(&reqs, horizon, Strategy::Hybrid, &cfg, 9).expect("policy config");
    assert_eq!(run.policy.calls, reqs.len() as u64, "one Router::place per request");
    // Rule labels are router-client's (Decision::rule()), from its rule chain.
    assert!(run.policy.reasons.keys().all(|r| ROUTER_RULES.contains(r)), "{:?}", run.policy.reasons);
    assert!(run.policy.reasons.get("primary").copied().unwrap_or(0) > 0, "{:?}", run.policy.reasons);
    // The exercise share (2 %) fires, and dual-routed copies ran (1 %).
    let exercised = run.policy.reasons.get("exercise").copied().unwrap_or(0);
    assert!(exercised > 0 && exercised == run.exercised, "{exercised} vs {}", run.exercised);
    let n = reqs.len() as f64;
    // Drawn for the exercise share: 2 %; some of it skipped because the fallback was loaded.
    let skipped = run.policy.reasons.get("exercise skipped").copied().unwrap_or(0);
    assert!(((run.exercised + skipped) as f64 / n - 0.02).abs() < 0.01, "exercised {} skipped {skipped}", run.exercised);
    assert!(run.shadows > 0 && (run.shadows as f64 / n) < 0.02, "dual copies {}", run.shadows);
    // GPU work never lands on serverless.
    for (r, o) in reqs.iter().zip(&run.outcomes) {
        if r.kind.spec().needs_gpu {
            assert_eq!(o.served, Served::Container, "{:?}", r.kind);
        }
    }
    // Short work under bursts goes mostly to Lambda (its primary); the old place sent none.
    let share = |strategy: Strategy| {
        let run = simulate(&reqs, horizon, strategy, &cfg, 9).expect("policy config");
        let burst: Vec<_> = reqs.iter().zip(&run.outcomes).filter(|(r, _)| r.in_burst && r.kind.spec().short).collect();
        burst.iter().filter(|(_, o)| o.served == Served::Serverless).count() as f64 / burst.len().max(1) as f64
    };
    let routed = share(Strategy::Hybrid);
    assert!(routed > 0.5, "short burst work on serverless: {routed}");
    assert_eq!(share(Strategy::HybridStaticPlace), 0.0, "the old place never used Lambda with deadlines on");
}

#[test]
fn the_router_sees_what_the_simulator_feeds_it() {
    let (reqs, _) = quick_requests(9);
    let cfg = Config::default();
    assert!(Router::new(policy_config(&cfg), 1).is_ok(), "the simulator's PolicyConfig validates");
    let thumb = reqs.iter().find(|r| r.kind == Kind::Thumbnail).expect("a thumbnail");
    let infer = reqs.iter().find(|r| r.kind == Kind::Infer).expect("an infer");
    let render = reqs.iter().find(|r| r.kind == Kind::Render).expect("a render");
    assert_eq!(features(thumb, true).deadline_ms, Some(150));
    assert!(features(infer, true).needs_gpu);
    // Exercise and dual off, so the draws cannot move anything.
    let mut quiet = cfg.clone();
    quiet.policy.exercise_share = 0.0;
    quiet.policy.dual_share = 0.0;
    let mut router = SimRouter::new(&quiet, 1).expect("router");
    // No reports yet: a thumbnail goes to its primary, the function; GPU work waits for the
    // container pool (never serverless); so does a render (primary container, no worker).
    let d = router.place(thumb, 0);
    assert_eq!((d.target.tier, d.rule()), (Tier::Serverless, "primary"));
    let d = router.place(infer, 0);
    assert_eq!((d.target.tier, d.target.worker_id.as_deref(), d.rule()), (Tier::Container, None, "no container"));
    assert!(d.reasons.iter().all(|r| ROUTER_RULES.contains(&reason_label(r))));
    let d = router.place(render, 0);
    assert_eq!(d.target.tier, if render.service_ms > kiln_benches::sim::constants::POLICY_SERVERLESS_MAX_RUN_MS { Tier::Container } else { Tier::Serverless });
    // The closed loop is fed: a slow container tier for thumbnails shows in its p95.
    for _ in 0..10 {
        router.finished(Tier::Container, Kind::Thumbnail, 900.0, 60.0);
    }
    assert_eq!(router.router.closed_loop().p95(Tier::Container, "thumbnail"), Some(900.0));
    assert!(router.router.closed_loop().ratio(Tier::Container, "thumbnail") > 1.5);
    // The function's warm pool is learnt from invocations.
    router.invoked();
    router.invocation_done(3, 820.0, 1_000);
    let pool = router.view.pool("kiln", 1_000);
    assert_eq!((pool.warm, pool.in_flight, pool.cold_init_ms), (1, 0, Some(820.0)));
    // The old stateless place is still what the static variant calls.
    assert_eq!(place(&placement_request(thumb, true), &[], &policy(1), 0).tier, Tier::Serverless);
    assert_eq!(place(&placement_request(infer, true), &[], &policy(1), 0).tier, Tier::Container);
}

#[test]
fn same_seed_same_json_and_another_seed_differs() {
    let opts = Options { quick: true, ..Options::default() };
    let a = run_all(3, &opts).expect("run").json.to_string();
    let b = run_all(3, &opts).expect("run").json.to_string();
    assert_eq!(a, b);
    let c = run_all(4, &opts).expect("run").json.to_string();
    assert_ne!(a, c);
    let v: serde_json::Value = serde_json::from_str(&a).expect("json");
    for s in ["serverless", "container", "hybrid"] {
        for f in ["p95_ms", "p999_ms", "cost", "time_to_scale_s"] {
            assert!(v["strategies"][s].get(f).is_some(), "strategies.{s}.{f} missing");
        }
    }
    assert_eq!(v["strategies"]["serverless"]["cost"], 1.0);
    // The closed loop: the adaptive Router, the static one and the old place behave apart.
    let lines = v["closed_loop"]["lines"].as_array().expect("closed-loop lines");
    let names: Vec<&str> = lines.iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(names, ["adaptive", "static", "static_config", "static_place"]);
    assert_ne!(lines[0]["windows"], lines[1]["windows"], "observe() changes the adaptive run");
    assert!(v["variants"].get("hybrid_static_place").is_some());
    assert!(v["variants"].get("hybrid_no_cost").is_some());
    assert_eq!(v["policy_config"]["cost"]["enabled"], true);
}

#[test]
fn the_router_counts_its_own_placements_and_prices_the_crossing() {
    let cfg = Config::default();
    let mut router = SimRouter::new(&cfg, 1).expect("router");
    // The simulated pod's report (2 slots, idle) then three placements before the next one:
    // the view shows them queued, as kiln route's does.
    let report = kiln_router_client::CapacityReport {
        worker_id: "cpu-0".into(),
        tier: Tier::Container,
        region: "sim".into(),
        state: kiln_router_client::WorkerState::Ready,
        seq: 1,
        ts_ms: 1_000,
        ttl_ms: 5_000,
        kinds: [("thumbnail".to_owned(), kiln_router_client::KindCapacity { slots: 2, busy: 0, queued: 0, p50_ms: 20.0, p95_ms: 40.0 })]
            .into_iter()
            .collect(),
        gpus: vec![],
        warm: Default::default(),
    };
    router.report(report, 1_000);
    for t in [1_100, 1_200, 1_300] {
        router.placed("cpu-0", t);
    }
    let c = router.view.candidates("thumbnail", 1_400);
    assert_eq!((c[0].busy, c[0].queued), (0, 3));
    // The cost rule runs with the simulator's prices: the crossing for a 25 ms thumbnail is
    // the CPU pod's price per second over one invocation's.
    let pc = policy_config(&cfg);
    assert!(pc.cost.enabled);
    let want = cfg.prices.cpu_pod_per_h / 3600.0 / cfg.prices.invocation(25.0, false);
    assert!((pc.cost.crossing_rps(25.0) - want).abs() < 1e-9, "{} vs {want}", pc.cost.crossing_rps(25.0));
}
