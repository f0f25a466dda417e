//! Inference preprocessing on the GPU: the resized image placed on the model's canvas (pad
//! colour around it), then `p × a[c] + b[c]` per channel in the model's channel order, laid out
//! NCHW or NHWC as f32 — the arithmetic of jobs::infer's CPU `tensor()`, so with NVRTC's
//! `--fmad=false` the device tensor equals the CPU one exactly. A batch is one device tensor:
//! each image writes its slice, so ONNX Runtime can read the batch where it is.

use super::context::{DeviceImage, Gpu};
use super::resize::Filter;
use super::{guarded, CudaError};
use crate::image::fit::CropRect;
use crate::image::{Image, PixelKind};
use cudarc::driver::{CudaSlice, PushKernelArg};

/// Canvas, placement and normalisation of one model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// (width, height) of the model input.
    pub target: (u32, u32),
    /// Top-left of the image on the canvas.
    pub pad: (u32, u32),
    pub pad_color: [u8; 3],
    /// Output channel c takes source channel `order[c]` (RGB [0, 1, 2], BGR [2, 1, 0]).
    pub order: [usize; 3],
    /// `p × a[c] + b[c]`.
    pub a: [f32; 3],
    pub b: [f32; 3],
    pub nhwc: bool,
}

impl Params {
    /// Floats per image.
    pub fn len(&self) -> usize {
        self.target.0 as usize * self.target.1 as usize * 3
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// CPU reference: `img` (RGB8, already resized) on the canvas, normalised.
pub fn reference(img: &Image, p: &Params) -> Vec<f32> {
    let (tw, th) = (p.target.0 as usize, p.target.1 as usize);
    let (rw, rh) = (img.width as usize, img.height as usize);
    let plane = tw * th;
    let mut out = vec![0f32; plane * 3];
    for y in 0..th {
        for x in 0..tw {
            let (ix, iy) = (x as i64 - p.pad.0 as i64, y as i64 - p.pad.1 as i64);
            let px: [f32; 3] = if ix >= 0 && iy >= 0 && (ix as usize) < rw && (iy as usize) < rh {
                let s = &img.data[(iy as usize * rw + ix as usize) * 3..];
                [s[0] as f32, s[1] as f32, s[2] as f32]
            } else {
                p.pad_color.map(|c| c as f32)
            };
            let i = y * tw + x;
            for c in 0..3 {
                let v = px[p.order[c]] * p.a[c] + p.b[c];
                if p.nhwc {
                    out[i * 3 + c] = v;
                } else {
                    out[c * plane + i] = v;
                }
            }
        }
    }
    out
}

/// CPU reference of the whole device preprocessing of one decoded RGB8 image: resize to
/// `resized` with the thumbnailer's Lanczos3 plan, then [`reference`].
pub fn reference_pipeline(img: &Image, resized: (u32, u32), p: &Params) -> Result<Vec<f32>, CudaError> {
    let whole = CropRect { left: 0.0, top: 0.0, width: img.width as f64, height: img.height as f64 };
    let r = if (img.width, img.height) == resized {
        img.clone()
    } else {
        super::resize::reference(img, whole, resized, Filter::Lanczos3).map_err(|e| CudaError::Input(e.to_string()))?
    };
    Ok(reference(&r, p))
}

impl Gpu {
    /// Letterboxes and normalises a batch of device RGB8 images (already resized) into one
    /// device tensor of `images.len()` inputs, queued on the first image's stream after
    /// every image's stream (cudarc orders cross-stream use of a buffer with events).
    pub fn letterbox_batch(&self, images: &[&DeviceImage], params: &[Params]) -> Result<CudaSlice<f32>, CudaError> {
        let first = images.first().ok_or_else(|| CudaError::Input("empty batch".into()))?;
        if images.len() != params.len() {
            return Err(CudaError::Input(format!("{} images, {} parameter sets", images.len(), params.len())));
        }
        let per = params[0].len();
        if params.iter().any(|p| p.len() != per || p.order.iter().any(|&o| o > 2)) || images.iter().any(|d| d.channels != 3) {
            return Err(CudaError::Input("a batch takes RGB8 images and one input size".into()));
        }
        let st = first.stream.clone();
        let mut out = guarded("alloc", || st.alloc_zeros::<f32>(per * images.len()))?;
        let func = self.func("letterbox")?;
        for (i, (d, p)) in images.iter().zip(params).enumerate() {
            let mut view = out.slice_mut(i * per..(i + 1) * per);
            let (rw, rh, stride) = (d.width as i32, d.height as i32, d.width as i32 * 3);
            let (tw, th, px, py) = (p.target.0 as i32, p.target.1 as i32, p.pad.0 as i32, p.pad.1 as i32);
            let pad = p.pad_color.map(|c| c as i32);
            let ord = p.order.map(|o| o as i32);
            let nhwc = p.nhwc as i32;
            guarded("letterbox", || {
                let mut b = st.launch_builder(func);
                b.arg(&d.buf).arg(&rw).arg(&rh).arg(&stride).arg(&mut view).arg(&tw).arg(&th).arg(&px).arg(&py);
                b.arg(&pad[0]).arg(&pad[1]).arg(&pad[2]).arg(&ord[0]).arg(&ord[1]).arg(&ord[2]);
                b.arg(&p.a[0]).arg(&p.a[1]).arg(&p.a[2]).arg(&p.b[0]).arg(&p.b[1]).arg(&p.b[2]).arg(&nhwc);
                // SAFETY: arguments match letterbox.cu; the view holds tw × th × 3 floats and
                // the kernel reads the image only inside rw × rh.
                unsafe { b.launch(Gpu::grid(p.target.0, p.target.1)) }.map(|_| ())
            })?;
        }
        Ok(out)
    }

    /// Host in, host out: decode-side RGB8 images resized on the device to each `resized`
    /// size, letterboxed and normalised; the batch tensor comes back to the host.
    pub fn preprocess_batch(&self, images: &[(&Image, (u32, u32))], params: &[Params]) -> Result<Vec<f32>, CudaError> {
        let mut resized = Vec::with_capacity(images.len());
        for (img, size) in images {
            if img.pixels != PixelKind::Rgb8 {
                return Err(CudaError::Input("preprocess takes RGB8".into()));
            }
            let d = self.upload(img)?;
            let whole = CropRect { left: 0.0, top: 0.0, width: img.width as f64, height: img.height as f64 };
            if (img.width, img.height) == *size {
                resized.push(d);
            } else {
                let r = self.resize(&d, whole, *size, Filter::Lanczos3)?;
                self.recycle(d);
                resized.push(r);
            }
        }
        let refs: Vec<&DeviceImage> = resized.iter().collect();
        let t = self.letterbox_batch(&refs, params)?;
        let st = refs.first().map(|d| d.stream.clone()).ok_or_else(|| CudaError::Input("empty batch".into()))?;
        let host = guarded("memcpy DtoH", || st.clone_dtoh(&t))?;
        for d in resized {
            self.recycle(d);
        }
        Ok(host)
    }
}
