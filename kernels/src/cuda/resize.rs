//! Resize on the GPU: separable convolution with weight tables computed on the host exactly as
//! fast_image_resize computes them (same filters, supports, centres, trimming and
//! normalisation), so the CUDA kernel, its CPU reference here and kiln's CPU resizer
//! (`image::resize`) agree. [`Filter::Lanczos3`] plans like the thumbnailer: reductions over 3×
//! first box-filter to twice the target. RGBA is premultiplied in the first pass and
//! un-premultiplied in the last.

use super::context::{DeviceImage, Gpu};
use super::{guarded, CudaError};
use crate::image::fit::CropRect;
use crate::image::{Image, ImageError};
use cudarc::driver::PushKernelArg;
use std::f64::consts::PI;

/// Reductions larger than this get a box pre-shrink (as `image::resize`).
const BOX_ABOVE: f64 = 3.0;

/// A resampling filter (fast_image_resize's definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Box,
    Bilinear,
    /// Catmull-Rom.
    Bicubic,
    Lanczos3,
}

impl Filter {
    pub fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos3 => 3.0,
        }
    }

    pub fn weight(self, x: f64) -> f64 {
        fn sinc(x: f64) -> f64 {
            if x == 0.0 {
                1.0
            } else {
                let x = x * PI;
                x.sin() / x
            }
        }
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.) * x - (A + 3.)) * x * x + 1.
                } else if x < 2.0 {
                    (((x - 5.) * x + 8.) * x - 4.) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos3 => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.)
                } else {
                    0.0
                }
            }
        }
    }
}

/// One axis's weights: output pixel `i` reads `lens[i]` inputs from `starts[i]`, weighted by
/// `weights[i * win..][..lens[i]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub starts: Vec<i32>,
    pub lens: Vec<i32>,
    pub weights: Vec<f32>,
    pub win: usize,
}

/// fast_image_resize's `precompute_coefficients` (adaptive kernel size), weights as f32.
pub fn table(in_size: u32, in0: f64, in1: f64, out_size: u32, f: Filter) -> Table {
    let scale = (in1 - in0) / out_size as f64;
    let filter_scale = scale.max(1.0);
    let radius = f.support() * filter_scale;
    let win = radius.ceil() as usize * 2 + 1;
    let recip = 1.0 / filter_scale;
    let mut t = Table { starts: Vec::new(), lens: Vec::new(), weights: Vec::with_capacity(win * out_size as usize), win };
    for out_x in 0..out_size {
        let in_center = in0 + (out_x as f64 + 0.5) * scale;
        let x_min = (in_center - radius).floor().max(0.) as u32;
        let x_max = (in_center + radius).ceil().min(in_size as f64) as u32;
        let center = in_center - 0.5;
        let mut ws: Vec<f64> = Vec::with_capacity(win);
        let (mut start, mut end) = (x_min, x_max);
        let mut sum = 0.0;
        for x in x_min..x_max {
            let w = f.weight((x as f64 - center) * recip);
            if x == start && w == 0. {
                start += 1;
            } else {
                ws.push(w);
                sum += w;
            }
        }
        for &c in ws.iter().rev() {
            if end <= start || c != 0. {
                break;
            }
            end -= 1;
        }
        if sum != 0.0 {
            ws.iter_mut().for_each(|w| *w /= sum);
        }
        let len = end.saturating_sub(start) as usize;
        t.starts.push(start as i32);
        t.lens.push(len as i32);
        ws.resize(win, 0.0);
        t.weights.extend(ws.iter().map(|&w| w as f32));
    }
    t
}

/// One convolution pass pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub filter: Filter,
    pub crop: CropRect,
    pub dst: (u32, u32),
    pub premul: bool,
    pub unpremul: bool,
}

/// The stages resizing `crop` of a `src`-sized image to `dst` takes (`alpha`: RGBA).
pub fn plan(crop: CropRect, dst: (u32, u32), filter: Filter, alpha: bool) -> Vec<Stage> {
    let (dw, dh) = (dst.0.max(1), dst.1.max(1));
    let (rx, ry) = (crop.width / dw as f64, crop.height / dh as f64);
    if filter == Filter::Lanczos3 && (rx > BOX_ABOVE || ry > BOX_ABOVE) {
        let iw = if rx > BOX_ABOVE { dw.saturating_mul(2) } else { crop.width.round().max(1.0) as u32 };
        let ih = if ry > BOX_ABOVE { dh.saturating_mul(2) } else { crop.height.round().max(1.0) as u32 };
        let mid = CropRect { left: 0.0, top: 0.0, width: iw as f64, height: ih as f64 };
        vec![
            Stage { filter: Filter::Box, crop, dst: (iw, ih), premul: alpha, unpremul: false },
            Stage { filter, crop: mid, dst: (dw, dh), premul: false, unpremul: alpha },
        ]
    } else {
        vec![Stage { filter, crop, dst: (dw, dh), premul: alpha, unpremul: alpha }]
    }
}

/// The axis tables of a stage and the source rows its vertical pass reads.
struct Tables {
    x: Table,
    y: Table,
    row0: i32,
    rows: i32,
}

fn tables(src: (u32, u32), s: &Stage) -> Tables {
    let x = table(src.0, s.crop.left, s.crop.left + s.crop.width, s.dst.0, s.filter);
    let y = table(src.1, s.crop.top, s.crop.top + s.crop.height, s.dst.1, s.filter);
    let row0 = y.starts.iter().zip(&y.lens).filter(|(_, &l)| l > 0).map(|(&s, _)| s).min().unwrap_or(0);
    let end = y.starts.iter().zip(&y.lens).map(|(&s, &l)| s + l).max().unwrap_or(0).max(row0 + 1).min(src.1 as i32);
    Tables { x, y, row0, rows: (end - row0).max(1) }
}

fn to_u8(v: f32) -> u8 {
    (v + 0.5).floor().clamp(0.0, 255.0) as u8
}

/// The CPU reference of one stage: the kernel's arithmetic, in the same order.
fn reference_stage(src: &[u8], size: (u32, u32), ch: usize, s: &Stage) -> Vec<u8> {
    let t = tables(size, s);
    let (dw, dh) = (s.dst.0 as usize, s.dst.1 as usize);
    let stride = size.0 as usize * ch;
    let mut tmp = vec![0f32; t.rows as usize * dw * ch];
    for y in 0..t.rows as usize {
        let row = &src[(t.row0 as usize + y) * stride..];
        for x in 0..dw {
            let (st, n) = (t.x.starts[x] as usize, t.x.lens[x] as usize);
            let k = &t.x.weights[x * t.x.win..];
            let mut acc = [0f32; 4];
            for i in 0..n {
                let p = &row[(st + i) * ch..];
                let wi = k[i];
                if ch == 4 && s.premul {
                    let a = p[3] as f32 / 255.0;
                    for c in 0..3 {
                        acc[c] += wi * (p[c] as f32 * a);
                    }
                    acc[3] += wi * p[3] as f32;
                } else {
                    for c in 0..ch {
                        acc[c] += wi * p[c] as f32;
                    }
                }
            }
            tmp[(y * dw + x) * ch..][..ch].copy_from_slice(&acc[..ch]);
        }
    }
    let mut out = vec![0u8; dw * dh * ch];
    for y in 0..dh {
        let (st, n) = ((t.y.starts[y] - t.row0) as usize, t.y.lens[y] as usize);
        let k = &t.y.weights[y * t.y.win..];
        for x in 0..dw {
            let mut acc = [0f32; 4];
            for i in 0..n {
                let p = &tmp[((st + i) * dw + x) * ch..];
                for c in 0..ch {
                    acc[c] += k[i] * p[c];
                }
            }
            let o = &mut out[(y * dw + x) * ch..][..ch];
            if ch == 4 && s.unpremul {
                let a = acc[3].clamp(0.0, 255.0);
                for c in 0..3 {
                    o[c] = to_u8(if a > 0.0 { acc[c] * 255.0 / a } else { 0.0 });
                }
                o[3] = to_u8(a);
            } else {
                for c in 0..ch {
                    o[c] = to_u8(acc[c]);
                }
            }
        }
    }
    out
}

/// CPU reference of the GPU resize of `crop` of `src` to `dst` with `filter`.
pub fn reference(src: &Image, crop: CropRect, dst: (u32, u32), filter: Filter) -> Result<Image, ImageError> {
    let ch = src.channels();
    let mut cur = (src.data.clone(), (src.width, src.height));
    for s in plan(crop, dst, filter, src.pixels.has_alpha()) {
        cur = (reference_stage(&cur.0, cur.1, ch, &s), s.dst);
    }
    Image::new(cur.1 .0, cur.1 .1, src.pixels, cur.0)
}

fn check(d: &DeviceImage, crop: &CropRect, dst: (u32, u32)) -> Result<(), CudaError> {
    let ok = crop.left >= 0.0
        && crop.top >= 0.0
        && crop.width > 0.0
        && crop.height > 0.0
        && crop.left + crop.width <= d.width as f64 + 1e-9
        && crop.top + crop.height <= d.height as f64 + 1e-9
        && matches!(d.channels, 1 | 3 | 4)
        && dst.0 > 0
        && dst.1 > 0;
    if ok {
        Ok(())
    } else {
        Err(CudaError::Input(format!("resize {}x{}x{} crop {crop:?} to {dst:?}", d.width, d.height, d.channels)))
    }
}

impl Gpu {
    fn resize_stage(&self, src: &DeviceImage, s: &Stage) -> Result<DeviceImage, CudaError> {
        let t = tables((src.width, src.height), s);
        let st = src.stream.clone();
        let ch = src.channels;
        let (dw, dh) = s.dst;
        let up = |v: &[i32]| guarded("memcpy HtoD", || st.clone_htod(v));
        let upf = |v: &[f32]| guarded("memcpy HtoD", || st.clone_htod(v));
        let (xs, xl, xw) = (up(&t.x.starts)?, up(&t.x.lens)?, upf(&t.x.weights)?);
        let (ys, yl, yw) = (up(&t.y.starts)?, up(&t.y.lens)?, upf(&t.y.weights)?);
        let mut tmp = self.f32s.take(self, &st, t.rows as usize * dw as usize * ch)?;
        let mut out = self.u8s.take(self, &st, dw as usize * dh as usize * ch)?;
        let (stride, chi, xwin, ywin) = ((src.width as usize * ch) as i32, ch as i32, t.x.win as i32, t.y.win as i32);
        let (premul, unpremul, dwi, dhi) = (s.premul as i32, s.unpremul as i32, dw as i32, dh as i32);
        let (fh, fv) = (self.func("resize_h")?, self.func("resize_v")?);
        guarded("resize_h", || {
            let mut b = st.launch_builder(fh);
            b.arg(&src.buf).arg(&stride).arg(&chi).arg(&premul).arg(&t.row0).arg(&t.rows).arg(&mut tmp).arg(&dwi);
            b.arg(&xs).arg(&xl).arg(&xw).arg(&xwin);
            // SAFETY: argument list matches resize.cu's resize_h; every index stays inside the
            // buffers (tables are clamped to the source, tmp holds rows × dw × ch).
            unsafe { b.launch(Gpu::grid(dw, t.rows as u32)) }.map(|_| ())
        })?;
        guarded("resize_v", || {
            let mut b = st.launch_builder(fv);
            let dst_stride = dwi * chi;
            b.arg(&tmp).arg(&dwi).arg(&chi).arg(&unpremul).arg(&t.row0).arg(&mut out).arg(&dhi).arg(&dst_stride);
            b.arg(&ys).arg(&yl).arg(&yw).arg(&ywin);
            // SAFETY: as above, for resize_v; out holds dw × dh × ch.
            unsafe { b.launch(Gpu::grid(dw, dh)) }.map(|_| ())
        })?;
        self.f32s.give(self, tmp);
        Ok(DeviceImage { width: dw, height: dh, channels: ch, buf: out, stream: st })
    }

    /// Resizes `crop` of a device image to `dst` on the image's stream.
    pub fn resize(&self, src: &DeviceImage, crop: CropRect, dst: (u32, u32), filter: Filter) -> Result<DeviceImage, CudaError> {
        check(src, &crop, dst)?;
        let stages = plan(crop, dst, filter, src.channels == 4);
        let mut cur: Option<DeviceImage> = None;
        for s in &stages {
            let next = self.resize_stage(cur.as_ref().unwrap_or(src), s)?;
            if let Some(old) = cur.replace(next) {
                self.recycle(old);
            }
        }
        cur.ok_or_else(|| CudaError::Input("empty resize plan".into()))
    }

    /// Resizes a batch of host images: every upload and kernel is queued first (spread over the
    /// streams), then the results are collected, so copies and kernels of different images
    /// overlap.
    pub fn resize_batch(&self, items: &[(&Image, CropRect, (u32, u32))], filter: Filter) -> Result<Vec<Image>, CudaError> {
        let mut queued = Vec::with_capacity(items.len());
        for (img, crop, dst) in items {
            let d = self.upload(img)?;
            let r = self.resize(&d, *crop, *dst, filter)?;
            self.recycle(d);
            queued.push(r);
        }
        let mut out = Vec::with_capacity(items.len());
        for r in queued {
            out.push(self.download(&r)?);
            self.recycle(r);
        }
        Ok(out)
    }
}
