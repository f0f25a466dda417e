//! One admitted job from its queue slot to its stored result, in four steps:
//! [`Runtime::acquire`] (wait for a job thread and a CPU slot under the deadline and cancel
//! signal, and take a checkpointed job's lease without the CPU slot), [`Runtime::execute`]
//! (run it on the job pool inside `catch_unwind`, with its [`JobResources`] so it gives the
//! CPU slot back around its waits), [`Runtime::settle`] (end the lease: resume facts on
//! success, release on failure) and [`Runtime::complete`] (build, store and announce the
//! result).

use super::{until, Admitted, Runtime};
use crate::checkpoint::{Acquired, Lease};
use crate::jobtable::JobEntry;
use crate::runtime::lease::{renew_lease, Holder};
use crate::scheduler::{JobResources, Permit, Ticket};
use crate::store::patient::PatientStore;
use bytes::Bytes;
use kiln_jobs::{
    ErrorCode, EventSink, JobContext, JobError, JobOutput, JobResult, JobStatus, ObjectStore, PreparedJob, Resources,
    Timings,
};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, info_span, warn, Instrument};
use url::Url;

/// How waiting for a slot ended.
enum Acquire {
    /// A job thread and a CPU slot, and the lease of a checkpointed job.
    Granted(Permit, Option<Arc<Lease>>),
    /// The job ends here without running: deadline, cancel, overload or a checkpoint error.
    Stopped(JobError),
    /// The job is answered without running here and without storing a result: another
    /// worker's stored result, or a refusal that is not the job's outcome.
    Answered(JobResult),
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

impl Runtime {
    /// Waits for a slot (and, for a checkpointed job, its lease), runs the job, stores and
    /// reports its result.
    pub(super) async fn drive(self: Arc<Self>, entry: Arc<JobEntry>, prepared: Box<dyn PreparedJob>, ticket: Ticket, job: Admitted) {
        let (permit, lease) = match self.acquire(&entry, ticket, &job).await {
            Acquire::Granted(permit, lease) => (permit, lease),
            Acquire::Stopped(err) => {
                let t = Timings { queued_ms: ms_since(job.received), run_ms: 0.0 };
                tracing::Span::current().record("kiln.queue_wait_ms", t.queued_ms);
                return self.complete(&entry, Err(err), t, 1).await;
            }
            Acquire::Answered(result) => return self.finish_with(&entry, result),
        };
        let queued_ms = ms_since(job.received);
        tracing::Span::current().record("kiln.queue_wait_ms", queued_ms);
        self.metrics.queue_wait_seconds.with_label_values(&[entry.kind.as_str()]).observe(queued_ms / 1e3);
        entry.set_status(JobStatus::Running);
        let started = Instant::now();
        let outcome = self.execute(&entry, prepared, permit, lease.as_ref(), job.output, job.deadline).await;
        let timings = Timings { queued_ms, run_ms: ms_since(started) };
        match lease {
            None => self.complete(&entry, outcome, timings, 1).await,
            Some(lease) => self.settle(&entry, outcome, timings, lease).await,
        }
    }

    /// The queue wait: a slot, or why the job ends before it runs. A checkpointed job also
    /// takes its lease; while another worker holds it, this one waits without a slot for that
    /// worker's result or for its lease to lapse, then queues again.
    async fn acquire(&self, entry: &Arc<JobEntry>, mut ticket: Ticket, job: &Admitted) -> Acquire {
        let cancel = &entry.cancel;
        loop {
            let granted = async {
                tokio::select! {
                    p = ticket.granted() => Ok(p),
                    _ = until(job.deadline) => { cancel.expire(); Err(JobError::deadline()) }
                    _ = cancel.token().cancelled() => Err(cancel.error().unwrap_or_else(JobError::cancelled)),
                }
            }
            .instrument(info_span!("queue_wait"))
            .await;
            let permit = match granted {
                Ok(p) => p,
                Err(err) => return Acquire::Stopped(err),
            };
            let Some(hash) = &job.spec_hash else { return Acquire::Granted(permit, None) };
            // Taking the lease is store I/O: the CPU slot goes to another job meanwhile.
            let resources = permit.resources(self.scheduler.gpus());
            resources.release_cpu();
            match self.take_lease(entry, hash).await {
                Ok(Acquired::Mine(lease)) => {
                    if let Err(err) = cpu_again(&resources, job.deadline, cancel).await {
                        lease.release().await;
                        return Acquire::Stopped(err);
                    }
                    return Acquire::Granted(permit, Some(lease));
                }
                Ok(Acquired::Held { owner, expires_ms }) => {
                    drop(permit);
                    info!(job_id = %entry.id, %owner, lease_expires_ms = expires_ms, "job is running on another worker; waiting for its result");
                    match self.await_holder(entry, job.deadline, cancel).await {
                        Holder::Finished(result) => {
                            self.metrics.idempotent_hits.with_label_values(&[entry.kind.as_str()]).inc();
                            return Acquire::Answered(result);
                        }
                        Holder::Stopped(err) => return Acquire::Stopped(err),
                        Holder::Gone => {}
                    }
                    ticket = match self.scheduler.enqueue(&entry.kind, job.priority).await {
                        Ok(t) => t,
                        Err(rej) => return Acquire::Stopped(JobError::new(ErrorCode::Overloaded, rej.to_string())),
                    };
                }
                Err(e) if e.code == ErrorCode::InvalidSpec => {
                    // A spec that conflicts with the job's checkpoint: refused, but not stored,
                    // since it is not the job's outcome.
                    let t = Timings { queued_ms: ms_since(job.received), run_ms: 0.0 };
                    return Acquire::Answered(self.failed_result(entry, &e, t));
                }
                Err(e) => return Acquire::Stopped(e),
            }
        }
    }

    /// Runs the job on the job pool under its deadline and cancel signal, with its
    /// [`JobResources`] in the context. A job stopped early keeps its thread (and its CPU slot
    /// if it holds one) until it reaches its next `ctx.check()` or leaves its wait, so the CPU
    /// is never over-committed and no granted slot waits for a thread.
    async fn execute(
        &self,
        entry: &Arc<JobEntry>,
        prepared: Box<dyn PreparedJob>,
        permit: Permit,
        lease: Option<&Arc<Lease>>,
        output: Url,
        deadline: Option<Instant>,
    ) -> Result<JobOutput, JobError> {
        let cancel = entry.cancel.clone();
        // A checkpointed job waits out store outages instead of failing at the first one.
        let store = match lease {
            Some(_) => Arc::new(PatientStore::new(self.store.clone(), Duration::from_millis(self.cfg.checkpoint.store_wait_ms)))
                as Arc<dyn ObjectStore>,
            None => self.store.clone(),
        };
        let store = self.confine_store(store);
        let ctx = JobContext::new(
            entry.id.clone(),
            output,
            self.cfg.limits.clone(),
            self.worker.accel.clone(),
            store,
            entry.clone() as Arc<dyn EventSink>,
            cancel.clone(),
            tokio::runtime::Handle::current(),
        )
        .with_resources(permit.resources(self.scheduler.gpus()));
        let ctx = match lease {
            Some(l) => ctx.with_checkpoint(l.clone()),
            None => ctx,
        };
        let renewal = lease.map(|l| tokio::spawn(renew_lease(l.clone(), cancel.clone())));
        let run_span = info_span!("run");
        let mut handle = self.pool.run(move || {
            let _g = run_span.entered();
            std::panic::catch_unwind(AssertUnwindSafe(|| prepared.run(&ctx)))
        });
        let (outcome, finished) = tokio::select! {
            r = &mut handle => (flatten(r), true),
            _ = until(deadline) => { cancel.expire(); (Err(JobError::deadline()), false) }
            _ = cancel.token().cancelled() => (Err(cancel.error().unwrap_or_else(JobError::cancelled)), false),
        };
        if let Some(r) = renewal {
            r.abort();
        }
        if finished {
            drop(permit);
        } else {
            hold_until_done(handle, permit);
        }
        outcome
    }

    /// Ends a checkpointed job: a lost lease fails it (the new owner carries on), a success
    /// reports what was resumed; anything but a success releases the lease so a retry, here or
    /// elsewhere, starts at once.
    async fn settle(&self, entry: &Arc<JobEntry>, outcome: Result<JobOutput, JobError>, timings: Timings, lease: Arc<Lease>) {
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
        self.complete(entry, outcome, timings, lease.attempt()).await;
        if entry.status() != JobStatus::Succeeded {
            lease.release().await;
        }
    }

    pub(super) fn failed_result(&self, entry: &JobEntry, err: &JobError, timings: Timings) -> JobResult {
        let mut r = JobResult::failed(entry.id.clone(), entry.kind.clone(), err, self.worker.clone());
        r.timings = timings;
        r
    }

    /// Finishes an entry with a result that is not to be stored: one another worker stored,
    /// or a refusal that is not the job's outcome.
    fn finish_with(&self, entry: &Arc<JobEntry>, result: JobResult) {
        if result.worker.id != self.worker.id {
            tracing::Span::current().record("kiln.cache", "hit");
        }
        self.metrics.jobs.with_label_values(&[entry.kind.as_str(), result.status.as_str()]).inc();
        info!(job_id = %entry.id, status = result.status.as_str(), "job answered without running here");
        entry.finish(result);
        self.table.finished(entry);
    }

    /// Builds, stores and announces the result.
    pub(super) async fn complete(&self, entry: &Arc<JobEntry>, outcome: Result<JobOutput, JobError>, timings: Timings, attempt: u32) {
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
        crate::tenants::stamp(&mut result, entry.tenant());
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
}

/// Takes the CPU slot back after a wait in `acquire`, under the deadline and cancel signal.
async fn cpu_again(resources: &JobResources, deadline: Option<Instant>, cancel: &kiln_jobs::CancelSignal) -> Result<(), JobError> {
    tokio::select! {
        _ = resources.reacquire() => Ok(()),
        _ = until(deadline) => { cancel.expire(); Err(JobError::deadline()) }
        _ = cancel.token().cancelled() => Err(cancel.error().unwrap_or_else(JobError::cancelled)),
    }
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

/// Gives the slot back only when the stopped job's thread is done with it.
fn hold_until_done(handle: tokio::sync::oneshot::Receiver<RunResult>, permit: Permit) {
    tokio::spawn(async move {
        let _ = handle.await;
        drop(permit);
    });
}
