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

/// One GPU: what NVML reads (`mem_*_mb`, `util_pct`), what the video probe proved, and what
/// the worker's scheduler can still hand out on it (`slots*`, `mem_budget*_mb`; 0 from a
/// worker that does not schedule GPUs, or an older one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuCapacity {
    pub index: u32,
    pub name: String,
    pub mem_total_mb: u64,
    pub mem_free_mb: u64,
    pub util_pct: u32,
    pub nvenc: bool,
    pub nvdec: bool,
    /// Jobs that may run device work on it at once.
    #[serde(default)]
    pub slots: u32,
    /// Of those, free now.
    #[serde(default)]
    pub slots_free: u32,
    /// GPU memory the scheduler hands out on it (warm models and in-flight buffers).
    #[serde(default)]
    pub mem_budget_mb: u64,
    /// Of that budget, neither held by warm models nor by running jobs.
    #[serde(default)]
    pub mem_budget_free_mb: u64,
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

    #[test]
    fn gpu_scheduling_fields_default_for_older_reports() {
        let old = r#"{"index":0,"name":"H200","mem_total_mb":143000,"mem_free_mb":140000,"util_pct":3,"nvenc":true,"nvdec":true}"#;
        let g: GpuCapacity = serde_json::from_str(old).unwrap();
        assert_eq!((g.slots, g.slots_free, g.mem_budget_mb, g.mem_budget_free_mb), (0, 0, 0, 0));
        let g = GpuCapacity { slots: 2, slots_free: 1, mem_budget_mb: 1000, mem_budget_free_mb: 600, ..g };
        let v = serde_json::to_value(&g).unwrap();
        assert_eq!((v["slots_free"].as_u64(), v["mem_budget_free_mb"].as_u64()), (Some(1), Some(600)));
    }
}
