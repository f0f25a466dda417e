//! The capacity report: a worker's warm capacity, sent on an interval and on every state
//! change.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Long-lived pods (Kubernetes, GPU or CPU nodes).
    Container,
    /// Lambda image functions.
    Serverless,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Container => "container",
            Tier::Serverless => "serverless",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Warming,
    Ready,
    Draining,
}

/// Per job kind: how many may run, how many do, how many wait, and recent latencies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindCapacity {
    pub slots: u32,
    pub busy: u32,
    pub queued: u32,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

impl KindCapacity {
    /// Slots free right now, after the queue is served.
    pub fn free(&self) -> u32 {
        self.slots.saturating_sub(self.busy + self.queued)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuCapacity {
    pub index: u32,
    pub name: String,
    pub mem_total_mb: u64,
    pub mem_free_mb: u64,
    pub util_pct: u32,
    pub nvenc: bool,
    pub nvdec: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WarmSet {
    pub models: Vec<String>,
    pub kernels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityReport {
    pub worker_id: String,
    pub tier: Tier,
    pub region: String,
    pub state: WorkerState,
    /// Increases with every report from one worker; a router keeps the highest.
    pub seq: u64,
    pub ts_ms: u64,
    /// The report is stale after `ts_ms + ttl_ms`.
    pub ttl_ms: u64,
    pub kinds: BTreeMap<String, KindCapacity>,
    pub gpus: Vec<GpuCapacity>,
    pub warm: WarmSet,
}

impl CapacityReport {
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms <= self.ts_ms.saturating_add(self.ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_json_matches_design() {
        let mut kinds = BTreeMap::new();
        kinds.insert("thumbnail".to_owned(), KindCapacity { slots: 8, busy: 3, queued: 0, p50_ms: 12.0, p95_ms: 31.0 });
        let r = CapacityReport {
            worker_id: "w1".into(),
            tier: Tier::Container,
            region: "eu".into(),
            state: WorkerState::Ready,
            seq: 42,
            ts_ms: 1000,
            ttl_ms: 5000,
            kinds,
            gpus: vec![],
            warm: WarmSet::default(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["state"], "ready");
        assert_eq!(v["tier"], "container");
        assert_eq!(v["kinds"]["thumbnail"]["slots"], 8);
        assert!(r.is_fresh(6000) && !r.is_fresh(6001));
        assert_eq!(r.kinds["thumbnail"].free(), 5);
    }
}
