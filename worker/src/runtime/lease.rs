//! The checkpoint side of running a job: taking its lease, waiting while another worker
//! holds it, and renewing it while the job runs (see [`crate::checkpoint`]).

use super::Runtime;
use crate::checkpoint::{self, Acquired, CheckpointSpec, Lease};
use crate::jobtable::JobEntry;
use kiln_jobs::layout;
use kiln_jobs::{CancelSignal, JobError, JobResult};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;
use url::Url;

/// How waiting on another worker's lease ended.
pub(super) enum Holder {
    Finished(JobResult),
    Gone,
    Stopped(JobError),
}

/// Renews a lease every third of its length until aborted; a lost lease cancels the job.
pub(super) async fn renew_lease(lease: Arc<Lease>, cancel: CancelSignal) {
    let every = Duration::from_millis((lease.lease_ms() / 3).max(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = lease.renew().await {
            if lease.is_lost() {
                cancel.cancel();
                return;
            }
            warn!(error = %e, "renewing the checkpoint lease failed; retrying");
        }
    }
}

impl Runtime {
    pub(super) fn state_uri(&self, id: &str) -> Result<Url, JobError> {
        layout::state_uri(&self.store_url, id)
    }

    pub(super) async fn take_lease(&self, entry: &JobEntry, spec_hash: &str) -> Result<Acquired, JobError> {
        checkpoint::acquire(CheckpointSpec {
            store: self.store.clone(),
            uri: self.state_uri(&entry.id)?,
            job_id: entry.id.clone(),
            kind: entry.kind.clone(),
            spec_hash: spec_hash.to_owned(),
            owner: format!("{}/{}", self.worker.id, ulid::Ulid::new()),
            lease_ms: self.cfg.checkpoint.lease_ms,
            store_wait: Duration::from_millis(self.cfg.checkpoint.store_wait_ms),
        })
        .await
    }

    /// Polls while another worker holds the job's lease: until its result is stored, its
    /// lease lapses (released, or expired because that worker died), or this job stops.
    pub(super) async fn await_holder(&self, entry: &JobEntry, deadline: Option<Instant>, cancel: &CancelSignal) -> Holder {
        let poll = Duration::from_millis((self.cfg.checkpoint.lease_ms / 4).clamp(100, 2000));
        let uri = match self.state_uri(&entry.id) {
            Ok(u) => u,
            Err(e) => return Holder::Stopped(e),
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = super::until(deadline) => { cancel.expire(); return Holder::Stopped(JobError::deadline()) }
                _ = cancel.token().cancelled() => return Holder::Stopped(cancel.error().unwrap_or_else(JobError::cancelled)),
            }
            if let Some(result) = self.stored_result(&entry.id).await {
                return Holder::Finished(result);
            }
            match checkpoint::read_state(self.store.as_ref(), &uri).await {
                Ok(Some((state, _))) if state.lease_expires_ms > checkpoint::now_ms() => {}
                Ok(_) => return Holder::Gone,
                Err(e) => warn!(job_id = %entry.id, error = %e, "reading the checkpoint failed; still waiting"),
            }
        }
    }
}
