//! The runtime every mode shares: admission, idempotency, the run of one job on a blocking
//! thread under its deadline and cancel signal, result storage, and drain.
//!
//! **Invariant:** a job's result is stored (and its outputs before it) before the job's
//! entry is finished, so nothing is reported, and nothing acknowledged, before it is durable.

mod confine;
mod drive;
mod lease;

use crate::checkpoint;
use crate::config::{Accel, Config};
use crate::jobtable::{JobEntry, JobTable};
use crate::scheduler::{gpu, Rejected, Scheduler, Sizes};
use crate::telemetry::Metrics;
use crate::tracectx::TraceContext;
use kiln_jobs::envelope::validate_id;
use kiln_jobs::layout;
use kiln_jobs::store::parse_output_uri;
use kiln_jobs::{
    Envelope, ErrorCode, JobError, JobResult, ObjectStore, PreparedJob, Priority, Registry, Timings, WorkerInfo,
};
use kiln_router_client::WorkerState;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tracing::{info, info_span, warn, Instrument};
use url::Url;

/// What admission settled about a job, for [`Runtime::drive`].
struct Admitted {
    output: Url,
    priority: Priority,
    /// Set for checkpointed jobs (see [`crate::checkpoint`]).
    spec_hash: Option<String>,
    received: Instant,
    deadline: Option<Instant>,
}

/// Resolves at the deadline; never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// What a source hands to [`Runtime::submit`].
pub enum Submission<'a> {
    /// The envelope's bytes, parsed by the runtime (a bad envelope becomes a failed result).
    Bytes(&'a [u8]),
    /// An envelope the source parsed already (Lambda, to check that the job fits first).
    Envelope(Envelope),
}

impl<'a> From<&'a [u8]> for Submission<'a> {
    fn from(b: &'a [u8]) -> Self {
        Submission::Bytes(b)
    }
}

impl From<Envelope> for Submission<'_> {
    fn from(env: Envelope) -> Self {
        Submission::Envelope(env)
    }
}

/// How a source wants a full queue handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Refuse at once with `overloaded` (HTTP, Lambda).
    Refuse,
    /// Wait for room (`kiln run`, Kafka after pausing).
    Wait,
}

pub struct Runtime {
    cfg: Arc<Config>,
    store: Arc<dyn ObjectStore>,
    store_url: Url,
    kinds: Registry,
    scheduler: Scheduler,
    table: JobTable,
    pub metrics: Metrics,
    worker: WorkerInfo,
    state: watch::Sender<WorkerState>,
    inflight: AtomicUsize,
    idle: Notify,
    warm_kinds: std::sync::Mutex<Vec<String>>,
    pool: crate::pool::JobPool,
    /// What jobs may touch (serve, lambda, Kafka); unset for `kiln run` (see `confine.rs`).
    policy: std::sync::OnceLock<Arc<crate::store::confine::Policy>>,
    /// Per-tenant shares and metrics (`tenants.rs`).
    pub tenants: Arc<crate::tenants::Tenants>,
}

impl Runtime {
    pub fn new(cfg: Config, store: Arc<dyn ObjectStore>, kinds: Registry) -> Arc<Self> {
        let gpus = gpu::configured(&cfg.scheduler, &kiln_kernels::probe::gpus());
        let scheduler = Scheduler::with_sizes(Sizes {
            cpu_slots: cfg.cpu_slots(),
            job_threads: cfg.job_threads(),
            queue_depth: cfg.scheduler.queue_depth,
            per_kind: cfg.scheduler.per_kind.clone().into_iter().collect(),
            gpus,
        });
        let accel = if cfg.accel == Accel::Gpu { Accel::Gpu } else { Accel::Cpu };
        let worker = WorkerInfo { id: cfg.worker_id(), tier: cfg.worker.tier.clone(), accel: accel.to_string() };
        let store_url = cfg.store_url();
        let retain = cfg.scheduler.retain_finished;
        let ledger: Arc<dyn kiln_jobs::GpuLedger> = Arc::new(gpu::Ledger(scheduler.gpus().clone()));
        for kind in kinds.kinds() {
            kind.attach_gpus(ledger.clone());
        }
        // One thread per job the scheduler may start: a job granted a CPU slot never waits
        // for a thread.
        let pool = crate::pool::JobPool::new(scheduler.threads()).expect("starting the job threads");
        let metrics = Metrics::new();
        let tenants = crate::tenants::Tenants::new(cfg.tenants.limits(), scheduler.threads() + cfg.scheduler.queue_depth, &metrics.registry);
        Arc::new(Runtime {
            cfg: Arc::new(cfg),
            store,
            store_url,
            kinds,
            scheduler,
            table: JobTable::new(retain),
            metrics,
            worker,
            state: watch::Sender::new(WorkerState::Warming),
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
            warm_kinds: std::sync::Mutex::new(Vec::new()),
            pool,
            policy: std::sync::OnceLock::new(),
            tenants,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn worker(&self) -> &WorkerInfo {
        &self.worker
    }
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }
    pub fn kinds(&self) -> &Registry {
        &self.kinds
    }
    pub fn state(&self) -> WorkerState {
        *self.state.borrow()
    }
    pub fn subscribe_state(&self) -> watch::Receiver<WorkerState> {
        self.state.subscribe()
    }
    pub fn warm_kinds(&self) -> Vec<String> {
        self.warm_kinds.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Warms every kind up (codecs, caches), then reports ready.
    pub async fn warm_up(self: &Arc<Self>) {
        for kind in self.kinds.kinds() {
            let k = kind.clone();
            let started = Instant::now();
            match tokio::task::spawn_blocking(move || k.warm_up()).await {
                Ok(Ok(())) => {
                    info!(kind = kind.name(), ms = started.elapsed().as_secs_f64() * 1e3, "warmed up");
                    self.warm_kinds.lock().unwrap_or_else(|p| p.into_inner()).push(kind.name().to_owned());
                }
                Ok(Err(e)) => warn!(kind = kind.name(), error = %e, "warm-up failed; the kind loads on first use"),
                Err(e) => warn!(kind = kind.name(), error = %e, "warm-up panicked"),
            }
        }
        self.mark_ready();
    }

    fn result_uri(&self, id: &str) -> Result<Url, JobError> {
        layout::result_uri(&self.store_url, id)
    }

    /// Looks up a job: live or recently finished in memory, else its stored result.
    pub async fn lookup(&self, id: &str) -> Option<Lookup> {
        if let Some(e) = self.table.get(id) {
            return Some(Lookup::Live(e));
        }
        validate_id(id).ok()?;
        self.stored_result(id).await.map(|r| Lookup::Stored(Arc::new(r)))
    }

    async fn stored_result(&self, id: &str) -> Option<JobResult> {
        let uri = self.result_uri(id).ok()?;
        let bytes = self.store.get(&uri, 64 * 1024 * 1024).await.ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(job_id = id, error = %e, "stored result is unreadable; the job will run again");
                None
            }
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Reports ready without warming up (Lambda: nothing heavy at init).
    pub fn mark_ready(&self) {
        if self.state() == WorkerState::Warming {
            self.state.send_replace(WorkerState::Ready);
        }
    }

    /// A failed entry for input refused before it became a job, under a generated id.
    pub fn refuse_now(&self, kind: &str, err: &JobError) -> Arc<JobEntry> {
        self.refused(ulid::Ulid::new().to_string(), kind.to_owned(), err)
    }

    /// A failed entry for a job refused before admission, under its own id when it has one.
    pub fn refuse_with_id(&self, id: Option<String>, kind: &str, err: &JobError) -> Arc<JobEntry> {
        self.refused(id.unwrap_or_else(|| ulid::Ulid::new().to_string()), kind.to_owned(), err)
    }

    /// A finished entry that was never admitted (bad envelope, overload).
    fn refused(&self, id: String, kind: String, err: &JobError) -> Arc<JobEntry> {
        let entry = JobEntry::new(id.clone(), kind.clone());
        entry.finish(JobResult::failed(id, kind.clone(), err, self.worker.clone()));
        self.metrics.jobs.with_label_values(&[kind.as_str(), "failed"]).inc();
        entry
    }

    /// Submits a job: an envelope, or its bytes as a transport received them (HTTP body,
    /// JSONL line, Kafka value), optionally inside the caller's trace (the job's span records
    /// the trace id, its own span id and the caller's, so every log line of the job carries
    /// them). Always returns an entry: queued/running, or already finished (bad envelope or
    /// spec, stored result, overload — the result says which).
    pub async fn submit<'a>(
        self: &Arc<Self>,
        input: impl Into<Submission<'a>>,
        admission: Admission,
        trace: Option<&TraceContext>,
    ) -> Arc<JobEntry> {
        let env = match input.into() {
            Submission::Envelope(env) => env,
            Submission::Bytes(bytes) => match Envelope::parse(bytes) {
                Ok(env) => env,
                Err((id, err)) => {
                    let id = id.unwrap_or_else(|| ulid::Ulid::new().to_string());
                    return self.refused(id, "unknown".into(), &err);
                }
            },
        };
        let received = Instant::now();
        let id = env.id.clone().unwrap_or_else(|| ulid::Ulid::new().to_string());
        if let Err(e) = validate_id(&id) {
            return self.refused(ulid::Ulid::new().to_string(), env.kind.clone(), &e);
        }
        let tenant = crate::auth::current_tenant();
        if let Some(live) = self.table.get(&id).filter(|e| !e.status().is_terminal()) {
            return match crate::tenants::visible(live.tenant(), tenant.as_deref()) {
                true => live,
                false => self.refused(id.clone(), env.kind.clone(), &JobError::forbidden(format!("job id {id} belongs to another tenant"))),
            };
        }
        // Idempotency: a stored result is the answer.
        if let Some(stored) = self.stored_result(&id).await {
            if !crate::tenants::visible(crate::tenants::owner(&stored), tenant.as_deref()) {
                return self.refused(id.clone(), env.kind.clone(), &JobError::forbidden(format!("job id {id} belongs to another tenant")));
            }
            self.metrics.idempotent_hits.with_label_values(&[stored.kind.as_str()]).inc();
            // A span of its own (exported when spans are): the answer came from the store.
            let _span = self.job_span(&id, &stored.kind, env.priority.as_str(), tenant.as_deref(), trace, "hit");
            let entry = JobEntry::new(id, stored.kind.clone());
            entry.finish(stored);
            return entry;
        }
        let prepared = self.prepare(&id, &env);
        let entry = JobEntry::new(id.clone(), env.kind.clone());
        entry.set_tenant(tenant.clone());
        let (entry, fresh) = self.table.insert_or_get(entry);
        if !fresh {
            return entry;
        }
        let (prepared, output) = match prepared {
            Ok(p) => p,
            Err(e) => {
                self.complete(&entry, Err(e), Timings::default(), 1).await;
                return entry;
            }
        };
        let share = match admission {
            Admission::Refuse => self.tenants.try_admit(tenant.as_deref()),
            Admission::Wait => Ok(self.tenants.admit(tenant.as_deref()).await),
        };
        let share = match share {
            Ok(s) => s,
            Err(over) => {
                self.table.remove(&entry);
                self.metrics.rejected.with_label_values(&["tenant_share"]).inc();
                return self.refused(id, env.kind.clone(), &JobError::new(ErrorCode::Overloaded, over.to_string()));
            }
        };
        let ticket = match admission {
            Admission::Refuse => self.scheduler.try_enqueue(&env.kind, env.priority),
            Admission::Wait => self.scheduler.enqueue(&env.kind, env.priority).await,
        };
        let ticket = match ticket {
            Ok(t) => t,
            Err(rej) => {
                self.table.remove(&entry);
                let reason = match rej {
                    Rejected::Overloaded => "overloaded",
                    Rejected::Draining => "draining",
                };
                self.metrics.rejected.with_label_values(&[reason]).inc();
                let err = JobError::new(ErrorCode::Overloaded, rej.to_string());
                return self.refused(id, env.kind.clone(), &err);
            }
        };
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let deadline = env.deadline_ms.map(|ms| received + Duration::from_millis(ms));
        let spec_hash = prepared.checkpointed().then(|| checkpoint::spec_hash(&env.kind, &env.input, &output));
        let job = Admitted { output, priority: env.priority, spec_hash, received, deadline };
        let span = self.job_span(&id, &env.kind, env.priority.as_str(), tenant.as_deref(), trace, "miss");
        let rt = self.clone();
        let e2 = entry.clone();
        tokio::spawn(
            async move {
                rt.clone().drive(e2.clone(), prepared, ticket, job).await;
                share.finished(e2.result().as_deref());
                drop(share);
                if rt.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
                    rt.idle.notify_waiters();
                }
            }
            .instrument(span),
        );
        entry
    }

    /// A job's span: its ids, the caller's trace (joined, when spans are exported) and what
    /// the seed's observability section asks a span to say: the tier, the routing decision the
    /// caller sent, the cold start it waited for, the cache outcome (`hit`: answered from a
    /// stored result) and, recorded when it ends, the queue wait.
    fn job_span(&self, id: &str, kind: &str, priority: &str, tenant: Option<&str>, trace: Option<&TraceContext>, cache: &str) -> tracing::Span {
        let caller = crate::tracectx::current_caller();
        let span = info_span!(
            "job",
            job_id = %id,
            kind = %kind,
            priority = priority,
            tenant = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
            kiln.tier = self.worker.tier.as_str(),
            kiln.cache = cache,
            kiln.route = tracing::field::Empty,
            kiln.cold_start_ms = tracing::field::Empty,
            kiln.queue_wait_ms = tracing::field::Empty,
        );
        if let Some(tenant) = tenant {
            span.record("tenant", tenant);
        }
        if let Some(route) = &caller.route {
            span.record("kiln.route", route.as_str());
        }
        if let Some(ms) = caller.cold_start_ms {
            span.record("kiln.cold_start_ms", ms);
        }
        if let Some(t) = trace {
            span.record("trace_id", t.trace_id.as_str());
            span.record("span_id", t.span_id.as_str());
            span.record("parent_span_id", t.parent_id.as_str());
            crate::otel::join(&span, t);
        }
        span
    }

    fn prepare(&self, id: &str, env: &Envelope) -> Result<(Box<dyn PreparedJob>, Url), JobError> {
        let kind = self.kinds.get(&env.kind)?;
        let output = match &env.output {
            Some(o) => parse_output_uri(o)?,
            None => layout::default_output(&self.store_url, id)?,
        };
        self.check_output(&output)?;
        let prepared = kind.prepare(&env.input, &self.cfg.limits)?;
        Ok((prepared, output))
    }

    /// Cancels a queued or running job. `None` when the id is unknown here; otherwise whether
    /// the job was still live.
    pub fn cancel(&self, id: &str) -> Option<(Arc<JobEntry>, bool)> {
        let e = self.table.get(id)?;
        let live = !e.status().is_terminal();
        if live {
            e.cancel.cancel();
        }
        Some((e, live))
    }

    /// Stops intake, waits up to `grace` for accepted jobs, then cancels what is left.
    /// Returns how many jobs had to be cancelled.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.state.send_replace(WorkerState::Draining);
        self.scheduler.close();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.inflight() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
        let live = self.table.live();
        warn!(jobs = live.len(), "grace period over; cancelling what is left");
        for e in &live {
            // Retryable `cancelled`: the Kafka source leaves such a job for redelivery.
            e.cancel.shutdown();
        }
        // A cancelled job is answered at once (its thread may stay stuck in a call that never
        // returns: it is not waited for); what is waited for here is storing and announcing
        // those answers, bounded as a whole so many stuck jobs cannot stretch the shutdown.
        let answered = futures_util::future::join_all(live.iter().map(|e| e.wait()));
        if tokio::time::timeout(CANCEL_ANSWER_WAIT, answered).await.is_err() {
            warn!(wait_ms = CANCEL_ANSWER_WAIT.as_millis() as u64, "cancelled jobs were not all answered in time");
        }
        live.len()
    }
}

/// How long [`Runtime::drain`] waits, after the grace period, for the cancelled jobs' answers.
pub const CANCEL_ANSWER_WAIT: Duration = Duration::from_secs(5);

pub enum Lookup {
    Live(Arc<JobEntry>),
    Stored(Arc<JobResult>),
}

