//! Alpha compositing on the GPU with kiln's integer arithmetic (image::composite): a watermark
//! "over" a base, and RGBA flattened onto a colour. The CPU references are the same integer
//! formulas, so CPU, reference and device agree exactly.

use super::context::{DeviceImage, Gpu};
use super::{guarded, CudaError};
use crate::image::{Image, PixelKind};
use cudarc::driver::{LaunchConfig, PushKernelArg};

#[inline]
fn blend(fg: u32, bg: u32, a: u32) -> u8 {
    ((fg * a + bg * (255 - a) + 127) / 255) as u8
}

/// `opacity` (0..=1) as the kernels' 0..=256 factor (as `image::watermark`).
pub fn opacity_factor(opacity: f32) -> u32 {
    let o = if opacity.is_finite() { opacity.clamp(0.0, 1.0) } else { 1.0 };
    (o * 256.0).round() as u32
}

/// CPU reference of `over`: `mark` at `at` on `base`, clipped to the base.
pub fn reference_over(base: &mut Image, mark: &Image, at: (u32, u32), op: u32) {
    let (cb, cm) = (base.channels(), mark.channels());
    for y in 0..mark.height {
        for x in 0..mark.width {
            let (bx, by) = (at.0 + x, at.1 + y);
            if bx >= base.width || by >= base.height {
                continue;
            }
            let m = &mark.data[((y * mark.width + x) as usize) * cm..][..cm];
            let i = ((by * base.width + bx) as usize) * cb;
            let b = &mut base.data[i..i + cb];
            let ma = if cm == 4 { m[3] as u32 } else { 255 };
            let a = (ma * op) >> 8;
            if a == 0 {
                continue;
            }
            if cb == 3 {
                for c in 0..3 {
                    b[c] = blend(m[c] as u32, b[c] as u32, a);
                }
            } else {
                let ba = b[3] as u32;
                let out_a = a * 255 + ba * (255 - a);
                for c in 0..3 {
                    let v = (m[c] as u32 * a * 255 + b[c] as u32 * ba * (255 - a) + out_a / 2) / out_a.max(1);
                    b[c] = v.min(255) as u8;
                }
                b[3] = ((out_a + 127) / 255) as u8;
            }
        }
    }
}

/// CPU reference of `flatten`.
pub fn reference_flatten(img: &Image, bg: [u8; 3]) -> Vec<u8> {
    img.data
        .chunks_exact(4)
        .flat_map(|p| {
            let a = p[3] as u32;
            [0, 1, 2].map(|c| blend(p[c] as u32, bg[c] as u32, a))
        })
        .collect()
}

impl Gpu {
    /// Composites `mark` over `base` at `at` (both on the device; `op` from [`opacity_factor`]).
    pub fn over(&self, base: &mut DeviceImage, mark: &DeviceImage, at: (u32, u32), op: u32) -> Result<(), CudaError> {
        if !matches!(base.channels, 3 | 4) || !matches!(mark.channels, 3 | 4) || op > 256 {
            return Err(CudaError::Input(format!("over: {}-channel mark on a {}-channel base, op {op}", mark.channels, base.channels)));
        }
        let st = base.stream.clone();
        let func = self.func("over")?;
        let (bw, bh, cb) = (base.width as i32, base.height as i32, base.channels as i32);
        let (mw, mh, cm) = (mark.width as i32, mark.height as i32, mark.channels as i32);
        let (ox, oy) = (at.0.min(i32::MAX as u32) as i32, at.1.min(i32::MAX as u32) as i32);
        guarded("over", || {
            let mut b = st.launch_builder(func);
            b.arg(&mut base.buf).arg(&bw).arg(&bh).arg(&cb).arg(&mark.buf).arg(&mw).arg(&mh).arg(&cm).arg(&ox).arg(&oy).arg(&op);
            // SAFETY: arguments match composite.cu's over; writes are bounds-checked against
            // the base, reads against the mark.
            unsafe { b.launch(Gpu::grid(mark.width, mark.height)) }.map(|_| ())
        })
    }

    /// RGBA device image → RGB on `bg`.
    pub fn flatten(&self, img: &DeviceImage, bg: [u8; 3]) -> Result<DeviceImage, CudaError> {
        if img.channels != 4 {
            return Err(CudaError::Input(format!("flatten of a {}-channel image", img.channels)));
        }
        let st = img.stream.clone();
        let n = img.width as usize * img.height as usize;
        let mut out = self.u8s.take(self, &st, n * 3)?;
        let func = self.func("flatten")?;
        let (ni, bg) = (n as i32, bg.map(|c| c as i32));
        guarded("flatten", || {
            let mut b = st.launch_builder(func);
            b.arg(&img.buf).arg(&mut out).arg(&ni).arg(&bg[0]).arg(&bg[1]).arg(&bg[2]);
            // SAFETY: arguments match composite.cu's flatten; n pixels in and out.
            unsafe { b.launch(LaunchConfig::for_num_elems(n.max(1) as u32)) }.map(|_| ())
        })?;
        Ok(DeviceImage { width: img.width, height: img.height, channels: 3, buf: out, stream: st })
    }
}

/// The pixel kind of a device image's host form.
pub fn kind_of(channels: usize) -> Option<PixelKind> {
    match channels {
        3 => Some(PixelKind::Rgb8),
        4 => Some(PixelKind::Rgba8),
        _ => None,
    }
}
