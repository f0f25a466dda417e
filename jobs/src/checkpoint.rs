//! Unit checkpoints as a job sees them. A long job (transcode segments, render pages) is a
//! sequence of units; each unit's outputs are stored first, then the unit is recorded in the
//! job's `state.json` (a conditional write only the lease holder can make), then announced.
//! A resumed attempt asks which units an earlier attempt finished and skips them.
//!
//! The worker owns the lease and `state.json` (`worker/src/checkpoint.rs`); jobs only see
//! the [`Checkpointer`] trait through [`crate::JobContext`].

use crate::envelope::OutputInfo;
use crate::error::JobError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a completed unit left behind: its stored outputs and any data the job needs to
/// assemble the final result without redoing the unit (a segment's duration, a page's size).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub outputs: Vec<OutputInfo>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

/// The job's checkpoint, as kept by the worker.
#[async_trait]
pub trait Checkpointer: Send + Sync + 'static {
    /// The record of a unit an earlier attempt completed, if any.
    fn restored(&self, key: &str) -> Option<UnitRecord>;
    /// Records a unit whose outputs are already stored. Returns the checkpoint's sequence
    /// number. Fails when this worker no longer holds the job's lease, or when the store
    /// stays unavailable (retryable).
    async fn record(&self, key: &str, unit: UnitRecord) -> Result<u64, JobError>;
}
