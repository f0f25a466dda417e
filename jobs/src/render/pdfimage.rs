//! Image layers as PDF image XObjects, at the resolution the page needs.
//!
//! The box an image fills is computed exactly as the PNG path does (`page.rs`); the XObject
//! gets the box's size in page pixels, or the (cropped) source's size when that is smaller —
//! never larger than the source, never upsampled. A JPEG that needs no change (not cropped,
//! not larger than its box, upright, sRGB or untagged, 1 or 3 components, no Adobe
//! transform) is embedded as it is (`DCTDecode` passthrough, no re-encoding). Otherwise the
//! image is decoded (shrink-on-load), oriented, colour-managed, cropped and resized like the
//! PNG path, then encoded: JPEG at the job's quality when the source was a JPEG (a photo),
//! lossless Flate for other formats; alpha becomes a Flate soft mask.
//!
//! Built images are cached for the job by (source, crop, size), so a photo on many pages is
//! encoded once, whichever page thread needs it first. The cache is bounded by
//! [`CACHE_BYTES`]. Each built image is also stored once beside the parts (parts only name
//! it, see [`super::pdf::PdfImage`]) and kept by id until the assembler has written it.

use super::cache::Cache;
use super::page::{box_size, ensure_crop};
use super::pdf::{deflate, image_blob_name, PdfImage};
use super::spec::Crop;
use crate::context::JobContext;
use crate::convert::Context;
use crate::error::JobError;
use kiln_kernels::image::{self as img, fit::CropRect, jpeg, DecodeOptions, Format, Image, Orientation, PixelKind, SrgbTransform};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Most encoded bytes the per-job cache holds before it is emptied.
pub const CACHE_BYTES: u64 = 64 << 20;

/// A built image and the box (page pixels) it is drawn into.
#[derive(Debug, Clone)]
pub struct Placed {
    pub image: Arc<PdfImage>,
    pub box_w: u32,
    pub box_h: u32,
}

type Key = (String, Option<[u64; 4]>, (Option<u32>, Option<u32>));

pub struct PdfImages {
    cache: Cache<Key, Placed>,
    /// Images built by this attempt that the assembler has not written yet, by id.
    unwritten: Mutex<HashMap<String, Arc<PdfImage>>>,
    /// Ids this attempt stored: an image built again after the cache evicted it is neither
    /// stored again nor kept for the assembler (which has it, or reads it from the store).
    stored: Mutex<HashSet<String>>,
}

impl Default for PdfImages {
    fn default() -> Self {
        PdfImages { cache: Cache::new(CACHE_BYTES), unwritten: Mutex::default(), stored: Mutex::default() }
    }
}

/// Whether a JPEG can go into the PDF byte for byte: what a PDF reader shows is then what
/// the PNG path decodes.
fn passthrough(data: &[u8]) -> Option<&'static str> {
    let header = jpeg::read_header(data).ok()?;
    let meta = jpeg::scan_markers(data);
    if header.cmyk || header.lossless || meta.adobe || meta.icc.as_deref().is_some_and(|p| !img::color::is_srgb(p)) {
        return None;
    }
    match crate::jpeg_frame::components(data)? {
        1 => Some("DeviceGray"),
        3 => Some("DeviceRGB"),
        _ => None,
    }
}

impl PdfImages {
    pub fn get(&self, ctx: &JobContext, uri: &str, size: (Option<u32>, Option<u32>), crop: Option<&Crop>, quality: u8) -> Result<Placed, JobError> {
        let key = (uri.to_owned(), crop.map(|c| [c.x.to_bits(), c.y.to_bits(), c.width.to_bits(), c.height.to_bits()]), size);
        let cost = |p: &Placed| (p.image.data.len() + p.image.smask.as_ref().map_or(0, Vec::len)) as u64;
        self.cache.get(&key, cost, || {
            let placed = build(ctx, uri, size, crop, quality)?;
            let im = &placed.image;
            if self.stored.lock().unwrap_or_else(|p| p.into_inner()).contains(&im.id) {
                return Ok(placed);
            }
            ctx.store_output(&image_blob_name(&im.id), Bytes::from(im.to_blob()), "application/octet-stream", None)?;
            self.stored.lock().unwrap_or_else(|p| p.into_inner()).insert(im.id.clone());
            self.unwritten.lock().unwrap_or_else(|p| p.into_inner()).insert(im.id.clone(), im.clone());
            Ok(placed)
        })
    }

    /// The image `id` for the assembler, which writes it once: built by this attempt (and
    /// forgotten here), or read back from the store (an earlier attempt built it).
    pub fn for_document(&self, ctx: &JobContext, id: &str) -> Result<Arc<PdfImage>, JobError> {
        if let Some(im) = self.unwritten.lock().unwrap_or_else(|p| p.into_inner()).remove(id) {
            return Ok(im);
        }
        let blob = ctx.read_stored_output(&image_blob_name(id))?;
        Ok(Arc::new(PdfImage::from_blob(&blob, id)?))
    }
}

fn build(ctx: &JobContext, uri: &str, size: (Option<u32>, Option<u32>), crop: Option<&Crop>, quality: u8) -> Result<Placed, JobError> {
    let what = format!("image {uri}");
    let data = ctx.read_input(uri).context(&what)?;
    let info = img::probe(&data, ctx.limits.max_pixels).context(&what)?;
    let (ow, oh) = info.oriented_dims();
    let c = match crop {
        Some(c) => {
            ensure_crop(&what, c, (ow, oh))?;
            CropRect { left: c.x, top: c.y, width: c.width, height: c.height }
        }
        None => CropRect { left: 0.0, top: 0.0, width: ow as f64, height: oh as f64 },
    };
    let (bw, bh) = box_size(size, &c);
    if bw as u64 * bh as u64 > ctx.limits.max_page_pixels {
        return Err(JobError::invalid_spec(format!("{what}: its {bw}x{bh} box is over the page pixel limit")));
    }
    let target = (bw.min(c.width.round().max(1.0) as u32), bh.min(c.height.round().max(1.0) as u32));
    let placed = |image: PdfImage| Placed { image: Arc::new(image), box_w: bw, box_h: bh };

    if info.format == Format::Jpeg && crop.is_none() && info.orientation == Orientation::Normal && target == (ow, oh) {
        if let Some(cs) = passthrough(&data) {
            return Ok(placed(PdfImage::new(ow, oh, cs, "DCTDecode", data.to_vec(), None)));
        }
    }
    // Decode at the target size when nothing is cropped (JPEG shrink-on-load); a crop is in
    // the source's pixels, so a cropped image is decoded at full size.
    let need = if crop.is_none() { Some(target) } else { None };
    let d = img::decode(&data, &DecodeOptions { max_pixels: ctx.limits.max_pixels, min_size: need }).context(&what)?;
    drop(data);
    let mut image = img::orient::apply(d.image, d.info.orientation).context(&what)?;
    if let Some(t) = d.icc.as_deref().and_then(SrgbTransform::from_icc) {
        t.apply(&mut image);
    }
    let c = if crop.is_some() { c } else { CropRect { left: 0.0, top: 0.0, width: image.width as f64, height: image.height as f64 } };
    let image = img::resize(&image, c, target).context(&what)?;
    let (rgb, alpha) = split_alpha(&image)?;
    let smask = alpha.map(|a| deflate(&a)).transpose()?;
    let (filter, data) = if info.format == Format::Jpeg {
        ("DCTDecode", jpeg::encode_rgb(&rgb, quality).context(&what)?)
    } else {
        ("FlateDecode", deflate(&rgb.data)?)
    };
    Ok(placed(PdfImage::new(rgb.width, rgb.height, "DeviceRGB", filter, data, smask)))
}

/// RGB samples and, when some pixel is not opaque, the alpha plane.
fn split_alpha(image: &Image) -> Result<(Image, Option<Vec<u8>>), JobError> {
    match image.pixels {
        PixelKind::Rgb8 => Ok((image.clone(), None)),
        PixelKind::Rgba8 => {
            let px = image.data.chunks_exact(4);
            let rgb: Vec<u8> = px.clone().flat_map(|p| [p[0], p[1], p[2]]).collect();
            let alpha: Vec<u8> = px.map(|p| p[3]).collect();
            let opaque = alpha.iter().all(|a| *a == 255);
            let rgb = Image::new(image.width, image.height, PixelKind::Rgb8, rgb).map_err(|e| JobError::internal(e.to_string()))?;
            Ok((rgb, (!opaque).then_some(alpha)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_frames_are_read_for_their_components() {
        let rgb = Image::new(16, 8, PixelKind::Rgb8, vec![120; 16 * 8 * 3]).unwrap();
        let data = jpeg::encode_rgb(&rgb, 80).unwrap();
        assert_eq!(crate::jpeg_frame::components(&data), Some(3));
        assert_eq!(passthrough(&data), Some("DeviceRGB"));
        assert_eq!(crate::jpeg_frame::components(b"\xff\xd8\xff"), None);
        assert_eq!(crate::jpeg_frame::components(b"\xff\xd8\xff\xe0\x00\x02"), None);
    }
}
