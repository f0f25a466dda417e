//! Rendering one drawn page: each layer is rasterised into a kernels [`Source`] tile (images
//! read, decoded with shrink-on-load, oriented, colour-managed, cropped and resized to their
//! box; rectangles and text on the CPU), then the chosen compositor blends the tiles onto the
//! background.
//!
//! Decoded images are cached for the job (an image used on every page is read and decoded
//! once, whichever page thread needs it first), bounded by [`CACHE_PIXELS`].

use super::cache::Cache;
use super::spec::{DrawnPage, Layer};
use crate::context::JobContext;
use crate::error::JobError;
use crate::convert::Context;
use kiln_kernels::image::{self as img, fit::CropRect, DecodeOptions, Image, SrgbTransform};
use kiln_kernels::render::{self as render, raster, text, Compositor, PageLayers, Source};
use std::sync::Arc;

/// Most decoded pixels the per-job image cache holds before it is emptied.
pub const CACHE_PIXELS: u64 = 64_000_000;

/// Decoded images of one job, by (source, smallest size needed).
pub struct ImageCache(Cache<(String, (u32, u32)), Arc<Image>>);

impl Default for ImageCache {
    fn default() -> Self {
        ImageCache(Cache::new(CACHE_PIXELS))
    }
}

impl ImageCache {
    fn get(&self, ctx: &JobContext, uri: &str, need: Option<(u32, u32)>) -> Result<Arc<Image>, JobError> {
        let key = (uri.to_owned(), need.unwrap_or((0, 0)));
        self.0.get(&key, |i| i.pixel_count(), || {
            let what = format!("image {uri}");
            let data = ctx.read_input(uri).context(&what)?;
            let opts = DecodeOptions { max_pixels: ctx.limits.max_pixels, min_size: need };
            let d = img::decode(&data, &opts).context(&what)?;
            drop(data);
            let mut image = img::orient::apply(d.image, d.info.orientation).context(&what)?;
            if let Some(t) = d.icc.as_deref().and_then(SrgbTransform::from_icc) {
                t.apply(&mut image);
            }
            Ok(Arc::new(image))
        })
    }
}

/// Rasterises and composites one page.
pub fn render(ctx: &JobContext, page: &DrawnPage, comp: &dyn Compositor, cache: &ImageCache) -> Result<Image, JobError> {
    let dims = (page.width, page.height);
    let mut sources: Vec<Source> = Vec::with_capacity(page.layers.len());
    for layer in &page.layers {
        let s = match layer {
            Layer::Rect { x, y, width, height, fill, stroke, opacity, blend } => {
                raster::rect(dims, (*x, *y, *width, *height), *fill, *stroke, *opacity, *blend)
            }
            Layer::Text { x, y, text: t, size, color, font, opacity, blend } => {
                let face = text::load_font(font)?;
                let style = text::TextStyle { size: *size, color: *color, opacity: *opacity, blend: *blend };
                text::text(&face, dims, *x, *y, t, &style)?
            }
            Layer::Image { source, x, y, width, height, crop, rotate, opacity, blend } => {
                Some(image_source(ctx, cache, source, (*x, *y), (*width, *height), crop.as_ref(), *rotate, *opacity, *blend)?)
            }
        };
        sources.extend(s);
    }
    let layers = PageLayers { width: page.width, height: page.height, background: page.background, sources };
    let canvas = comp.composite(&layers)?;
    Ok(render::to_image(page.width, page.height, &canvas)?)
}

#[allow(clippy::too_many_arguments)]
fn image_source(
    ctx: &JobContext,
    cache: &ImageCache,
    uri: &str,
    (x, y): (f64, f64),
    (w, h): (Option<u32>, Option<u32>),
    crop: Option<&super::spec::Crop>,
    rotate: f64,
    opacity: u8,
    blend: kiln_kernels::render::BlendMode,
) -> Result<Source, JobError> {
    let what = format!("image {uri}");
    // Decode at the box size when it is known and nothing is cropped (JPEG shrink-on-load);
    // a crop is given in the source's pixels, so a cropped image is decoded at full size.
    let need = match (w, h, crop) {
        (Some(w), Some(h), None) => Some((w, h)),
        _ => None,
    };
    let full = cache.get(ctx, uri, need)?;
    let c = match crop {
        Some(c) => {
            ensure_crop(&what, c, (full.width, full.height))?;
            CropRect { left: c.x, top: c.y, width: c.width, height: c.height }
        }
        None => CropRect { left: 0.0, top: 0.0, width: full.width as f64, height: full.height as f64 },
    };
    let (bw, bh) = box_size((w, h), &c);
    if bw as u64 * bh as u64 > ctx.limits.max_page_pixels {
        return Err(JobError::invalid_spec(format!("{what}: its {bw}x{bh} box is over the page pixel limit")));
    }
    let resized = img::resize(&full, c, (bw, bh)).context(&what)?;
    Ok(raster::image(&resized, x.round() as i64, y.round() as i64, rotate, opacity, blend))
}

/// The box (page pixels) an image layer fills: the spec's width and height, one alone keeping
/// the (cropped) image's aspect ratio, neither taking its size. The PDF path uses the same.
pub(super) fn box_size((w, h): (Option<u32>, Option<u32>), c: &CropRect) -> (u32, u32) {
    match (w, h) {
        (Some(w), Some(h)) => (w, h),
        (Some(w), None) => (w, ((w as f64 * c.height / c.width).round() as u32).max(1)),
        (None, Some(h)) => (((h as f64 * c.width / c.height).round() as u32).max(1), h),
        (None, None) => (c.width.round().max(1.0) as u32, c.height.round().max(1.0) as u32),
    }
}

pub(super) fn ensure_crop(what: &str, c: &super::spec::Crop, dims: (u32, u32)) -> Result<(), JobError> {
    if c.x + c.width > dims.0 as f64 + 1e-6 || c.y + c.height > dims.1 as f64 + 1e-6 {
        return Err(JobError::invalid_spec(format!(
            "{what}: crop {}x{}+{}+{} reaches outside the {}x{} image",
            c.width, c.height, c.x, c.y, dims.0, dims.1
        )));
    }
    Ok(())
}
