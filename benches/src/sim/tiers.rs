//! The two compute tiers as state machines (the event loop in `run.rs` drives them):
//! - serverless: one Lambda function (kiln is one image), instances that cold-start, serve one
//!   request at a time, idle warm until reclaimed, an account concurrency limit, optional
//!   provisioned instances;
//! - containers: pools of pods (CPU, render, GPU), each pod with slot groups and a queue per
//!   group, an HPA-like scaler (sync interval, target utilisation, scale-up limit, scale-down
//!   stabilisation, pod start time, min/max), and the CapacityReport each pod publishes.

use super::constants as c;
use super::engine::{secs, us, Micros};
use super::workload::Kind;
use kiln_router_client::{CapacityReport, GpuCapacity, KindCapacity, Tier, WarmSet, WorkerState};
use std::collections::{BTreeMap, VecDeque};

// ------------------------------------------------------------------------------ serverless

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstState {
    Busy,
    Idle,
    Dead,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub state: InstState,
    pub provisioned: bool,
    /// Bumped on every release, so a stale expiry check can tell it is stale.
    pub gen: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Acquire {
    Warm(usize),
    Cold(usize),
    Throttled,
}

#[derive(Debug)]
pub struct Lambda {
    pub inst: Vec<Instance>,
    idle: Vec<usize>,
    alive: usize,
    busy: usize,
    limit: usize,
    pub provisioned: usize,
    pub cold_starts: u64,
    pub invocations: u64,
    pub throttles: u64,
}

impl Lambda {
    pub fn new(provisioned: usize, limit: usize) -> Self {
        let inst = (0..provisioned).map(|_| Instance { state: InstState::Idle, provisioned: true, gen: 0 }).collect();
        Lambda { inst, idle: (0..provisioned).collect(), alive: provisioned, busy: 0, limit, provisioned, cold_starts: 0, invocations: 0, throttles: 0 }
    }

    /// A warm idle instance (most recently used first, as Lambda does), else a new cold one,
    /// else throttled at the concurrency limit.
    pub fn acquire(&mut self) -> Acquire {
        self.invocations += 1;
        if let Some(i) = self.idle.pop() {
            self.inst[i].state = InstState::Busy;
            self.busy += 1;
            return Acquire::Warm(i);
        }
        if self.alive >= self.limit {
            self.throttles += 1;
            self.invocations -= 1;
            return Acquire::Throttled;
        }
        self.inst.push(Instance { state: InstState::Busy, provisioned: false, gen: 0 });
        self.alive += 1;
        self.busy += 1;
        self.cold_starts += 1;
        Acquire::Cold(self.inst.len() - 1)
    }

    /// Back to the warm pool; returns the generation an expiry check must match (None for
    /// provisioned instances, which never expire).
    pub fn release(&mut self, i: usize) -> Option<u64> {
        let inst = self.inst.get_mut(i)?;
        if inst.state != InstState::Busy {
            return None;
        }
        inst.state = InstState::Idle;
        inst.gen += 1;
        self.busy -= 1;
        self.idle.push(i);
        if inst.provisioned {
            None
        } else {
            Some(inst.gen)
        }
    }

    /// Reclaims an instance idle since the release of generation `gen`.
    pub fn expire(&mut self, i: usize, gen: u64) {
        let Some(inst) = self.inst.get_mut(i) else { return };
        if inst.state == InstState::Idle && inst.gen == gen && !inst.provisioned {
            inst.state = InstState::Dead;
            self.alive -= 1;
            self.idle.retain(|&j| j != i);
        }
    }

    pub fn idle(&self) -> usize {
        self.idle.len()
    }
    pub fn busy(&self) -> usize {
        self.busy
    }
    pub fn alive(&self) -> usize {
        self.alive
    }
    pub fn is_provisioned(&self, i: usize) -> bool {
        self.inst.get(i).is_some_and(|x| x.provisioned)
    }
}

// ------------------------------------------------------------------------------ containers

#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub kinds: Vec<Kind>,
    pub slots: u32,
}

#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub name: &'static str,
    pub gpu: bool,
    pub groups: Vec<GroupSpec>,
    pub min: u32,
    pub max: u32,
    pub start_s: f64,
    pub sync_s: f64,
}

/// The three pools: short CPU work, renders (kept apart so hour-long renders cannot take the
/// thumbnail slots; seed §5 "pins long-running batch work"), and GPU work.
pub fn default_pools(cpu_start_s: f64, gpu_start_s: f64) -> Vec<PoolSpec> {
    vec![
        PoolSpec {
            name: "cpu",
            gpu: false,
            groups: vec![GroupSpec { kinds: vec![Kind::Thumbnail, Kind::Metadata, Kind::Auth], slots: c::CPU_POD_SLOTS }],
            min: c::CPU_MIN_PODS,
            max: c::CPU_MAX_PODS,
            start_s: cpu_start_s,
            sync_s: c::HPA_SYNC_S,
        },
        PoolSpec {
            name: "render",
            gpu: false,
            groups: vec![GroupSpec { kinds: vec![Kind::Render], slots: c::CPU_POD_SLOTS }],
            min: c::RENDER_MIN_PODS,
            max: c::RENDER_MAX_PODS,
            start_s: cpu_start_s,
            sync_s: c::HPA_SYNC_S,
        },
        PoolSpec {
            name: "gpu",
            gpu: true,
            groups: vec![
                GroupSpec { kinds: vec![Kind::Infer], slots: c::GPU_POD_INFER_SLOTS },
                GroupSpec { kinds: vec![Kind::Transcode], slots: c::GPU_POD_TRANSCODE_SLOTS },
            ],
            min: c::GPU_MIN_PODS,
            max: c::GPU_MAX_PODS,
            start_s: gpu_start_s,
            sync_s: c::GPU_SCALER_SYNC_S,
        },
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    Starting,
    Ready,
    Draining,
    Gone,
}

#[derive(Debug)]
pub struct Pod {
    pub id: String,
    pub state: PodState,
    pub created: Micros,
    pub gone: Option<Micros>,
    pub busy: Vec<u32>,
    pub queue: Vec<VecDeque<u32>>,
    /// Recent run times per kind (the report's p50/p95).
    recent: BTreeMap<Kind, VecDeque<f64>>,
    pub seq: u64,
    /// Slot-seconds run after the horizon (billed pro rata, see `Pool::bill_seconds`).
    pub busy_after_horizon_s: f64,
    /// A report on a slot change is due (`constants::SLOT_REPORT_DELAY_MS`).
    pub report_pending: bool,
}

#[derive(Debug)]
pub struct Pool {
    pub spec: PoolSpec,
    pub pods: Vec<Pod>,
    /// Work not yet given to a pod (the pull queue: Kafka in kiln's deployment).
    pub backlog: Vec<VecDeque<u32>>,
    recommendations: VecDeque<(Micros, u32)>,
}

impl Pool {
    pub fn new(spec: PoolSpec) -> Self {
        let groups = spec.groups.len();
        Pool { spec, pods: Vec::new(), backlog: vec![VecDeque::new(); groups], recommendations: VecDeque::new() }
    }

    pub fn group_of(&self, kind: Kind) -> Option<usize> {
        self.spec.groups.iter().position(|g| g.kinds.contains(&kind))
    }

    pub fn add_pod(&mut self, now: Micros, ready: bool) -> usize {
        let n = self.spec.groups.len();
        let id = format!("{}-{}", self.spec.name, self.pods.len());
        self.pods.push(Pod {
            id,
            state: if ready { PodState::Ready } else { PodState::Starting },
            created: now,
            gone: None,
            busy: vec![0; n],
            queue: vec![VecDeque::new(); n],
            recent: BTreeMap::new(),
            seq: 0,
            busy_after_horizon_s: 0.0,
            report_pending: false,
        });
        self.pods.len() - 1
    }

    /// A ready pod with a free slot in `group` and nothing queued there: least busy first,
    /// then lowest index (deterministic).
    pub fn free_pod(&self, group: usize) -> Option<usize> {
        let slots = self.spec.groups.get(group)?.slots;
        self.pods
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state == PodState::Ready && p.busy[group] < slots && p.queue[group].is_empty())
            .min_by_key(|(i, p)| (p.busy[group], *i))
            .map(|(i, _)| i)
    }

    pub fn has_free_slot(&self, pod: usize, group: usize) -> bool {
        let slots = self.spec.groups.get(group).map_or(0, |g| g.slots);
        self.pods.get(pod).is_some_and(|p| p.state == PodState::Ready && p.busy[group] < slots)
    }

    /// The next request for a freed slot: the pod's own queue first, then the pool backlog.
    pub fn next_for(&mut self, pod: usize, group: usize) -> Option<u32> {
        let p = self.pods.get_mut(pod)?;
        if let Some(r) = p.queue[group].pop_front() {
            return Some(r);
        }
        if p.state != PodState::Ready {
            return None;
        }
        self.backlog[group].pop_front()
    }

    pub fn record_run(&mut self, pod: usize, kind: Kind, run_ms: f64) {
        if let Some(p) = self.pods.get_mut(pod) {
            let q = p.recent.entry(kind).or_default();
            if q.len() == c::REPORT_WINDOW {
                q.pop_front();
            }
            q.push_back(run_ms);
        }
    }

    /// The CapacityReport the pod would publish now (worker/src/capacity.rs's shape).
    pub fn report(&mut self, pod: usize, now: Micros) -> Option<CapacityReport> {
        let spec = &self.spec;
        let p = self.pods.get_mut(pod)?;
        p.seq += 1;
        let mut kinds = BTreeMap::new();
        for (g, group) in spec.groups.iter().enumerate() {
            for &k in &group.kinds {
                let (p50, p95) = percentiles(p.recent.get(&k));
                kinds.insert(
                    k.name().to_owned(),
                    KindCapacity { slots: group.slots, busy: p.busy[g], queued: p.queue[g].len() as u32, p50_ms: p50, p95_ms: p95 },
                );
            }
        }
        let state = match p.state {
            PodState::Starting => WorkerState::Warming,
            PodState::Ready => WorkerState::Ready,
            PodState::Draining | PodState::Gone => WorkerState::Draining,
        };
        let gpus = if spec.gpu { vec![GpuCapacity { name: "H100".into(), ..GpuCapacity::default() }] } else { vec![] };
        Some(CapacityReport {
            worker_id: p.id.clone(),
            tier: Tier::Container,
            region: "sim".into(),
            state,
            seq: p.seq,
            ts_ms: now / 1000,
            ttl_ms: c::REPORT_TTL_MS,
            kinds,
            gpus,
            warm: WarmSet::default(),
        })
    }

    pub fn count(&self, state: PodState) -> u32 {
        self.pods.iter().filter(|p| p.state == state).count() as u32
    }

    /// Pods that cost money now.
    pub fn alive(&self) -> u32 {
        self.pods.iter().filter(|p| p.state != PodState::Gone).count() as u32
    }

    pub fn outstanding(&self) -> usize {
        let queued: usize = self.pods.iter().flat_map(|p| p.queue.iter()).map(|q| q.len()).sum();
        let busy: u32 = self.pods.iter().flat_map(|p| p.busy.iter()).sum();
        queued + busy as usize + self.backlog.iter().map(|q| q.len()).sum::<usize>()
    }

    /// HPA: desired = ceil(busy slots / (slots per pod * target)), per group, the largest;
    /// scale-up at most max(2x, +4) per sync; scale-down to the highest recommendation of the
    /// stabilisation window; clamped to [min, max]. Returns (pods to start, pods to drain).
    pub fn scale(&mut self, now: Micros, target: f64) -> (u32, Vec<usize>) {
        let mut desired = 0u32;
        for (g, group) in self.spec.groups.iter().enumerate() {
            let busy: u32 = self.pods.iter().filter(|p| p.state == PodState::Ready).map(|p| p.busy[g]).sum();
            let d = (busy as f64 / (group.slots as f64 * target)).ceil() as u32;
            desired = desired.max(d);
        }
        let current = self.count(PodState::Ready) + self.count(PodState::Starting);
        let up_limit = (current * 2).max(current + c::HPA_MAX_SCALE_UP_PODS);
        desired = desired.min(up_limit).clamp(self.spec.min, self.spec.max);
        self.recommendations.push_back((now, desired));
        let window = us(c::HPA_SCALE_DOWN_WINDOW_S);
        while self.recommendations.front().is_some_and(|&(t, _)| t + window < now) {
            self.recommendations.pop_front();
        }
        if desired > current {
            return (desired - current, vec![]);
        }
        let stable = self.recommendations.iter().map(|&(_, d)| d).max().unwrap_or(desired);
        if stable >= current {
            return (0, vec![]);
        }
        // Drain: starting pods first, then the least busy ready pods, highest index first.
        let mut victims: Vec<usize> = Vec::new();
        let excess = (current - stable) as usize;
        let mut starting: Vec<usize> = (0..self.pods.len()).filter(|&i| self.pods[i].state == PodState::Starting).collect();
        starting.reverse();
        victims.extend(starting.into_iter().take(excess));
        if victims.len() < excess {
            let mut ready: Vec<usize> = (0..self.pods.len()).filter(|&i| self.pods[i].state == PodState::Ready).collect();
            ready.sort_by_key(|&i| (self.pods[i].busy.iter().sum::<u32>(), std::cmp::Reverse(i)));
            victims.extend(ready.into_iter().take(excess - victims.len()));
        }
        (0, victims)
    }

    /// Pod-seconds to bill in [from, to]: whole pods inside the window, and after `to` only
    /// the slot-seconds that finished work arriving in the window.
    pub fn bill_seconds(&self, from: Micros, to: Micros, end: Micros) -> f64 {
        let slots: u32 = self.spec.groups.iter().map(|g| g.slots).max().unwrap_or(1).max(1);
        self.pods
            .iter()
            .map(|p| {
                let gone = p.gone.unwrap_or(end);
                let a = p.created.max(from);
                let b = gone.min(to);
                let inside = if b > a { secs(b - a) } else { 0.0 };
                inside + p.busy_after_horizon_s / slots as f64
            })
            .sum()
    }
}

fn percentiles(v: Option<&VecDeque<f64>>) -> (f64, f64) {
    let Some(v) = v else { return (0.0, 0.0) };
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mut s: Vec<f64> = v.iter().copied().collect();
    s.sort_by(f64::total_cmp);
    let at = |q: f64| s[(((s.len() as f64) * q).ceil() as usize).clamp(1, s.len()) - 1];
    (at(0.5), at(0.95))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_reuses_warm_instances_and_expires_idle_ones() {
        let mut l = Lambda::new(1, 3);
        assert_eq!(l.acquire(), Acquire::Warm(0));
        assert_eq!(l.acquire(), Acquire::Cold(1));
        assert_eq!(l.acquire(), Acquire::Cold(2));
        assert_eq!(l.acquire(), Acquire::Throttled);
        assert_eq!(l.release(0), None); // provisioned: never expires
        let g = l.release(1).expect("on-demand instance has an expiry");
        assert_eq!(l.acquire(), Acquire::Warm(1)); // most recently used first
        l.expire(1, g); // stale check: instance is busy again
        assert_eq!(l.alive(), 3);
        let g = l.release(1).expect("gen");
        l.expire(1, g);
        assert_eq!((l.alive(), l.idle(), l.busy()), (2, 1, 1));
    }

    #[test]
    fn hpa_scales_up_by_utilisation_and_down_after_the_window() {
        let mut pool = Pool::new(default_pools(30.0, 90.0).remove(0));
        for _ in 0..2 {
            pool.add_pod(0, true);
        }
        pool.pods[0].busy[0] = 2;
        pool.pods[1].busy[0] = 2;
        // 4 busy slots / (2 * 0.7) = 2.86 -> 3 pods.
        assert_eq!(pool.scale(0, 0.7), (1, vec![]));
        pool.add_pod(0, false);
        pool.pods[0].busy[0] = 0;
        pool.pods[1].busy[0] = 0;
        // Recommendation 2 (min), but 3 stays within the stabilisation window.
        assert_eq!(pool.scale(us(100.0), 0.7), (0, vec![]));
        let (up, down) = pool.scale(us(400.0), 0.7);
        assert_eq!((up, down.len()), (0, 1));
        assert_eq!(pool.pods[down[0]].state, PodState::Starting);
    }
}
