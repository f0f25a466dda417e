//! Resizing with fast_image_resize (SIMD convolution): Lanczos3, as libvips' thumbnailer
//! uses. Large reductions first average with a box filter down to twice the target (as
//! libvips' shrink + reduce does), which is several times cheaper than a wide Lanczos kernel
//! and looks the same. RGBA is resized premultiplied, so transparent pixels never bleed a
//! dark fringe into opaque ones.

use super::fit::CropRect;
use super::{Image, ImageError, PixelKind};
use fast_image_resize::images::{Image as FirImage, ImageRef};
use fast_image_resize::{FilterType, MulDiv, PixelType, ResizeAlg, ResizeOptions, Resizer};
use std::cell::RefCell;

/// Reductions larger than this get a box pre-shrink.
const BOX_ABOVE: f64 = 3.0;

thread_local! {
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

fn pixel_type(k: PixelKind) -> PixelType {
    match k {
        PixelKind::Rgb8 => PixelType::U8x3,
        PixelKind::Rgba8 => PixelType::U8x4,
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::Internal(format!("resize ({what}): {e}"))
}

/// Resizes the `crop` region of `src` to `dst` = (width, height).
pub fn resize(src: &Image, crop: CropRect, dst: (u32, u32)) -> Result<Image, ImageError> {
    let (dw, dh) = (dst.0.max(1), dst.1.max(1));
    let whole = crop.left == 0.0 && crop.top == 0.0 && crop.width == src.width as f64 && crop.height == src.height as f64;
    if whole && (dw, dh) == (src.width, src.height) {
        return Ok(src.clone());
    }
    let pt = pixel_type(src.pixels);
    let alpha = src.pixels.has_alpha();
    let mul = MulDiv::new();

    // Premultiply once (one copy of the source, which the resizer would make anyway).
    let premul;
    let src_ref = if alpha {
        let view = ImageRef::new(src.width, src.height, &src.data, pt).map_err(|e| internal("source", e))?;
        let mut p = FirImage::new(src.width, src.height, pt);
        mul.multiply_alpha(&view, &mut p).map_err(|e| internal("premultiply", e))?;
        premul = p;
        ImageRef::new(src.width, src.height, premul.buffer(), pt).map_err(|e| internal("source", e))?
    } else {
        ImageRef::new(src.width, src.height, &src.data, pt).map_err(|e| internal("source", e))?
    };

    let (rx, ry) = (crop.width / dw as f64, crop.height / dh as f64);
    let lanczos = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).use_alpha(false);
    let mut out = FirImage::new(dw, dh, pt);
    RESIZER.with(|r| -> Result<(), ImageError> {
        let mut r = r.borrow_mut();
        if rx > BOX_ABOVE || ry > BOX_ABOVE {
            let iw = if rx > BOX_ABOVE { dw.saturating_mul(2) } else { crop.width.round().max(1.0) as u32 };
            let ih = if ry > BOX_ABOVE { dh.saturating_mul(2) } else { crop.height.round().max(1.0) as u32 };
            let mut mid = FirImage::new(iw, ih, pt);
            let boxed = ResizeOptions::new()
                .resize_alg(ResizeAlg::Convolution(FilterType::Box))
                .crop(crop.left, crop.top, crop.width, crop.height)
                .use_alpha(false);
            r.resize(&src_ref, &mut mid, &boxed).map_err(|e| internal("box", e))?;
            r.resize(&mid, &mut out, &lanczos).map_err(|e| internal("lanczos", e))?;
        } else {
            let opts = lanczos.crop(crop.left, crop.top, crop.width, crop.height);
            r.resize(&src_ref, &mut out, &opts).map_err(|e| internal("lanczos", e))?;
        }
        Ok(())
    })?;
    if alpha {
        mul.divide_alpha_inplace(&mut out).map_err(|e| internal("unpremultiply", e))?;
    }
    Image::new(dw, dh, src.pixels, out.into_vec())
}

/// Resizes the whole image to fit inside `max` = (width, height), keeping the aspect ratio;
/// returns it unchanged when it fits already.
pub fn shrink_to_fit(src: &Image, max: (u32, u32)) -> Result<Option<Image>, ImageError> {
    if src.width <= max.0 && src.height <= max.1 {
        return Ok(None);
    }
    let p = super::fit::plan((src.width, src.height), Some(max.0.max(1)), Some(max.1.max(1)), super::Fit::Inside);
    resize(src, p.crop, p.resize).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::testutil::gradient;

    fn full(img: &Image) -> CropRect {
        CropRect { left: 0.0, top: 0.0, width: img.width as f64, height: img.height as f64 }
    }

    #[test]
    fn transparent_black_next_to_opaque_white_leaves_no_dark_fringe() {
        // Alternating columns: opaque white, transparent black.
        let (w, h) = (64u32, 16u32);
        let mut data = Vec::new();
        for _y in 0..h {
            for x in 0..w {
                data.extend_from_slice(if (x / 4) % 2 == 0 { &[255, 255, 255, 255] } else { &[0, 0, 0, 0] });
            }
        }
        let img = Image::new(w, h, PixelKind::Rgba8, data).unwrap();
        for dst in [(23, 7), (8, 2), (3, 1)] {
            let out = resize(&img, full(&img), dst).unwrap();
            for p in out.data.chunks_exact(4) {
                if p[3] > 8 {
                    assert!(p[0] >= 250 && p[1] >= 250 && p[2] >= 250, "dark fringe {p:?} at {dst:?}");
                }
            }
        }
    }

    #[test]
    fn sizes_crops_and_big_reductions() {
        let img = gradient(1200, 900, PixelKind::Rgb8);
        let out = resize(&img, full(&img), (100, 75)).unwrap();
        assert_eq!((out.width, out.height, out.data.len()), (100, 75, 100 * 75 * 3));
        // The gradient survives: left is dark red, right is bright red.
        assert!(out.rgba_at(0, 0)[0] < 10 && out.rgba_at(99, 0)[0] > 240);
        // A crop of the right half only has bright reds.
        let c = CropRect { left: 600.0, top: 0.0, width: 600.0, height: 900.0 };
        let out = resize(&img, c, (50, 75)).unwrap();
        assert!(out.rgba_at(0, 10)[0] > 120);
        // Upscale works; same size is a copy.
        let small = gradient(10, 10, PixelKind::Rgba8);
        assert_eq!(resize(&small, full(&small), (40, 30)).unwrap().width, 40);
        assert_eq!(resize(&small, full(&small), (10, 10)).unwrap(), small);
        assert!(shrink_to_fit(&small, (20, 20)).unwrap().is_none());
        assert_eq!(shrink_to_fit(&img, (120, 120)).unwrap().map(|i| (i.width, i.height)), Some((120, 90)));
    }
}
