//! Probe and decode: JPEG through libjpeg-turbo with shrink-on-load, PNG row by row with
//! shrink-on-load ([`super::png_shrink`]; interlaced ones whole), PNG/WebP/GIF (first
//! frame)/TIFF through the `image` crate. The pixel limit is checked from the header before
//! any pixel buffer exists.

use super::jpeg::{self, JpegMeta};
use super::orient::Orientation;
use super::sniff::{header_dims, sniff, Format};
use super::{Image, ImageError, ImageInfo, PixelKind};
use image::{ColorType, DynamicImage, ImageDecoder, ImageReader};
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What to decode and within which limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Refuse images with more pixels (width × height, from the header).
    pub max_pixels: u64,
    /// The smallest size, in display (oriented) coordinates, the caller needs: decoders that
    /// can shrink while decoding (JPEG, PNG) stop at or above it. `None`: full size.
    pub min_size: Option<(u32, u32)>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { max_pixels: 100_000_000, min_size: None }
    }
}

/// A decoded image as stored (orientation not yet applied), with what is needed to finish it.
#[derive(Debug)]
pub struct Decoded {
    /// The header facts (full-size dimensions, orientation).
    pub info: ImageInfo,
    /// The pixels, possibly shrunk on load; apply `info.orientation` next.
    pub image: Image,
    /// An embedded RGB ICC profile still to be converted to sRGB (see
    /// [`super::SrgbTransform::from_icc`]); `None` when there is none or it was applied.
    pub icc: Option<Vec<u8>>,
}

/// Reads the header: format, dimensions, orientation. Refuses images over `max_pixels`.
/// Decodes no pixels.
pub fn probe(data: &[u8], max_pixels: u64) -> Result<ImageInfo, ImageError> {
    let format = sniff(data)?;
    if format == Format::Jpeg {
        let header = jpeg::read_header(data)?;
        check_pixels(header.width, header.height, max_pixels)?;
        let meta = jpeg::scan_markers(data);
        return Ok(jpeg_info(&header, &meta));
    }
    guarded(|| {
        let (info, _) = open_other(format, data, max_pixels)?;
        Ok(info)
    })
}

/// Decodes `data` (any supported format) within the options. See [`Decoded`].
pub fn decode(data: &[u8], opts: &DecodeOptions) -> Result<Decoded, ImageError> {
    let format = sniff(data)?;
    if format == Format::Jpeg {
        return decode_jpeg(data, opts);
    }
    guarded(|| {
        let (info, mut dec) = open_other(format, data, opts.max_pixels)?;
        if let (Format::Png, Some(need)) = (format, opts.min_size) {
            if let Some((image, icc)) = super::png_shrink::decode(data, &info, need)? {
                return Ok(Decoded { info, image, icc });
            }
        }
        let icc = dec.icc_profile().ok().flatten();
        let image = read_other(dec, &info, opts.max_pixels)?;
        Ok(Decoded { info, image, icc: icc.filter(|p| p.get(16..20) == Some(b"RGB ")) })
    })
}

fn check_pixels(width: u32, height: u32, limit: u64) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt(format!("image has a zero dimension ({width}x{height})")));
    }
    if width as u64 * height as u64 > limit {
        return Err(ImageError::TooManyPixels { width, height, limit });
    }
    Ok(())
}

fn jpeg_info(header: &jpeg::JpegHeader, meta: &JpegMeta) -> ImageInfo {
    let orientation = meta.exif.as_deref().map(Orientation::from_exif_block).unwrap_or_default();
    ImageInfo { format: Format::Jpeg, width: header.width, height: header.height, orientation, has_alpha: false }
}

fn decode_jpeg(data: &[u8], opts: &DecodeOptions) -> Result<Decoded, ImageError> {
    let header = jpeg::read_header(data)?;
    check_pixels(header.width, header.height, opts.max_pixels)?;
    let meta = jpeg::scan_markers(data);
    let info = jpeg_info(&header, &meta);
    // The target is in display coordinates; the decoder works in stored ones.
    let min_stored = opts.min_size.map(|(w, h)| info.orientation.apply_dims(w, h));
    let scale = jpeg::choose_scale(header.width, header.height, min_stored);
    let (image, profile_applied) = jpeg::decode(data, &header, scale, meta.icc.as_deref(), meta.adobe)?;
    tracing::debug!(
        width = header.width,
        height = header.height,
        scale = %scale,
        decoded_w = image.width,
        decoded_h = image.height,
        "jpeg decoded"
    );
    let icc = if header.cmyk || profile_applied { None } else { meta.icc.filter(|p| p.get(16..20) == Some(b"RGB ")) };
    Ok(Decoded { info, image, icc })
}

/// Runs decoder code, turning a panic in a decoder into a corrupt-input error.
fn guarded<T>(f: impl FnOnce() -> Result<T, ImageError>) -> Result<T, ImageError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(ImageError::Corrupt("the decoder failed on malformed data".into())),
    }
}

fn image_format(format: Format) -> image::ImageFormat {
    match format {
        Format::Png => image::ImageFormat::Png,
        Format::Webp => image::ImageFormat::WebP,
        Format::Gif => image::ImageFormat::Gif,
        Format::Tiff => image::ImageFormat::Tiff,
        Format::Jpeg => image::ImageFormat::Jpeg,
    }
}

/// Opens a non-JPEG decoder after checking the dimensions in the raw header bytes, then checks
/// the decoder's own view of them too.
fn open_other(format: Format, data: &[u8], max_pixels: u64) -> Result<(ImageInfo, impl ImageDecoder + '_), ImageError> {
    if let Some((w, h)) = header_dims(format, data)? {
        check_pixels(w, h, max_pixels)?;
    }
    let mut limits = image::Limits::default();
    // Room for the largest allowed image at 16 bits per channel with alpha, plus the
    // decoder's working memory.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    let mut reader = ImageReader::with_format(Cursor::new(data), image_format(format));
    reader.limits(limits);
    let mut dec = reader.into_decoder().map_err(|e| map_err(format, e, None))?;
    let (width, height) = dec.dimensions();
    check_pixels(width, height, max_pixels)?;
    let orientation = match dec.orientation() {
        Ok(o) => Orientation::from_exif(o.to_exif() as u32),
        Err(_) => Orientation::Normal,
    };
    let has_alpha = dec.color_type().has_alpha();
    Ok((ImageInfo { format, width, height, orientation, has_alpha }, dec))
}

fn read_other(dec: impl ImageDecoder, info: &ImageInfo, max_pixels: u64) -> Result<Image, ImageError> {
    let (width, height, has_alpha) = (info.width, info.height, info.has_alpha);
    let ct = dec.color_type();
    let map = |e| map_err(info.format, e, Some((width, height, max_pixels)));
    let kind = if has_alpha { PixelKind::Rgba8 } else { PixelKind::Rgb8 };
    if (ct == ColorType::Rgb8 && !has_alpha) || (ct == ColorType::Rgba8 && has_alpha) {
        // Straight into our buffer: no conversion copy.
        let mut buf = vec![0u8; super::byte_len(width, height, kind)?];
        dec.read_image(&mut buf).map_err(map)?;
        return Image::new(width, height, kind, buf);
    }
    let img = DynamicImage::from_decoder(dec).map_err(map)?;
    let data = if has_alpha { img.into_rgba8().into_raw() } else { img.into_rgb8().into_raw() };
    Image::new(width, height, kind, data)
}

fn map_err(format: Format, e: image::ImageError, dims: Option<(u32, u32, u64)>) -> ImageError {
    use image::ImageError as E;
    let name = format.name();
    match e {
        E::Unsupported(u) => ImageError::Unsupported(format!("{name}: {u}")),
        E::Limits(l) => match dims {
            // The decoder needs more memory than an image this size should: refuse it as a bomb.
            Some((width, height, limit)) => ImageError::TooManyPixels { width, height, limit },
            None => ImageError::Corrupt(format!("{name}: {l}")),
        },
        E::Decoding(d) => ImageError::Corrupt(format!("{name}: {d}")),
        E::Parameter(p) => ImageError::Corrupt(format!("{name}: {p}")),
        E::IoError(io) => ImageError::Corrupt(format!("{name}: {io}")),
        E::Encoding(x) => ImageError::Internal(format!("{name}: {x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::testutil::*;

    #[test]
    fn garbage_truncated_and_empty_inputs_fail_cleanly() {
        let jpeg = jpeg_bytes(64, 48, 90);
        let png = png_bytes(&gradient(40, 30, PixelKind::Rgba8));
        let webp = webp_bytes(&gradient(40, 30, PixelKind::Rgb8));
        let gif = gif_bytes(&gradient(20, 10, PixelKind::Rgba8));
        let tiff = tiff_bytes(&gradient(20, 10, PixelKind::Rgb8));
        for (name, full) in [("jpeg", &jpeg), ("png", &png), ("webp", &webp), ("gif", &gif), ("tiff", &tiff)] {
            assert!(decode(full, &DecodeOptions::default()).is_ok(), "{name} full");
            for cut in [0, 1, 2, 3, 8, 16, 30, full.len() / 3, full.len() / 2, full.len() - 10] {
                let r = decode(&full[..cut], &DecodeOptions::default());
                match r {
                    Err(ImageError::Corrupt(_)) | Err(ImageError::Unsupported(_)) => {}
                    other => panic!("{name} cut at {cut}: {other:?}"),
                }
                let _ = probe(&full[..cut], 1 << 30);
            }
            // Flipped bytes in the middle never panic.
            let mut bad = full.clone();
            for i in (20..bad.len()).step_by(7) {
                bad[i] ^= 0x5a;
            }
            let _ = decode(&bad, &DecodeOptions::default());
        }
        assert!(matches!(decode(b"", &DecodeOptions::default()), Err(ImageError::Corrupt(_))));
        assert!(matches!(decode(b"just some text", &DecodeOptions::default()), Err(ImageError::Unsupported(_))));
        assert!(matches!(decode(&[0x13; 100], &DecodeOptions::default()), Err(ImageError::Corrupt(_))));
    }

    #[test]
    fn png_decompression_bomb_is_refused_from_the_header() {
        let bomb = png_header_only(30000, 30000);
        let limit = 100_000_000;
        assert!(matches!(probe(&bomb, limit), Err(ImageError::TooManyPixels { width: 30000, height: 30000, .. })));
        let opts = DecodeOptions { max_pixels: limit, min_size: None };
        assert!(matches!(decode(&bomb, &opts), Err(ImageError::TooManyPixels { .. })));
        // A small image under a tiny limit is refused too; at the limit it passes.
        let png = png_bytes(&gradient(40, 30, PixelKind::Rgb8));
        assert!(matches!(probe(&png, 1199), Err(ImageError::TooManyPixels { .. })));
        assert!(probe(&png, 1200).is_ok());
        let jpeg = jpeg_bytes(64, 48, 90);
        assert!(matches!(decode(&jpeg, &DecodeOptions { max_pixels: 100, min_size: None }), Err(ImageError::TooManyPixels { .. })));
    }

    #[test]
    fn jpeg_shrinks_on_load_and_respects_orientation() {
        let jpeg = jpeg_bytes(800, 600, 85);
        let info = probe(&jpeg, u64::MAX).unwrap();
        assert_eq!((info.format, info.width, info.height), (Format::Jpeg, 800, 600));
        let d = decode(&jpeg, &DecodeOptions { max_pixels: u64::MAX, min_size: Some((100, 75)) }).unwrap();
        assert_eq!((d.image.width, d.image.height), (100, 75));
        let d = decode(&jpeg, &DecodeOptions { max_pixels: u64::MAX, min_size: Some((101, 75)) }).unwrap();
        assert_eq!((d.image.width, d.image.height), (200, 150));
        // Rotated 90°: the display is 600x800, so needing 150 wide means 150 of the stored height.
        let rotated = with_exif_orientation(&jpeg, 6);
        let info = probe(&rotated, u64::MAX).unwrap();
        assert_eq!(info.orientation, Orientation::Rotate90);
        assert_eq!(info.oriented_dims(), (600, 800));
        let d = decode(&rotated, &DecodeOptions { max_pixels: u64::MAX, min_size: Some((150, 100)) }).unwrap();
        assert_eq!((d.image.width, d.image.height), (200, 150));
        // Progressive JPEGs decode and shrink too.
        let prog = jpeg_progressive_bytes(640, 480);
        let d = decode(&prog, &DecodeOptions { max_pixels: u64::MAX, min_size: Some((80, 60)) }).unwrap();
        assert_eq!((d.image.width, d.image.height), (80, 60));
    }

    #[test]
    fn other_formats_decode_with_alpha_and_colour_as_expected() {
        let rgba = gradient(40, 30, PixelKind::Rgba8);
        let d = decode(&png_bytes(&rgba), &DecodeOptions::default()).unwrap();
        assert_eq!(d.image, rgba);
        assert!(d.info.has_alpha);
        let rgb = gradient(40, 30, PixelKind::Rgb8);
        let d = decode(&png_bytes(&rgb), &DecodeOptions::default()).unwrap();
        assert_eq!(d.image, rgb);
        let d = decode(&tiff_bytes(&rgb), &DecodeOptions::default()).unwrap();
        assert_eq!(d.image, rgb);
        let d = decode(&gif_bytes(&rgba), &DecodeOptions::default()).unwrap();
        assert_eq!((d.image.width, d.image.height, d.image.pixels), (40, 30, PixelKind::Rgba8));
        let d = decode(&webp_bytes(&rgb), &DecodeOptions::default()).unwrap();
        assert_eq!((d.image.width, d.image.height), (40, 30));
        // Grey 16-bit PNG becomes 8-bit RGB.
        let grey16 = image::DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(8, 4, |x, _| image::Luma([x as u16 * 8000])));
        let mut buf = Vec::new();
        grey16.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png).unwrap();
        let d = decode(&buf, &DecodeOptions::default()).unwrap();
        assert_eq!(d.image.pixels, PixelKind::Rgb8);
        assert_eq!(d.image.rgba_at(7, 0)[0], d.image.rgba_at(7, 0)[2]);
    }

    #[test]
    fn jpeg_icc_profile_is_reported_for_conversion() {
        let jpeg = with_icc(&jpeg_bytes(32, 32, 90), &crate::image::color::adobe_rgb_like_profile());
        let d = decode(&jpeg, &DecodeOptions::default()).unwrap();
        assert!(d.icc.is_some());
        assert!(crate::image::SrgbTransform::from_icc(d.icc.as_deref().unwrap()).is_some());
    }
}
