//! What a running job gets from the worker: the store, the event stream, the cancel signal
//! and the limits. Jobs run on blocking threads; store calls go through [`JobContext::block_on`].

use crate::checkpoint::{Checkpointer, UnitRecord};
use crate::convert::{ReadingInput, WritingOutput};
use crate::envelope::{Event, OutputInfo};
use crate::error::{ErrorCode, JobError};
use crate::store::{join_output, parse_uri, ObjectStore};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Limits every spec is validated against (config section `[limits]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest source object read, in bytes.
    pub max_input_bytes: u64,
    /// Largest decoded image, in pixels (width × height); checked from the header before
    /// any pixel is allocated.
    pub max_pixels: u64,
    /// Most outputs one job may ask for.
    pub max_outputs: usize,
    /// Largest width or height of an output image.
    pub max_output_dimension: u32,
    // transcode
    /// Longest video a transcode accepts, in seconds (from the header, and enforced while
    /// decoding).
    pub max_video_seconds: f64,
    /// Largest source frame a transcode accepts, in pixels (width × height): 4K UHD.
    pub max_video_pixels: u64,
    /// Most rungs in one transcode ladder.
    pub max_ladder_rungs: usize,

    // ---- render ----
    /// Most pages one render job may have.
    pub max_render_pages: usize,
    /// Largest render page, and largest image box on a page, in pixels (width × height).
    pub max_page_pixels: u64,
    /// Most layers on one render page.
    pub max_layers_per_page: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 256 * 1024 * 1024,
            max_pixels: 100_000_000,
            max_outputs: 16,
            max_output_dimension: 8192,
            max_video_seconds: 1800.0,
            max_video_pixels: 3840 * 2160,
            max_ladder_rungs: 6,
            max_render_pages: 1000,
            max_page_pixels: 25_000_000,
            max_layers_per_page: 256,
        }
    }
}

/// Receives a job's events as they happen.
pub trait EventSink: Send + Sync + 'static {
    fn emit(&self, event: Event);
}

/// An [`EventSink`] that drops everything (warm-up runs, tests).
pub struct NullSink;
impl EventSink for NullSink {
    fn emit(&self, _event: Event) {}
}

const LIVE: u8 = 0;
const CANCELLED: u8 = 1;
const DEADLINE: u8 = 2;

/// Why and whether a job should stop. Cloned freely; firing one clone fires all.
#[derive(Clone, Default)]
pub struct CancelSignal {
    token: CancellationToken,
    reason: Arc<AtomicU8>,
}

impl CancelSignal {
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the job to stop because a user cancelled it.
    pub fn cancel(&self) {
        let _ = self.reason.compare_exchange(LIVE, CANCELLED, Ordering::SeqCst, Ordering::SeqCst);
        self.token.cancel();
    }
    /// Asks the job to stop because its deadline passed.
    pub fn expire(&self) {
        let _ = self.reason.compare_exchange(LIVE, DEADLINE, Ordering::SeqCst, Ordering::SeqCst);
        self.token.cancel();
    }
    pub fn is_fired(&self) -> bool {
        self.token.is_cancelled()
    }
    /// The error to report when fired.
    pub fn error(&self) -> Option<JobError> {
        match self.reason.load(Ordering::SeqCst) {
            CANCELLED => Some(JobError::cancelled()),
            DEADLINE => Some(JobError::deadline()),
            _ => None,
        }
    }
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// The job's window on the worker.
pub struct JobContext {
    pub job_id: String,
    pub output_prefix: Url,
    pub limits: Limits,
    /// `cpu` or `gpu` as the worker resolved the job's acceleration; a kind may refine it.
    pub accel: String,
    store: Arc<dyn ObjectStore>,
    events: Arc<dyn EventSink>,
    cancel: CancelSignal,
    rt: tokio::runtime::Handle,
    checkpoint: Option<Arc<dyn Checkpointer>>,
}

impl JobContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        job_id: String,
        output_prefix: Url,
        limits: Limits,
        accel: String,
        store: Arc<dyn ObjectStore>,
        events: Arc<dyn EventSink>,
        cancel: CancelSignal,
        rt: tokio::runtime::Handle,
    ) -> Self {
        JobContext { job_id, output_prefix, limits, accel, store, events, cancel, rt, checkpoint: None }
    }

    /// Attaches the job's checkpoint (the worker does this for checkpointed jobs).
    pub fn with_checkpoint(mut self, checkpoint: Arc<dyn Checkpointer>) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The worker's runtime, for bridging a store stream into blocking reads on the job's
    /// thread (`tokio_util::io::SyncIoBridge`).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// Runs a future to completion from the job's blocking thread.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Fails with `cancelled` or `deadline_exceeded` once the job should stop. Jobs call it
    /// between stages.
    pub fn check(&self) -> Result<(), JobError> {
        match self.cancel.error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn cancel_signal(&self) -> &CancelSignal {
        &self.cancel
    }

    /// Reads a whole input object named by a job spec, within `max_input_bytes`.
    pub fn read_input(&self, uri: &str) -> Result<Bytes, JobError> {
        let url = parse_uri(uri)?;
        let limit = self.limits.max_input_bytes;
        Ok(self.block_on(self.store.get(&url, limit)).map_err(ReadingInput)?)
    }

    /// Stores one output under the job's output prefix, then announces it as an `output`
    /// event. Returns what was stored.
    pub fn write_output(
        &self,
        name: &str,
        data: Bytes,
        content_type: &str,
        dims: Option<(u32, u32)>,
    ) -> Result<OutputInfo, JobError> {
        let info = self.store_output(name, data, content_type, dims)?;
        self.announce_output(&info);
        Ok(info)
    }

    /// Stores one output under the job's output prefix without announcing it: for a unit's
    /// outputs, which [`JobContext::complete_unit`] announces once the unit is recorded.
    pub fn store_output(
        &self,
        name: &str,
        data: Bytes,
        content_type: &str,
        dims: Option<(u32, u32)>,
    ) -> Result<OutputInfo, JobError> {
        self.check()?;
        let uri = join_output(&self.output_prefix, name)?;
        let bytes = data.len() as u64;
        self.block_on(self.store.put(&uri, data, content_type)).map_err(WritingOutput)?;
        Ok(output_info(name, &uri, content_type, bytes, dims))
    }

    /// Like [`JobContext::store_output`], streaming a local file (large outputs: a video
    /// segment, a PDF) into the store without holding it in memory.
    pub fn store_output_file(
        &self,
        name: &str,
        path: &Path,
        content_type: &str,
        dims: Option<(u32, u32)>,
    ) -> Result<OutputInfo, JobError> {
        self.check()?;
        let uri = join_output(&self.output_prefix, name)?;
        let bytes = std::fs::metadata(path).map_err(|e| JobError::internal(format!("output file {}: {e}", path.display())))?.len();
        self.block_on(self.store.put_file(&uri, path, content_type)).map_err(WritingOutput)?;
        Ok(output_info(name, &uri, content_type, bytes, dims))
    }

    /// Announces an already-stored output as an `output` event.
    pub fn announce_output(&self, output: &OutputInfo) {
        self.events.emit(Event::Output { id: self.job_id.clone(), output: output.clone() });
    }

    /// The record of unit `key` when an earlier attempt of this job completed it; the job
    /// then skips the unit and reuses the record. Always `None` for jobs without a checkpoint.
    pub fn restored_unit(&self, key: &str) -> Option<UnitRecord> {
        self.checkpoint.as_ref().and_then(|c| c.restored(key))
    }

    /// Marks unit `key` done: its outputs (already stored) and `data` are recorded in the
    /// job's checkpoint, then the outputs are announced and a `checkpoint` event follows.
    /// Without a checkpoint (a job run outside one) only the announcements happen.
    pub fn complete_unit(&self, key: &str, outputs: &[OutputInfo], data: serde_json::Value) -> Result<(), JobError> {
        self.check()?;
        let seq = match &self.checkpoint {
            Some(c) => Some(self.block_on(c.record(key, UnitRecord { outputs: outputs.to_vec(), data }))?),
            None => None,
        };
        for o in outputs {
            self.announce_output(o);
        }
        if let Some(seq) = seq {
            self.events.emit(Event::Checkpoint { id: self.job_id.clone(), seq });
        }
        Ok(())
    }

    pub fn progress(&self, done: u64, total: u64, stage: &str) {
        self.events.emit(Event::Progress { id: self.job_id.clone(), done, total, stage: stage.to_owned() });
    }

    pub fn emit(&self, event: Event) {
        self.events.emit(event);
    }
}

fn output_info(name: &str, uri: &Url, content_type: &str, bytes: u64, dims: Option<(u32, u32)>) -> OutputInfo {
    OutputInfo {
        name: name.to_owned(),
        uri: uri.to_string(),
        content_type: content_type.to_owned(),
        bytes,
        width: dims.map(|d| d.0),
        height: dims.map(|d| d.1),
    }
}

/// Shorthand for a spec check that fails with `invalid_spec`.
pub fn ensure(cond: bool, message: impl FnOnce() -> String) -> Result<(), JobError> {
    if cond {
        Ok(())
    } else {
        Err(JobError::new(ErrorCode::InvalidSpec, message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_reason_sticks_to_the_first_cause() {
        let c = CancelSignal::new();
        assert!(c.error().is_none());
        c.expire();
        c.cancel();
        assert_eq!(c.error().unwrap().code, ErrorCode::DeadlineExceeded);
        assert!(c.clone().is_fired());
    }

    #[test]
    fn limits_parse_with_defaults() {
        let l: Limits = serde_json::from_str(r#"{"max_pixels": 10}"#).unwrap();
        assert_eq!(l.max_pixels, 10);
        assert_eq!(l.max_outputs, Limits::default().max_outputs);
        assert!(serde_json::from_str::<Limits>(r#"{"max_pixelz": 10}"#).is_err());
    }
}
