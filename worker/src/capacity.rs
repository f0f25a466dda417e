//! Builds the capacity report from live state, and publishes it to the router on an interval,
//! on every state change and when the scheduler's slots change ([`crate::slot_watch`]).

use crate::runtime::Runtime;
use crate::scheduler::gpu::DeviceSnapshot;
use kiln_router_client::{CapacityReport, GpuCapacity, HttpPublisher, KindCapacity, Tier, WarmSet, WorkerState};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Report sequence numbers and the last GPU probe.
pub struct Reporter {
    seq: AtomicU64,
    gpus: Mutex<Vec<GpuCapacity>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Reporter {
    pub fn new() -> Self {
        let r = Reporter { seq: AtomicU64::new(0), gpus: Mutex::new(Vec::new()) };
        r.refresh_gpus();
        r
    }

    /// Re-reads GPU memory and utilisation through NVML.
    /// NVENC/NVDEC are what the video codec probe proved by opening sessions (FFmpeg uses
    /// the default device) once it has run, NVML's hints before.
    pub fn refresh_gpus(&self) {
        let probe = kiln_kernels::probe::gpus();
        let video = kiln_kernels::video::probe::proven();
        let gpus = probe
            .devices
            .into_iter()
            .map(|g| GpuCapacity {
                index: g.index,
                name: g.name,
                mem_total_mb: g.mem_total_mb,
                mem_free_mb: g.mem_free_mb,
                util_pct: g.util_pct,
                nvenc: video.map(|v| v.nvenc_h264 || v.nvenc_hevc).unwrap_or(g.nvenc),
                nvdec: video.map(|v| v.nvdec).unwrap_or(g.nvdec),
                ..GpuCapacity::default()
            })
            .collect();
        *self.gpus.lock().unwrap_or_else(|p| p.into_inner()) = gpus;
    }

    /// The report. Per kind, `slots` are the CPU slots a job of the kind may compute on
    /// (its cap, at most `scheduler.cpu_slots`) and `busy` the jobs of the kind computing now:
    /// a job waiting for its batch or the store is not busy, so `free()` is the room a new
    /// job finds. Per GPU, the scheduler's free slots and memory beside NVML's readings.
    pub fn report(&self, rt: &Runtime) -> CapacityReport {
        let snap = rt.scheduler().snapshot();
        let mut kinds = BTreeMap::new();
        for name in rt.kinds().names() {
            let (_, queued, cap) = snap.by_kind.get(name).copied().unwrap_or((0, 0, rt.scheduler().cap(name)));
            let computing = snap.cpu_by_kind.get(name).copied().unwrap_or(0);
            let (p50, p95) = rt.metrics.percentiles(name);
            kinds.insert(
                name.to_owned(),
                KindCapacity {
                    slots: cap.min(snap.slots) as u32,
                    busy: computing as u32,
                    queued: queued as u32,
                    p50_ms: p50,
                    p95_ms: p95,
                },
            );
        }
        let mut gpus = self.gpus.lock().unwrap_or_else(|p| p.into_inner()).clone();
        merge_gpus(&mut gpus, &snap.gpus);
        let cfg = rt.config();
        CapacityReport {
            worker_id: rt.worker().id.clone(),
            tier: if cfg.worker.tier == "serverless" { Tier::Serverless } else { Tier::Container },
            region: cfg.worker.region.clone(),
            state: rt.state(),
            seq: self.seq.fetch_add(1, Ordering::SeqCst) + 1,
            ts_ms: now_ms(),
            ttl_ms: cfg.router.interval_ms * 5 / 2,
            kinds,
            gpus,
            warm: WarmSet { models: rt.kinds().kinds().flat_map(|k| k.warm_models()).collect(), kernels: rt.warm_kinds() },
        }
    }
}

/// Adds the scheduler's slots and memory to NVML's devices, and lists declared devices NVML
/// does not see.
fn merge_gpus(gpus: &mut Vec<GpuCapacity>, scheduled: &[DeviceSnapshot]) {
    const MIB: u64 = 1 << 20;
    for d in scheduled {
        let pos = match gpus.iter().position(|g| g.index == d.index) {
            Some(p) => p,
            None => {
                gpus.push(GpuCapacity { index: d.index, name: "declared".into(), ..GpuCapacity::default() });
                gpus.len() - 1
            }
        };
        let g = &mut gpus[pos];
        g.slots = d.slots as u32;
        g.slots_free = d.slots_free() as u32;
        g.mem_budget_mb = d.mem_budget / MIB;
        g.mem_budget_free_mb = d.mem_free() / MIB;
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Self::new()
    }
}

/// Publishes reports to `router.url` until `stop` fires, then one last (draining) report.
pub async fn publish_loop(rt: Arc<Runtime>, reporter: Arc<Reporter>, url: String, stop: CancellationToken) {
    let publisher = match HttpPublisher::new(url) {
        Ok(p) => p.with_token(rt.config().router.token.clone()),
        Err(e) => return warn!(error = %e, "capacity publisher disabled"),
    };
    let mut state = rt.subscribe_state();
    let mut slots = crate::slot_watch::SlotWatch::new(rt.clone());
    let mut tick = tokio::time::interval(Duration::from_millis(rt.config().router.interval_ms));
    loop {
        tokio::select! {
            _ = tick.tick() => reporter.refresh_gpus(),
            r = state.changed() => if r.is_err() { break },
            _ = slots.changed() => {}
            _ = stop.cancelled() => break,
        }
        let report = reporter.report(&rt);
        match publisher.publish(&report).await {
            Ok(()) => debug!(seq = report.seq, "capacity report sent"),
            Err(e) => warn!(error = %e, "capacity report failed"),
        }
    }
    let mut last = reporter.report(&rt);
    last.state = WorkerState::Draining;
    let _ = publisher.publish(&last).await;
}
