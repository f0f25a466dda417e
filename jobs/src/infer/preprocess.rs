//! Image → input tensor: decode with the thumbnail job's decoder (JPEG shrink-on-load,
//! orientation, ICC → sRGB), drop alpha, resize (letterboxed or stretched) with the kernels'
//! SIMD resizer, pad, then scale, normalise and lay out as NCHW or NHWC floats.

use super::batcher::Item;
use super::config::{ChannelOrder, Layout, ModelConfig, PadAlign};
use crate::error::JobError;
use crate::convert::Context;
use kiln_kernels::image::{self as img, fit::CropRect, orient, DecodeOptions, Image, PixelKind, SrgbTransform};

/// How source pixels map to input pixels: `input = source × scale + pad`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub source: (u32, u32),
    pub scale: (f32, f32),
    pub pad: (f32, f32),
}

impl Geometry {
    /// An input-space box back in source pixels, clamped to the image.
    pub fn to_source(&self, b: [f32; 4]) -> [f32; 4] {
        let (w, h) = (self.source.0 as f32, self.source.1 as f32);
        let x = |v: f32| ((v - self.pad.0) / self.scale.0).clamp(0.0, w);
        let y = |v: f32| ((v - self.pad.1) / self.scale.1).clamp(0.0, h);
        [x(b[0]), y(b[1]), x(b[2]), y(b[3])]
    }
}

/// The input tensor of one image, and where its pixels came from.
#[derive(Debug)]
pub struct Prepared {
    pub item: Item,
    pub geometry: Geometry,
}

/// A decoded, oriented, sRGB, RGB8 source and where it goes on the model's canvas: the part of
/// preprocessing before the resize, shared by the CPU path and the GPU one (which resizes,
/// letterboxes and normalises on the device: `kiln_kernels::cuda::letterbox`).
#[derive(Debug)]
pub struct Source {
    pub rgb: Image,
    /// The resized image's size.
    pub resized: (u32, u32),
    /// Its top-left on the canvas.
    pub pad: (u32, u32),
    pub geometry: Geometry,
}

pub fn source(data: &[u8], m: &ModelConfig, max_pixels: u64) -> Result<Source, JobError> {
    let [tw, th] = m.input_size.ok_or_else(|| JobError::invalid_spec(format!("model {:?} takes tensors, not images", m.name)))?;
    let info = img::probe(data, max_pixels).context("image")?;
    let (sw, sh) = info.oriented_dims();
    let (rw, rh) = if m.letterbox {
        let s = (tw as f64 / sw as f64).min(th as f64 / sh as f64);
        (((sw as f64 * s).round() as u32).clamp(1, tw), ((sh as f64 * s).round() as u32).clamp(1, th))
    } else {
        (tw, th)
    };
    let decoded = img::decode(data, &DecodeOptions { max_pixels, min_size: Some((rw, rh)) }).context("image")?;
    let mut im = orient::apply(decoded.image, info.orientation).context("image")?;
    if let Some(t) = decoded.icc.as_deref().and_then(SrgbTransform::from_icc) {
        t.apply(&mut im);
    }
    let rgb = to_rgb(im)?;
    let (px, py) = match m.pad_align {
        PadAlign::Center => ((tw - rw) / 2, (th - rh) / 2),
        PadAlign::TopLeft => (0, 0),
    };
    let geometry = Geometry {
        source: (sw, sh),
        scale: (rw as f32 / sw as f32, rh as f32 / sh as f32),
        pad: (px as f32, py as f32),
    };
    Ok(Source { rgb, resized: (rw, rh), pad: (px, py), geometry })
}

pub fn image(data: &[u8], m: &ModelConfig, max_pixels: u64) -> Result<Prepared, JobError> {
    let [tw, th] = m.input_size.ok_or_else(|| JobError::invalid_spec(format!("model {:?} takes tensors, not images", m.name)))?;
    let Source { rgb: im, resized: (rw, rh), pad: (px, py), geometry } = source(data, m, max_pixels)?;
    let whole = CropRect { left: 0.0, top: 0.0, width: im.width as f64, height: im.height as f64 };
    let resized = img::resize(&im, whole, (rw, rh)).context("image")?;
    let canvas = if (rw, rh) == (tw, th) {
        resized
    } else {
        let c = m.pad_color;
        let padded = img::pad(&resized, (tw, th), (px, py), [c[0], c[1], c[2], 255]).context("image")?;
        to_rgb(padded)?
    };
    let item = tensor(&canvas, m);
    Ok(Prepared { item, geometry })
}

/// The GPU kernel's parameters for this model: the same canvas, channel order and
/// `p × a + b` as [`tensor`].
pub fn device_params(m: &ModelConfig, target: (u32, u32), pad: (u32, u32)) -> kiln_kernels::cuda::letterbox::Params {
    let order: [usize; 3] = match m.channel_order {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    kiln_kernels::cuda::letterbox::Params {
        target,
        pad,
        pad_color: [m.pad_color[0], m.pad_color[1], m.pad_color[2]],
        order,
        a: std::array::from_fn(|c| 1.0 / (m.scale * m.std[c])),
        b: std::array::from_fn(|c| -m.mean[c] / m.std[c]),
        nhwc: m.layout == Layout::Nhwc,
    }
}

fn to_rgb(im: Image) -> Result<Image, JobError> {
    match im.pixels {
        PixelKind::Rgb8 => Ok(im),
        PixelKind::Rgba8 => {
            let data: Vec<u8> = im.data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
            Image::new(im.width, im.height, PixelKind::Rgb8, data).context("image")
        }
    }
}

/// RGB8 pixels → normalised floats in the model's layout and channel order.
pub fn tensor(im: &Image, m: &ModelConfig) -> Item {
    let (w, h) = (im.width as usize, im.height as usize);
    let order: [usize; 3] = match m.channel_order {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    // (p / scale - mean) / std = p * a + b
    let a: [f32; 3] = std::array::from_fn(|c| 1.0 / (m.scale * m.std[c]));
    let b: [f32; 3] = std::array::from_fn(|c| -m.mean[c] / m.std[c]);
    let mut data = vec![0f32; w * h * 3];
    match m.layout {
        Layout::Nchw => {
            let plane = w * h;
            for (i, px) in im.data.chunks_exact(3).enumerate() {
                for (c, &src) in order.iter().enumerate() {
                    data[c * plane + i] = px[src] as f32 * a[c] + b[c];
                }
            }
        }
        Layout::Nhwc => {
            for (i, px) in im.data.chunks_exact(3).enumerate() {
                for (c, &src) in order.iter().enumerate() {
                    data[i * 3 + c] = px[src] as f32 * a[c] + b[c];
                }
            }
        }
    }
    let shape = match m.layout {
        Layout::Nchw => vec![3, h as i64, w as i64],
        Layout::Nhwc => vec![h as i64, w as i64, 3],
    };
    Item { shape, data }
}
