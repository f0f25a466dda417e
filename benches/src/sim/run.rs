//! One simulated run: a request list replayed against one strategy. The event loop wires the
//! tiers (tiers.rs) to the strategy's dispatch (strategy.rs) and records, per request, when
//! its first byte and its last byte left and on which tier, plus the bill and a 1 s time series
//! of worker counts.

use super::constants as c;
use super::cost::Bill;
use super::engine::{secs, us, us_ms, Engine, Micros, SimRng};
use super::policy::SimRouter;
use super::strategy::{serverless_can_run, PolicyCalls, Strategy};
use super::tiers::{default_pools, Acquire, Lambda, Pool, PodState};
use super::workload::Request;
use super::Config;
use kiln_router_client::{CapacityReport, Tier};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Pending,
    Serverless,
    Container,
    /// GPU work under serverless-only.
    RejectedGpu,
    /// Serverless concurrency limit.
    RejectedThrottled,
    /// The policy sent GPU work to serverless (must never happen).
    RejectedPolicyGpu,
}

#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub served: Served,
    pub first_byte_ms: f64,
    pub done_ms: f64,
    pub cold: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub t_s: f64,
    pub offered_rps: f64,
    pub lambda_busy: u32,
    pub lambda_alive: u32,
    /// Alive pods per pool (cpu, render, gpu).
    pub pods: [u32; 3],
    pub pods_ready: [u32; 3],
}

#[derive(Debug)]
pub struct RunResult {
    pub strategy: Strategy,
    pub outcomes: Vec<Outcome>,
    pub bill: Bill,
    pub series: Vec<Sample>,
    pub policy: PolicyCalls,
    /// Dual-routed copies run (their cost is in the bill, their answers discarded).
    pub shadows: u64,
    /// Decisions that exercised the fallback on purpose.
    pub exercised: u64,
    pub cold_starts: u64,
    pub throttles: u64,
    pub events: u64,
    pub clamped: u64,
    pub end_s: f64,
}

#[derive(Debug)]
enum Ev {
    Arrive(u32),
    LambdaDone { inst: usize, req: u32, cold_ms: f64 },
    Expire { inst: usize, gen: u64 },
    PodReady { pool: usize, pod: usize },
    SlotDone { pool: usize, pod: usize, group: usize, req: u32, run_ms: f64 },
    Scale(usize),
    Report,
    /// A pod's report after a slot change (kiln's slot watch).
    SlotReport { pool: usize, pod: usize },
    Sample,
}

struct Sim<'a> {
    reqs: &'a [Request],
    /// Dual-routed copies: request `reqs.len() + i` is a copy of `shadows[i]`.
    shadows: Vec<u32>,
    /// The hybrid's router (Strategy::Hybrid), and per request its decision's tier and
    /// predicted latency (for the closed loop).
    router: Option<SimRouter>,
    placed: Vec<(Tier, f64)>,
    cfg: &'a Config,
    strategy: Strategy,
    eng: Engine<Ev>,
    rng: SimRng,
    lambda: Lambda,
    pools: Vec<Pool>,
    out: Vec<Outcome>,
    remaining_ms: Vec<f64>,
    open: usize,
    /// The router's view: one report per live pod, in publication order, and where each is.
    view: Vec<CapacityReport>,
    view_at: BTreeMap<String, usize>,
    pods_by_id: BTreeMap<String, (usize, usize)>,
    policy: PolicyCalls,
    bill: Bill,
    series: Vec<Sample>,
    offered_since_sample: u32,
    warmup: Micros,
    horizon: Micros,
}

/// Replays `reqs` under `strategy`. Err only when the hybrid's policy config is refused.
pub fn simulate(reqs: &[Request], horizon_s: f64, strategy: Strategy, cfg: &Config, seed: u64) -> Result<RunResult, String> {
    let router = if strategy == Strategy::Hybrid { Some(SimRouter::new(cfg, seed)?) } else { None };
    let provisioned = if strategy == Strategy::Container { 0 } else { cfg.provisioned };
    let mut sim = Sim {
        reqs,
        shadows: Vec::new(),
        router,
        placed: vec![(Tier::Container, 0.0); reqs.len()],
        cfg,
        strategy,
        eng: Engine::new(),
        rng: SimRng::new(seed, 10 + strategy as u64),
        lambda: Lambda::new(provisioned, c::LAMBDA_CONCURRENCY_LIMIT),
        pools: default_pools(cfg.cpu_pod_start_s, cfg.gpu_pod_start_s).into_iter().map(Pool::new).collect(),
        out: vec![Outcome { served: Served::Pending, first_byte_ms: f64::NAN, done_ms: f64::NAN, cold: false }; reqs.len()],
        remaining_ms: reqs.iter().map(|r| r.service_ms).collect(),
        open: reqs.len(),
        view: Vec::new(),
        view_at: BTreeMap::new(),
        pods_by_id: BTreeMap::new(),
        policy: PolicyCalls::default(),
        bill: Bill::default(),
        series: Vec::new(),
        offered_since_sample: 0,
        warmup: us(cfg.warmup_s),
        horizon: us(horizon_s),
    };
    sim.start();
    while let Some((now, ev)) = sim.eng.pop() {
        sim.handle(now, ev);
    }
    Ok(sim.finish())
}

impl<'a> Sim<'a> {
    /// A request by id (a dual-routed copy's id gives its original).
    fn req(&self, r: u32) -> &'a Request {
        let reqs = self.reqs;
        let i = r as usize;
        match i.checked_sub(reqs.len()) {
            Some(s) => &reqs[self.shadows[s] as usize],
            None => &reqs[i],
        }
    }

    fn start(&mut self) {
        if self.strategy != Strategy::Serverless {
            for p in 0..self.pools.len() {
                // A pool none of whose kinds is offered is not deployed (the cost sweep).
                if !self.reqs.iter().any(|r| self.pools[p].group_of(r.kind).is_some()) {
                    continue;
                }
                for _ in 0..self.pools[p].spec.min {
                    let pod = self.pools[p].add_pod(0, true);
                    self.register(p, pod);
                }
                self.eng.at(us(self.pools[p].spec.sync_s), Ev::Scale(p));
                // Pods that start ready publish on that state change.
                for pod in 0..self.pools[p].pods.len() {
                    self.publish(p, pod, 0);
                }
            }
            self.eng.at(c::REPORT_INTERVAL_MS * 1000, Ev::Report);
        }
        for r in self.reqs {
            self.eng.at(us(r.arrival_s), Ev::Arrive(r.id));
        }
        self.eng.at(0, Ev::Sample);
    }

    fn in_window(&self, req: u32) -> bool {
        let t = us(self.req(req).arrival_s);
        t >= self.warmup && t < self.horizon
    }

    fn keep_ticking(&self, now: Micros) -> bool {
        now < self.horizon || self.open > 0
    }

    fn handle(&mut self, now: Micros, ev: Ev) {
        match ev {
            Ev::Arrive(r) => {
                self.offered_since_sample += 1;
                self.arrive(now, r);
            }
            Ev::LambdaDone { inst, req, cold_ms } => {
                if let Some(router) = self.router.as_mut() {
                    router.invocation_done(inst, cold_ms, now / 1000);
                }
                if let Some(gen) = self.lambda.release(inst) {
                    self.eng.after(us(self.cfg.keep_alive_s), Ev::Expire { inst, gen });
                }
                if self.remaining_ms[req as usize] > 0.0 {
                    self.on_lambda(now, req); // the next chunk of a long job
                } else {
                    self.finish_req(now, req, Served::Serverless);
                }
            }
            Ev::Expire { inst, gen } => self.lambda.expire(inst, gen),
            Ev::PodReady { pool, pod } => {
                if self.pools[pool].pods[pod].state == PodState::Starting {
                    self.pools[pool].pods[pod].state = PodState::Ready;
                    self.publish(pool, pod, now);
                    for g in 0..self.pools[pool].spec.groups.len() {
                        self.fill(now, pool, pod, g);
                        self.drain_backlog(now, pool, g);
                    }
                }
            }
            Ev::SlotDone { pool, pod, group, req, run_ms } => self.slot_done(now, pool, pod, group, req, run_ms),
            Ev::Scale(p) => {
                self.scale(now, p);
                if self.keep_ticking(now) {
                    self.eng.after(us(self.pools[p].spec.sync_s), Ev::Scale(p));
                }
            }
            Ev::Report => {
                for p in 0..self.pools.len() {
                    for pod in 0..self.pools[p].pods.len() {
                        if self.pools[p].pods[pod].state != PodState::Gone {
                            self.publish(p, pod, now);
                        }
                    }
                }
                if self.keep_ticking(now) {
                    self.eng.after(c::REPORT_INTERVAL_MS * 1000, Ev::Report);
                }
            }
            Ev::SlotReport { pool, pod } => {
                self.pools[pool].pods[pod].report_pending = false;
                if self.pools[pool].pods[pod].state != PodState::Gone {
                    self.publish(pool, pod, now);
                }
            }
            Ev::Sample => {
                let mut pods = [0u32; 3];
                let mut ready = [0u32; 3];
                for (i, p) in self.pools.iter().enumerate().take(3) {
                    pods[i] = p.alive();
                    ready[i] = p.count(PodState::Ready);
                }
                self.series.push(Sample {
                    t_s: secs(now),
                    offered_rps: self.offered_since_sample as f64 / c::SAMPLE_EVERY_S,
                    lambda_busy: self.lambda.busy() as u32,
                    lambda_alive: self.lambda.alive() as u32,
                    pods,
                    pods_ready: ready,
                });
                self.offered_since_sample = 0;
                if self.keep_ticking(now) {
                    self.eng.after(us(c::SAMPLE_EVERY_S), Ev::Sample);
                }
            }
        }
    }

    fn arrive(&mut self, now: Micros, r: u32) {
        let req = self.req(r);
        match self.strategy {
            Strategy::Serverless => {
                if serverless_can_run(req.kind) {
                    self.on_lambda(now, r);
                } else {
                    self.finish_req(now, r, Served::RejectedGpu);
                }
            }
            Strategy::Container => self.enqueue_container(now, r, None),
            Strategy::Hybrid => self.arrive_routed(now, r),
            Strategy::HybridStaticPlace => {
                let p = self.policy.place(req, self.cfg.deadlines, &self.view, self.lambda.idle(), now / 1000);
                match p.tier {
                    Tier::Serverless if !serverless_can_run(req.kind) => self.finish_req(now, r, Served::RejectedPolicyGpu),
                    Tier::Serverless => self.on_lambda(now, r),
                    Tier::Container => self.place_on_worker(now, r, p.worker_id.as_deref()),
                }
            }
        }
    }

    /// Strategy::Hybrid: router-client's Router places the request; a dual-routed request
    /// also runs as a copy on the other tier (its cost counted, its answer discarded).
    fn arrive_routed(&mut self, now: Micros, r: u32) {
        let req = self.req(r);
        let Some(router) = self.router.as_mut() else { return };
        let d = router.place(req, now / 1000);
        self.placed[r as usize] = (d.target.tier, d.predicted_ms);
        let shadow = d.shadow.filter(|_| d.dual);
        self.dispatch(now, r, d.target.tier, d.target.worker_id.as_deref());
        if let Some(t) = shadow {
            let id = (self.reqs.len() + self.shadows.len()) as u32;
            self.shadows.push(r);
            self.out.push(Outcome { served: Served::Pending, first_byte_ms: f64::NAN, done_ms: f64::NAN, cold: false });
            self.remaining_ms.push(req.service_ms);
            self.placed.push((t.tier, 0.0));
            self.open += 1;
            self.dispatch(now, id, t.tier, t.worker_id.as_deref());
        }
    }

    fn dispatch(&mut self, now: Micros, r: u32, tier: Tier, worker: Option<&str>) {
        match tier {
            Tier::Serverless if !serverless_can_run(self.req(r).kind) => self.finish_req(now, r, Served::RejectedPolicyGpu),
            Tier::Serverless => self.on_lambda(now, r),
            Tier::Container => self.place_on_worker(now, r, worker),
        }
    }

    /// Container placement on `worker` (None: the pool's pull queue).
    fn place_on_worker(&mut self, now: Micros, r: u32, worker: Option<&str>) {
        let kind = self.req(r).kind;
        let target = worker.and_then(|id| self.pods_by_id.get(id).copied());
        let room = match (&self.router, worker) {
            (Some(router), Some(id)) => {
                router.view.workers(now / 1000).find(|w| w.worker_id == id).and_then(|w| w.kinds.get(kind.name())).is_some_and(|k| k.free() > 0)
            }
            (None, Some(id)) => {
                self.view_at.get(id).and_then(|&i| self.view[i].kinds.get(kind.name())).is_some_and(|k| k.free() > 0)
            }
            _ => false,
        };
        // Config::pull_when_full: work the policy queues on a busy worker goes to the pool's
        // pull queue instead (a router choice, not the policy's).
        let pod = if self.cfg.pull_when_full && !room { None } else { target.map(|(_, pod)| pod) };
        if let (Some(id), Some(_)) = (worker, pod) {
            self.track(id, kind.name());
            // The Router's view counts its own placement until the pod's next report.
            if let Some(router) = self.router.as_mut() {
                router.placed(id, now / 1000);
            }
        }
        self.enqueue_container(now, r, pod);
    }

    /// The router counts its own placement in its copy of the pod's report until the next
    /// report replaces it (Config::track_placements; off = reports only).
    fn track(&mut self, id: &str, kind: &str) {
        if !self.cfg.track_placements || self.router.is_some() {
            return;
        }
        let Some(&i) = self.view_at.get(id) else { return };
        let Some(k) = self.view[i].kinds.get(kind).cloned() else { return };
        let room = k.free() > 0;
        for kc in self.view[i].kinds.values_mut() {
            if kc.slots == k.slots && kc.busy == k.busy && kc.queued == k.queued {
                if room {
                    kc.busy += 1;
                } else {
                    kc.queued += 1;
                }
            }
        }
    }

    fn on_lambda(&mut self, now: Micros, r: u32) {
        let req = self.req(r);
        let first = self.remaining_ms[r as usize] >= req.service_ms;
        let chunk = self.remaining_ms[r as usize].min(c::LAMBDA_MAX_RUN_MS * c::LAMBDA_CHUNK_MARGIN);
        let (inst, cold_ms) = match self.lambda.acquire() {
            Acquire::Throttled => return self.finish_req(now, r, Served::RejectedThrottled),
            Acquire::Warm(i) => (i, 0.0),
            Acquire::Cold(i) => {
                let platform = self.rng.lognormal(self.cfg.platform_cold_p50_ms, self.cfg.platform_cold_p99_ms, super::engine::Z99, 2.0);
                // kiln's share: drawn with the request (samples.json's raw cold starts, or the fit).
                (i, platform + req.kiln_cold_ms)
            }
        };
        if let Some(router) = self.router.as_mut() {
            router.invoked();
        }
        let start = now + us_ms(cold_ms);
        let arrival = us(req.arrival_s);
        if first {
            let o = &mut self.out[r as usize];
            o.first_byte_ms = (start + us_ms(req.first_unit_ms) - arrival) as f64 / 1000.0;
            o.cold = cold_ms > 0.0;
        }
        if self.in_window(r) {
            self.bill.lambda_usd += self.cfg.prices.invocation(chunk + cold_ms, self.lambda.is_provisioned(inst));
        }
        self.remaining_ms[r as usize] -= chunk;
        if self.remaining_ms[r as usize] < 1e-9 {
            self.remaining_ms[r as usize] = 0.0;
        }
        self.eng.at(start + us_ms(chunk), Ev::LambdaDone { inst, req: r, cold_ms });
    }

    fn enqueue_container(&mut self, now: Micros, r: u32, pod: Option<usize>) {
        let kind = self.req(r).kind;
        let Some(p) = self.pools.iter().position(|p| p.group_of(kind).is_some()) else {
            return self.finish_req(now, r, Served::RejectedGpu);
        };
        let g = self.pools[p].group_of(kind).unwrap_or(0);
        match pod {
            Some(pod) if self.pools[p].pods.get(pod).is_some_and(|x| x.state == PodState::Ready) => {
                self.pools[p].pods[pod].queue[g].push_back(r);
                self.slot_changed(p, pod);
                self.fill(now, p, pod, g);
            }
            _ => {
                self.pools[p].backlog[g].push_back(r);
                self.drain_backlog(now, p, g);
            }
        }
    }

    /// Starts work on `pod`'s free slots of group `g`: its own queue, then the backlog.
    fn fill(&mut self, now: Micros, p: usize, pod: usize, g: usize) {
        while self.pools[p].has_free_slot(pod, g) {
            let Some(r) = self.pools[p].next_for(pod, g) else { break };
            self.start_on_pod(now, p, pod, g, r);
        }
    }

    fn drain_backlog(&mut self, now: Micros, p: usize, g: usize) {
        while !self.pools[p].backlog[g].is_empty() {
            let Some(pod) = self.pools[p].free_pod(g) else { break };
            let Some(r) = self.pools[p].backlog[g].pop_front() else { break };
            self.start_on_pod(now, p, pod, g, r);
        }
    }

    fn start_on_pod(&mut self, now: Micros, p: usize, pod: usize, g: usize, r: u32) {
        let req = self.req(r);
        let factor = match self.cfg.slowdown {
            Some((at_s, f)) if now >= us(at_s) => f,
            _ => 1.0,
        };
        self.pools[p].pods[pod].busy[g] += 1;
        self.slot_changed(p, pod);
        let run_ms = req.service_ms * factor;
        let o = &mut self.out[r as usize];
        o.first_byte_ms = (now + us_ms(req.first_unit_ms * factor) - us(req.arrival_s)) as f64 / 1000.0;
        self.eng.after(us_ms(run_ms), Ev::SlotDone { pool: p, pod, group: g, req: r, run_ms });
    }

    fn slot_done(&mut self, now: Micros, p: usize, pod: usize, g: usize, r: u32, run_ms: f64) {
        let kind = self.req(r).kind;
        let start = now.saturating_sub(us_ms(run_ms));
        let after_horizon = if now > self.horizon && self.in_window(r) { secs(now - start.max(self.horizon)) } else { 0.0 };
        {
            let pd = &mut self.pools[p].pods[pod];
            pd.busy[g] = pd.busy[g].saturating_sub(1);
            pd.busy_after_horizon_s += after_horizon;
        }
        self.slot_changed(p, pod);
        self.pools[p].record_run(pod, kind, run_ms);
        self.finish_req(now, r, Served::Container);
        if self.pools[p].pods[pod].state == PodState::Draining {
            let pd = &self.pools[p].pods[pod];
            if pd.busy.iter().all(|&b| b == 0) && pd.queue.iter().all(|q| q.is_empty()) {
                self.gone(now, p, pod);
            }
            return;
        }
        self.fill(now, p, pod, g);
    }

    fn scale(&mut self, now: Micros, p: usize) {
        let (up, down) = self.pools[p].scale(now, c::HPA_TARGET_UTIL);
        for _ in 0..up {
            let pod = self.pools[p].add_pod(now, false);
            self.register(p, pod);
            self.eng.after(us(self.pools[p].spec.start_s), Ev::PodReady { pool: p, pod });
        }
        for pod in down {
            match self.pools[p].pods[pod].state {
                PodState::Starting => self.gone(now, p, pod),
                PodState::Ready => {
                    self.pools[p].pods[pod].state = PodState::Draining;
                    let groups = self.pools[p].spec.groups.len();
                    for g in 0..groups {
                        let moved: Vec<u32> = self.pools[p].pods[pod].queue[g].drain(..).collect();
                        self.pools[p].backlog[g].extend(moved);
                    }
                    if self.pools[p].pods[pod].busy.iter().all(|&b| b == 0) {
                        self.gone(now, p, pod);
                    } else {
                        self.publish(p, pod, now);
                    }
                    for g in 0..groups {
                        self.drain_backlog(now, p, g);
                    }
                }
                PodState::Draining | PodState::Gone => {}
            }
        }
    }

    /// A pod's slots or queue changed: its report follows (hybrids only: only a router
    /// reads reports), at most one pending per pod.
    fn slot_changed(&mut self, p: usize, pod: usize) {
        if !self.strategy.is_hybrid() {
            return;
        }
        let pd = &mut self.pools[p].pods[pod];
        if !pd.report_pending {
            pd.report_pending = true;
            self.eng.after(c::SLOT_REPORT_DELAY_MS * 1000, Ev::SlotReport { pool: p, pod });
        }
    }

    fn register(&mut self, p: usize, pod: usize) {
        let id = self.pools[p].pods[pod].id.clone();
        self.pods_by_id.insert(id, (p, pod));
    }

    fn publish(&mut self, p: usize, pod: usize, now: Micros) {
        if !self.strategy.is_hybrid() {
            return;
        }
        let Some(rep) = self.pools[p].report(pod, now) else { return };
        if let Some(router) = self.router.as_mut() {
            router.report(rep, now / 1000);
            return;
        }
        match self.view_at.get(&rep.worker_id) {
            Some(&i) => self.view[i] = rep,
            None => {
                self.view_at.insert(rep.worker_id.clone(), self.view.len());
                self.view.push(rep);
            }
        }
    }

    fn gone(&mut self, now: Micros, p: usize, pod: usize) {
        let pd = &mut self.pools[p].pods[pod];
        pd.state = PodState::Gone;
        pd.gone = Some(now);
        // Tombstone: the router forgets the worker.
        if let Some(router) = self.router.as_mut() {
            router.worker_gone(&pd.id);
        }
        if let Some(i) = self.view_at.remove(&pd.id) {
            self.view.remove(i);
            for v in self.view_at.values_mut() {
                if *v > i {
                    *v -= 1;
                }
            }
        }
    }

    fn finish_req(&mut self, now: Micros, r: u32, served: Served) {
        let done_ms = (now - us(self.req(r).arrival_s).min(now)) as f64 / 1000.0;
        let o = &mut self.out[r as usize];
        if o.served != Served::Pending {
            return;
        }
        o.served = served;
        o.done_ms = done_ms;
        self.open -= 1;
        let tier = match served {
            Served::Serverless => Tier::Serverless,
            Served::Container => Tier::Container,
            _ => return,
        };
        let kind = self.req(r).kind;
        let predicted = self.placed.get(r as usize).map_or(0.0, |p| p.1);
        if let Some(router) = self.router.as_mut() {
            // The closed loop: every finished request's latency where it ran (a dual copy's
            // too, with no prediction: it feeds the p95, not the duration ratio).
            router.finished(tier, kind, done_ms, predicted);
        }
    }

    fn finish(mut self) -> RunResult {
        let end = self.eng.now();
        let prices = self.cfg.prices;
        for p in &self.pools {
            let s = p.bill_seconds(self.warmup, self.horizon, end);
            let usd = prices.pod(p.spec.gpu, s);
            if p.spec.gpu {
                self.bill.gpu_pods_usd += usd;
            } else {
                self.bill.cpu_pods_usd += usd;
            }
        }
        self.bill.provisioned_usd = prices.provisioned(self.lambda.provisioned, secs(self.horizon.saturating_sub(self.warmup)));
        RunResult {
            strategy: self.strategy,
            outcomes: { let n = self.reqs.len(); self.out.truncate(n); self.out },
            shadows: self.shadows.len() as u64,
            exercised: self.router.as_ref().map_or(0, |r| r.exercised),
            bill: self.bill,
            series: self.series,
            policy: match &self.router {
                Some(r) => PolicyCalls { calls: r.calls, reasons: r.rules.clone() },
                None => self.policy,
            },
            cold_starts: self.lambda.cold_starts,
            throttles: self.lambda.throttles,
            events: self.eng.processed(),
            clamped: self.eng.clamped(),
            end_s: secs(end),
        }
    }
}
