//! The runtime every mode shares: admission, idempotency, the run of one job on a blocking
//! thread under its deadline and cancel signal, result storage, and drain.
//!
//! **Invariant:** a job's result is stored (and its outputs before it) before the job's
//! entry is finished, so nothing is reported, and nothing acknowledged, before it is durable.

mod confine;
mod lease;

use crate::checkpoint::{self, Acquired};
use lease::{renew_lease, Holder};
use crate::config::{Accel, Config};
use crate::jobtable::{JobEntry, JobTable};
use crate::scheduler::{Permit, Rejected, Scheduler, Ticket};
use crate::store::patient::PatientStore;
use crate::telemetry::Metrics;
use crate::tracectx::TraceContext;
use bytes::Bytes;
use kiln_jobs::envelope::validate_id;
use kiln_jobs::store::{join_dir, join_output, parse_uri};
use kiln_jobs::{
    Envelope, ErrorCode, EventSink, JobContext, JobError, JobOutput, JobResult, JobStatus, ObjectStore, PreparedJob,
    Priority, Registry, Timings, WorkerInfo,
};
use kiln_router_client::WorkerState;
use std::panic::AssertUnwindSafe;
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
}

impl Runtime {
    pub fn new(cfg: Config, store: Arc<dyn ObjectStore>, kinds: Registry) -> Arc<Self> {
        let scheduler =
            Scheduler::new(cfg.cpu_slots(), cfg.scheduler.queue_depth, cfg.scheduler.per_kind.clone().into_iter().collect());
        let accel = match cfg.accel {
            Accel::Gpu => "gpu",
            _ => "cpu",
        };
        let worker = WorkerInfo { id: cfg.worker_id(), tier: cfg.worker.tier.clone(), accel: accel.to_owned() };
        let store_url = cfg.store_url();
        let retain = cfg.scheduler.retain_finished;
        let pool = crate::pool::JobPool::new(scheduler.slots()).expect("starting the job threads");
        Arc::new(Runtime {
            cfg: Arc::new(cfg),
            store,
            store_url,
            kinds,
            scheduler,
            table: JobTable::new(retain),
            metrics: Metrics::new(),
            worker,
            state: watch::Sender::new(WorkerState::Warming),
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
            warm_kinds: std::sync::Mutex::new(Vec::new()),
            pool,
            policy: std::sync::OnceLock::new(),
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
        join_output(&self.store_url, &format!("jobs/{id}/result.json"))
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

    /// Submits one envelope given as bytes (HTTP body, JSONL line, Kafka value).
    pub async fn submit_bytes(self: &Arc<Self>, bytes: &[u8], admission: Admission) -> Arc<JobEntry> {
        self.submit_bytes_traced(bytes, admission, None).await
    }

    /// As [`Runtime::submit_bytes`], inside the caller's trace: the job's span records the
    /// trace id, its own span id and the caller's, so every log line of the job carries them.
    pub async fn submit_bytes_traced(self: &Arc<Self>, bytes: &[u8], admission: Admission, trace: Option<&TraceContext>) -> Arc<JobEntry> {
        match Envelope::parse(bytes) {
            Ok(env) => self.submit_traced(env, admission, trace).await,
            Err((id, err)) => {
                let id = id.unwrap_or_else(|| ulid::Ulid::new().to_string());
                self.refused(id, "unknown".into(), &err)
            }
        }
    }

    /// Submits a job. Always returns an entry: queued/running, or already finished (bad
    /// spec, stored result, overload — the result says which).
    pub async fn submit(self: &Arc<Self>, env: Envelope, admission: Admission) -> Arc<JobEntry> {
        self.submit_traced(env, admission, None).await
    }

    /// As [`Runtime::submit`], the job's span joining the caller's trace.
    pub async fn submit_traced(self: &Arc<Self>, env: Envelope, admission: Admission, trace: Option<&TraceContext>) -> Arc<JobEntry> {
        let received = Instant::now();
        let id = env.id.clone().unwrap_or_else(|| ulid::Ulid::new().to_string());
        if let Err(e) = validate_id(&id) {
            return self.refused(ulid::Ulid::new().to_string(), env.kind.clone(), &e);
        }
        if let Some(live) = self.table.get(&id).filter(|e| !e.status().is_terminal()) {
            return live;
        }
        // Idempotency: a stored result is the answer.
        if let Some(stored) = self.stored_result(&id).await {
            self.metrics.idempotent_hits.with_label_values(&[stored.kind.as_str()]).inc();
            let entry = JobEntry::new(id, stored.kind.clone());
            entry.finish(stored);
            return entry;
        }
        let prepared = self.prepare(&id, &env);
        let entry = JobEntry::new(id.clone(), env.kind.clone());
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
        let span = info_span!(
            "job",
            job_id = %id,
            kind = %env.kind,
            priority = env.priority.as_str(),
            tenant = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty
        );
        if let Some(tenant) = crate::auth::current_tenant() {
            span.record("tenant", tenant.as_str());
        }
        if let Some(t) = trace {
            span.record("trace_id", t.trace_id.as_str());
            span.record("span_id", t.span_id.as_str());
            span.record("parent_span_id", t.parent_id.as_str());
        }
        let rt = self.clone();
        let e2 = entry.clone();
        tokio::spawn(
            async move {
                rt.clone().drive(e2, prepared, ticket, job).await;
                if rt.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
                    rt.idle.notify_waiters();
                }
            }
            .instrument(span),
        );
        entry
    }

    fn prepare(&self, id: &str, env: &Envelope) -> Result<(Box<dyn PreparedJob>, Url), JobError> {
        let kind = self.kinds.get(&env.kind)?;
        let output = match &env.output {
            Some(o) => parse_uri(o)?,
            None => join_dir(&self.store_url, &format!("outputs/{id}"))?,
        };
        self.check_output(&output)?;
        let prepared = kind.prepare(&env.input, &self.cfg.limits)?;
        Ok((prepared, output))
    }

    /// Waits for a slot (and, for a checkpointed job, its lease), runs the job, stores and
    /// reports its result.
    async fn drive(self: Arc<Self>, entry: Arc<JobEntry>, prepared: Box<dyn PreparedJob>, ticket: Ticket, job: Admitted) {
        let deadline = job.deadline;
        let until_deadline = until(deadline);
        tokio::pin!(until_deadline);
        let cancel = entry.cancel.clone();
        let stopped = |received: Instant| Timings { queued_ms: ms_since(received), run_ms: 0.0 };

        enum Waited {
            Granted(Permit),
            Stopped(JobError),
        }
        let mut ticket = ticket;
        let (permit, lease) = loop {
            let waited = async {
                tokio::select! {
                    p = ticket.granted() => Waited::Granted(p),
                    _ = &mut until_deadline => { cancel.expire(); Waited::Stopped(JobError::deadline()) }
                    _ = cancel.token().cancelled() => Waited::Stopped(cancel.error().unwrap_or_else(JobError::cancelled)),
                }
            }
            .instrument(info_span!("queue_wait"))
            .await;
            let permit = match waited {
                Waited::Granted(p) => p,
                Waited::Stopped(err) => return self.complete(&entry, Err(err), stopped(job.received), 1).await,
            };
            let Some(hash) = &job.spec_hash else { break (permit, None) };
            match self.take_lease(&entry, hash).await {
                Ok(Acquired::Mine(lease)) => break (permit, Some(lease)),
                Ok(Acquired::Held { owner, expires_ms }) => {
                    // Another worker runs this job: wait (without a slot) for its result, or
                    // for its lease to lapse, then queue again.
                    drop(permit);
                    info!(job_id = %entry.id, %owner, lease_expires_ms = expires_ms, "job is running on another worker; waiting for its result");
                    match self.await_holder(&entry, deadline, &cancel).await {
                        Holder::Finished(result) => {
                            self.metrics.idempotent_hits.with_label_values(&[entry.kind.as_str()]).inc();
                            return self.finish_with(&entry, result);
                        }
                        Holder::Stopped(err) => return self.complete(&entry, Err(err), stopped(job.received), 1).await,
                        Holder::Gone => {}
                    }
                    ticket = match self.scheduler.enqueue(&entry.kind, job.priority).await {
                        Ok(t) => t,
                        Err(rej) => {
                            let err = JobError::new(ErrorCode::Overloaded, rej.to_string());
                            return self.complete(&entry, Err(err), stopped(job.received), 1).await;
                        }
                    };
                }
                Err(e) => {
                    drop(permit);
                    if e.code == ErrorCode::InvalidSpec {
                        // A spec that conflicts with the job's checkpoint: refused, but not
                        // stored, since it is not the job's outcome.
                        return self.finish_with(&entry, self.failed_result(&entry, &e, stopped(job.received)));
                    }
                    return self.complete(&entry, Err(e), stopped(job.received), 1).await;
                }
            }
        };
        drop(ticket);
        let queued_ms = ms_since(job.received);
        self.metrics.queue_wait_seconds.with_label_values(&[entry.kind.as_str()]).observe(queued_ms / 1e3);
        entry.set_status(JobStatus::Running);
        let started = Instant::now();

        // A checkpointed job waits out store outages instead of failing at the first one.
        let store = match &lease {
            Some(_) => Arc::new(PatientStore::new(self.store.clone(), Duration::from_millis(self.cfg.checkpoint.store_wait_ms)))
                as Arc<dyn ObjectStore>,
            None => self.store.clone(),
        };
        let store = self.confine_store(store);
        let ctx = JobContext::new(
            entry.id.clone(),
            job.output,
            self.cfg.limits.clone(),
            self.worker.accel.clone(),
            store,
            entry.clone() as Arc<dyn EventSink>,
            cancel.clone(),
            tokio::runtime::Handle::current(),
        );
        let ctx = match &lease {
            Some(l) => ctx.with_checkpoint(l.clone()),
            None => ctx,
        };
        let renewal = lease.as_ref().map(|l| tokio::spawn(renew_lease(l.clone(), cancel.clone())));
        let run_span = info_span!("run");
        let mut handle = self.pool.run(move || {
            let _g = run_span.entered();
            std::panic::catch_unwind(AssertUnwindSafe(|| prepared.run(&ctx)))
        });
        let (outcome, finished) = tokio::select! {
            r = &mut handle => (flatten(r), true),
            _ = &mut until_deadline => { cancel.expire(); (Err(JobError::deadline()), false) }
            _ = cancel.token().cancelled() => (Err(cancel.error().unwrap_or_else(JobError::cancelled)), false),
        };
        if let Some(r) = renewal {
            r.abort();
        }
        if finished {
            drop(permit);
        } else {
            // The job stops at its next check; its slot stays taken until it has.
            hold_until_done(handle, permit);
        }
        let t = Timings { queued_ms, run_ms: ms_since(started) };
        let Some(lease) = lease else { return self.complete(&entry, outcome, t, 1).await };
        let outcome = match outcome {
            _ if lease.is_lost() => Err(lease.lost_error()),
            Ok(mut out) => {
                out.resumed |= lease.resumed();
                let units = serde_json::json!({"restored": lease.restored_count(), "run": lease.recorded_count()});
                out.extra.insert("units".into(), units);
                Ok(out)
            }
            Err(e) => Err(e),
        };
        self.complete(&entry, outcome, t, lease.attempt()).await;
        if entry.status() != JobStatus::Succeeded {
            // Let a retry (here or on another worker) take the job over at once.
            lease.release().await;
        }
    }

    fn failed_result(&self, entry: &JobEntry, err: &JobError, timings: Timings) -> JobResult {
        let mut r = JobResult::failed(entry.id.clone(), entry.kind.clone(), err, self.worker.clone());
        r.timings = timings;
        r
    }

    /// Finishes an entry with a result that is not to be stored: one another worker stored,
    /// or a refusal that is not the job's outcome.
    fn finish_with(&self, entry: &Arc<JobEntry>, result: JobResult) {
        self.metrics.jobs.with_label_values(&[entry.kind.as_str(), result.status.as_str()]).inc();
        info!(job_id = %entry.id, status = result.status.as_str(), "job answered without running here");
        entry.finish(result);
        self.table.finished(entry);
    }

    /// Builds, stores and announces the result.
    async fn complete(&self, entry: &Arc<JobEntry>, outcome: Result<JobOutput, JobError>, timings: Timings, attempt: u32) {
        let mut result = match &outcome {
            Ok(out) => JobResult {
                id: entry.id.clone(),
                kind: entry.kind.clone(),
                status: JobStatus::Succeeded,
                outputs: out.outputs.clone(),
                error: None,
                attempt,
                resumed: out.resumed,
                timings: timings.clone(),
                worker: self.worker.clone(),
                extra: out.extra.clone(),
            },
            Err(e) => {
                let mut r = self.failed_result(entry, e, timings.clone());
                r.attempt = attempt;
                r
            }
        };
        let keep = result.status == JobStatus::Succeeded || result.error_code().is_some_and(ErrorCode::is_final);
        if keep {
            let store_span = info_span!("store_result");
            if let Err(e) = self.store_result(&result).instrument(store_span).await {
                warn!(job_id = %entry.id, error = %e, "storing the result failed");
                let err = JobError::internal(format!("the job ran but its result could not be stored: {e}")).retryable(true);
                result = self.failed_result(entry, &err, timings);
            }
        }
        let status = result.status.as_str();
        self.metrics.jobs.with_label_values(&[entry.kind.as_str(), status]).inc();
        if result.status == JobStatus::Succeeded {
            self.metrics.run_seconds.with_label_values(&[entry.kind.as_str()]).observe(result.timings.run_ms / 1e3);
            self.metrics.observe_latency(&entry.kind, result.timings.run_ms);
        }
        match &result.error {
            None => info!(job_id = %entry.id, run_ms = result.timings.run_ms, "job succeeded"),
            Some(e) => info!(job_id = %entry.id, code = %e.code, message = %e.message, "job did not succeed"),
        }
        entry.finish(result);
        self.table.finished(entry);
    }

    async fn store_result(&self, result: &JobResult) -> Result<(), JobError> {
        let uri = self.result_uri(&result.id)?;
        let body = serde_json::to_vec(result).map_err(|e| JobError::internal(e.to_string()))?;
        self.store.put(&uri, Bytes::from(body), "application/json").await.map_err(|e| e.into_output_error())
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
            e.cancel.cancel();
        }
        for e in &live {
            let _ = tokio::time::timeout(Duration::from_secs(5), e.wait()).await;
        }
        live.len()
    }
}

pub enum Lookup {
    Live(Arc<JobEntry>),
    Stored(Arc<JobResult>),
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

type RunResult = std::thread::Result<Result<JobOutput, JobError>>;

fn flatten(r: Result<RunResult, tokio::sync::oneshot::error::RecvError>) -> Result<JobOutput, JobError> {
    match r {
        Ok(Ok(res)) => res,
        Ok(Err(panic)) => Err(JobError::internal(format!("the job panicked: {}", panic_message(&panic)))),
        Err(e) => Err(JobError::internal(format!("the job's thread failed: {e}"))),
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

fn hold_until_done(handle: tokio::sync::oneshot::Receiver<RunResult>, permit: Permit) {
    tokio::spawn(async move {
        let _ = handle.await;
        drop(permit);
    });
}
