//! The thumbnail job: one decode of the source serves every output.
//!
//! Spec (DESIGN.md, "Job kinds"): `{"source": URI, "outputs": [{"name":"256.webp","width":256,
//! "height":256,"fit":"cover|contain|fill|inside","format":"jpeg|png|webp|avif","quality":80,
//! "lossless":false,"background":"#rrggbb[aa]"}], "watermark"?: {"source": URI,
//! "gravity":"south-east","opacity":0.5,"margin":8}}`.
//!
//! Decisions the design leaves open:
//! - `format` defaults from the name's extension; `fit` to `inside`; `quality` to 80;
//!   `watermark.opacity` to 1, its `gravity` to south-east, its margin to 2% of the output's
//!   shorter side. Only one of width/height: the other follows the aspect ratio.
//! - `inside` never enlarges; `cover`, `contain` and `fill` give the exact box.
//! - `contain` pads with `background`, else transparent (PNG/WebP/AVIF) or white (JPEG).
//!   Alpha going to JPEG is flattened onto `background` or white.
//! - Outputs are sRGB with no metadata: EXIF orientation and ICC profiles are applied, then
//!   dropped.
//! - `accel` (default `auto`): `gpu` decodes with nvJPEG where it can and resizes with kiln's
//!   CUDA Lanczos3 (gpu.rs), failing `unsupported` without a GPU; `auto` does so when the
//!   worker resolved the job to the GPU and falls back to the CPU path when none is granted.
//! - Errors: undecodable, truncated or empty input → `corrupt_input`; formats we do not read
//!   (HEIC, AVIF, SVG, text, …) → `unsupported`; more than `limits.max_pixels` (from the header,
//!   before decoding) → `input_too_large`.

mod gpu;
mod run;
mod spec;
#[cfg(test)]
mod tests;

pub use spec::{Output, OutputSpec, Resolved, ThumbnailSpec, Watermark, WatermarkSpec};

use crate::context::{JobContext, Limits};
use crate::error::JobError;
use crate::kind::{JobKind, JobOutput, Needs, PreparedJob};
use kiln_kernels::Accel;
use serde_json::Value;

pub struct Thumbnail;

impl JobKind for Thumbnail {
    fn name(&self) -> &'static str {
        "thumbnail"
    }

    fn prepare(&self, input: &Value, limits: &Limits) -> Result<Box<dyn PreparedJob>, JobError> {
        let job = ThumbnailSpec::parse(input)?.resolve(limits)?;
        Ok(Box::new(Prepared(job)))
    }

    fn warm_up(&self) -> Result<(), JobError> {
        run::warm_up()
    }
}

/// A validated thumbnail job, ready to run.
#[derive(Debug)]
pub struct Prepared(pub Resolved);

impl PreparedJob for Prepared {
    fn run(self: Box<Self>, ctx: &JobContext) -> Result<JobOutput, JobError> {
        let job = &self.0;
        let try_gpu = match job.accel {
            Accel::Cpu => false,
            Accel::Gpu => true,
            Accel::Auto => ctx.accel == "gpu",
        };
        if !try_gpu {
            return run::run(job, ctx);
        }
        match gpu::run(job, ctx) {
            Ok(out) => Ok(out),
            Err(gpu::Fallback::Job(e)) => Err(e),
            Err(gpu::Fallback::NoGpu(why)) if job.accel == Accel::Gpu => {
                Err(JobError::unsupported(format!("thumbnail accel gpu: {why}")))
            }
            Err(gpu::Fallback::NoGpu(why)) => {
                tracing::debug!(job = %ctx.job_id, why = %why, "thumbnail on the CPU");
                run::run(job, ctx)
            }
        }
    }

    fn needs(&self) -> Needs {
        let job = &self.0;
        let reads = std::iter::once(&job.source).chain(job.watermark.as_ref().map(|w| &w.source)).cloned().collect();
        Needs { accel: job.accel, source: Some(job.source.clone()), reads }
    }
}
