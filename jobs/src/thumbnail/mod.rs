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
//! - Errors: undecodable, truncated or empty input → `corrupt_input`; formats we do not read
//!   (HEIC, AVIF, SVG, text, …) → `unsupported`; more than `limits.max_pixels` (from the header,
//!   before decoding) → `input_too_large`.

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
        run::run(&self.0, ctx)
    }

    fn needs(&self) -> Needs {
        let job = &self.0;
        let reads = std::iter::once(&job.source).chain(job.watermark.as_ref().map(|w| &w.source)).cloned().collect();
        Needs { accel: Accel::Auto, source: Some(job.source.clone()), reads }
    }
}
