//! YUV 4:2:0 ↔ RGB on the GPU (NV12 as NVDEC/nvJPEG produce and NVENC takes, and I420), with
//! BT.601 or BT.709 matrices in full or limited range. The matrices are computed here once and
//! passed to the kernels; the CPU references use the same numbers and rounding.

use super::context::{DeviceImage, Gpu};
use super::{guarded, CudaError};
use cudarc::driver::{CudaSlice, PushKernelArg};

/// The colour matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matrix {
    Bt601,
    Bt709,
}

/// Full (0..255, JPEG) or limited (16..235 luma, 16..240 chroma, video) range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Full,
    Limited,
}

/// Chroma layout of a 4:2:0 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Interleaved UV plane.
    Nv12,
    /// Separate U and V planes.
    I420,
}

/// RGB ← (Y − oy, U − 128, V − 128) and (Y − oy, U − 128, V − 128) ← RGB, row-major.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coeffs {
    pub to_rgb: [f32; 9],
    pub to_yuv: [f32; 9],
    pub oy: f32,
}

pub fn coeffs(m: Matrix, r: Range) -> Coeffs {
    let (kr, kb) = match m {
        Matrix::Bt601 => (0.299f64, 0.114f64),
        Matrix::Bt709 => (0.2126, 0.0722),
    };
    let kg = 1.0 - kr - kb;
    let (ys, cs, oy) = match r {
        Range::Full => (1.0, 1.0, 0.0),
        Range::Limited => (219.0 / 255.0, 224.0 / 255.0, 16.0),
    };
    let (cr_r, cb_b) = (2.0 * (1.0 - kr), 2.0 * (1.0 - kb));
    let to_yuv = [
        ys * kr,
        ys * kg,
        ys * kb,
        cs * -kr / cb_b,
        cs * -kg / cb_b,
        cs * (1.0 - kb) / cb_b,
        cs * (1.0 - kr) / cr_r,
        cs * -kg / cr_r,
        cs * -kb / cr_r,
    ];
    let to_rgb = [
        1.0 / ys,
        0.0,
        cr_r / cs,
        1.0 / ys,
        -kb * cb_b / (kg * cs),
        -kr * cr_r / (kg * cs),
        1.0 / ys,
        cb_b / cs,
        0.0,
    ];
    Coeffs { to_rgb: to_rgb.map(|v| v as f32), to_yuv: to_yuv.map(|v| v as f32), oy: oy as f32 }
}

/// A 4:2:0 frame in host memory: `y` is width × height, `c` the chroma plane(s): NV12 one
/// plane of ⌈w/2⌉ × ⌈h/2⌉ UV pairs, I420 the U plane then the V plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Yuv420 {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub y: Vec<u8>,
    pub c: Vec<u8>,
}

impl Yuv420 {
    pub fn chroma_dims(w: u32, h: u32) -> (usize, usize) {
        (w.div_ceil(2) as usize, h.div_ceil(2) as usize)
    }

    /// (U offset, V offset, chroma row stride, step between samples) into `c`.
    fn chroma(&self) -> (usize, usize, usize, usize) {
        let (cw, ch) = Yuv420::chroma_dims(self.width, self.height);
        match self.layout {
            Layout::Nv12 => (0, 1, cw * 2, 2),
            Layout::I420 => (0, cw * ch, cw, 1),
        }
    }

    fn blank(width: u32, height: u32, layout: Layout) -> Yuv420 {
        let (cw, ch) = Yuv420::chroma_dims(width, height);
        Yuv420 { width, height, layout, y: vec![0; width as usize * height as usize], c: vec![0; cw * ch * 2] }
    }
}

fn to_u8(v: f32) -> u8 {
    (v + 0.5).floor().clamp(0.0, 255.0) as u8
}

/// CPU reference of `yuv_to_rgb`: packed RGB8 (`ch` 3) or RGBA8 (`ch` 4, opaque).
pub fn reference_to_rgb(f: &Yuv420, k: &Coeffs, ch: usize) -> Vec<u8> {
    let (w, h) = (f.width as usize, f.height as usize);
    let (uo, vo, cstride, step) = f.chroma();
    let m = &k.to_rgb;
    let mut out = vec![255u8; w * h * ch];
    for y in 0..h {
        for x in 0..w {
            let yy = f.y[y * w + x] as f32 - k.oy;
            let ci = (y >> 1) * cstride + (x >> 1) * step;
            let (u, v) = (f.c[uo + ci] as f32 - 128.0, f.c[vo + ci] as f32 - 128.0);
            let o = &mut out[(y * w + x) * ch..];
            o[0] = to_u8(m[0] * yy + m[1] * u + m[2] * v);
            o[1] = to_u8(m[3] * yy + m[4] * u + m[5] * v);
            o[2] = to_u8(m[6] * yy + m[7] * u + m[8] * v);
        }
    }
    out
}

/// CPU reference of `rgb_to_yuv` from packed RGB8/RGBA8 (`ch` 3 or 4).
pub fn reference_from_rgb(rgb: &[u8], w: u32, h: u32, ch: usize, k: &Coeffs, layout: Layout) -> Yuv420 {
    let mut f = Yuv420::blank(w, h, layout);
    let (uo, vo, cstride, step) = f.chroma();
    let m = &k.to_yuv;
    let (wu, hu) = (w as usize, h as usize);
    for by in 0..hu.div_ceil(2) {
        for bx in 0..wu.div_ceil(2) {
            let (mut sr, mut sg, mut sb, mut n) = (0f32, 0f32, 0f32, 0);
            for yy in (by * 2..by * 2 + 2).filter(|&v| v < hu) {
                for xx in (bx * 2..bx * 2 + 2).filter(|&v| v < wu) {
                    let p = &rgb[(yy * wu + xx) * ch..];
                    let (r, g, b) = (p[0] as f32, p[1] as f32, p[2] as f32);
                    f.y[yy * wu + xx] = to_u8(m[0] * r + m[1] * g + m[2] * b + k.oy);
                    sr += r;
                    sg += g;
                    sb += b;
                    n += 1;
                }
            }
            let inv = 1.0 / n as f32;
            let (sr, sg, sb) = (sr * inv, sg * inv, sb * inv);
            let ci = by * cstride + bx * step;
            f.c[uo + ci] = to_u8(m[3] * sr + m[4] * sg + m[5] * sb + 128.0);
            f.c[vo + ci] = to_u8(m[6] * sr + m[7] * sg + m[8] * sb + 128.0);
        }
    }
    f
}

impl Gpu {
    /// A 4:2:0 frame (host) to a device RGB8 image.
    pub fn yuv_to_rgb(&self, f: &Yuv420, k: &Coeffs) -> Result<DeviceImage, CudaError> {
        let (cw, chh) = Yuv420::chroma_dims(f.width, f.height);
        if f.y.len() != f.width as usize * f.height as usize || f.c.len() != cw * chh * 2 || f.width == 0 || f.height == 0 {
            return Err(CudaError::Input(format!("{}x{} 4:2:0 frame with {} + {} bytes", f.width, f.height, f.y.len(), f.c.len())));
        }
        let st = self.stream();
        let y = guarded("memcpy HtoD", || st.clone_htod(&f.y))?;
        let c: CudaSlice<u8> = guarded("memcpy HtoD", || st.clone_htod(&f.c))?;
        let (uo, vo, cstride, step) = f.chroma();
        let mut out = self.u8s.take(self, &st, f.width as usize * f.height as usize * 3)?;
        let (w, h) = (f.width as i32, f.height as i32);
        let (ys, cs, stp, ch, rs) = (w, cstride as i32, step as i32, 3i32, w * 3);
        let m = k.to_rgb;
        let func = self.func("yuv_to_rgb")?;
        let (uo, vo) = (uo as i32, vo as i32);
        guarded("yuv_to_rgb", || {
            let mut b = st.launch_builder(func);
            b.arg(&y).arg(&ys).arg(&c).arg(&uo).arg(&vo).arg(&cs).arg(&stp).arg(&w).arg(&h).arg(&mut out).arg(&rs).arg(&ch);
            for mi in &m {
                b.arg(mi);
            }
            b.arg(&k.oy);
            // SAFETY: arguments match color.cu's yuv_to_rgb; planes were checked above.
            unsafe { b.launch(Gpu::grid(f.width, f.height)) }.map(|_| ())
        })?;
        Ok(DeviceImage { width: f.width, height: f.height, channels: 3, buf: out, stream: st })
    }

    /// A device RGB8/RGBA8 image to a 4:2:0 frame (host).
    pub fn rgb_to_yuv(&self, img: &DeviceImage, k: &Coeffs, layout: Layout) -> Result<Yuv420, CudaError> {
        if !matches!(img.channels, 3 | 4) {
            return Err(CudaError::Input(format!("rgb_to_yuv of a {}-channel image", img.channels)));
        }
        let mut f = Yuv420::blank(img.width, img.height, layout);
        let st = img.stream.clone();
        let (uo, vo, cstride, step) = f.chroma();
        let mut y = self.u8s.take(self, &st, f.y.len())?;
        let mut c = guarded("alloc", || st.alloc_zeros::<u8>(f.c.len()))?;
        let (w, h, ch) = (img.width as i32, img.height as i32, img.channels as i32);
        let (rs, cs, stp) = (w * ch, cstride as i32, step as i32);
        let m = k.to_yuv;
        let func = self.func("rgb_to_yuv")?;
        let (uo, vo) = (uo as i32, vo as i32);
        guarded("rgb_to_yuv", || {
            let mut b = st.launch_builder(func);
            b.arg(&img.buf).arg(&rs).arg(&ch).arg(&w).arg(&h).arg(&mut y).arg(&w).arg(&mut c).arg(&uo).arg(&vo).arg(&cs).arg(&stp);
            for mi in &m {
                b.arg(mi);
            }
            b.arg(&k.oy);
            // SAFETY: arguments match color.cu's rgb_to_yuv; y holds w × h bytes and c both
            // chroma planes (offsets and strides from the same layout).
            unsafe { b.launch(Gpu::grid(img.width.div_ceil(2), img.height.div_ceil(2))) }.map(|_| ())
        })?;
        f.y = guarded("memcpy DtoH", || st.clone_dtoh(&y.slice(..f.y.len())))?;
        f.c = guarded("memcpy DtoH", || st.clone_dtoh(&c))?;
        self.u8s.give(self, y);
        Ok(f)
    }
}
