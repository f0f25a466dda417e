//! Admission control and resource slots.
//!
//! Jobs wait in one bounded queue per priority. A job starts when a job thread and a CPU slot
//! are free and its kind is under its per-kind cap; it gets a [`Permit`] for both. It holds
//! the thread until it ends, but the CPU slot only while it computes: around a wait (its infer
//! batch, the store, a lease, a GPU slot) it gives the slot back ([`JobResources`], the
//! job's [`Resources`]) and queues for one again. Those returning jobs go before new jobs of
//! the same priority, and interactive work before batch work, so a slot freed by a wait goes
//! first to finishing what has started. A full queue refuses new jobs
//! ([`Rejected::Overloaded`]) instead of growing. GPU slots and memory per device are
//! [`gpu::GpuPool`]'s.
//!
//! Counts: at most `cpu_slots` jobs compute at once, at most `job_threads` (≥ `cpu_slots`)
//! have started; the job pool has exactly `job_threads` threads, so a job granted a CPU slot
//! never waits for a thread. Within a priority, first come first served, except that a job
//! whose kind is at its cap lets the next job of another kind go first.
//!
//! Dropping a [`Ticket`] leaves the queue (deadline, cancel); dropping a [`Permit`] frees the
//! thread, the CPU slot if held, and any place in the returning queue, at once.
//!
//! A computing job may borrow free CPU slots for extra threads ([`Resources::borrow_cpu`])
//! when no job waits for one: a render job renders pages on every idle core. A loan counts as
//! a busy slot of the job's kind; its [`CpuLoan::wanted`] turns true as soon as a job could
//! take a slot (a returning job, or a queued one with a free thread under its kind's cap), and
//! the borrower gives it back after its current unit of work.

pub mod gpu;
pub mod metrics;

use gpu::GpuPool;
use kiln_jobs::resources::{GpuGrant, Wait};
use kiln_jobs::{CpuLoan, JobError, Priority, Resources};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::sync::{oneshot, Notify};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the queue is full")]
    Overloaded,
    #[error("the worker is draining and takes no new jobs")]
    Draining,
}

/// How much the scheduler hands out.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Jobs computing at once.
    pub cpu_slots: usize,
    /// Jobs started at once (computing or waiting): the job pool's threads, ≥ `cpu_slots`.
    pub job_threads: usize,
    /// Jobs waiting to start; past this, submissions are refused.
    pub queue_depth: usize,
    /// Caps on started jobs by kind.
    pub per_kind: HashMap<String, usize>,
    /// GPU devices: slots and memory budget each.
    pub gpus: Vec<gpu::Device>,
}

impl Sizes {
    /// One thread per CPU slot and no GPU: every started job computes (the old model).
    pub fn cpu(slots: usize, queue_depth: usize, per_kind: HashMap<String, usize>) -> Self {
        Sizes { cpu_slots: slots, job_threads: slots, queue_depth, per_kind, gpus: Vec::new() }
    }
}

struct Waiter {
    seq: u64,
    kind: Arc<str>,
    tx: oneshot::Sender<Permit>,
}

/// A started job waiting to get its CPU slot back.
struct Returning {
    id: u64,
    tx: oneshot::Sender<()>,
}

/// Whether a started job holds its CPU slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cpu {
    Held,
    Released,
    /// In the returning queue.
    Waiting,
}

struct Started {
    kind: Arc<str>,
    priority: Priority,
    cpu: Cpu,
}

#[derive(Default)]
struct State {
    /// Jobs not yet started. Index 0: interactive, 1: batch.
    queues: [VecDeque<Waiter>; 2],
    /// Started jobs waiting for a CPU slot again.
    returning: [VecDeque<Returning>; 2],
    /// Every started job, by its ticket's sequence number.
    started: HashMap<u64, Started>,
    running_by_kind: HashMap<Arc<str>, usize>,
    cpu_by_kind: HashMap<Arc<str>, usize>,
    cpu_busy: usize,
    next_seq: u64,
    closed: bool,
}

struct Inner {
    cpu_slots: usize,
    threads: usize,
    queue_cap: usize,
    per_kind: HashMap<String, usize>,
    state: Mutex<State>,
    /// Woken whenever the queue shrinks.
    room: Notify,
}

/// Counts for metrics and the capacity report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// CPU slots, and how many are held now.
    pub slots: usize,
    pub cpu_busy: usize,
    /// Job threads, and how many jobs have started (computing or waiting).
    pub threads: usize,
    pub running: usize,
    /// Jobs waiting to start.
    pub queued: usize,
    /// Started jobs waiting for a CPU slot again.
    pub returning: usize,
    /// kind → (started, queued, cap)
    pub by_kind: BTreeMap<String, (usize, usize, usize)>,
    /// kind → jobs holding a CPU slot
    pub cpu_by_kind: BTreeMap<String, usize>,
    pub gpus: Vec<gpu::DeviceSnapshot>,
}

#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
    gpus: Arc<GpuPool>,
}

fn qindex(p: Priority) -> usize {
    match p {
        Priority::Interactive => 0,
        Priority::Batch => 1,
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counts half-updated (no update
        // below can panic between its steps), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cap(&self, kind: &str) -> usize {
        self.per_kind.get(kind).copied().unwrap_or(self.threads).min(self.threads)
    }

    fn take_cpu(st: &mut State, kind: &Arc<str>) {
        st.cpu_busy += 1;
        *st.cpu_by_kind.entry(kind.clone()).or_default() += 1;
    }

    fn give_cpu(st: &mut State, kind: &Arc<str>) {
        st.cpu_busy = st.cpu_busy.saturating_sub(1);
        if let Some(n) = st.cpu_by_kind.get_mut(kind) {
            *n = n.saturating_sub(1);
        }
    }

    /// Whether some job waits for a CPU slot that it could take now: a started job returning
    /// from a wait, or a queued job with a free thread and room under its kind's cap.
    fn wants_cpu(&self, st: &State) -> bool {
        if st.returning.iter().any(|q| !q.is_empty()) {
            return true;
        }
        st.started.len() < self.threads
            && st
                .queues
                .iter()
                .flatten()
                .any(|w| st.running_by_kind.get(&w.kind).copied().unwrap_or(0) < self.cap(&w.kind))
    }

    /// Hands free CPU slots out: per priority (interactive first), jobs returning from a
    /// wait before jobs that have not started; a new job also needs a free thread.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        let mut popped = false;
        'slots: while st.cpu_busy < self.cpu_slots {
            for qi in 0..2 {
                if let Some(r) = st.returning[qi].pop_front() {
                    let Some(job) = st.started.get_mut(&r.id) else { continue 'slots };
                    job.cpu = Cpu::Held;
                    let kind = job.kind.clone();
                    Self::take_cpu(st, &kind);
                    if r.tx.send(()).is_err() {
                        // Its wait was dropped (the job is stopping): the slot stays free.
                        if let Some(job) = st.started.get_mut(&r.id) {
                            job.cpu = Cpu::Released;
                        }
                        Self::give_cpu(st, &kind);
                    }
                    continue 'slots;
                }
                if st.started.len() >= self.threads {
                    continue;
                }
                let pick = st.queues[qi]
                    .iter()
                    .position(|w| st.running_by_kind.get(&w.kind).copied().unwrap_or(0) < self.cap(&w.kind));
                let Some(w) = pick.and_then(|pos| st.queues[qi].remove(pos)) else { continue };
                popped = true;
                let priority = if qi == 0 { Priority::Interactive } else { Priority::Batch };
                st.started.insert(w.seq, Started { kind: w.kind.clone(), priority, cpu: Cpu::Held });
                *st.running_by_kind.entry(w.kind.clone()).or_default() += 1;
                Self::take_cpu(st, &w.kind);
                let permit = Permit { job: Some(Arc::new(Job { inner: self.clone(), id: w.seq })) };
                if let Err(mut p) = w.tx.send(permit) {
                    // The ticket is gone: undo here (dropping the permit would re-lock).
                    p.job = None;
                    Self::end(st, w.seq);
                }
                continue 'slots;
            }
            break;
        }
        if popped {
            self.room.notify_waiters();
        }
    }

    /// Forgets a started job: its thread, its CPU slot if held, its place among the returning.
    fn end(st: &mut State, id: u64) {
        let Some(job) = st.started.remove(&id) else { return };
        if let Some(n) = st.running_by_kind.get_mut(&job.kind) {
            *n = n.saturating_sub(1);
        }
        match job.cpu {
            Cpu::Held => Self::give_cpu(st, &job.kind),
            Cpu::Waiting => st.returning[qindex(job.priority)].retain(|r| r.id != id),
            Cpu::Released => {}
        }
    }
}

impl Scheduler {
    /// `slots` jobs run (and compute) at once; at most `queue_cap` wait; `per_kind` caps
    /// running jobs of a kind. No GPU.
    pub fn new(slots: usize, queue_cap: usize, per_kind: HashMap<String, usize>) -> Self {
        Self::with_sizes(Sizes::cpu(slots, queue_cap, per_kind))
    }

    pub fn with_sizes(sizes: Sizes) -> Self {
        let cpu_slots = sizes.cpu_slots.max(1);
        Scheduler {
            inner: Arc::new(Inner {
                cpu_slots,
                threads: sizes.job_threads.max(cpu_slots),
                queue_cap: sizes.queue_depth.max(1),
                per_kind: sizes.per_kind,
                state: Mutex::new(State::default()),
                room: Notify::new(),
            }),
            gpus: Arc::new(GpuPool::new(sizes.gpus)),
        }
    }

    /// CPU slots.
    pub fn slots(&self) -> usize {
        self.inner.cpu_slots
    }

    /// Job threads: the most jobs started at once.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    pub fn gpus(&self) -> &Arc<GpuPool> {
        &self.gpus
    }

    /// Joins the queue, or is refused at once when it is full or the worker is draining.
    pub fn try_enqueue(&self, kind: &str, priority: Priority) -> Result<Ticket, Rejected> {
        let mut st = self.inner.lock();
        if st.closed {
            return Err(Rejected::Draining);
        }
        let queued: usize = st.queues.iter().map(VecDeque::len).sum();
        if queued >= self.inner.queue_cap {
            return Err(Rejected::Overloaded);
        }
        let (tx, rx) = oneshot::channel();
        let seq = st.next_seq;
        st.next_seq += 1;
        st.queues[qindex(priority)].push_back(Waiter { seq, kind: Arc::from(kind), tx });
        self.inner.dispatch(&mut st);
        Ok(Ticket { seq, priority, inner: self.inner.clone(), rx })
    }

    /// Joins the queue, waiting for room when it is full (`kiln run` reads its input no
    /// faster than the worker drains it).
    pub async fn enqueue(&self, kind: &str, priority: Priority) -> Result<Ticket, Rejected> {
        loop {
            let room = self.inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_enqueue(kind, priority) {
                Err(Rejected::Overloaded) => room.await,
                other => return other,
            }
        }
    }

    /// Whether a job could join the queue now.
    pub fn has_room(&self) -> bool {
        let st = self.inner.lock();
        !st.closed && st.queues.iter().map(VecDeque::len).sum::<usize>() < self.inner.queue_cap
    }

    /// Waits until a job could join the queue.
    pub async fn room(&self) {
        loop {
            let room = self.inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.has_room() {
                return;
            }
            room.await;
        }
    }

    /// Refuses every later enqueue; queued and running jobs carry on.
    pub fn close(&self) {
        self.inner.lock().closed = true;
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    pub fn snapshot(&self) -> Snapshot {
        let st = self.inner.lock();
        let mut by_kind: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
        for (k, n) in &st.running_by_kind {
            by_kind.entry(k.to_string()).or_insert((0, 0, self.inner.cap(k))).0 += n;
        }
        for q in &st.queues {
            for w in q {
                by_kind.entry(w.kind.to_string()).or_insert((0, 0, self.inner.cap(&w.kind))).1 += 1;
            }
        }
        let cpu_by_kind = st.cpu_by_kind.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        Snapshot {
            slots: self.inner.cpu_slots,
            cpu_busy: st.cpu_busy,
            threads: self.inner.threads,
            running: st.started.len(),
            queued: st.queues.iter().map(VecDeque::len).sum(),
            returning: st.returning.iter().map(VecDeque::len).sum(),
            by_kind,
            cpu_by_kind,
            gpus: self.gpus.snapshot(),
        }
    }

    /// The cap on started jobs of `kind`.
    pub fn cap(&self, kind: &str) -> usize {
        self.inner.cap(kind)
    }
}

/// A place in the queue. Await [`Ticket::granted`] for the permit; drop to leave the queue.
pub struct Ticket {
    seq: u64,
    priority: Priority,
    inner: Arc<Inner>,
    rx: oneshot::Receiver<Permit>,
}

impl Ticket {
    /// Waits for a thread and a CPU slot.
    pub async fn granted(&mut self) -> Permit {
        match (&mut self.rx).await {
            Ok(p) => p,
            // The sender lives in the queue until it sends; it cannot be dropped unsent
            // while this ticket exists.
            Err(_) => unreachable!("scheduler dropped a waiter without a permit"),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        let q = &mut st.queues[qindex(self.priority)];
        if let Some(pos) = q.iter().position(|w| w.seq == self.seq) {
            q.remove(pos);
            drop(st);
            self.inner.room.notify_waiters();
        }
        // A permit already sent but not received is dropped with `rx`, freeing its slots.
    }
}

/// A started job, shared by its [`Permit`] and its [`JobResources`].
struct Job {
    inner: Arc<Inner>,
    id: u64,
}

/// A started job's thread, and its CPU slot while it computes. Dropping it frees both.
pub struct Permit {
    job: Option<Arc<Job>>,
}

impl Permit {
    /// The handle the job uses to give its CPU slot back around waits, and to ask for a GPU.
    pub fn resources(&self, gpus: &Arc<GpuPool>) -> Arc<JobResources> {
        Arc::new(JobResources { job: self.job.clone(), gpus: gpus.clone() })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            let mut st = job.inner.lock();
            Inner::end(&mut st, job.id);
            job.inner.dispatch(&mut st);
        }
    }
}

/// A running job's [`Resources`]: its CPU slot (given back and taken again around waits)
/// and the GPU pool. Once the job's permit is dropped it holds nothing and waits for nothing.
pub struct JobResources {
    job: Option<Arc<Job>>,
    gpus: Arc<GpuPool>,
}

impl JobResources {
    /// Whether the job holds its CPU slot now (false once the job has ended).
    pub fn holds_cpu(&self) -> bool {
        let Some(job) = &self.job else { return false };
        let st = job.inner.lock();
        st.started.get(&job.id).is_some_and(|j| j.cpu == Cpu::Held)
    }

    /// A wait for the CPU slot as a concrete type (the trait boxes it).
    pub fn reacquire(&self) -> CpuWait {
        let Some(job) = self.job.clone() else { return CpuWait { job: None, rx: None } };
        let mut st = job.inner.lock();
        let Some(started) = st.started.get_mut(&job.id) else {
            drop(st);
            return CpuWait { job: None, rx: None };
        };
        match started.cpu {
            Cpu::Held => {
                drop(st);
                CpuWait { job: None, rx: None }
            }
            Cpu::Released | Cpu::Waiting => {
                // Waiting cannot happen here (one wait at a time per job; a dropped wait puts
                // the job back to Released), but if it did, the newer wait replaces the older.
                let qi = qindex(started.priority);
                started.cpu = Cpu::Waiting;
                let (tx, rx) = oneshot::channel();
                st.returning[qi].retain(|r| r.id != job.id);
                st.returning[qi].push_back(Returning { id: job.id, tx });
                job.inner.dispatch(&mut st);
                drop(st);
                CpuWait { job: Some(job), rx: Some(rx) }
            }
        }
    }
}

impl Resources for JobResources {
    fn release_cpu(&self) {
        let Some(job) = &self.job else { return };
        let mut st = job.inner.lock();
        let Some(started) = st.started.get_mut(&job.id) else { return };
        if started.cpu == Cpu::Held {
            started.cpu = Cpu::Released;
            let kind = started.kind.clone();
            Inner::give_cpu(&mut st, &kind);
            job.inner.dispatch(&mut st);
        }
    }

    fn reacquire_cpu(&self) -> Wait<()> {
        Box::pin(self.reacquire())
    }

    fn acquire_gpu(&self, device: Option<u32>, mem_bytes: u64) -> Wait<Result<Box<dyn GpuGrant>, JobError>> {
        let priority = match &self.job {
            Some(job) => job.inner.lock().started.get(&job.id).map(|s| s.priority).unwrap_or(Priority::Batch),
            None => Priority::Batch,
        };
        let wait = self.gpus.acquire_on(device, priority, mem_bytes);
        Box::pin(async move { wait.await.map(|g| Box::new(g) as Box<dyn GpuGrant>) })
    }

    fn borrow_cpu(&self) -> Option<Box<dyn CpuLoan>> {
        let job = self.job.as_ref()?;
        let mut st = job.inner.lock();
        let started = st.started.get(&job.id)?;
        // Only a computing job borrows, only a free slot, and never one a job could take.
        if started.cpu != Cpu::Held || st.cpu_busy >= job.inner.cpu_slots || job.inner.wants_cpu(&st) {
            return None;
        }
        let kind = started.kind.clone();
        Inner::take_cpu(&mut st, &kind);
        Some(Box::new(Loan { inner: job.inner.clone(), kind }))
    }
}

/// A CPU slot lent to a computing job for an extra thread (see the module doc).
struct Loan {
    inner: Arc<Inner>,
    kind: Arc<str>,
}

impl CpuLoan for Loan {
    fn wanted(&self) -> bool {
        let st = self.inner.lock();
        self.inner.wants_cpu(&st)
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        Inner::give_cpu(&mut st, &self.kind);
        self.inner.dispatch(&mut st);
    }
}

/// Waiting for a CPU slot again; resolves at once when the job holds one. Dropping it before
/// it resolves leaves the returning queue.
pub struct CpuWait {
    job: Option<Arc<Job>>,
    rx: Option<oneshot::Receiver<()>>,
}

impl Future for CpuWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(rx) = self.rx.as_mut() else { return Poll::Ready(()) };
        match Pin::new(rx).poll(cx) {
            // Granted, or the scheduler forgot the job (its permit was dropped): either way
            // there is nothing left to wait for.
            Poll::Ready(_) => {
                self.rx = None;
                self.job = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for CpuWait {
    fn drop(&mut self) {
        let (Some(job), Some(mut rx)) = (self.job.take(), self.rx.take()) else { return };
        let mut st = job.inner.lock();
        let granted = rx.try_recv().is_ok();
        let Some(started) = st.started.get_mut(&job.id) else { return };
        if started.cpu == Cpu::Waiting {
            started.cpu = Cpu::Released;
            let qi = qindex(started.priority);
            st.returning[qi].retain(|r| r.id != job.id);
        } else if granted && started.cpu == Cpu::Held {
            // Granted but never seen: give it back, the job no longer waits for it.
            started.cpu = Cpu::Released;
            let kind = started.kind.clone();
            Inner::give_cpu(&mut st, &kind);
            job.inner.dispatch(&mut st);
        }
    }
}

#[cfg(test)]
mod tests;
