//! The thumbnail job on a GPU (`accel: gpu`, or `auto` on a worker that resolved the job to
//! the GPU): a GPU slot and memory from the scheduler, decode with nvJPEG where it takes the
//! file (baseline YCbCr, no EXIF rotation, no ICC profile) and the CPU decoder otherwise, then
//! every output resized by kiln's CUDA Lanczos3 — the CPU path's plan, so the same geometry —
//! and padded, watermarked and encoded as on the CPU. Without a GPU or CUDA, `gpu` fails
//! `unsupported` and `auto` runs the CPU path ([`Fallback`]).

use super::run::{finish, load_watermark};
use super::spec::Resolved;
use crate::context::JobContext;
use crate::convert::Context;
use crate::error::JobError;
use crate::kind::JobOutput;
use kiln_kernels::cuda::{self, nvjpeg, resize::Filter, CudaError, DeviceImage, Gpu};
use kiln_kernels::image::{self as img, fit, orient, DecodeOptions, Orientation, Plan, SrgbTransform};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why the GPU path did not run: the caller decides between failing and the CPU.
pub enum Fallback {
    /// No GPU granted or CUDA unusable; nothing was done.
    NoGpu(String),
    /// The job itself failed (input, store, cancel).
    Job(JobError),
}

impl From<JobError> for Fallback {
    fn from(e: JobError) -> Fallback {
        Fallback::Job(e)
    }
}

fn cuda_err(e: CudaError) -> Fallback {
    match e {
        CudaError::Input(m) => Fallback::Job(JobError::internal(format!("GPU kernel: {m}"))),
        e => Fallback::NoGpu(e.to_string()),
    }
}

/// nvJPEG decoders, reused across jobs (creating one costs milliseconds).
static DECODERS: Mutex<Vec<(usize, nvjpeg::Nvjpeg)>> = Mutex::new(Vec::new());

fn nvjpeg_decode(g: &Gpu, ordinal: usize, data: &[u8]) -> Option<DeviceImage> {
    let pooled = DECODERS.lock().ok().and_then(|mut v| v.iter().position(|(o, _)| *o == ordinal).map(|i| v.swap_remove(i).1));
    let mut dec = match pooled {
        Some(d) => d,
        None => match nvjpeg::Nvjpeg::open(g) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "nvJPEG not used");
                return None;
            }
        },
    };
    let out = dec.decode(g, data).map_err(|e| tracing::debug!(error = %e, "nvJPEG decode refused; CPU decoder")).ok();
    if let Ok(mut v) = DECODERS.lock() {
        v.push((ordinal, dec));
    }
    out
}

/// Whether a JPEG carries an ICC profile (APP2 `ICC_PROFILE`) the CPU path would apply.
fn has_icc(data: &[u8]) -> bool {
    let head = &data[..data.len().min(1 << 16)];
    head.windows(12).any(|w| w == b"ICC_PROFILE\0")
}

pub fn run(job: &Resolved, ctx: &JobContext) -> Result<JobOutput, Fallback> {
    let started = Instant::now();
    ctx.check()?;
    let data = ctx.read_input(&job.source)?;
    let max_pixels = ctx.limits.max_pixels;
    let info = img::probe(&data, max_pixels).context("source")?;
    let src = info.oriented_dims();
    let plans: Vec<Plan> = job.outputs.iter().map(|o| fit::plan(src, o.width, o.height, o.fit)).collect();
    // Device memory: the decoded image, its largest resize intermediate (f32) and outputs.
    let px = info.width as u64 * info.height as u64;
    let out_px: u64 = plans.iter().map(|p| p.resize.0 as u64 * p.resize.1 as u64).sum();
    let grant = ctx.gpu(px * 4 * 5 + out_px * 4 + (64 << 20)).map_err(|e| Fallback::NoGpu(e.message.clone()))?;
    let ordinal = grant.device() as usize;
    let g: Arc<Gpu> = cuda::shared(ordinal).map_err(Fallback::NoGpu)?;

    let gpu_jpeg = info.format == img::Format::Jpeg && info.orientation == Orientation::Normal && !has_icc(&data);
    let (dev, nvjpeg_used) = match gpu_jpeg.then(|| nvjpeg_decode(&g, ordinal, &data)).flatten() {
        Some(d) => (d, true),
        None => {
            let need = plans.iter().map(|p| p.min_source(src)).fold((1, 1), |a, b| (a.0.max(b.0), a.1.max(b.1)));
            let decoded = img::decode(&data, &DecodeOptions { max_pixels, min_size: Some(need) }).context("source")?;
            let mut image = orient::apply(decoded.image, info.orientation).context("source")?;
            if let Some(t) = decoded.icc.as_deref().and_then(SrgbTransform::from_icc) {
                t.apply(&mut image);
            }
            (g.upload(&image).map_err(cuda_err)?, false)
        }
    };
    drop(data);
    let decode_ms = started.elapsed().as_secs_f64() * 1e3;
    let mark = match &job.watermark {
        Some(w) => Some(load_watermark(w, ctx)?),
        None => None,
    };
    let total = job.outputs.len() as u64;
    let mut stored = Vec::with_capacity(job.outputs.len());
    // Queue every output's resize first (they overlap on the device), then finish each.
    let mut resized = Vec::with_capacity(plans.len());
    for plan in &plans {
        let plan = plan.rescaled(src, (dev.width, dev.height));
        resized.push((g.resize(&dev, plan.crop, plan.resize, Filter::Lanczos3).map_err(cuda_err)?, plan));
    }
    g.recycle(dev);
    for (i, ((d, plan), o)) in resized.into_iter().zip(&job.outputs).enumerate() {
        ctx.check()?;
        let out = g.download(&d).map_err(cuda_err)?;
        g.recycle(d);
        stored.push(finish(out, o, &plan, job, mark.as_ref(), ctx)?);
        ctx.progress(i as u64 + 1, total, &o.name);
    }
    drop(grant);
    tracing::debug!(job = %ctx.job_id, device = ordinal, nvjpeg = nvjpeg_used, decode_ms, total_ms = started.elapsed().as_secs_f64() * 1e3, "thumbnail done on the GPU");
    Ok(JobOutput { outputs: stored, ..Default::default() })
}
