//! The render job: multi-page documents composited page by page, as PNGs and/or one PDF.
//!
//! Spec (DESIGN.md, "Job kinds"): `{"pages": [PAGE, …], "format": "pdf|png|pdf+png",
//! "accel": "auto|cpu|gpu", "jpeg_quality": 90}`; PAGE is `{"width", "height", "dpi",
//! "background", "layers": [LAYER, …]}` or `{"pdf_page": {"source": URI, "page": 1}}`; LAYER
//! is an `image` (`source, x, y, width, height, opacity, blend, rotate, crop`), a `rect`
//! (`x, y, width, height, fill, stroke, stroke_width, opacity, blend`) or `text` (`x, y,
//! text, size, color, font, opacity, blend`).
//!
//! Decisions the design leaves open:
//! - `format` defaults to `pdf`, `dpi` to 150, `background` to white, `accel` to `auto`.
//!   `accel`: `cpu` = the CPU reference compositor; `gpu` = wgpu on whatever adapter it
//!   finds (lavapipe on CPU machines), `unsupported` when none; `auto` = wgpu when an adapter
//!   exists, else the CPU. The worker's own accel setting is not consulted.
//! - Text: (x, y) is the top-left of the text box; `size` is the em size in pixels; fonts
//!   `sans`, `serif`, `mono` (+ `-bold`), DejaVu. Image `width`/`height`: one alone keeps
//!   the aspect ratio, neither takes the (cropped) image's size; the image is stretched to its
//!   box; `rotate` is degrees clockwise about the box centre; `crop` is in source pixels.
//! - PDF pages are vectors (`vector.rs`): text as text (the PNG path's shaping, fonts
//!   embedded once per document as subsets with a ToUnicode map), rectangles as paths, images
//!   as image XObjects at the resolution their box needs (never above the source's; JPEGs
//!   needing no change passed through; the same photo on many pages stored once), opacity and
//!   blend modes as ExtGStates. Page size in points = pixels × 72 / dpi. `jpeg_quality` is
//!   the quality of photos re-encoded after resampling. A `pdf` job composites nothing; PNG
//!   pages (`png`, `pdf+png`) are composited as before and keep alpha; a transparent page
//!   background shows the white paper in the PDF.
//! - `pdf_page` pages are copied whole (content, resources, annotations; not `/Parent` links)
//!   and need PDF output; with `pdf+png` they get no PNG (kiln does not rasterise PDFs).
//! - Units: one per page, key `page-NNNN`. A page's PNG (`page-NNNN.png`) and its PDF part
//!   (`.parts/page-NNNN.pdf`, a single-page PDF) are stored, then the unit is recorded; the
//!   parts stay in the store after the job (a resumed or repeated assembly needs them).
//!   `document.pdf` is assembled from the parts as pages are committed (in page order; a
//!   restored page's part is read back from the store).
//! - Errors: a missing image or source PDF → `input_not_found`; an unreadable PDF →
//!   `corrupt_input`; an encrypted PDF → `unsupported`; a page number past the end →
//!   `invalid_spec`; limits (`max_render_pages`, `max_page_pixels`, `max_layers_per_page`)
//!   → `invalid_spec` at admission.

mod cache;
mod ordered;
mod page;
pub mod pdf;
mod pdfimage;
mod run;
mod spec;
mod vector;
#[cfg(test)]
mod tests;

pub use spec::{Crop, DrawnPage, Layer, Page, RenderSpec, Resolved};

use crate::context::{JobContext, Limits};
use crate::error::JobError;
use crate::kind::{JobKind, JobOutput, Needs, PreparedJob};
use serde_json::Value;
use std::collections::HashSet;

pub struct Render;

impl JobKind for Render {
    fn name(&self) -> &'static str {
        "render"
    }

    fn prepare(&self, input: &Value, limits: &Limits) -> Result<Box<dyn PreparedJob>, JobError> {
        let job = RenderSpec::parse(input)?.resolve(limits)?;
        Ok(Box::new(Prepared(job)))
    }
}

/// A validated render job, ready to run.
#[derive(Debug)]
pub struct Prepared(pub Resolved);

impl PreparedJob for Prepared {
    fn run(self: Box<Self>, ctx: &JobContext) -> Result<JobOutput, JobError> {
        run::run(&self.0, ctx)
    }

    fn needs(&self) -> Needs {
        let sources = self.0.pages.iter().flat_map(|page| match page {
            Page::Merge { source, .. } => vec![source],
            Page::Drawn(d) => d.layers.iter().filter_map(|l| if let Layer::Image { source, .. } = l { Some(source) } else { None }).collect(),
        });
        let mut seen = HashSet::new();
        let reads = sources.filter(|s| seen.insert(*s)).cloned().collect();
        Needs { accel: self.0.accel, source: None, reads }
    }

    fn checkpointed(&self) -> bool {
        true
    }
}
