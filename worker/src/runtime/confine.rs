//! The runtime's side of confinement (`store/confine.rs`): the modes that take jobs from
//! others (serve, lambda, Kafka) install a [`Policy`]; then every job's store is a
//! [`ConfinedStore`] and an envelope's `output` outside the allowed roots is refused with
//! `forbidden` at admission, before any I/O. Without a policy (`kiln run`) nothing changes.
//! The runtime's own records (`{store}/jobs/…`) go through the unconfined store.

use super::Runtime;
use crate::store::confine::{ConfinedStore, Policy};
use kiln_jobs::{JobError, ObjectStore};
use std::sync::Arc;
use tracing::info;
use url::Url;

impl Runtime {
    /// Confines every job admitted from now on to `policy`. Once per runtime; a second call
    /// keeps the first policy.
    pub fn confine(&self, policy: Policy) {
        if self.policy.set(Arc::new(policy)).is_ok() {
            info!("jobs confined to the store, sources.allow and outputs.allow");
        }
    }

    /// Whether jobs are confined.
    pub fn confined(&self) -> bool {
        self.policy.get().is_some()
    }

    /// The store as jobs see it: confined when a policy is installed.
    pub fn job_store(&self) -> Arc<dyn ObjectStore> {
        self.confine_store(self.store.clone())
    }

    pub(super) fn confine_store(&self, store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        match self.policy.get() {
            Some(p) => Arc::new(ConfinedStore::new(store, p.clone())),
            None => store,
        }
    }

    /// `forbidden` when jobs may not write under `output`.
    pub(super) fn check_output(&self, output: &Url) -> Result<(), JobError> {
        match self.policy.get() {
            Some(p) => p.check_output_prefix(output),
            None => Ok(()),
        }
    }
}
