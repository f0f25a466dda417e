//! GPU slots and GPU memory, per device.
//!
//! Each device has a number of slots (jobs running device work on it at once) and a memory
//! budget. A job asks for one slot and the device memory its buffers need
//! ([`GpuPool::acquire`]); it gets the device with the most memory free among those with a
//! free slot and room, and holds both until it drops the [`Grant`]. Warm models hold memory
//! for as long as they stay loaded ([`GpuPool::reserve`], a [`Reservation`]), so what the
//! report calls free is the budget less warm models less in-flight buffers. Waiters are
//! served interactive first, then in arrival order; a request that does not fit yet lets a
//! later, smaller one that fits go first. A request larger than every device's whole budget
//! is refused at once rather than queued forever.

use kiln_jobs::resources::GpuGrant;
use kiln_jobs::{JobError, Priority};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// One device as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// NVML / CUDA ordinal.
    pub index: u32,
    pub slots: usize,
    /// GPU memory the scheduler hands out on this device, in bytes.
    pub mem_bytes: u64,
}

/// A device's counts, for the capacity report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSnapshot {
    pub index: u32,
    pub slots: usize,
    pub busy: usize,
    pub mem_budget: u64,
    /// Held by running jobs' grants.
    pub mem_in_use: u64,
    /// Held by warm models.
    pub mem_reserved: u64,
}

impl DeviceSnapshot {
    pub fn mem_free(&self) -> u64 {
        self.mem_budget.saturating_sub(self.mem_in_use + self.mem_reserved)
    }
    pub fn slots_free(&self) -> usize {
        self.slots.saturating_sub(self.busy)
    }
}

struct Waiter {
    seq: u64,
    mem: u64,
    /// The one device (position) it may run on.
    only: Option<usize>,
    tx: oneshot::Sender<Grant>,
}

#[derive(Default)]
struct State {
    busy: Vec<usize>,
    in_use: Vec<u64>,
    reserved: Vec<u64>,
    waiters: [VecDeque<Waiter>; 2],
    next_seq: u64,
}

pub struct GpuPool {
    devices: Vec<Device>,
    state: Mutex<State>,
}

fn qindex(p: Priority) -> usize {
    match p {
        Priority::Interactive => 0,
        Priority::Batch => 1,
    }
}

impl GpuPool {
    pub fn new(devices: Vec<Device>) -> Self {
        let n = devices.len();
        let state = State { busy: vec![0; n], in_use: vec![0; n], reserved: vec![0; n], ..State::default() };
        GpuPool { devices, state: Mutex::new(state) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The position of device `index` in the pool.
    fn position(&self, index: u32) -> Option<usize> {
        self.devices.iter().position(|d| d.index == index)
    }

    /// A slot and `mem` bytes on one device, when free. Fails at once without devices, or
    /// when no device's whole budget could hold `mem`.
    pub fn acquire(self: &Arc<Self>, priority: Priority, mem: u64) -> GpuWait {
        self.acquire_on(None, priority, mem)
    }

    /// Like [`GpuPool::acquire`], on device `index` only when given.
    pub fn acquire_on(self: &Arc<Self>, index: Option<u32>, priority: Priority, mem: u64) -> GpuWait {
        let refuse = |e: JobError| GpuWait { pool: self.clone(), seq: None, qi: 0, rx: None, refused: Some(e) };
        if self.devices.is_empty() {
            return refuse(JobError::unsupported("this worker has no GPU (scheduler.gpu_devices = 0, or NVML found none)"));
        }
        let only = match index {
            Some(i) => match self.position(i) {
                Some(pos) => Some(pos),
                None => return refuse(JobError::unsupported(format!("GPU {i} is not scheduled on this worker"))),
            },
            None => None,
        };
        let largest = self
            .devices
            .iter()
            .enumerate()
            .filter(|(pos, _)| only.is_none_or(|o| o == *pos))
            .map(|(_, d)| d.mem_bytes)
            .max()
            .unwrap_or(0);
        if mem > largest {
            return refuse(JobError::unsupported(format!(
                "the job needs {} MiB of GPU memory; the largest device budget here is {} MiB",
                mem >> 20,
                largest >> 20
            )));
        }
        let mut st = self.lock();
        let (tx, rx) = oneshot::channel();
        let seq = st.next_seq;
        st.next_seq += 1;
        let qi = qindex(priority);
        st.waiters[qi].push_back(Waiter { seq, mem, only, tx });
        self.dispatch(&mut st);
        GpuWait { pool: self.clone(), seq: Some(seq), qi, rx: Some(rx), refused: None }
    }

    /// Holds `bytes` on device `index` until the reservation is dropped (a warm model). Never
    /// waits: a model is loaded whether or not it fits, and jobs then wait for what is left.
    pub fn reserve(self: &Arc<Self>, index: u32, bytes: u64) -> Option<Reservation> {
        let pos = self.position(index)?;
        self.lock().reserved[pos] += bytes;
        Some(Reservation { pool: self.clone(), pos, bytes })
    }

    fn dispatch(self: &Arc<Self>, st: &mut State) {
        for qi in 0..2 {
            let mut i = 0;
            while i < st.waiters[qi].len() {
                let (mem, only) = (st.waiters[qi][i].mem, st.waiters[qi][i].only);
                let best = (0..self.devices.len())
                    .filter(|&d| only.is_none_or(|o| o == d) && st.busy[d] < self.devices[d].slots)
                    .map(|d| (self.devices[d].mem_bytes.saturating_sub(st.in_use[d] + st.reserved[d]), d))
                    .filter(|(free, _)| *free >= mem)
                    .max_by_key(|(free, d)| (*free, std::cmp::Reverse(*d)));
                let Some((_, d)) = best else {
                    i += 1;
                    continue;
                };
                let Some(w) = st.waiters[qi].remove(i) else { break };
                st.busy[d] += 1;
                st.in_use[d] += mem;
                let grant = Grant { pool: Some(self.clone()), pos: d, index: self.devices[d].index, mem };
                if let Err(mut g) = w.tx.send(grant) {
                    g.pool = None;
                    st.busy[d] -= 1;
                    st.in_use[d] -= mem;
                }
            }
        }
    }

    fn free(self: &Arc<Self>, pos: usize, mem: u64) {
        let mut st = self.lock();
        st.busy[pos] = st.busy[pos].saturating_sub(1);
        st.in_use[pos] = st.in_use[pos].saturating_sub(mem);
        self.dispatch(&mut st);
    }

    pub fn snapshot(&self) -> Vec<DeviceSnapshot> {
        let st = self.lock();
        self.devices
            .iter()
            .enumerate()
            .map(|(i, d)| DeviceSnapshot {
                index: d.index,
                slots: d.slots,
                busy: st.busy[i],
                mem_budget: d.mem_bytes,
                mem_in_use: st.in_use[i],
                mem_reserved: st.reserved[i],
            })
            .collect()
    }
}

/// The pool as the job kinds see it: reservations for warm models.
pub struct Ledger(pub Arc<GpuPool>);

impl kiln_jobs::GpuLedger for Ledger {
    fn reserve_gpu(&self, device: u32, bytes: u64) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        self.0.reserve(device, bytes).map(|r| Box::new(r) as Box<dyn std::any::Any + Send + Sync>)
    }
}

/// A GPU slot and memory on one device; dropping it frees both.
pub struct Grant {
    pool: Option<Arc<GpuPool>>,
    pos: usize,
    index: u32,
    mem: u64,
}

impl GpuGrant for Grant {
    fn device(&self) -> u32 {
        self.index
    }
    fn mem_bytes(&self) -> u64 {
        self.mem
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.free(self.pos, self.mem);
        }
    }
}

/// Memory a warm model holds on a device; dropping it gives the memory back.
pub struct Reservation {
    pool: Arc<GpuPool>,
    pos: usize,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        st.reserved[self.pos] = st.reserved[self.pos].saturating_sub(self.bytes);
        self.pool.dispatch(&mut st);
    }
}

/// Waiting for a [`Grant`]; dropping it leaves the queue.
pub struct GpuWait {
    pool: Arc<GpuPool>,
    seq: Option<u64>,
    qi: usize,
    rx: Option<oneshot::Receiver<Grant>>,
    refused: Option<JobError>,
}

impl Future for GpuWait {
    type Output = Result<Grant, JobError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(e) = self.refused.take() {
            return Poll::Ready(Err(e));
        }
        let Some(rx) = self.rx.as_mut() else { return Poll::Ready(Err(JobError::internal("GPU wait polled after it ended"))) };
        match Pin::new(rx).poll(cx) {
            Poll::Ready(r) => {
                self.rx = None;
                self.seq = None;
                Poll::Ready(r.map_err(|_| JobError::internal("the GPU pool dropped a waiter")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for GpuWait {
    fn drop(&mut self) {
        let Some(seq) = self.seq.take() else { return };
        let mut st = self.pool.lock();
        st.waiters[self.qi].retain(|w| w.seq != seq);
        // A grant sent but not received is dropped with `rx` (its Drop frees it, after this
        // lock is released).
        drop(st);
        self.rx.take();
    }
}

/// The devices to schedule: the first `scheduler.gpu_devices` of what NVML lists (all when
/// unset), each with `gpu_slots` slots and `gpu_memory_mb` (else its total memory). Devices
/// declared beyond what NVML sees get indexes after NVML's and need `gpu_memory_mb`; without
/// it they are left out (logged). No NVML (no driver, no GPU): no devices, unless declared.
pub fn configured(cfg: &crate::config::SchedulerConfig, probe: &kiln_kernels::probe::GpuProbe) -> Vec<Device> {
    let want = cfg.gpu_devices.unwrap_or(probe.devices.len());
    let mib = 1u64 << 20;
    let mut out: Vec<Device> = probe
        .devices
        .iter()
        .take(want)
        .map(|g| Device {
            index: g.index,
            slots: cfg.gpu_slots,
            mem_bytes: (if cfg.gpu_memory_mb > 0 { cfg.gpu_memory_mb } else { g.mem_total_mb }).saturating_mul(mib),
        })
        .collect();
    let mut next = probe.devices.iter().map(|g| g.index + 1).max().unwrap_or(0);
    while out.len() < want {
        if cfg.gpu_memory_mb == 0 {
            tracing::warn!(
                declared = want,
                found = probe.devices.len(),
                "scheduler.gpu_devices declares GPUs NVML cannot see; set scheduler.gpu_memory_mb to schedule them"
            );
            break;
        }
        out.push(Device { index: next, slots: cfg.gpu_slots, mem_bytes: cfg.gpu_memory_mb.saturating_mul(mib) });
        next += 1;
    }
    out
}
