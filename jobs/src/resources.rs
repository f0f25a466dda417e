//! What a running job holds of the worker's resources, and the hooks a job uses to give them
//! back while it waits.
//!
//! The worker's scheduler grants a job a CPU slot when it starts; a job holds it only while it
//! computes. Around a wait (its infer batch, the store, a download, a GPU slot) the job's
//! [`JobContext`](crate::JobContext) releases the slot through [`Resources::release_cpu`] and
//! takes one again with [`Resources::reacquire_cpu`], queued by priority like a new job, so
//! other jobs compute meanwhile. GPU work asks for a GPU slot and memory on one device with
//! [`Resources::acquire_gpu`]. A job run outside a scheduler (tests, warm-up) gets
//! [`Unmetered`]: nothing to give back, nothing to wait for.
//!
//! A job whose work splits (a render job's pages) may borrow CPU slots nobody is waiting for
//! with [`Resources::borrow_cpu`] and run extra threads on them; a loan is never waited for,
//! and its holder gives it back as soon as [`CpuLoan::wanted`] says a job waits for a slot, so
//! borrowing uses idle cores without ever delaying another job by more than one unit of work.

use crate::error::JobError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A wait for a resource; dropping it leaves the queue.
pub type Wait<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A GPU slot and GPU memory on one device, held until dropped.
pub trait GpuGrant: Send + Sync {
    /// The device's index (NVML / CUDA ordinal).
    fn device(&self) -> u32;
    /// GPU memory held by this grant, in bytes.
    fn mem_bytes(&self) -> u64;
}

/// The scheduler's side of a running job.
pub trait Resources: Send + Sync + 'static {
    /// Gives the job's CPU slot back while it waits (a no-op when it holds none).
    fn release_cpu(&self);

    /// Resolves once the job holds a CPU slot again (at once if it never gave it back). The
    /// job queues by its priority, ahead of jobs that have not started yet.
    fn reacquire_cpu(&self) -> Wait<()>;

    /// A GPU slot and `mem_bytes` of GPU memory on `device` (any device when `None`), when
    /// both are free. Fails at once when no device could ever hold `mem_bytes`, or this
    /// worker has no GPU (or no such device).
    fn acquire_gpu(&self, device: Option<u32>, mem_bytes: u64) -> Wait<Result<Box<dyn GpuGrant>, JobError>>;

    /// A CPU slot for one more thread of this job, when one is free now and no job waits for
    /// it; never waits. `None` by default (nothing to lend).
    fn borrow_cpu(&self) -> Option<Box<dyn CpuLoan>> {
        None
    }
}

/// A CPU slot lent to a running job for an extra thread; dropping it gives the slot back.
pub trait CpuLoan: Send + Sync {
    /// Whether a job now waits for a CPU slot: the borrower should finish its current unit of
    /// work and drop the loan.
    fn wanted(&self) -> bool;
}

/// GPU memory held outside any one job: a warm model's weights, for as long as it stays
/// loaded. Given to every kind at start ([`crate::JobKind::attach_gpus`]).
pub trait GpuLedger: Send + Sync + 'static {
    /// Holds `bytes` on `device` until the returned guard is dropped. Never waits (a model
    /// loads whether or not it fits; jobs then wait for what is left); `None` when the
    /// device is not scheduled.
    fn reserve_gpu(&self, device: u32, bytes: u64) -> Option<Box<dyn std::any::Any + Send + Sync>>;
}

/// The resources of an extra thread of a job, on a borrowed slot: its waits keep the loan
/// (the job's own slot is its first thread's to give back), it borrows nothing more, and
/// GPU work asks the job's scheduler as usual.
pub struct OnLoan(pub Arc<dyn Resources>);

impl Resources for OnLoan {
    fn release_cpu(&self) {}

    fn reacquire_cpu(&self) -> Wait<()> {
        Box::pin(std::future::ready(()))
    }

    fn acquire_gpu(&self, device: Option<u32>, mem_bytes: u64) -> Wait<Result<Box<dyn GpuGrant>, JobError>> {
        self.0.acquire_gpu(device, mem_bytes)
    }
}

/// The resources of a job run outside a scheduler: the CPU is never given back or waited
/// for, and there is no GPU to hand out. It lends extra threads up to the machine's
/// parallelism, less one, across every job run this way in the process.
pub struct Unmetered;

/// Threads lent by [`Unmetered`] and not yet given back.
static UNMETERED_LOANS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct UnmeteredLoan;

impl CpuLoan for UnmeteredLoan {
    fn wanted(&self) -> bool {
        false
    }
}

impl Drop for UnmeteredLoan {
    fn drop(&mut self) {
        UNMETERED_LOANS.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Resources for Unmetered {
    fn release_cpu(&self) {}

    fn reacquire_cpu(&self) -> Wait<()> {
        Box::pin(std::future::ready(()))
    }

    fn acquire_gpu(&self, _device: Option<u32>, _mem_bytes: u64) -> Wait<Result<Box<dyn GpuGrant>, JobError>> {
        Box::pin(std::future::ready(Err(JobError::unsupported("no GPU is scheduled outside a worker"))))
    }

    fn borrow_cpu(&self) -> Option<Box<dyn CpuLoan>> {
        use std::sync::atomic::Ordering;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        UNMETERED_LOANS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n + 1 < cores).then_some(n + 1))
            .ok()
            .map(|_| Box::new(UnmeteredLoan) as Box<dyn CpuLoan>)
    }
}
