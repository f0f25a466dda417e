//! Every placement rule of `Router`/`decide`, with its reason string.

mod common;

use common::*;
use kiln_router_client::*;

fn draws(overflow: f64) -> Draws {
    Draws { overflow, ..no_draw() }
}

#[test]
fn primary_reason_when_nothing_fires() {
    let c = quiet();
    let v = view(vec![worker("w1", "render", 4, 0, 0, 65.0)]);
    let d = decide_now(&c, &feats("j", "render", 65.0), &v, no_draw());
    assert_eq!(d.target, Target::worker("w1"));
    assert_eq!((d.primary, d.fallback), (Tier::Container, Some(Tier::Serverless)));
    assert_eq!(d.reasons, vec!["primary container for render"]);
    assert_eq!(d.predicted_ms, 65.0);
    assert!(!d.exercise && !d.dual && d.shadow.is_none());
}

#[test]
fn least_predicted_wait_worker_is_chosen_ties_to_lowest_id() {
    let c = quiet();
    let v = view(vec![
        worker("a", "render", 2, 2, 2, 50.0),
        worker("c", "render", 4, 0, 0, 50.0),
        worker("b", "render", 4, 3, 0, 50.0),
    ]);
    let d = decide_now(&c, &feats("j", "render", 65.0), &v, no_draw());
    assert_eq!(d.target, Target::worker("b"));
    let v = view(vec![worker("a", "render", 2, 2, 2, 50.0)]);
    // Two jobs ahead per slot beyond the free ones: one p50 of wait.
    assert_eq!(decide_now(&c, &feats("j", "render", 65.0), &v, no_draw()).predicted_ms, 100.0 + 65.0);
}

#[test]
fn gpu_work_never_goes_serverless() {
    // The GPU worker is loaded (overflow pressure); without the pool queue it is still named.
    let mut c = PolicyConfig { exercise_share: 1.0, dual_share: 1.0, pool_queue: false, ..PolicyConfig::default() };
    c.kinds.get_mut("infer").unwrap().overflow.fraction = 1.0;
    let mut r = Router::new(c, 3).unwrap();
    let mut v = view(vec![worker("cpu", "infer", 8, 0, 0, 10.0), gpu_worker("gpu", "infer", 1, 1, 9, 10.0)]);
    warm(&mut v, "kiln", 4);
    let mut f = feats("j", "infer", 20.0);
    f.needs_gpu = true;
    for _ in 0..500 {
        let d = r.place(&f, &v, NOW);
        assert_eq!(d.target, Target::worker("gpu"));
        assert_eq!(d.fallback, None);
        assert!(d.shadow.is_none() && !d.exercise && !d.dual);
        assert_eq!(d.reasons, vec!["gpu: never serverless"]);
    }
    // A kind whose primary is serverless.
    let mut t = feats("t", "thumbnail", 20.0);
    t.needs_gpu = true;
    let v = view(vec![gpu_worker("g", "thumbnail", 4, 0, 0, 10.0)]);
    let d = r.place(&t, &v, NOW);
    assert_eq!((d.target.tier, d.primary, d.fallback), (Tier::Container, Tier::Container, None));
    // A kind rule can demand a GPU whatever the spec says.
    let mut c = quiet();
    c.kinds.get_mut("render").unwrap().needs_gpu = true;
    let v = view(vec![worker("cpu", "render", 8, 0, 0, 10.0)]);
    let d = decide_now(&c, &feats("j", "render", 65.0), &v, no_draw());
    assert_eq!(d.target, Target::container_queue());
    assert_eq!(d.reasons, vec!["gpu: never serverless", "no ready container serves render; queued"]);
}

#[test]
fn too_long_or_too_big_never_goes_serverless() {
    let c = PolicyConfig { exercise_share: 1.0, dual_share: 1.0, ..PolicyConfig::default() };
    let mut v = view(vec![worker("w1", "thumbnail", 4, 0, 0, 60.0)]);
    warm(&mut v, "kiln", 2);
    let long = feats("j", "thumbnail", 120_000.0);
    let d = decide_now(&c, &long, &v, Draws { overflow: 0.0, exercise: 0.0, dual: 0.0 });
    assert_eq!(d.target, Target::worker("w1"));
    assert_eq!((d.primary, d.fallback, d.dual), (Tier::Container, None, false));
    assert_eq!(d.reasons, vec!["too long for serverless: predicted 120000 ms > 60000 ms"]);
    let mut big = feats("j", "thumbnail", 60.0);
    big.payload_bytes = 300_000_000;
    let d = decide_now(&c, &big, &v, Draws { overflow: 0.0, exercise: 0.0, dual: 0.0 });
    assert_eq!(d.target.tier, Tier::Container);
    assert_eq!(d.reasons, vec!["too big for serverless: 300000000 bytes > 268435456 bytes"]);
    let mut off = quiet();
    off.serverless.enabled = false;
    let d = decide_now(&off, &feats("j", "thumbnail", 60.0), &v, no_draw());
    assert_eq!(d.reasons, vec!["serverless tier disabled"]);
}

#[test]
fn no_ready_container_falls_back_or_queues() {
    let c = quiet();
    let d = decide_now(&c, &feats("j", "render", 65.0), &view(vec![]), no_draw());
    assert_eq!(d.target, Target::function("kiln"));
    assert_eq!(d.reasons, vec!["no ready container serves render; fallback serverless"]);
    // Cold function and no container: the cold start is in the prediction.
    assert_eq!(d.predicted_ms, 65.0 + 800.0);
}

#[test]
fn tenant_pin_is_honoured_and_not_exercised() {
    let mut c = PolicyConfig { exercise_share: 1.0, dual_share: 0.0, ..PolicyConfig::default() };
    c.tenants
        .insert("acme".into(), TenantPin { tier: Tier::Container, kinds: vec![], priority: Some(Priority::Batch) });
    c.tenants
        .insert("gpuco".into(), TenantPin { tier: Tier::Serverless, kinds: vec!["thumbnail".into()], priority: None });
    let mut v = view(vec![worker("w1", "thumbnail", 4, 0, 0, 60.0), gpu_worker("g1", "thumbnail", 4, 0, 0, 60.0)]);
    warm(&mut v, "kiln", 2);
    let mut f = feats("j", "thumbnail", 64.0);
    f.tenant = Some("acme".into());
    f.priority = Priority::Batch;
    let d = decide_now(&c, &f, &v, Draws { overflow: 0.0, exercise: 0.0, dual: 0.0 });
    assert_eq!(d.target, Target::worker("g1"), "both free: equal latency, lowest id");
    assert_eq!(d.reasons, vec!["tenant acme pinned to container"]);
    assert_eq!((d.primary, d.fallback, d.exercise), (Tier::Container, Some(Tier::Serverless), false));
    // The same tenant's interactive traffic is not pinned (and here gets exercised).
    f.priority = Priority::Interactive;
    let d = decide_now(&c, &f, &v, Draws { overflow: 0.0, exercise: 0.0, dual: 0.0 });
    assert_eq!(d.primary, Tier::Serverless);
    assert!(d.exercise);
    // A pin to serverless cannot carry GPU work.
    let mut g = feats("j", "thumbnail", 64.0);
    g.tenant = Some("gpuco".into());
    g.needs_gpu = true;
    let d = decide_now(&c, &g, &v, no_draw());
    assert_eq!(d.target, Target::worker("g1"));
    assert_eq!(d.reasons, vec!["tenant gpuco pin to serverless ignored: gpu: never serverless"]);
}

#[test]
fn overflow_on_queue_depth_moves_the_drawn_share() {
    let c = quiet();
    let mut v = view(vec![worker("a", "render", 2, 2, 6, 50.0), worker("b", "render", 2, 2, 6, 50.0)]);
    warm(&mut v, "kiln", 2);
    let f = feats("j", "render", 65.0);
    let d = decide_now(&c, &f, &v, draws(0.1));
    assert_eq!(d.target, Target::function("kiln"));
    assert_eq!(d.reasons, vec!["overflow: container queue 12 > 8", "share 0.3"]);
    assert_eq!(d.predicted_ms, 65.0);
    let d = decide_now(&c, &f, &v, draws(0.5));
    assert_eq!(d.target, Target::worker("a"));
    assert_eq!(d.reasons, vec!["overflow: container queue 12 > 8", "kept on container (share 0.3)"]);
}

#[test]
fn overflow_on_rolling_p95_and_deadline_and_held() {
    let c = quiet();
    let mut v = view(vec![worker("w1", "thumbnail", 4, 0, 0, 60.0)]);
    warm(&mut v, "kiln", 2);
    let f = feats("j", "thumbnail", 64.0);
    let mut s = snap(&v, "thumbnail", &c);
    s.p95_ms.serverless = Some(212.0);
    let d = decide(&c, 7, &f, &s, draws(0.1));
    assert_eq!(d.target, Target::worker("w1"));
    assert_eq!(d.reasons, vec!["overflow: serverless p95 212 ms > 150 ms", "share 0.3"]);
    assert_eq!((d.primary, d.fallback, d.policy_version), (Tier::Serverless, Some(Tier::Container), 7));
    // The fallback is doing no better: hold.
    s.p95_ms.container = Some(300.0);
    let d = decide(&c, 7, &f, &s, draws(0.1));
    assert_eq!(d.target, Target::function("kiln"));
    assert_eq!(
        d.reasons,
        vec![
            "overflow: serverless p95 212 ms > 150 ms",
            "overflow held: container p95 300 ms >= serverless p95 212 ms"
        ]
    );
    // A tighter deadline lowers the threshold.
    s.p95_ms = TierPair { container: None, serverless: Some(100.0) };
    let mut tight = f.clone();
    tight.deadline_ms = Some(80);
    let d = decide(&c, 7, &tight, &s, draws(0.1));
    assert_eq!(d.reasons, vec!["overflow: serverless p95 100 ms > 80 ms", "share 0.3"]);
    // Before the loop has samples, reports' p95 stand in for containers.
    let mut v = view(vec![worker("w1", "render", 4, 0, 0, 100.0)]);
    warm(&mut v, "kiln", 1);
    let mut r = feats("j", "render", 65.0);
    r.deadline_ms = Some(150);
    let d = decide_now(&c, &r, &v, draws(0.1));
    assert_eq!(d.reasons, vec!["overflow: container p95 200 ms > 150 ms", "share 0.3"]);
    assert_eq!(d.target, Target::function("kiln"));
}

#[test]
fn overflow_fraction_is_close_to_the_configured_share() {
    let mut r = Router::new(quiet(), 11).unwrap();
    let mut v = view(vec![worker("a", "render", 2, 2, 6, 50.0), worker("b", "render", 2, 2, 6, 50.0)]);
    warm(&mut v, "kiln", 3);
    let n = 10_000;
    let moved = (0..n)
        .filter(|i| r.place(&feats(&i.to_string(), "render", 65.0), &v, NOW).target.tier == Tier::Serverless)
        .count();
    let share = moved as f64 / n as f64;
    assert!((share - 0.3).abs() < 0.015, "overflow share {share}");
}

#[test]
fn exercise_and_dual_shares() {
    let c = PolicyConfig { exercise_share: 0.05, dual_share: 0.1, ..PolicyConfig::default() };
    let mut r = Router::new(c, 5).unwrap();
    let mut v = view(vec![worker("w1", "render", 4, 0, 0, 65.0)]);
    warm(&mut v, "kiln", 2);
    let n = 20_000;
    let (mut exercised, mut dual) = (0, 0);
    for i in 0..n {
        let d = r.place(&feats(&i.to_string(), "render", 65.0), &v, NOW);
        if d.exercise {
            exercised += 1;
            assert_eq!(d.target, Target::function("kiln"));
            assert_eq!(d.reasons, vec!["exercise: fallback serverless (share 0.05)"]);
            assert!(!d.dual);
        } else if d.dual {
            dual += 1;
            assert_eq!(d.target, Target::worker("w1"));
            assert_eq!(d.shadow, Some(Target::function("kiln")));
            assert_eq!(d.reasons, vec!["dual: also serverless (share 0.1)"]);
        } else {
            assert_eq!(d.reasons, vec!["primary container for render"]);
        }
    }
    let (e, du) = (exercised as f64 / n as f64, dual as f64 / n as f64);
    assert!((e - 0.05).abs() < 0.006, "exercise share {e}");
    // Dual routing skips exercised requests: 0.1 x 0.95.
    assert!((du - 0.095).abs() < 0.008, "dual share {du}");
}

#[test]
fn cold_start_override_moves_interactive_work_to_a_warm_container() {
    let c = quiet();
    let v = view(vec![worker("w1", "thumbnail", 4, 0, 0, 60.0)]);
    let f = feats("j", "thumbnail", 64.0);
    let d = decide_now(&c, &f, &v, no_draw());
    assert_eq!(d.target, Target::worker("w1"));
    assert_eq!((d.primary, d.fallback), (Tier::Serverless, Some(Tier::Container)));
    assert_eq!(
        d.reasons,
        vec!["cold-start override: kiln has no idle warm instance (warm 0, in flight 0); container w1 64 ms < 864 ms"]
    );
    assert_eq!(d.predicted_ms, 64.0);
    // Batch work tolerates the cold start.
    let mut b = f.clone();
    b.priority = Priority::Batch;
    let d = decide_now(&c, &b, &v, no_draw());
    assert_eq!((d.target.clone(), d.predicted_ms), (Target::function("kiln"), 864.0));
    assert_eq!(d.reasons, vec!["primary serverless for thumbnail"]);
    // Every warm instance busy (occupancy 1): the next request would be cold.
    let mut busy = v.clone();
    warm(&mut busy, "kiln", 2);
    busy.invocation_started("kiln");
    busy.invocation_started("kiln");
    let d = decide_now(&c, &f, &busy, no_draw());
    assert_eq!(
        d.reasons,
        vec!["cold-start override: kiln has no idle warm instance (warm 2, in flight 2); container w1 64 ms < 964 ms"]
    );
    // An idle warm instance: no override.
    let mut idle = v.clone();
    warm(&mut idle, "kiln", 1);
    let d = decide_now(&c, &f, &idle, no_draw());
    assert_eq!((d.target.clone(), d.predicted_ms), (Target::function("kiln"), 64.0));
    // A container slower than the cold start: no override.
    let slow = view(vec![worker("w1", "thumbnail", 1, 1, 20, 100.0)]);
    let d = decide_now(&c, &f, &slow, no_draw());
    assert_eq!(d.target, Target::function("kiln"));
    // Disabled.
    let mut off = quiet();
    off.cold_start_override.enabled = false;
    assert_eq!(decide_now(&off, &f, &v, no_draw()).target, Target::function("kiln"));
}

#[test]
fn deadline_moves_to_a_fallback_that_meets_it() {
    let c = quiet();
    let mut v = view(vec![worker("w1", "render", 1, 1, 5, 100.0)]);
    warm(&mut v, "kiln", 1);
    let mut f = feats("j", "render", 65.0);
    f.deadline_ms = Some(300);
    let d = decide_now(&c, &f, &v, no_draw());
    assert_eq!(d.target, Target::function("kiln"));
    assert_eq!(d.reasons, vec!["deadline: container predicted 665 ms > 300 ms; serverless 65 ms"]);
}

#[test]
fn the_simple_stateless_place_keeps_its_signature() {
    let req = PlacementRequest { kind: "thumbnail".into(), est_run_ms: 20.0, interactive: true, ..Default::default() };
    let p: Placement = place(&req, &[worker("w1", "thumbnail", 4, 0, 0, 20.0)], &Policy::default(), NOW);
    assert_eq!((p.tier, p.worker_id.as_deref(), p.reason), (Tier::Container, Some("w1"), "warm container slot"));
}

#[test]
fn batch_and_gpu_work_waits_in_the_pool_queue_rather_than_behind_one_worker() {
    let c = quiet();
    // One 1-slot GPU worker running a long job with one more queued: 2 jobs of 60 s ahead.
    let v = view(vec![gpu_worker("g", "transcode", 1, 1, 1, 60_000.0)]);
    let mut f = feats("t", "transcode", 30_000.0);
    f.needs_gpu = true;
    let d = decide_now(&c, &f, &v, no_draw());
    assert_eq!(d.target, Target::container_queue());
    assert_eq!(d.reasons.last().unwrap(), "pool queue: every container busy (g wait 120000 ms > run 30000 ms)");
    assert_eq!(d.rule(), "pool queue");
    // A free slot: named as before.
    let v = view(vec![gpu_worker("g", "transcode", 2, 1, 0, 60_000.0)]);
    assert_eq!(decide_now(&c, &f, &v, no_draw()).target, Target::worker("g"));
    // Interactive CPU work keeps the least-wait worker; batch CPU work queues.
    let v = view(vec![worker("w", "render", 1, 1, 3, 500.0)]);
    let mut r = feats("r", "render", 100.0);
    assert_eq!(decide_now(&c, &r, &v, no_draw()).target, Target::worker("w"));
    r.priority = Priority::Batch;
    assert_eq!(decide_now(&c, &r, &v, no_draw()).target, Target::container_queue());
    // Off: the worker is named.
    let off = PolicyConfig { pool_queue: false, ..quiet() };
    assert_eq!(decide_now(&off, &r, &v, no_draw()).target, Target::worker("w"));
    // A long batch job (30 min) behind one 1-slot GPU worker's job (p50 60 s): the predicted
    // wait is shorter than its run, but the rest of the running job is unknown, so a batch
    // job goes to the pool's queue as soon as the worker has no free slot (issue 18: the
    // simulator's transcode init p95 was 10-40x container-only's without this).
    let v = view(vec![gpu_worker("g", "transcode", 1, 1, 0, 60_000.0)]);
    let mut long = feats("l", "transcode", 1_800_000.0);
    long.needs_gpu = true;
    long.priority = Priority::Batch;
    let d = decide_now(&c, &long, &v, no_draw());
    assert_eq!(d.target, Target::container_queue());
    assert_eq!(d.reasons.last().unwrap(), "pool queue: batch, g has no free slot (wait 60000 ms, run 1800000 ms)");
    assert_eq!(d.rule(), "pool queue");
    // Interactive GPU work with a wait shorter than its run keeps the named worker.
    long.priority = Priority::Interactive;
    assert_eq!(decide_now(&c, &long, &v, no_draw()).target, Target::worker("g"));
    // A free slot: named.
    let v = view(vec![gpu_worker("g", "transcode", 2, 1, 0, 60_000.0)]);
    long.priority = Priority::Batch;
    assert_eq!(decide_now(&c, &long, &v, no_draw()).target, Target::worker("g"));
}

#[test]
fn same_seed_same_decisions() {
    let c = PolicyConfig { exercise_share: 0.2, dual_share: 0.2, ..PolicyConfig::default() };
    let mut v = view(vec![worker("a", "render", 2, 2, 6, 50.0), worker("b", "render", 2, 2, 6, 50.0)]);
    warm(&mut v, "kiln", 2);
    let run = |seed| {
        let mut r = Router::new(c.clone(), seed).unwrap();
        (0..500).map(|i| r.place(&feats(&i.to_string(), "render", 65.0), &v, NOW)).collect::<Vec<_>>()
    };
    assert_eq!(run(4), run(4));
    assert_ne!(run(4), run(5));
}

#[test]
fn sustained_serverless_traffic_above_the_crossing_moves_to_containers_with_room() {
    let mut c = quiet();
    c.cost.enabled = true;
    let crossing = c.cost.crossing_rps(25.0);
    assert!(crossing > 20.0 && crossing < 30.0, "{crossing}");
    let mut v = view(vec![worker("w1", "thumbnail", 2, 0, 0, 25.0)]);
    warm(&mut v, "kiln", 4);
    let f = feats("j", "thumbnail", 25.0);
    // Through the Router: its own placements are the rate (all at NOW, so n / 60 s).
    let mut r = Router::new(c.clone(), 1).unwrap();
    let below = (crossing * 60.0).floor() as usize;
    for i in 0..=below {
        let rec = r.place_logged(&f, &v, NOW);
        assert_eq!(rec.decision.target, Target::function("kiln"), "placement {i}");
        assert!(rec.snapshot.kind_rps.is_some_and(|x| x <= crossing));
    }
    let rec = r.place_logged(&f, &v, NOW);
    assert_eq!(rec.decision.target, Target::worker("w1"));
    assert_eq!(rec.decision.rule(), "cost");
    assert!(rec.decision.reasons[0].starts_with("cost: thumbnail "), "{:?}", rec.decision.reasons);
    assert!(rec.decision.reasons[0].ends_with("container w1 has a free slot"));
    // The log line re-decides the same way.
    let line = rec.to_json_line();
    assert_eq!(replay(std::iter::once(line.as_str()), r.config(), r.version()).differences(), 0);
    // The same rate, but the container has no free slot, or is slow: stays serverless.
    let mut s = snap(&v, "thumbnail", &c);
    s.kind_rps = Some(crossing * 2.0);
    assert_eq!(decide(&c, 1, &f, &s, no_draw()).target, Target::worker("w1"));
    let mut full = view(vec![worker("w1", "thumbnail", 2, 2, 0, 25.0)]);
    warm(&mut full, "kiln", 4);
    let mut s = snap(&full, "thumbnail", &c);
    s.kind_rps = Some(crossing * 2.0);
    assert_eq!(decide(&c, 1, &f, &s, no_draw()).target, Target::function("kiln"));
    let mut slow = view(vec![worker("w1", "thumbnail", 2, 0, 0, 100.0)]); // reported p95 200 > 150
    warm(&mut slow, "kiln", 4);
    let mut s = snap(&slow, "thumbnail", &c);
    s.kind_rps = Some(crossing * 2.0);
    assert_eq!(decide(&c, 1, &f, &s, no_draw()).target, Target::function("kiln"));
    // Off (the default): never.
    let mut off = Router::new(quiet(), 1).unwrap();
    for _ in 0..3000 {
        assert_eq!(off.place(&f, &v, NOW).target, Target::function("kiln"));
    }
}

#[test]
fn the_exercised_share_respects_the_fallbacks_state() {
    let c = PolicyConfig { exercise_share: 1.0, dual_share: 0.0, ..PolicyConfig::default() };
    let f = feats("j", "thumbnail", 25.0);
    let at = |exercise: f64| Draws { overflow: 0.999, exercise, dual: 0.999 };
    let with = |reports: Vec<CapacityReport>| {
        let mut v = view(reports);
        warm(&mut v, "kiln", 4);
        v
    };
    // A free, healthy container fallback is exercised.
    let d = decide_now(&c, &f, &with(vec![worker("w1", "thumbnail", 2, 1, 0, 25.0)]), at(0.5));
    assert!(d.exercise);
    assert_eq!(d.target, Target::worker("w1"));
    // Loaded: no free slot on its best worker.
    let d = decide_now(&c, &f, &with(vec![worker("w1", "thumbnail", 2, 2, 0, 25.0)]), at(0.5));
    assert!(!d.exercise);
    assert_eq!(d.target, Target::function("kiln"));
    assert_eq!(d.reasons, vec!["exercise skipped: fallback container loaded (w1 has no free slot)"]);
    assert_eq!(d.rule(), "exercise skipped");
    // Degraded (reported p95 200 ms > the 150 ms threshold): a tenth of the share.
    let slow = with(vec![worker("w1", "thumbnail", 2, 0, 0, 100.0)]);
    let d = decide_now(&c, &f, &slow, at(0.5));
    assert!(!d.exercise);
    assert_eq!(d.reasons, vec!["exercise skipped: fallback container degraded (p95 200 ms > 150 ms)"]);
    assert!(decide_now(&c, &f, &slow, at(0.05)).exercise);
    // A serverless fallback with invocations piling up on cold starts is not exercised.
    let mut v = view(vec![worker("w1", "render", 4, 0, 0, 65.0)]);
    for _ in 0..10 {
        v.invocation_started("kiln");
    }
    let d = decide_now(&c, &feats("r", "render", 65.0), &v, at(0.5));
    assert_eq!(d.target, Target::worker("w1"));
    assert_eq!(d.reasons, vec!["exercise skipped: fallback serverless loaded (10 invocations waiting > 8)"]);
    let mut idle = view(vec![worker("w1", "render", 4, 0, 0, 65.0)]);
    warm(&mut idle, "kiln", 1);
    assert!(decide_now(&c, &feats("r", "render", 65.0), &idle, at(0.5)).exercise);
}
