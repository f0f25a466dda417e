//! The router's view of warm capacity in both tiers (seed §5, "Input features" and
//! "Cold-start mitigation").
//!
//! - Container workers: the latest [`CapacityReport`] per worker; a report with a lower or
//!   equal `seq` than the one held is dropped, and a report is ignored once past
//!   `ts_ms + ttl_ms`.
//! - Serverless functions cannot report between invocations, so the view learns them from
//!   the invocations: [`CapacityView::invocation_started`] when the router invokes, and
//!   [`CapacityView::observe_invocation`] with each result (instance id, cold start, init
//!   time). An instance counts as warm while it was last seen within the idle lifetime;
//!   occupancy = in flight / warm.
//!
//! [`CapacityView::snapshot`] condenses what one decision needs into a
//! [`Snapshot`], which is also what the decision log keeps.

use crate::closed_loop::ClosedLoop;
use crate::decision::{Candidate, PoolStats, Snapshot};
use crate::report::{CapacityReport, Tier, WorkerState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What [`CapacityView::ingest_report`] did with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    /// First report of this worker.
    Inserted,
    /// Replaced an older report (lower seq).
    Replaced,
    /// Dropped: the view holds one with this seq or higher.
    Stale,
    /// Dropped: already past its ttl.
    Expired,
    /// A serverless instance's report: recorded as a sighting of that instance.
    ServerlessInstance,
}

/// One serverless invocation's result, as the router sees it come back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationObservation {
    pub function: String,
    /// The instance that served it (e.g. the Lambda log stream or a generated id).
    pub instance_id: String,
    pub cold_start: bool,
    /// Init time of a cold start (0 when warm).
    #[serde(default)]
    pub init_ms: f64,
    /// When the result arrived.
    pub finished_ms: u64,
}

/// A warm serverless instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub last_seen_ms: u64,
    /// Whether its first sighting was a cold start.
    pub cold_start: bool,
    pub init_ms: f64,
}

#[derive(Debug, Clone, Default)]
struct FunctionPool {
    instances: BTreeMap<String, Instance>,
    in_flight: u32,
    cold_starts: u64,
    cold_init_total_ms: f64,
}

#[derive(Debug, Clone)]
pub struct CapacityView {
    workers: BTreeMap<String, CapacityReport>,
    functions: BTreeMap<String, FunctionPool>,
    idle_lifetime_ms: u64,
    /// When this router placed requests on each worker ([`CapacityView::placed`]); those
    /// newer than the worker's report count as queued there.
    placements: BTreeMap<String, Vec<u64>>,
}

impl CapacityView {
    /// `idle_lifetime_ms`: how long a serverless instance stays warm after it was last seen.
    pub fn new(idle_lifetime_ms: u64) -> Self {
        CapacityView { workers: BTreeMap::new(), functions: BTreeMap::new(), idle_lifetime_ms, placements: BTreeMap::new() }
    }

    pub fn set_idle_lifetime_ms(&mut self, ms: u64) {
        self.idle_lifetime_ms = ms;
    }

    /// Takes a container worker's report (HTTP POST or the `kiln.capacity` topic). A report
    /// with tier `serverless` (a function instance posting after an invocation) does not
    /// name its function, so it is not stored here: the caller passes it on to
    /// [`CapacityView::ingest_serverless_report`] with the function it came from.
    pub fn ingest_report(&mut self, report: CapacityReport, now_ms: u64) -> Ingest {
        if report.tier == Tier::Serverless {
            return Ingest::ServerlessInstance;
        }
        if !report.is_fresh(now_ms) {
            return Ingest::Expired;
        }
        match self.workers.get(&report.worker_id).map(|held| held.seq) {
            Some(seq) if seq >= report.seq => Ingest::Stale,
            held => {
                // What the report already shows is no longer pending.
                if let Some(p) = self.placements.get_mut(&report.worker_id) {
                    p.retain(|t| *t > report.ts_ms);
                }
                self.workers.insert(report.worker_id.clone(), report);
                if held.is_some() {
                    Ingest::Replaced
                } else {
                    Ingest::Inserted
                }
            }
        }
    }

    /// A report a serverless instance posted after an invocation: a sighting of instance
    /// `report.worker_id` of `function` at `report.ts_ms`.
    pub fn ingest_serverless_report(&mut self, function: &str, report: &CapacityReport) {
        let pool = self.functions.entry(function.to_owned()).or_default();
        let inst = pool.instances.entry(report.worker_id.clone()).or_insert(Instance {
            last_seen_ms: report.ts_ms,
            cold_start: false,
            init_ms: 0.0,
        });
        inst.last_seen_ms = inst.last_seen_ms.max(report.ts_ms);
    }

    /// A worker that shut down cleanly (a tombstone on the topic).
    pub fn remove_worker(&mut self, worker_id: &str) -> bool {
        self.placements.remove(worker_id);
        self.workers.remove(worker_id).is_some()
    }

    /// This router sent a request to `worker_id` at `now_ms`. Until a report of that worker
    /// newer than `now_ms` arrives (one that can show it), the request counts as queued
    /// there in [`CapacityView::candidates`], so a burst between two reports spreads instead
    /// of piling onto the worker that looked free.
    pub fn placed(&mut self, worker_id: &str, now_ms: u64) {
        self.placements.entry(worker_id.to_owned()).or_default().push(now_ms);
    }

    /// Placements on `worker_id` its held report cannot show yet.
    pub fn pending(&self, worker_id: &str) -> u32 {
        let since = self.workers.get(worker_id).map_or(0, |r| r.ts_ms);
        let n = self.placements.get(worker_id).map_or(0, |p| p.iter().filter(|t| **t > since).count());
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The router invoked `function` (the result is still to come).
    pub fn invocation_started(&mut self, function: &str) {
        let pool = self.functions.entry(function.to_owned()).or_default();
        pool.in_flight = pool.in_flight.saturating_add(1);
    }

    /// An invocation that brought no result back (the call failed, timed out or was
    /// throttled): no longer in flight, and no instance sighted.
    pub fn invocation_failed(&mut self, function: &str) {
        if let Some(pool) = self.functions.get_mut(function) {
            pool.in_flight = pool.in_flight.saturating_sub(1);
        }
    }

    /// An invocation's result came back (an unknown instance id is still a sighting of some
    /// instance).
    pub fn observe_invocation(&mut self, obs: &InvocationObservation) {
        let pool = self.functions.entry(obs.function.clone()).or_default();
        pool.in_flight = pool.in_flight.saturating_sub(1);
        if obs.cold_start {
            pool.cold_starts += 1;
            if obs.init_ms.is_finite() && obs.init_ms >= 0.0 {
                pool.cold_init_total_ms += obs.init_ms;
            }
        }
        let inst = pool.instances.entry(obs.instance_id.clone()).or_insert(Instance {
            last_seen_ms: obs.finished_ms,
            cold_start: obs.cold_start,
            init_ms: obs.init_ms,
        });
        inst.last_seen_ms = inst.last_seen_ms.max(obs.finished_ms);
    }

    /// Drops expired reports and instances idle past their lifetime.
    pub fn expire(&mut self, now_ms: u64) {
        self.workers.retain(|_, r| r.is_fresh(now_ms));
        let workers = &self.workers;
        self.placements.retain(|w, _| workers.contains_key(w));
        let life = self.idle_lifetime_ms;
        for pool in self.functions.values_mut() {
            pool.instances.retain(|_, i| now_ms <= i.last_seen_ms.saturating_add(life));
        }
    }

    /// Fresh reports, by worker id (draining and warming workers included).
    pub fn workers(&self, now_ms: u64) -> impl Iterator<Item = &CapacityReport> {
        self.workers.values().filter(move |r| r.is_fresh(now_ms))
    }

    /// Number of reports held, expired ones included until [`CapacityView::expire`].
    pub fn reports_held(&self) -> usize {
        self.workers.len()
    }

    /// The warm pool of a function now.
    pub fn pool(&self, function: &str, now_ms: u64) -> PoolStats {
        let Some(pool) = self.functions.get(function) else {
            return PoolStats { function: function.to_owned(), ..PoolStats::default() };
        };
        let life = self.idle_lifetime_ms;
        let warm = pool.instances.values().filter(|i| now_ms <= i.last_seen_ms.saturating_add(life)).count();
        PoolStats {
            function: function.to_owned(),
            warm: u32::try_from(warm).unwrap_or(u32::MAX),
            in_flight: pool.in_flight,
            cold_init_ms: (pool.cold_starts > 0).then(|| pool.cold_init_total_ms / pool.cold_starts as f64),
        }
    }

    /// The instances of a function seen so far (idle ones included until
    /// [`CapacityView::expire`]), by instance id.
    pub fn instances(&self, function: &str) -> impl Iterator<Item = (&str, &Instance)> {
        self.functions.get(function).into_iter().flat_map(|p| p.instances.iter().map(|(id, i)| (id.as_str(), i)))
    }

    /// Cold starts seen by a function so far.
    pub fn cold_starts(&self, function: &str) -> u64 {
        self.functions.get(function).map_or(0, |p| p.cold_starts)
    }

    /// Ready, fresh container workers that serve `kind` (at least one slot), by worker id;
    /// `queued` includes this router's placements the report cannot show yet.
    pub fn candidates(&self, kind: &str, now_ms: u64) -> Vec<Candidate> {
        self.workers(now_ms)
            .filter(|r| r.state == WorkerState::Ready)
            .filter_map(|r| {
                let k = r.kinds.get(kind).filter(|k| k.slots > 0)?;
                let finite = |v: f64| if v.is_finite() && v >= 0.0 { v } else { 0.0 };
                Some(Candidate {
                    worker_id: r.worker_id.clone(),
                    gpu: !r.gpus.is_empty(),
                    slots: k.slots,
                    busy: k.busy,
                    queued: k.queued.saturating_add(self.pending(&r.worker_id)),
                    p50_ms: finite(k.p50_ms),
                    p95_ms: finite(k.p95_ms),
                })
            })
            .collect()
    }

    /// What one decision for `kind` needs: candidates, the function's pool, and the closed
    /// loop's p95 and ratios for the kind.
    pub fn snapshot(&self, kind: &str, function: &str, closed_loop: &ClosedLoop, now_ms: u64) -> Snapshot {
        Snapshot {
            now_ms,
            containers: self.candidates(kind, now_ms),
            serverless: self.pool(function, now_ms),
            p95_ms: closed_loop.p95_pair(kind),
            ratio: closed_loop.ratio_pair(kind),
            kind_rps: None,
        }
    }
}

impl Default for CapacityView {
    fn default() -> Self {
        CapacityView::new(crate::config::ServerlessLimits::default().idle_lifetime_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{KindCapacity, WarmSet};

    fn report(id: &str, seq: u64, ts: u64, busy: u32) -> CapacityReport {
        let mut kinds = BTreeMap::new();
        kinds.insert("thumbnail".into(), KindCapacity { slots: 4, busy, queued: 0, p50_ms: 10.0, p95_ms: 20.0 });
        CapacityReport {
            worker_id: id.into(),
            tier: Tier::Container,
            region: "r".into(),
            state: WorkerState::Ready,
            seq,
            ts_ms: ts,
            ttl_ms: 5000,
            kinds,
            gpus: vec![],
            warm: WarmSet::default(),
        }
    }

    #[test]
    fn higher_seq_replaces_lower_is_dropped() {
        let mut v = CapacityView::default();
        assert_eq!(v.ingest_report(report("w1", 5, 1000, 1), 1000), Ingest::Inserted);
        assert_eq!(v.ingest_report(report("w1", 4, 1500, 3), 1500), Ingest::Stale);
        assert_eq!(v.ingest_report(report("w1", 5, 1500, 3), 1500), Ingest::Stale);
        assert_eq!(v.candidates("thumbnail", 1500)[0].busy, 1);
        assert_eq!(v.ingest_report(report("w1", 6, 1500, 2), 1500), Ingest::Replaced);
        assert_eq!(v.candidates("thumbnail", 1500)[0].busy, 2);
        assert!(v.candidates("render", 1500).is_empty());
    }

    #[test]
    fn placements_count_until_a_report_can_show_them() {
        let mut v = CapacityView::default();
        v.ingest_report(report("w1", 1, 1000, 1), 1000);
        v.placed("w1", 1100);
        v.placed("w1", 1200);
        assert_eq!(v.candidates("thumbnail", 1300)[0].queued, 2);
        // A report taken at 1150 shows the first one (busy 2), not the second.
        assert_eq!(v.ingest_report(report("w1", 2, 1150, 2), 1300), Ingest::Replaced);
        let c = &v.candidates("thumbnail", 1300)[0];
        assert_eq!((c.busy, c.queued), (2, 1));
        // A stale report changes nothing.
        assert_eq!(v.ingest_report(report("w1", 1, 5000, 0), 1300), Ingest::Stale);
        assert_eq!(v.pending("w1"), 1);
        v.ingest_report(report("w1", 3, 1250, 3), 1300);
        assert_eq!(v.pending("w1"), 0);
        v.placed("gone", 1);
        v.expire(1300);
        assert_eq!(v.pending("gone"), 0);
        assert!(v.remove_worker("w1"));
        assert_eq!(v.pending("w1"), 0);
    }

    #[test]
    fn reports_expire_by_ttl() {
        let mut v = CapacityView::default();
        assert_eq!(v.ingest_report(report("old", 1, 0, 0), 6000), Ingest::Expired);
        v.ingest_report(report("w1", 1, 1000, 0), 1000);
        assert_eq!(v.candidates("thumbnail", 6000).len(), 1);
        assert!(v.candidates("thumbnail", 6001).is_empty());
        assert_eq!(v.reports_held(), 1);
        v.expire(6001);
        assert_eq!(v.reports_held(), 0);
        let mut draining = report("d", 1, 1000, 0);
        draining.state = WorkerState::Draining;
        v.ingest_report(draining, 1000);
        assert!(v.candidates("thumbnail", 1000).is_empty());
        assert!(v.remove_worker("d"));
    }

    #[test]
    fn serverless_warm_pool_counts_instances_within_idle_lifetime() {
        let mut v = CapacityView::new(10_000);
        let obs = |id: &str, cold: bool, t: u64| InvocationObservation {
            function: "kiln".into(),
            instance_id: id.into(),
            cold_start: cold,
            init_ms: if cold { 900.0 } else { 0.0 },
            finished_ms: t,
        };
        assert_eq!(v.pool("kiln", 0).warm, 0);
        v.invocation_started("kiln");
        v.invocation_started("kiln");
        v.invocation_started("kiln");
        assert_eq!(v.pool("kiln", 0).in_flight, 3);
        v.invocation_started("kiln");
        v.invocation_failed("kiln");
        v.invocation_failed("other");
        assert_eq!(v.pool("kiln", 0).in_flight, 3, "a failed call is no longer in flight");
        assert_eq!(v.pool("other", 0).warm, 0);
        v.observe_invocation(&obs("i1", true, 1000));
        v.observe_invocation(&obs("i2", true, 2000));
        let p = v.pool("kiln", 2000);
        assert_eq!((p.warm, p.in_flight, p.cold_init_ms), (2, 1, Some(900.0)));
        assert_eq!(p.occupancy(), 0.5);
        let seen: Vec<_> = v.instances("kiln").map(|(id, i)| (id, i.cold_start, i.last_seen_ms)).collect();
        assert_eq!(seen, vec![("i1", true, 1000), ("i2", true, 2000)]);
        v.observe_invocation(&obs("i1", false, 5000));
        assert_eq!(v.cold_starts("kiln"), 2);
        // i2 last seen at 2000: idle past 12_000; i1 (5000) until 15_000.
        assert_eq!(v.pool("kiln", 12_000).warm, 2);
        assert_eq!(v.pool("kiln", 12_001).warm, 1);
        assert_eq!(v.pool("kiln", 15_001).warm, 0);
        assert_eq!(v.pool("kiln", 15_001).in_flight, 0);
        v.expire(12_001);
        assert_eq!(v.pool("kiln", 0).warm, 1, "expire dropped i2 for good");
        // A serverless instance's own report is a sighting too.
        let mut r = report("i9", 1, 20_000, 0);
        r.tier = Tier::Serverless;
        assert_eq!(v.ingest_report(r.clone(), 20_000), Ingest::ServerlessInstance);
        v.ingest_serverless_report("kiln", &r);
        assert_eq!(v.pool("kiln", 20_000).warm, 1);
    }
}
