//! The transcode job: a source video to an HLS ladder, decoding once and encoding every rung,
//! one checkpointed unit per segment index.
//!
//! Spec (DESIGN.md, "Job kinds"): `{"source": URI, "ladder": [{"height":1080,
//! "bitrate_kbps":5000}, …], "codec":"h264|hevc", "segment_seconds":4, "package":"hls",
//! "accel":"auto|cpu|gpu", "preset":"veryfast", "audio_bitrate_kbps":128}`.
//!
//! Outputs: `{output}master.m3u8`, `{output}{H}p/index.m3u8` and the MPEG-TS segments
//! `{output}{H}p/seg-00000.ts`.
//!
//! Decisions the design leaves open:
//! - Widths follow the source's display aspect ratio, rounded to even. Rungs taller than the
//!   source are dropped (never upscaled); if that drops all, one rung at the source height
//!   with the lowest requested bitrate remains.
//! - Unit = segment index `k` across all rungs (`seg-00012`): every rung's segment `k` is
//!   stored, then the unit is recorded with its durations and sizes. A resumed job skips the
//!   recorded prefix and seeks to the first missing segment.
//! - Rate control: `bitrate_kbps` is the target (ABR) with maxrate 1.1× and a 2 s VBV buffer.
//! - Errors: unreadable or truncated container, or no decodable frame → `corrupt_input`; no
//!   video stream, or a codec this FFmpeg cannot decode → `unsupported`; longer than
//!   `limits.max_video_seconds`, larger than `limits.max_video_pixels`, or more bytes than
//!   `limits.max_input_bytes` → `input_too_large`.
//! - `accel`: `cpu` never touches the GPU. `gpu` uses every NVIDIA engine the codec probe
//!   proved (NVENC, NVDEC, scale_cuda: an opened session, a frame through the filter) and fails
//!   `unsupported` with none. `auto` goes to the GPU only when NVENC is proven: without it
//!   libx264 encodes on the CPU anyway, and NVDEC + scale_cuda feeding it measured 0.64× the
//!   CPU path on a 16-core H100 host (benches/RESULTS.md, "GPU host").

mod hls;
mod run;
mod spec;
#[cfg(test)]
mod tests;

pub use hls::{master_playlist, media_playlist, target_duration, PlaylistKind, SegmentEntry, Variant};
pub use spec::{plan_ladder, PlannedRung, Resolved, RungSpec, TranscodeSpec};

use crate::context::{JobContext, Limits};
use crate::error::JobError;
use crate::kind::{JobKind, JobOutput, Needs, PreparedJob};
use serde_json::Value;

pub struct Transcode;

impl JobKind for Transcode {
    fn name(&self) -> &'static str {
        "transcode"
    }

    fn prepare(&self, input: &Value, limits: &Limits) -> Result<Box<dyn PreparedJob>, JobError> {
        let job = TranscodeSpec::parse(input)?.resolve(limits)?;
        Ok(Box::new(Prepared(job)))
    }

    /// Loads FFmpeg and runs the codec probe (NVENC/NVDEC sessions are opened here, once).
    fn warm_up(&self) -> Result<(), JobError> {
        let p = kiln_kernels::video::probe::codecs();
        if !p.encoders.contains(&"libx264") {
            tracing::warn!("this FFmpeg build has no libx264: CPU transcodes will fail");
        }
        Ok(())
    }
}

/// A validated transcode job, ready to run.
#[derive(Debug)]
pub struct Prepared(pub Resolved);

impl PreparedJob for Prepared {
    fn run(self: Box<Self>, ctx: &JobContext) -> Result<JobOutput, JobError> {
        run::run(&self.0, ctx)
    }

    fn needs(&self) -> Needs {
        Needs { accel: self.0.accel, source: Some(self.0.source.clone()), reads: vec![self.0.source.clone()] }
    }

    fn checkpointed(&self) -> bool {
        true
    }
}
