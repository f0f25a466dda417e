//! Running a render job: one checkpointed unit per page (render → store PNG and PDF part →
//! record), pages rendered on every idle core and committed in order ([`ordered`]); the
//! document is assembled from the parts as they are committed, into a temporary file that is
//! streamed to the store at the end. A page's part and record are written behind the job
//! ([`Recorder`]): the next pages render while they land.

use super::ordered::ordered;
use super::page::{self, ImageCache};
use super::pdf::{self, Assembler};
use super::pdfimage::PdfImages;
use super::spec::{Page, Resolved};
use super::vector::{self, Fonts};
use crate::context::JobContext;
use crate::convert::Context;
use crate::envelope::OutputInfo;
use crate::error::JobError;
use crate::kind::JobOutput;
use crate::recorder::{Intermediate, Recorder};
use bytes::Bytes;
use kiln_kernels::image::{self as img, EncodeOptions, OutputFormat};
use kiln_kernels::render::{self as render, Compositor};
use kiln_kernels::Accel;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const PDF_NAME: &str = "document.pdf";

/// What a page unit records besides its PNG output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PageRecord {
    /// The stored PDF part's name under the output prefix, when PDF output is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    part: Option<String>,
    /// Page size in points.
    width_pt: f64,
    height_pt: f64,
}

pub fn page_key(i: usize) -> String {
    format!("page-{:04}", i + 1)
}

pub fn png_name(i: usize) -> String {
    format!("page-{:04}.png", i + 1)
}

pub fn part_name(i: usize) -> String {
    format!(".parts/page-{:04}.pdf", i + 1)
}

/// A page worked on by any thread, waiting to be committed in order.
enum Unit {
    /// Done by an earlier attempt: its record, its outputs, and its PDF part read back.
    Restored { record: PageRecord, outputs: Vec<OutputInfo>, part: Option<Bytes> },
    /// Rendered now: the PNG's info (stored), the PDF part's bytes (stored with the record).
    Rendered { png: Option<OutputInfo>, part: Option<Bytes>, record: PageRecord },
}

/// What every page thread shares: the job's caches and its compositor.
#[derive(Default)]
struct Shared {
    comp: Mutex<Option<Arc<dyn Compositor>>>,
    images: ImageCache,
    fonts: Fonts,
    pdf_images: PdfImages,
    /// The source PDF of the last `pdf_page` (consecutive pages usually share it).
    source_pdf: Mutex<Option<(String, Arc<lopdf::Document>)>>,
}

impl Shared {
    fn compositor(&self, accel: Accel) -> Result<Arc<dyn Compositor>, JobError> {
        let mut c = self.comp.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = c.as_ref() {
            return Ok(c.clone());
        }
        let made = render::compositor(accel)?;
        *c = Some(made.clone());
        Ok(made)
    }

    fn source_pdf(&self, ctx: &JobContext, source: &str) -> Result<Arc<lopdf::Document>, JobError> {
        if let Some((s, doc)) = self.source_pdf.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if s == source {
                return Ok(doc.clone());
            }
        }
        let what = format!("pdf_page {source}");
        let data = ctx.read_input(source).context(&what)?;
        let doc = Arc::new(pdf::load(&data, &what)?);
        drop(data);
        *self.source_pdf.lock().unwrap_or_else(|p| p.into_inner()) = Some((source.to_owned(), doc.clone()));
        Ok(doc)
    }
}

/// Pages are rendered on the job's thread and on idle CPU slots the job borrows (at most
/// this many extra threads), and committed in page order ([`ordered`]).
const MOST_PAGE_THREADS: usize = 8;

pub fn run(job: &Resolved, ctx: &JobContext) -> Result<JobOutput, JobError> {
    let started = Instant::now();
    ctx.check()?;
    let total = job.pages.len() as u64;
    let shared = Shared::default();
    let mut pngs: Vec<OutputInfo> = Vec::new();
    let (mut restored, mut rendered) = (0u64, 0u64);
    // The document is assembled as pages are committed, into a temporary file.
    let mut asm = if job.pdf {
        let tmp = tempfile::NamedTempFile::new().map_err(|e| JobError::internal(format!("temp file: {e}")))?;
        let file = tmp.reopen().map_err(|e| JobError::internal(format!("temp file: {e}")))?;
        Some((Assembler::new(std::io::BufWriter::with_capacity(1 << 20, file))?, tmp))
    } else {
        None
    };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut recorder = Recorder::new(ctx);

    let committed = ordered(
        ctx,
        job.pages.len(),
        cores.saturating_sub(1).min(MOST_PAGE_THREADS),
        |ctx, i| work(job, ctx, &shared, i),
        |i, unit| {
            let (part, name) = match unit {
                Unit::Restored { record, outputs, part } => {
                    pngs.extend(outputs.into_iter().filter(|o| o.name.ends_with(".png")));
                    restored += 1;
                    (part, record.part)
                }
                Unit::Rendered { png, part, record } => {
                    let data = serde_json::to_value(&record).map_err(|e| JobError::internal(e.to_string()))?;
                    let outputs: Vec<OutputInfo> = png.into_iter().collect();
                    let parts = match (&part, &record.part) {
                        (Some(data), Some(name)) => {
                            vec![Intermediate { name: name.clone(), data: data.clone(), content_type: "application/pdf" }]
                        }
                        _ => Vec::new(),
                    };
                    recorder.complete(&page_key(i), parts, outputs.clone(), data)?;
                    pngs.extend(outputs);
                    rendered += 1;
                    (part, record.part)
                }
            };
            if let (Some((asm, _)), Some(part), Some(name)) = (asm.as_mut(), part, name) {
                asm.add_part(&part, &name, &mut |id| shared.pdf_images.for_document(ctx, id))?;
            }
            recorder.progress(i as u64 + 1, total, &page_key(i));
            Ok(())
        },
    );
    // Every page's writes landed (or the first failure) before the job answers.
    let recorded = recorder.finish();
    committed?;
    recorded?;
    let backend = shared.comp.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|c| c.backend().name());
    drop(shared);

    let mut outputs = pngs;
    if let Some((asm, tmp)) = asm {
        ctx.check()?;
        let w = asm.finish()?;
        w.into_inner().map_err(|e| JobError::internal(format!("temp file: {e}")))?;
        let info = ctx.store_output_file(PDF_NAME, tmp.path(), "application/pdf", None)?;
        ctx.announce_output(&info);
        outputs.push(info);
        ctx.progress(total, total, PDF_NAME);
    }
    let mut extra = serde_json::Map::new();
    extra.insert("pages".into(), Value::from(total));
    extra.insert("pages_rendered".into(), Value::from(rendered));
    extra.insert("pages_restored".into(), Value::from(restored));
    if let Some(name) = backend {
        extra.insert("compositor".into(), Value::from(name));
    }
    tracing::debug!(job = %ctx.job_id, pages = total, rendered, restored, ms = started.elapsed().as_secs_f64() * 1e3, "render done");
    Ok(JobOutput { outputs, extra, resumed: restored > 0 })
}

/// Page `i`, on whichever thread: restored from the checkpoint (its part read back for the
/// document), or rendered and its outputs stored.
fn work(job: &Resolved, ctx: &JobContext, shared: &Shared, i: usize) -> Result<Unit, JobError> {
    ctx.check()?;
    let key = page_key(i);
    if let Some(rec) = ctx.restored_unit(&key) {
        let record: PageRecord = serde_json::from_value(rec.data)
            .map_err(|e| JobError::internal(format!("{key}: checkpoint record unreadable: {e}")))?;
        let part = if job.pdf {
            let name = record.part.as_deref().ok_or_else(|| JobError::internal(format!("{key}: checkpoint has no PDF part")))?;
            Some(ctx.read_stored_output(name)?)
        } else {
            None
        };
        return Ok(Unit::Restored { record, outputs: rec.outputs, part });
    }
    let (png, part, size) = match &job.pages[i] {
        Page::Drawn(d) => {
            let png = if job.png {
                let comp = shared.compositor(job.accel)?;
                let image = page::render(ctx, d, comp.as_ref(), &shared.images)?;
                ctx.check()?;
                let bytes = img::encode(&image, &EncodeOptions::new(OutputFormat::Png))
                    .map_err(|e| JobError::internal(format!("{key}: png: {e}")))?;
                Some(ctx.store_output(&png_name(i), Bytes::from(bytes), "image/png", Some((image.width, image.height)))?)
            } else {
                None
            };
            let part = if job.pdf { Some(vector::part(ctx, d, &shared.fonts, &shared.pdf_images, job.jpeg_quality)?) } else { None };
            (png, part, d.size_pt())
        }
        Page::Merge { source, page: number } => {
            let doc = shared.source_pdf(ctx, source)?;
            let (bytes, size) = pdf::extract_part(&doc, *number, &format!("pdf_page {source}"))?;
            (None, Some(bytes), size)
        }
    };
    // Stored behind the job, with the page's record ([`Recorder`]).
    let part = part.map(Bytes::from);
    let record = PageRecord { part: part.as_ref().map(|_| part_name(i)), width_pt: size.0, height_pt: size.1 };
    Ok(Unit::Rendered { png, part, record })
}
