//! What a running job gets from the worker: the store, the event stream, the cancel signal,
//! the limits and its resources. Jobs run on blocking threads; store calls go through
//! [`JobContext::wait`] (reads: [`JobContext::wait_or_stop`]), which give the job's CPU slot
//! back while a call is slow (see
//! [`crate::resources`]), and any other wait for another thread through [`JobContext::idle`].

use crate::checkpoint::{Checkpointer, UnitRecord};
use crate::convert::{ReadingInput, WritingOutput};
use crate::envelope::{Event, OutputInfo};
use crate::error::{ErrorCode, JobError};
use crate::resources::{CpuLoan, GpuGrant, OnLoan, Resources, Unmetered};
use crate::store::{join_output, parse_uri, ObjectStore};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
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

    // ---- memory ----
    /// Memory (MiB) that large image decodes may hold at once in this process
    /// ([`crate::decode_budget`]); 0 = 32 MiB per core.
    pub decode_memory_mb: u64,
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
            decode_memory_mb: 0,
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
const SHUTDOWN: u8 = 3;

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
    /// Asks the job to stop because the worker is shutting down (the drain's grace period is
    /// over): `cancelled`, but retryable, since nothing about the job made it stop.
    pub fn shutdown(&self) {
        let _ = self.reason.compare_exchange(LIVE, SHUTDOWN, Ordering::SeqCst, Ordering::SeqCst);
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
            SHUTDOWN => Some(JobError::shutdown()),
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
    resources: Arc<dyn Resources>,
}

/// How long a store call may take before the job gives its CPU slot back for the rest of
/// it. A local disk answers within this (releasing and taking the slot again would cost more
/// than it frees, and a job that never pauses keeps memory at one decode per slot); an
/// object store over the network, or a download, does not.
pub const WAIT_GRACE: Duration = Duration::from_millis(5);

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
        JobContext {
            job_id,
            output_prefix,
            limits,
            accel,
            store,
            events,
            cancel,
            rt,
            checkpoint: None,
            resources: Arc::new(Unmetered),
        }
    }

    /// Attaches the job's resources (the worker's scheduler does this for every job it runs).
    pub fn with_resources(mut self, resources: Arc<dyn Resources>) -> Self {
        self.resources = resources;
        self
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

    /// Runs a future to completion from the job's blocking thread, keeping the CPU slot:
    /// for short waits. Prefer [`JobContext::wait`] for I/O.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Waits for `f` (store I/O) from the job's thread. If it is not done within
    /// [`WAIT_GRACE`] the job gives its CPU slot back until it is, then queues for a slot
    /// again. `f` runs to its end even if the job is stopped meanwhile (a write is never cut
    /// in half); the stop is reported after it, by the slot's wait or the next `check`.
    pub fn wait<F: Future>(&self, f: F) -> Result<F::Output, JobError> {
        // Without `abandon` the output is always there; `stopped` only names the impossible.
        self.wait_inner(f, false)?.ok_or_else(|| self.stopped())
    }

    /// Like [`JobContext::wait`], but a stopped job abandons `f` at once (`cancelled` /
    /// `deadline_exceeded`): for reads, which leave nothing behind.
    pub fn wait_or_stop<F: Future>(&self, f: F) -> Result<F::Output, JobError> {
        match self.wait_inner(f, true)? {
            Some(out) => Ok(out),
            None => Err(self.stopped()),
        }
    }

    /// Like [`JobContext::wait_or_stop`], keeping the CPU slot: for reads from the local
    /// filesystem, which are copies the job's own CPU makes (page cache) rather than waits
    /// on another machine. Giving the slot back there would let more jobs hold their inputs
    /// in memory at once without any more work getting done.
    pub fn hold_or_stop<F: Future>(&self, f: F) -> Result<F::Output, JobError> {
        let token = self.cancel.token().clone();
        self.rt
            .block_on(async {
                tokio::select! {
                    biased;
                    out = f => Some(out),
                    _ = token.cancelled() => None,
                }
            })
            .ok_or_else(|| self.stopped())
    }

    fn wait_inner<F: Future>(&self, f: F, abandon: bool) -> Result<Option<F::Output>, JobError> {
        let token = self.cancel.token().clone();
        let stop = async {
            if abandon {
                token.cancelled().await
            } else {
                std::future::pending().await
            }
        };
        let out = self.rt.block_on(async {
            tokio::pin!(f);
            tokio::pin!(stop);
            tokio::select! {
                biased;
                out = &mut f => return Some(out),
                _ = &mut stop => return None,
                _ = tokio::time::sleep(WAIT_GRACE) => {}
            }
            self.resources.release_cpu();
            tokio::select! {
                biased;
                out = &mut f => Some(out),
                _ = &mut stop => None,
            }
        });
        self.reacquire_cpu()?;
        Ok(out)
    }

    /// Runs `f`, a blocking wait for work done elsewhere (an infer batch on the model's
    /// threads), without the job's CPU slot; takes a slot again before returning. `f` should
    /// itself poll [`JobContext::check`] so a stopped job ends its wait.
    pub fn idle<T>(&self, f: impl FnOnce() -> T) -> Result<T, JobError> {
        self.resources.release_cpu();
        let out = f();
        self.reacquire_cpu()?;
        Ok(out)
    }

    /// A GPU slot and `mem_bytes` of GPU memory on one device, waited for without the CPU
    /// slot; dropping the grant frees both. Fails `unsupported` where no GPU is scheduled.
    pub fn gpu(&self, mem_bytes: u64) -> Result<Box<dyn GpuGrant>, JobError> {
        self.gpu_on(None, mem_bytes)
    }

    /// Like [`JobContext::gpu`], on `device` when given (work bound to one device: a model's
    /// session).
    pub fn gpu_on(&self, device: Option<u32>, mem_bytes: u64) -> Result<Box<dyn GpuGrant>, JobError> {
        let token = self.cancel.token().clone();
        let mut wait = self.resources.acquire_gpu(device, mem_bytes);
        // A grant that is free now comes without giving the CPU slot back.
        let now = self.rt.block_on(async { tokio::time::timeout(Duration::ZERO, &mut wait).await.ok() });
        if let Some(granted) = now {
            return granted;
        }
        self.resources.release_cpu();
        let granted = self.rt.block_on(async {
            tokio::select! {
                g = &mut wait => Some(g),
                _ = token.cancelled() => None,
            }
        });
        drop(wait);
        self.reacquire_cpu()?;
        granted.unwrap_or_else(|| Err(self.stopped()))
    }

    /// Up to `most` CPU slots nobody waits for, lent for extra threads of this job (see
    /// [`Resources::borrow_cpu`]); empty when the machine is busy. Each thread gives its loan
    /// back (drops it) once [`CpuLoan::wanted`] is true.
    pub fn borrow_cpus(&self, most: usize) -> Vec<Box<dyn CpuLoan>> {
        std::iter::from_fn(|| self.resources.borrow_cpu()).take(most).collect()
    }

    /// The context for an extra thread of this job running on a borrowed slot: the same
    /// job (store, events, checkpoint, cancellation) whose waits keep the loan rather than
    /// give back or take again the job's own slot, which its first thread holds.
    pub fn on_loan(&self) -> JobContext {
        JobContext {
            job_id: self.job_id.clone(),
            output_prefix: self.output_prefix.clone(),
            limits: self.limits.clone(),
            accel: self.accel.clone(),
            store: self.store.clone(),
            events: self.events.clone(),
            cancel: self.cancel.clone(),
            rt: self.rt.clone(),
            checkpoint: self.checkpoint.clone(),
            resources: Arc::new(OnLoan(self.resources.clone())),
        }
    }

    /// Takes a CPU slot again, unless the job is stopped first.
    fn reacquire_cpu(&self) -> Result<(), JobError> {
        let token = self.cancel.token().clone();
        let wait = self.resources.reacquire_cpu();
        self.rt.block_on(async {
            tokio::select! {
                biased;
                _ = wait => Ok(()),
                _ = token.cancelled() => Err(()),
            }
        })
        .map_err(|()| self.stopped())
    }

    fn stopped(&self) -> JobError {
        self.cancel.error().unwrap_or_else(JobError::cancelled)
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

    /// Reads a whole input object named by a job spec, within `max_input_bytes`. A remote
    /// read (S3, HTTP) gives the CPU slot back while it waits; a local file keeps it
    /// ([`JobContext::hold_or_stop`]).
    pub fn read_input(&self, uri: &str) -> Result<Bytes, JobError> {
        let url = parse_uri(uri)?;
        let limit = self.limits.max_input_bytes;
        let read = self.store.get(&url, limit);
        let data = if url.scheme() == "file" { self.hold_or_stop(read)? } else { self.wait_or_stop(read)? };
        Ok(data.map_err(ReadingInput)?)
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
        self.wait(self.store.put(&uri, data, content_type))?.map_err(WritingOutput)?;
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
        self.wait(self.store.put_file(&uri, path, content_type))?.map_err(WritingOutput)?;
        Ok(output_info(name, &uri, content_type, bytes, dims))
    }

    /// Reads back an output this job (or an earlier attempt of it) stored: a unit's
    /// intermediate, such as a render page's PDF part.
    pub fn read_stored_output(&self, name: &str) -> Result<Bytes, JobError> {
        let uri = join_output(&self.output_prefix, name)?;
        self.block_on(self.store.get(&uri, u64::MAX))
            .map_err(|e| JobError::internal(format!("reading stored {name}: {e}")).retryable(e.is_retryable()))
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
            Some(c) => Some(self.wait(c.record(key, UnitRecord { outputs: outputs.to_vec(), data }))??),
            None => None,
        };
        self.announce_unit(outputs, seq);
        Ok(())
    }

    /// Announces a recorded unit: its outputs, then its `checkpoint` event when it has a seq.
    pub(crate) fn announce_unit(&self, outputs: &[OutputInfo], seq: Option<u64>) {
        for o in outputs {
            self.announce_output(o);
        }
        if let Some(seq) = seq {
            self.events.emit(Event::Checkpoint { id: self.job_id.clone(), seq });
        }
    }

    /// Where output `name` of this job is stored.
    pub(crate) fn output_uri(&self, name: &str) -> Result<Url, JobError> {
        join_output(&self.output_prefix, name)
    }

    pub(crate) fn checkpointer(&self) -> Option<&Arc<dyn Checkpointer>> {
        self.checkpoint.as_ref()
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
    fn a_shutdown_is_a_retryable_cancel_and_a_users_cancel_is_not() {
        let c = CancelSignal::new();
        c.shutdown();
        c.cancel();
        let e = c.error().unwrap();
        assert_eq!((e.code, e.retryable), (ErrorCode::Cancelled, true));
        let user = CancelSignal::new();
        user.cancel();
        user.shutdown();
        let e = user.error().unwrap();
        assert_eq!((e.code, e.retryable), (ErrorCode::Cancelled, false));
    }

    #[test]
    fn limits_parse_with_defaults() {
        let l: Limits = serde_json::from_str(r#"{"max_pixels": 10}"#).unwrap();
        assert_eq!(l.max_pixels, 10);
        assert_eq!(l.max_outputs, Limits::default().max_outputs);
        assert!(serde_json::from_str::<Limits>(r#"{"max_pixelz": 10}"#).is_err());
    }
}
