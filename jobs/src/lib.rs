//! kiln-jobs: the job kinds kiln runs, and the types every tier shares with them.
//!
//! This crate knows nothing of Kafka, HTTP or Lambda. A job kind parses and validates its
//! spec up front ([`JobKind::prepare`]), then runs on a blocking thread against a
//! [`JobContext`] that gives it the object store, the event stream and the cancel signal.
//!
//! - [`envelope`]: the wire formats (envelope, result, events) from DESIGN.md.
//! - [`error`]: [`JobError`] with its DESIGN.md result code and a retryable flag.
//! - [`store`]: the [`ObjectStore`] trait jobs read sources from and write outputs to.
//! - [`checkpoint`]: [`Checkpointer`] and [`UnitRecord`]: resumable units of long jobs.
//! - [`context`]: [`JobContext`], [`Limits`], [`EventSink`].
//! - [`resources`]: [`Resources`]: the CPU slot a job gives back while it waits, GPU grants.
//! - [`kind`]: the [`JobKind`] trait and the [`Registry`] of kinds (filled by the binary).
//! - [`recorder`]: [`recorder::Recorder`]: units' writes behind the job, events in order.
//! - [`layout`]: the store keys of a job (`jobs/{id}/result.json`, `state.json`, `outputs/{id}/`).
//! - [`convert`]: every mapping of a kernel or store error onto a [`JobError`].
//! - [`spec_util`]: spec helpers shared by several kinds (colours).
//! - [`thumbnail`]: the thumbnail job.
//! - [`infer`]: the infer job (ONNX Runtime; registered by the worker with its model registry).
//! - [`transcode`]: the transcode job (HLS ladders, segment checkpoints).
//! - [`render`]: the render job (page compositing, PNG and PDF output, page checkpoints).

pub mod checkpoint;
pub mod context;
pub mod convert;
pub mod decode_budget;
pub mod envelope;
pub mod error;
pub mod infer;
pub mod jpeg_frame;
pub mod kind;
pub mod layout;
pub mod recorder;
pub mod render;
pub mod resources;
pub mod spec_util;
pub mod store;
#[cfg(test)]
mod testutil;
pub mod thumbnail;
pub mod transcode;

pub use checkpoint::{Checkpointer, UnitRecord};
pub use context::{CancelSignal, EventSink, JobContext, Limits};
pub use envelope::{Envelope, ErrorBody, Event, JobResult, JobStatus, OutputInfo, Priority, Timings, WorkerInfo};
pub use error::{ErrorCode, JobError};
pub use resources::{CpuLoan, GpuGrant, GpuLedger, Resources, Unmetered};
pub use kind::{JobKind, JobOutput, Needs, PreparedJob, Registry};
pub use store::{ObjectMeta, ObjectStore, StoreError, Version};
/// `auto | cpu | gpu`: the one acceleration type of specs and the worker (from kiln-kernels).
pub use kiln_kernels::Accel;
