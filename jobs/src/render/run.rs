//! Running a render job: one checkpointed unit per page (render → store PNG and PDF part →
//! record), then the document assembled from the stored parts into a temporary file that is
//! streamed to the store.

use super::page::{self, ImageCache};
use super::pdf::{self, Assembler};
use super::pdfimage::PdfImages;
use super::vector::{self, Fonts};
use super::spec::{Page, Resolved};
use crate::context::JobContext;
use crate::convert::Context;
use crate::envelope::OutputInfo;
use crate::error::JobError;
use crate::kind::JobOutput;
use crate::store::join_output;
use bytes::Bytes;
use kiln_kernels::image::{self as img, EncodeOptions, OutputFormat};
use kiln_kernels::render::{self as render, Compositor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
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

pub fn run(job: &Resolved, ctx: &JobContext) -> Result<JobOutput, JobError> {
    let started = Instant::now();
    ctx.check()?;
    let total = job.pages.len() as u64;
    let mut comp: Option<Arc<dyn Compositor>> = None;
    let mut cache = ImageCache::default();
    let mut fonts = Fonts::default();
    let mut pdf_images = PdfImages::default();
    let mut source_pdf: Option<(String, lopdf::Document)> = None;
    let mut pngs: Vec<OutputInfo> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    let (mut restored, mut rendered) = (0u64, 0u64);

    for (i, p) in job.pages.iter().enumerate() {
        ctx.check()?;
        let key = page_key(i);
        if let Some(rec) = ctx.restored_unit(&key) {
            let data: PageRecord = serde_json::from_value(rec.data)
                .map_err(|e| JobError::internal(format!("{key}: checkpoint record unreadable: {e}")))?;
            if job.pdf {
                parts.push(data.part.ok_or_else(|| JobError::internal(format!("{key}: checkpoint has no PDF part")))?);
            }
            pngs.extend(rec.outputs.into_iter().filter(|o| o.name.ends_with(".png")));
            restored += 1;
            ctx.progress(i as u64 + 1, total, &key);
            continue;
        }
        let mut outputs = Vec::new();
        let record = match p {
            Page::Drawn(d) => {
                if job.png {
                    if comp.is_none() {
                        comp = Some(render::compositor(job.accel)?);
                    }
                    let c = comp.as_deref().ok_or_else(|| JobError::internal("no compositor"))?;
                    let image = page::render(ctx, d, c, &mut cache)?;
                    ctx.check()?;
                    let bytes = img::encode(&image, &EncodeOptions::new(OutputFormat::Png))
                        .map_err(|e| JobError::internal(format!("{key}: png: {e}")))?;
                    outputs.push(ctx.store_output(&png_name(i), Bytes::from(bytes), "image/png", Some((image.width, image.height)))?);
                }
                let size = d.size_pt();
                let part = if job.pdf {
                    let bytes = vector::part(ctx, d, &mut fonts, &mut pdf_images, job.jpeg_quality)?;
                    ctx.store_output(&part_name(i), Bytes::from(bytes), "application/pdf", None)?;
                    Some(part_name(i))
                } else {
                    None
                };
                PageRecord { part, width_pt: size.0, height_pt: size.1 }
            }
            Page::Merge { source, page: number } => {
                let what = format!("pdf_page {source}");
                if source_pdf.as_ref().map(|(s, _)| s != source).unwrap_or(true) {
                    drop(source_pdf.take()); // free the previous source before reading the next
                    let data = ctx.read_input(source).context(&what)?;
                    source_pdf = Some((source.clone(), pdf::load(&data, &what)?));
                }
                let doc = &source_pdf.as_ref().ok_or_else(|| JobError::internal("source pdf"))?.1;
                let (bytes, size) = pdf::extract_part(doc, *number, &what)?;
                ctx.store_output(&part_name(i), Bytes::from(bytes), "application/pdf", None)?;
                PageRecord { part: Some(part_name(i)), width_pt: size.0, height_pt: size.1 }
            }
        };
        if let Some(part) = &record.part {
            parts.push(part.clone());
        }
        let data = serde_json::to_value(&record).map_err(|e| JobError::internal(e.to_string()))?;
        ctx.complete_unit(&key, &outputs, data)?;
        pngs.extend(outputs);
        rendered += 1;
        ctx.progress(i as u64 + 1, total, &key);
    }
    drop(cache);
    drop(pdf_images);
    drop(source_pdf);

    let mut outputs = pngs;
    if job.pdf {
        ctx.check()?;
        outputs.push(assemble(ctx, &parts)?);
        ctx.progress(total, total, PDF_NAME);
    }
    let mut extra = serde_json::Map::new();
    extra.insert("pages".into(), Value::from(total));
    extra.insert("pages_rendered".into(), Value::from(rendered));
    extra.insert("pages_restored".into(), Value::from(restored));
    if let Some(c) = &comp {
        extra.insert("compositor".into(), Value::from(c.backend().name()));
    }
    tracing::debug!(job = %ctx.job_id, pages = total, rendered, restored, ms = started.elapsed().as_secs_f64() * 1e3, "render done");
    Ok(JobOutput { outputs, extra, resumed: restored > 0 })
}

/// Writes `document.pdf` from the stored parts, one part in memory at a time, into a
/// temporary file, then streams that file to the store and announces it.
fn assemble(ctx: &JobContext, parts: &[String]) -> Result<OutputInfo, JobError> {
    let tmp = tempfile::NamedTempFile::new().map_err(|e| JobError::internal(format!("temp file: {e}")))?;
    let file = tmp.reopen().map_err(|e| JobError::internal(format!("temp file: {e}")))?;
    let mut asm = Assembler::new(std::io::BufWriter::with_capacity(1 << 20, file))?;
    for name in parts {
        ctx.check()?;
        let uri = join_output(&ctx.output_prefix, name)?;
        let data = ctx
            .block_on(ctx.store().get(&uri, u64::MAX))
            .map_err(|e| JobError::internal(format!("reading stored part {name}: {e}")).retryable(e.is_retryable()))?;
        asm.add_part(&data, name)?;
    }
    let w = asm.finish()?;
    w.into_inner().map_err(|e| JobError::internal(format!("temp file: {e}")))?;
    let info = ctx.store_output_file(PDF_NAME, tmp.path(), "application/pdf", None)?;
    ctx.announce_output(&info);
    Ok(info)
}
