//! Running a thumbnail job: read the source, probe its header (pixel limit), decode once at the
//! largest size any output needs (JPEG shrink-on-load), orient and colour-manage once, then
//! resize, pad, watermark, encode and store each output in turn.

use super::spec::{Output, Resolved, Watermark};
use crate::context::JobContext;
use crate::convert::Context;
use crate::envelope::OutputInfo;
use crate::error::JobError;
use crate::kind::JobOutput;
use bytes::Bytes;
use kiln_kernels::image::{
    self as img, composite, fit, orient, DecodeOptions, EncodeOptions, Image, Plan, SrgbTransform,
};
use std::time::Instant;

pub fn run(job: &Resolved, ctx: &JobContext) -> Result<JobOutput, JobError> {
    let started = Instant::now();
    ctx.check()?;
    let data = ctx.read_input(&job.source)?;
    let max_pixels = ctx.limits.max_pixels;
    let info = img::probe(&data, max_pixels).context("source")?;
    let src = info.oriented_dims();
    let plans: Vec<Plan> = job.outputs.iter().map(|o| fit::plan(src, o.width, o.height, o.fit)).collect();
    let need = plans.iter().map(|p| p.min_source(src)).fold((1, 1), |a, b| (a.0.max(b.0), a.1.max(b.1)));

    // A large decode waits (without its CPU slot) while others hold the decode memory.
    let reserved = crate::decode_budget::reserve(ctx, crate::decode_budget::estimate(&data, &info, need))?;
    let decoded = img::decode(&data, &DecodeOptions { max_pixels, min_size: Some(need) }).context("source")?;
    drop(reserved);
    drop(data);
    let mut image = orient::apply(decoded.image, info.orientation).context("source")?;
    let decode_ms = started.elapsed().as_secs_f64() * 1e3;

    // Convert to sRGB once on the decoded image, or on each output when they are smaller.
    let srgb = decoded.icc.as_deref().and_then(SrgbTransform::from_icc);
    let out_pixels: u64 = plans.iter().map(|p| p.canvas.0 as u64 * p.canvas.1 as u64).sum();
    let per_output_srgb = srgb.is_some() && out_pixels < image.pixel_count();
    if let (Some(t), false) = (&srgb, per_output_srgb) {
        t.apply(&mut image);
    }
    ctx.check()?;

    let mark = match &job.watermark {
        Some(w) => Some(load_watermark(w, ctx)?),
        None => None,
    };

    let total = job.outputs.len() as u64;
    let mut stored = Vec::with_capacity(job.outputs.len());
    for (i, (o, plan)) in job.outputs.iter().zip(&plans).enumerate() {
        ctx.check()?;
        let plan = plan.rescaled(src, (image.width, image.height));
        let mut out = img::resize(&image, plan.crop, plan.resize).context(&o.name)?;
        if per_output_srgb {
            if let Some(t) = &srgb {
                t.apply(&mut out);
            }
        }
        stored.push(finish(out, o, &plan, job, mark.as_ref(), ctx)?);
        ctx.progress(i as u64 + 1, total, &o.name);
    }
    tracing::debug!(
        job = %ctx.job_id,
        format = info.format.name(),
        width = info.width,
        height = info.height,
        decoded_w = image.width,
        decoded_h = image.height,
        decode_ms,
        total_ms = started.elapsed().as_secs_f64() * 1e3,
        outputs = stored.len(),
        "thumbnail done"
    );
    Ok(JobOutput { outputs: stored, ..Default::default() })
}

/// Pads, watermarks, encodes and stores one resized output (the CPU and GPU paths share it).
pub(super) fn finish(mut out: Image, o: &Output, plan: &Plan, job: &Resolved, mark: Option<&Image>, ctx: &JobContext) -> Result<OutputInfo, JobError> {
    if plan.pads() {
        out = img::pad(&out, plan.canvas, plan.offset, o.pad_color()).context(&o.name)?;
    }
    if let (Some(w), Some(m)) = (&job.watermark, mark) {
        let margin = w.margin.unwrap_or_else(|| (out.width.min(out.height) as f32 * 0.02).round() as u32);
        img::watermark(&mut out, m, w.gravity, w.opacity, margin).context("watermark")?;
    }
    let bytes = encode(&out, o)?;
    ctx.write_output(&o.name, Bytes::from(bytes), o.format.content_type(), Some((out.width, out.height)))
}

fn encode(out: &Image, o: &Output) -> Result<Vec<u8>, JobError> {
    let opts = EncodeOptions { format: o.format, quality: o.quality, lossless: o.lossless, background: o.flatten_color() };
    img::encode(out, &opts).context(&o.name)
}

/// Reads, decodes, orients and colour-manages the watermark image.
pub(super) fn load_watermark(w: &Watermark, ctx: &JobContext) -> Result<Image, JobError> {
    let data = ctx.read_input(&w.source).context("watermark")?;
    let d = img::decode(&data, &DecodeOptions { max_pixels: ctx.limits.max_pixels, min_size: None })
        .context("watermark")?;
    let mut m = orient::apply(d.image, d.info.orientation).context("watermark")?;
    if let Some(t) = d.icc.as_deref().and_then(SrgbTransform::from_icc) {
        t.apply(&mut m);
    }
    Ok(m)
}

/// Encodes and decodes a tiny image through every codec, so the first real job does not pay
/// for lazy initialisation (SIMD dispatch, tables, rav1e setup).
pub fn warm_up() -> Result<(), JobError> {
    let started = Instant::now();
    let mut data = Vec::with_capacity(64 * 48 * 4);
    for y in 0..48u32 {
        for x in 0..64u32 {
            data.extend_from_slice(&[(x * 4) as u8, (y * 5) as u8, 128, 255 - x as u8]);
        }
    }
    let rgba = Image::new(64, 48, img::PixelKind::Rgba8, data).context("warm-up")?;
    let icc = img::color::adobe_rgb_like_profile();
    let srgb = SrgbTransform::from_icc(&icc);
    for format in [img::OutputFormat::Jpeg, img::OutputFormat::Png, img::OutputFormat::Webp, img::OutputFormat::Avif] {
        let p = fit::plan((64, 48), Some(32), Some(32), fit::Fit::Cover);
        let mut small = img::resize(&rgba, p.crop, p.resize).context("warm-up")?;
        if let Some(t) = &srgb {
            t.apply(&mut small);
        }
        let bytes = img::encode(&small, &EncodeOptions::new(format)).context("warm-up")?;
        if format != img::OutputFormat::Avif {
            let opts = DecodeOptions { max_pixels: 1 << 20, min_size: Some((8, 8)) };
            img::decode(&bytes, &opts).context("warm-up")?;
        }
    }
    let _ = composite::flatten(rgba, [255, 255, 255]);
    tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "thumbnail codecs warmed up");
    Ok(())
}
