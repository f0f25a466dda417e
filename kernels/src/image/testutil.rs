//! Generated test images and hand-built containers for the image module's tests.

use super::{Image, PixelKind};
use std::io::Cursor;

/// A smooth gradient with a varying alpha (for `Rgba8`).
pub fn gradient(w: u32, h: u32, kind: PixelKind) -> Image {
    let mut data = Vec::with_capacity((w * h) as usize * kind.channels());
    for y in 0..h {
        for x in 0..w {
            let px = [(x * 255 / w.max(2)) as u8, (y * 255 / h.max(2)) as u8, 128, (128 + (x + y) % 128) as u8];
            data.extend_from_slice(&px[..kind.channels()]);
        }
    }
    Image::new(w, h, kind, data).unwrap()
}

pub fn jpeg_bytes(w: u32, h: u32, quality: u8) -> Vec<u8> {
    super::jpeg::encode_rgb(&gradient(w, h, PixelKind::Rgb8), quality).unwrap()
}

pub fn jpeg_progressive_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = gradient(w, h, PixelKind::Rgb8);
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_progressive(true).unwrap();
    c.set_quality(80).unwrap();
    let src = turbojpeg::Image {
        pixels: img.data.as_slice(),
        width: w as usize,
        pitch: w as usize * 3,
        height: h as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    c.compress_to_vec(src).unwrap()
}

fn dynamic(img: &Image) -> image::DynamicImage {
    match img.pixels {
        PixelKind::Rgb8 => image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(img.width, img.height, img.data.clone()).unwrap()),
        PixelKind::Rgba8 => image::DynamicImage::ImageRgba8(image::RgbaImage::from_raw(img.width, img.height, img.data.clone()).unwrap()),
    }
}

fn encode_with(img: &Image, f: image::ImageFormat) -> Vec<u8> {
    let mut buf = Vec::new();
    dynamic(img).write_to(&mut Cursor::new(&mut buf), f).unwrap();
    buf
}

pub fn png_bytes(img: &Image) -> Vec<u8> {
    encode_with(img, image::ImageFormat::Png)
}
pub fn gif_bytes(img: &Image) -> Vec<u8> {
    encode_with(img, image::ImageFormat::Gif)
}
pub fn tiff_bytes(img: &Image) -> Vec<u8> {
    encode_with(img, image::ImageFormat::Tiff)
}
pub fn webp_bytes(img: &Image) -> Vec<u8> {
    super::encode::encode(img, &super::EncodeOptions { format: super::OutputFormat::Webp, quality: 90, lossless: true, background: [255; 3] })
        .unwrap()
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    let mut c = kind.to_vec();
    c.extend_from_slice(body);
    out.extend_from_slice(&c);
    out.extend_from_slice(&crc32(&c).to_be_bytes());
}

/// A well-formed PNG whose IHDR claims `w`×`h` but whose data is a few bytes: a
/// decompression bomb's header.
pub fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A big-endian TIFF-structured EXIF block with one tag: Orientation = `v`.
pub fn exif_with_orientation(v: u16) -> Vec<u8> {
    let mut t = b"MM\0*\0\0\0\x08".to_vec();
    t.extend_from_slice(&1u16.to_be_bytes()); // one entry
    t.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    t.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    t.extend_from_slice(&1u32.to_be_bytes()); // count
    t.extend_from_slice(&v.to_be_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    t
}

fn insert_segment(jpeg: &[u8], marker: u8, body: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// The JPEG with an APP1 EXIF segment carrying orientation `v`.
pub fn with_exif_orientation(jpeg: &[u8], v: u16) -> Vec<u8> {
    let mut body = b"Exif\0\0".to_vec();
    body.extend_from_slice(&exif_with_orientation(v));
    insert_segment(jpeg, 0xE1, &body)
}

/// The JPEG with an ICC profile in one APP2 segment.
pub fn with_icc(jpeg: &[u8], icc: &[u8]) -> Vec<u8> {
    let mut body = b"ICC_PROFILE\0\x01\x01".to_vec();
    body.extend_from_slice(icc);
    insert_segment(jpeg, 0xE2, &body)
}
