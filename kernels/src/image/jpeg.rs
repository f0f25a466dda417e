//! JPEG through libjpeg-turbo: a marker scanner for metadata (EXIF, ICC, Adobe), header reads,
//! decode with DCT-domain shrink-on-load, CMYK handling, and encode.

use super::{Image, ImageError, PixelKind};
use turbojpeg::{Colorspace, Compressor, Decompressor, PixelFormat, ScalingFactor, Subsamp};

/// Metadata found in the JPEG's marker segments before the first scan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JpegMeta {
    /// TIFF-structured EXIF payload (after `Exif\0\0`).
    pub exif: Option<Vec<u8>>,
    /// The ICC profile, reassembled from its APP2 chunks.
    pub icc: Option<Vec<u8>>,
    /// An Adobe APP14 segment is present (CMYK stored inverted, as Photoshop writes it).
    pub adobe: bool,
}

/// Walks the marker segments from SOI up to SOS collecting APP1 Exif, APP2 ICC_PROFILE and
/// APP14 Adobe. Malformed segment structure ends the walk quietly: metadata is best effort,
/// the decoder judges the image itself.
pub fn scan_markers(data: &[u8]) -> JpegMeta {
    let mut meta = JpegMeta::default();
    let mut icc_chunks: Vec<(u8, &[u8])> = Vec::new();
    let mut i = 2; // after SOI
    while i + 4 <= data.len() {
        if data[i] != 0xFF {
            break;
        }
        let marker = data[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        i += 2;
        if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            continue; // no length
        }
        if marker == 0xDA || marker == 0xD9 {
            break; // SOS / EOI
        }
        if i + 2 > data.len() {
            break;
        }
        let len = u16::from_be_bytes([data[i], data[i + 1]]) as usize;
        if len < 2 || i + len > data.len() {
            break;
        }
        let body = &data[i + 2..i + len];
        match marker {
            0xE1 if body.starts_with(b"Exif\0\0") && meta.exif.is_none() => meta.exif = Some(body[6..].to_vec()),
            0xE2 if body.starts_with(b"ICC_PROFILE\0") && body.len() > 14 => icc_chunks.push((body[12], &body[14..])),
            0xEE if body.starts_with(b"Adobe") => meta.adobe = true,
            _ => {}
        }
        i += len;
    }
    if !icc_chunks.is_empty() {
        icc_chunks.sort_by_key(|c| c.0);
        meta.icc = Some(icc_chunks.iter().flat_map(|c| c.1.iter().copied()).collect());
    }
    meta
}

/// Header facts needed before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegHeader {
    pub width: u32,
    pub height: u32,
    pub cmyk: bool,
    pub lossless: bool,
}

pub fn read_header(data: &[u8]) -> Result<JpegHeader, ImageError> {
    let h = turbojpeg::read_header(data).map_err(|e| jpeg_error(&e.to_string()))?;
    let (width, height) = (to_u32(h.width)?, to_u32(h.height)?);
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt("jpeg has a zero dimension".into()));
    }
    Ok(JpegHeader {
        width,
        height,
        cmyk: matches!(h.colorspace, Colorspace::CMYK | Colorspace::YCCK),
        lossless: h.is_lossless,
    })
}

fn to_u32(v: usize) -> Result<u32, ImageError> {
    u32::try_from(v).map_err(|_| ImageError::Corrupt("jpeg dimension out of range".into()))
}

/// The largest DCT reduction (n/8, n = 1..=8) that keeps the decoded image at least
/// `min` = (width, height) in the stored (un-oriented) orientation. `None` = no shrink.
pub fn choose_scale(width: u32, height: u32, min: Option<(u32, u32)>) -> ScalingFactor {
    let Some((mw, mh)) = min else { return ScalingFactor::ONE };
    for n in 1..=8usize {
        let f = ScalingFactor::new(n, 8);
        if f.scale(width as usize) >= mw as usize && f.scale(height as usize) >= mh as usize {
            return f;
        }
    }
    ScalingFactor::ONE
}

/// Decodes to RGB (CMYK for CMYK files) at `scale`, exactly as libjpeg-turbo does: the
/// pixels, width and height.
pub fn decode_pixels(data: &[u8], header: &JpegHeader, scale: ScalingFactor) -> Result<(Vec<u8>, usize, usize), ImageError> {
    let mut d = Decompressor::new().map_err(|e| ImageError::Internal(format!("jpeg decoder: {e}")))?;
    d.set_scaling_factor(scale).map_err(|e| ImageError::Internal(format!("jpeg scaling {scale}: {e}")))?;
    // Progressive-scan bombs (thousands of scans) are refused.
    d.set_scan_limit(500).map_err(|e| ImageError::Internal(format!("jpeg scan limit: {e}")))?;
    let w = scale.scale(header.width as usize);
    let h = scale.scale(header.height as usize);
    let format = if header.cmyk { PixelFormat::CMYK } else { PixelFormat::RGB };
    let mut buf = vec![0u8; w * h * format.size()];
    let out = turbojpeg::Image { pixels: buf.as_mut_slice(), width: w, pitch: w * format.size(), height: h, format };
    if let Err(e) = d.decompress(data, out) {
        let msg = e.to_string();
        // libjpeg-turbo reports warnings as errors; ones that leave a whole image are accepted.
        if !is_benign_warning(&msg) {
            return Err(jpeg_error(&msg));
        }
        tracing::debug!(warning = %msg, "jpeg decoded with a warning");
    }
    Ok((buf, w, h))
}

/// Decodes a JPEG to RGB, shrunk in the DCT domain by `scale`. CMYK/YCCK images are converted
/// to RGB: through the embedded CMYK profile (`icc`) when there is one, else naively.
/// Returns the image and whether the colour conversion already went through the profile.
pub fn decode(data: &[u8], header: &JpegHeader, scale: ScalingFactor, icc: Option<&[u8]>, adobe: bool) -> Result<(Image, bool), ImageError> {
    let scale = if header.lossless { ScalingFactor::ONE } else { scale };
    // At 1/8 a progressive file's AC scans are mostly dead weight (see `progressive`); the
    // slimmed copy is tried first and the original decides if anything about it fails.
    let slim = if scale == ScalingFactor::new(1, 8) { super::progressive::strip_for_eighth_scale(data) } else { None };
    let (mut buf, w, h) = match slim.map(|s| decode_pixels(&s, header, scale)) {
        Some(Ok(d)) => d,
        _ => decode_pixels(data, header, scale)?,
    };
    let (w, h) = (w as u32, h as u32);
    if !header.cmyk {
        return Ok((Image { width: w, height: h, pixels: PixelKind::Rgb8, data: buf }, false));
    }
    if adobe {
        buf.iter_mut().for_each(|b| *b = 255 - *b);
    }
    if let Some(icc) = icc {
        let mut rgb = vec![0u8; w as usize * h as usize * 3];
        if super::color::cmyk_to_srgb(icc, &buf, &mut rgb) {
            return Ok((Image { width: w, height: h, pixels: PixelKind::Rgb8, data: rgb }, true));
        }
    }
    let rgb = buf
        .chunks_exact(4)
        .flat_map(|p| {
            let k = 255 - p[3] as u32;
            [p[0], p[1], p[2]].map(|c| ((255 - c as u32) * k / 255) as u8)
        })
        .collect();
    Ok((Image { width: w, height: h, pixels: PixelKind::Rgb8, data: rgb }, false))
}

/// libjpeg's "Unsupported …" messages (12-bit precision, unusual SOF types) mean a JPEG we
/// cannot read; everything else means a broken one.
fn jpeg_error(msg: &str) -> ImageError {
    let msg = msg.trim_start_matches("TurboJPEG error: ");
    if msg.contains("Unsupported") || msg.contains("unsupported") {
        ImageError::Unsupported(format!("jpeg: {msg}"))
    } else {
        ImageError::Corrupt(format!("jpeg: {msg}"))
    }
}

/// Warnings after which the decoded image is complete (stray bytes between markers, as some
/// cameras write). "Premature end of JPEG file" (truncation) is not among them.
fn is_benign_warning(msg: &str) -> bool {
    msg.contains("extraneous bytes before marker")
}

/// Encodes RGB pixels as a baseline JPEG with 4:2:0 chroma subsampling.
pub fn encode_rgb(img: &Image, quality: u8) -> Result<Vec<u8>, ImageError> {
    let format = match img.pixels {
        PixelKind::Rgb8 => PixelFormat::RGB,
        PixelKind::Rgba8 => PixelFormat::RGBX,
    };
    let internal = |e: turbojpeg::Error| ImageError::Internal(format!("jpeg encode: {e}"));
    let mut c = Compressor::new().map_err(internal)?;
    c.set_quality(quality.clamp(1, 100) as i32).map_err(internal)?;
    c.set_subsamp(Subsamp::Sub2x2).map_err(internal)?;
    let (w, h) = (img.width as usize, img.height as usize);
    let src = turbojpeg::Image { pixels: img.data.as_slice(), width: w, pitch: w * format.size(), height: h, format };
    c.compress_to_vec(src).map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_on_load_picks_the_largest_reduction_that_still_covers_the_target() {
        // 6000x4000 → at least 256x171: 1/8 gives 750x500.
        assert_eq!(choose_scale(6000, 4000, Some((256, 171))), ScalingFactor::new(1, 8));
        // At least 1000x667: 1/8 (750) is too small, 2/8 (1500x1000) fits.
        assert_eq!(choose_scale(6000, 4000, Some((1000, 667))), ScalingFactor::new(1, 4));
        // At least 2000 wide: 3/8 → 2250.
        assert_eq!(choose_scale(6000, 4000, Some((2000, 1))), ScalingFactor::new(3, 8));
        // Exactly 1/8: 750 ≥ 750.
        assert_eq!(choose_scale(6000, 4000, Some((750, 500))), ScalingFactor::new(1, 8));
        // Bigger than the source: no shrink.
        assert_eq!(choose_scale(640, 480, Some((800, 600))), ScalingFactor::ONE);
        assert_eq!(choose_scale(640, 480, None), ScalingFactor::ONE);
        // Rounding: ceil(257/8) = 33 ≥ 33.
        assert_eq!(choose_scale(257, 257, Some((33, 33))), ScalingFactor::new(1, 8));
    }

    #[test]
    fn markers_are_collected_up_to_the_scan() {
        let mut d = vec![0xFF, 0xD8];
        let seg = |m: u8, body: &[u8]| {
            let mut s = vec![0xFF, m];
            s.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
            s.extend_from_slice(body);
            s
        };
        d.extend(seg(0xE0, b"JFIF\0\x01\x01"));
        d.extend(seg(0xE1, b"Exif\0\0MM\0*"));
        d.extend(seg(0xE2, b"ICC_PROFILE\0\x02\x02world"));
        d.extend(seg(0xE2, b"ICC_PROFILE\0\x01\x02hello "));
        d.extend(seg(0xEE, b"Adobe\0\x64\0\0\0\0\x02"));
        d.extend(seg(0xDA, b"\0"));
        d.extend(seg(0xE1, b"Exif\0\0ignored"));
        let m = scan_markers(&d);
        assert_eq!(m.exif.as_deref(), Some(&b"MM\0*"[..]));
        assert_eq!(m.icc.as_deref(), Some(&b"hello world"[..]));
        assert!(m.adobe);
        // Truncated and garbage input never panic.
        for n in 0..d.len() {
            let _ = scan_markers(&d[..n]);
        }
        assert_eq!(scan_markers(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF]), JpegMeta::default());
    }
}
