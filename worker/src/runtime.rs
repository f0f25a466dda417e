//! The runtime every mode shares: admission, idempotency, the run of one job on a blocking
//! thread under its deadline and cancel signal, result storage, and drain.
//!
//! **Invariant:** a job's result is stored (and its outputs before it) before the job's
//! entry is finished, so nothing is reported, and nothing acknowledged, before it is durable.

use crate::config::{Accel, Config};
use crate::jobtable::{JobEntry, JobTable};
use crate::scheduler::{Permit, Rejected, Scheduler, Ticket};
use crate::telemetry::Metrics;
use crate::tracectx::TraceContext;
use bytes::Bytes;
use kiln_jobs::envelope::validate_id;
use kiln_jobs::store::{join_dir, join_output, parse_uri};
use kiln_jobs::{
    Envelope, ErrorCode, EventSink, JobContext, JobError, JobOutput, JobResult, JobStatus, ObjectStore, PreparedJob,
    Registry, Timings, WorkerInfo,
};
use kiln_router_client::WorkerState;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tracing::{info, info_span, warn, Instrument};
use url::Url;

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
                self.complete(&entry, Err(e), Timings::default()).await;
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
        let span = info_span!(
            "job",
            job_id = %id,
            kind = %env.kind,
            priority = env.priority.as_str(),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty
        );
        if let Some(t) = trace {
            span.record("trace_id", t.trace_id.as_str());
            span.record("span_id", t.span_id.as_str());
            span.record("parent_span_id", t.parent_id.as_str());
        }
        let rt = self.clone();
        let e2 = entry.clone();
        tokio::spawn(
            async move {
                rt.clone().drive(e2, prepared, output, ticket, received, deadline).await;
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
        let prepared = kind.prepare(&env.input, &self.cfg.limits)?;
        Ok((prepared, output))
    }

    /// Waits for a slot, runs the job, stores and reports its result.
    async fn drive(
        self: Arc<Self>,
        entry: Arc<JobEntry>,
        prepared: Box<dyn PreparedJob>,
        output: Url,
        mut ticket: Ticket,
        received: Instant,
        deadline: Option<Instant>,
    ) {
        let until_deadline = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until_deadline);
        let cancel = entry.cancel.clone();

        enum Waited {
            Granted(Permit),
            Stopped(JobError),
        }
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
            Waited::Stopped(err) => {
                let t = Timings { queued_ms: ms_since(received), run_ms: 0.0 };
                return self.complete(&entry, Err(err), t).await;
            }
        };
        drop(ticket);
        let queued_ms = ms_since(received);
        self.metrics.queue_wait_seconds.with_label_values(&[entry.kind.as_str()]).observe(queued_ms / 1e3);
        entry.set_status(JobStatus::Running);
        let started = Instant::now();

        let ctx = JobContext::new(
            entry.id.clone(),
            output,
            self.cfg.limits.clone(),
            self.worker.accel.clone(),
            self.store.clone(),
            entry.clone() as Arc<dyn EventSink>,
            cancel.clone(),
            tokio::runtime::Handle::current(),
        );
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
        if finished {
            drop(permit);
        } else {
            // The job stops at its next check; its slot stays taken until it has.
            hold_until_done(handle, permit);
        }
        let t = Timings { queued_ms, run_ms: ms_since(started) };
        self.complete(&entry, outcome, t).await;
    }

    /// Builds, stores and announces the result.
    async fn complete(&self, entry: &Arc<JobEntry>, outcome: Result<JobOutput, JobError>, timings: Timings) {
        let mut result = match &outcome {
            Ok(out) => JobResult {
                id: entry.id.clone(),
                kind: entry.kind.clone(),
                status: JobStatus::Succeeded,
                outputs: out.outputs.clone(),
                error: None,
                attempt: 1,
                resumed: out.resumed,
                timings: timings.clone(),
                worker: self.worker.clone(),
                extra: out.extra.clone(),
            },
            Err(e) => {
                let mut r = JobResult::failed(entry.id.clone(), entry.kind.clone(), e, self.worker.clone());
                r.timings = timings.clone();
                r
            }
        };
        let keep = result.status == JobStatus::Succeeded || result.error_code().is_some_and(ErrorCode::is_final);
        if keep {
            let store_span = info_span!("store_result");
            if let Err(e) = self.store_result(&result).instrument(store_span).await {
                warn!(job_id = %entry.id, error = %e, "storing the result failed");
                let err = JobError::internal(format!("the job ran but its result could not be stored: {e}")).retryable(true);
                let mut failed = JobResult::failed(entry.id.clone(), entry.kind.clone(), &err, self.worker.clone());
                failed.timings = timings;
                result = failed;
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
