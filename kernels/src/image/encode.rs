//! Encoders: JPEG (libjpeg-turbo, 4:2:0), PNG (fast deflate), WebP (libwebp, lossy or
//! lossless), AVIF (rav1e via ravif, a fast speed). No metadata is written: outputs are sRGB
//! and carry no EXIF or ICC.

use super::{composite, Image, ImageError, PixelKind};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[serde(alias = "jpg")]
    Jpeg,
    Png,
    Webp,
    Avif,
}

impl OutputFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
            OutputFormat::Avif => "image/avif",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
            OutputFormat::Avif => "avif",
        }
    }

    /// From a file name's extension (case-insensitive): `photo.JPG` → JPEG.
    pub fn from_name(name: &str) -> Option<OutputFormat> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "jpg" | "jpeg" | "jpe" => OutputFormat::Jpeg,
            "png" => OutputFormat::Png,
            "webp" => OutputFormat::Webp,
            "avif" => OutputFormat::Avif,
            _ => return None,
        })
    }

    pub fn supports_alpha(self) -> bool {
        !matches!(self, OutputFormat::Jpeg)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncodeOptions {
    pub format: OutputFormat,
    /// 1..=100, for lossy encoders.
    pub quality: u8,
    /// WebP lossless (PNG is always lossless; ignored for JPEG and AVIF).
    pub lossless: bool,
    /// What alpha is flattened onto for formats without alpha.
    pub background: [u8; 3],
}

impl EncodeOptions {
    pub fn new(format: OutputFormat) -> Self {
        EncodeOptions { format, quality: 80, lossless: false, background: [255, 255, 255] }
    }
}

/// Encodes an image. Alpha is dropped (flattened onto the background) for JPEG, and for any
/// format when every pixel is opaque anyway.
pub fn encode(img: &Image, opts: &EncodeOptions) -> Result<Vec<u8>, ImageError> {
    if img.width == 0 || img.height == 0 {
        return Err(ImageError::Internal("cannot encode an empty image".into()));
    }
    let quality = opts.quality.clamp(1, 100);
    match opts.format {
        OutputFormat::Jpeg => {
            if img.pixels.has_alpha() {
                super::jpeg::encode_rgb(&composite::flatten(img.clone(), opts.background), quality)
            } else {
                super::jpeg::encode_rgb(img, quality)
            }
        }
        OutputFormat::Png => encode_png(img),
        OutputFormat::Webp => encode_webp(img, quality, opts.lossless),
        OutputFormat::Avif => encode_avif(img, quality),
    }
}

fn encode_png(img: &Image) -> Result<Vec<u8>, ImageError> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::{ExtendedColorType, ImageEncoder};
    let ct = match img.pixels {
        PixelKind::Rgb8 => ExtendedColorType::Rgb8,
        PixelKind::Rgba8 => ExtendedColorType::Rgba8,
    };
    let mut out = Vec::with_capacity(img.data.len() / 2);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(&img.data, img.width, img.height, ct)
        .map_err(|e| ImageError::Internal(format!("png encode: {e}")))?;
    Ok(out)
}

fn encode_webp(img: &Image, quality: u8, lossless: bool) -> Result<Vec<u8>, ImageError> {
    if img.width > 16383 || img.height > 16383 {
        return Err(ImageError::Unsupported(format!("webp is limited to 16383x16383, not {}x{}", img.width, img.height)));
    }
    let enc = match img.pixels {
        PixelKind::Rgb8 => webp::Encoder::from_rgb(&img.data, img.width, img.height),
        PixelKind::Rgba8 => webp::Encoder::from_rgba(&img.data, img.width, img.height),
    };
    // Lossless: quality is the compression effort; 75 is libwebp's default balance.
    let q = if lossless { 75.0 } else { quality as f32 };
    let mem = enc.encode_simple(lossless, q).map_err(|e| ImageError::Internal(format!("webp encode: {e:?}")))?;
    Ok(mem.to_vec())
}

fn encode_avif(img: &Image, quality: u8) -> Result<Vec<u8>, ImageError> {
    use ravif::{Img, RGB8, RGBA8};
    let (w, h) = (img.width as usize, img.height as usize);
    let enc = ravif::Encoder::new().with_quality(quality as f32).with_alpha_quality(quality as f32).with_speed(9);
    let err = |e: ravif::Error| ImageError::Internal(format!("avif encode: {e}"));
    let res = match img.pixels {
        PixelKind::Rgb8 => {
            let px: Vec<RGB8> = img.data.chunks_exact(3).map(|p| RGB8::new(p[0], p[1], p[2])).collect();
            enc.encode_rgb(Img::new(px.as_slice(), w, h)).map_err(err)?
        }
        PixelKind::Rgba8 => {
            let px: Vec<RGBA8> = img.data.chunks_exact(4).map(|p| RGBA8::new(p[0], p[1], p[2], p[3])).collect();
            enc.encode_rgba(Img::new(px.as_slice(), w, h)).map_err(err)?
        }
    };
    Ok(res.avif_file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::testutil::gradient;
    use crate::image::{decode, sniff, DecodeOptions, Format};

    #[test]
    fn every_format_encodes_and_the_decodable_ones_round_trip() {
        for kind in [PixelKind::Rgb8, PixelKind::Rgba8] {
            let img = gradient(48, 32, kind);
            for format in [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp, OutputFormat::Avif] {
                let bytes = encode(&img, &EncodeOptions::new(format)).unwrap();
                assert!(bytes.len() > 20, "{format:?}");
                let expect = match format {
                    OutputFormat::Jpeg => Some(Format::Jpeg),
                    OutputFormat::Png => Some(Format::Png),
                    OutputFormat::Webp => Some(Format::Webp),
                    OutputFormat::Avif => None,
                };
                match expect {
                    Some(f) => {
                        assert_eq!(sniff(&bytes).unwrap(), f);
                        let d = decode(&bytes, &DecodeOptions::default()).unwrap();
                        assert_eq!((d.image.width, d.image.height), (48, 32));
                        assert!(d.icc.is_none(), "{format:?} must not embed a profile");
                    }
                    None => assert_eq!(&bytes[4..12], b"ftypavif"),
                }
            }
        }
    }

    #[test]
    fn png_and_lossless_webp_are_exact_and_jpeg_flattens_onto_white() {
        let img = gradient(30, 20, PixelKind::Rgba8);
        let png = encode(&img, &EncodeOptions::new(OutputFormat::Png)).unwrap();
        assert_eq!(decode(&png, &DecodeOptions::default()).unwrap().image, img);
        let opts = EncodeOptions { lossless: true, ..EncodeOptions::new(OutputFormat::Webp) };
        let webp = encode(&img, &opts).unwrap();
        assert_eq!(decode(&webp, &DecodeOptions::default()).unwrap().image, img);

        let clear = Image::filled(16, 16, PixelKind::Rgba8, [0, 0, 0, 0]).unwrap();
        let jpeg = encode(&clear, &EncodeOptions::new(OutputFormat::Jpeg)).unwrap();
        let back = decode(&jpeg, &DecodeOptions::default()).unwrap().image;
        assert!(back.rgba_at(8, 8)[0] > 250, "{:?}", back.rgba_at(8, 8));
    }

    #[test]
    fn names_give_formats() {
        assert_eq!(OutputFormat::from_name("256.webp"), Some(OutputFormat::Webp));
        assert_eq!(OutputFormat::from_name("a/b.JPG"), Some(OutputFormat::Jpeg));
        assert_eq!(OutputFormat::from_name("x.jpeg"), Some(OutputFormat::Jpeg));
        assert_eq!(OutputFormat::from_name("x.avif"), Some(OutputFormat::Avif));
        assert_eq!(OutputFormat::from_name("x.gif"), None);
        assert_eq!(OutputFormat::from_name("noext"), None);
        assert_eq!(serde_json::from_str::<OutputFormat>("\"jpg\"").unwrap(), OutputFormat::Jpeg);
    }
}
