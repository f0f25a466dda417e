//! The simulator's invariants (issue 18): every request finishes or is counted as rejected,
//! time never runs backwards, the same seed gives the same output, and the hybrid strategy is
//! placed by router-client's real policy.

use kiln_benches::sim::run::{simulate, Served};
use kiln_benches::sim::strategy::{placement_request, policy, Strategy};
use kiln_benches::sim::workload::{Kind, Request, ServiceModel};
use kiln_benches::sim::{profile_for, run_all, Config, Options};
use kiln_router_client::{place, Tier};

fn quick_requests(seed: u64) -> (Vec<Request>, f64) {
    let model = ServiceModel::load().expect("samples.json");
    let profile = profile_for(&Options { quick: true, ..Options::default() });
    (profile.generate(&model, seed), profile.horizon_s)
}

#[test]
fn every_request_finishes_or_is_rejected_and_time_never_runs_backwards() {
    let (reqs, horizon) = quick_requests(5);
    assert!(reqs.len() > 10_000, "{} requests", reqs.len());
    for strategy in [Strategy::Serverless, Strategy::Container, Strategy::Hybrid] {
        let cfg = Config { warmup_s: 200.0, ..Config::default() };
        let run = simulate(&reqs, horizon, strategy, &cfg, 5);
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
fn the_hybrid_strategy_calls_the_real_policy() {
    let (reqs, horizon) = quick_requests(9);
    let cfg = Config { warmup_s: 200.0, ..Config::default() };
    let run = simulate(&reqs, horizon, Strategy::Hybrid, &cfg, 9);
    assert_eq!(run.policy.calls, reqs.len() as u64, "one place() call per request");
    // Reasons are router-client's own strings.
    let known = ["no container capacity", "only the container tier can run it; queue for capacity", "container only", "warm container slot", "cold-start override", "overflow to serverless", "container queue is faster"];
    assert!(run.policy.reasons.keys().all(|r| known.contains(r)), "{:?}", run.policy.reasons);
    assert!(run.policy.reasons.get("warm container slot").copied().unwrap_or(0) > 0);
    // A policy-visible rule: GPU work never lands on serverless.
    for (r, o) in reqs.iter().zip(&run.outcomes) {
        if r.kind.spec().needs_gpu {
            assert_eq!(o.served, Served::Container, "{:?}", r.kind);
        }
    }
    // And the policy sees what we feed it: with no container reports, CPU work goes serverless,
    // GPU work waits for the container tier.
    let thumb = reqs.iter().find(|r| r.kind == Kind::Thumbnail).expect("a thumbnail");
    let infer = reqs.iter().find(|r| r.kind == Kind::Infer).expect("an infer");
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
}
