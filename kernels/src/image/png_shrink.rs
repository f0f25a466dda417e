//! Shrink-on-load for PNG: rows are decoded one at a time and averaged into s×s boxes as they
//! arrive, so a large PNG never exists at full size in memory (for JPEG, libjpeg's DCT scaling
//! plays this part). The box factor leaves at least twice the size the caller needs, so the
//! resampling that follows still has the detail it filters (libvips shrinks the same way).
//! Interlaced PNGs, whose rows arrive in seven passes, are decoded whole as before.

use super::{Image, ImageError, ImageInfo, PixelKind};
use std::io::Cursor;

/// The box factor for an image of `width`×`height` stored pixels when the caller needs at least
/// `need` (stored coordinates): 1 means decode at full size.
pub fn factor(width: u32, height: u32, need: (u32, u32)) -> u32 {
    let ratio = |have: u32, want: u32| have / want.max(1);
    (ratio(width, need.0).min(ratio(height, need.1)) / 2).clamp(1, MOST_FACTOR)
}

/// The tallest box: an 8-bit column of it is summed in `u32` (255 × 255 per pixel).
const MOST_FACTOR: u32 = 65_536;

/// The size a PNG decodes to when the caller needs `need` (display coordinates): shrunk on load,
/// or full size when it cannot be (an interlaced file, or a need too close to the size).
pub fn decoded_dims(data: &[u8], info: &ImageInfo, need: (u32, u32)) -> (u32, u32) {
    match shrink_factor(data, info, need) {
        Some(s) => (info.width.div_ceil(s), info.height.div_ceil(s)),
        None => (info.width, info.height),
    }
}

/// The factor to shrink a PNG by on load, `None` when it is decoded whole.
fn shrink_factor(data: &[u8], info: &ImageInfo, need: (u32, u32)) -> Option<u32> {
    // IHDR is the first chunk: its interlace method is byte 12 of its data (PNG §11.2.2).
    let interlaced = data.get(8 + 8 + 12).is_none_or(|&m| m != 0);
    let need = info.orientation.apply_dims(need.0, need.1);
    let s = factor(info.width, info.height, need);
    (s >= 2 && !interlaced).then_some(s)
}

/// A shrunk image and the file's RGB ICC profile (still to be applied).
pub type Shrunk = (Image, Option<Vec<u8>>);

/// Decodes a PNG shrunk by its box factor for `need` (display coordinates), with its embedded
/// ICC profile; `None` when it is to be decoded whole (see [`decoded_dims`]). `info` is the
/// probe's (its pixel limit already checked).
pub fn decode(data: &[u8], info: &ImageInfo, need: (u32, u32)) -> Result<Option<Shrunk>, ImageError> {
    let Some(s) = shrink_factor(data, info, need) else { return Ok(None) };
    let corrupt = |e: png::DecodingError| ImageError::Corrupt(format!("PNG: {e}"));
    let mut dec = png::Decoder::new(Cursor::new(data));
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(corrupt)?;
    let (width, height) = (reader.info().width, reader.info().height);
    if (width, height) != (info.width, info.height) || reader.info().interlaced {
        return Err(ImageError::Corrupt("PNG: the header changed between probe and decode".into()));
    }
    let icc = reader.info().icc_profile.as_ref().map(|p| p.to_vec());
    let (colour, depth) = reader.output_color_type();
    let channels = colour.samples();
    let wide = depth == png::BitDepth::Sixteen;
    if !matches!(depth, png::BitDepth::Eight | png::BitDepth::Sixteen) {
        return Err(ImageError::Corrupt(format!("PNG: {depth:?}-bit samples after expansion")));
    }
    let kind = if info.has_alpha { PixelKind::Rgba8 } else { PixelKind::Rgb8 };
    let mut boxes = Boxes::new(width, s, channels, wide, kind);
    let mut out = Vec::with_capacity(super::byte_len(width.div_ceil(s), height.div_ceil(s), kind)?);
    let mut rows = 0u32;
    while let Some(row) = reader.next_row().map_err(corrupt)? {
        if rows == height {
            break;
        }
        boxes.add(row.data())?;
        rows += 1;
        if rows.is_multiple_of(s) || rows == height {
            boxes.flush(&mut out);
        }
    }
    if rows != height {
        return Err(ImageError::Corrupt(format!("PNG: {rows} of {height} rows")));
    }
    let image = Image::new(width.div_ceil(s), height.div_ceil(s), kind, out)?;
    tracing::debug!(width, height, factor = s, decoded_w = image.width, decoded_h = image.height, "png shrunk on load");
    Ok(Some((image, icc.filter(|p| p.get(16..20) == Some(b"RGB ")))))
}

/// One band of s rows being averaged. Rows are first summed per source column (red, green,
/// blue — each times alpha when there is alpha, grey in red only — and alpha): a plain loop
/// over the row that the compiler vectorises. Each s×s box is summed from its columns once per
/// band. 8-bit columns sum in `u32` (s × 255 × 255 fits while s ≤ [`MOST_FACTOR`]).
struct Boxes {
    width: u32,
    s: u32,
    channels: usize,
    wide: bool,
    kind: PixelKind,
    cols8: Vec<u32>,
    cols16: Vec<u64>,
    rows: u32,
}

impl Boxes {
    fn new(width: u32, s: u32, channels: usize, wide: bool, kind: PixelKind) -> Self {
        let n = width as usize * 4;
        let (cols8, cols16) = if wide { (Vec::new(), vec![0; n]) } else { (vec![0; n], Vec::new()) };
        Boxes { width, s, channels, wide, kind, cols8, cols16, rows: 0 }
    }

    /// Adds one decoded row (expanded to 8- or 16-bit grey, grey+alpha, RGB or RGBA).
    fn add(&mut self, row: &[u8]) -> Result<(), ImageError> {
        let bytes = if self.wide { 2 } else { 1 };
        let need = self.width as usize * self.channels * bytes;
        let row = row.get(..need).ok_or_else(|| ImageError::Corrupt("PNG: a short row".into()))?;
        match (self.channels, self.wide) {
            (1, false) => add8::<1>(&mut self.cols8, row),
            (2, false) => add8::<2>(&mut self.cols8, row),
            (3, false) => add8::<3>(&mut self.cols8, row),
            (4, false) => add8::<4>(&mut self.cols8, row),
            (1, true) => add16::<1>(&mut self.cols16, row),
            (2, true) => add16::<2>(&mut self.cols16, row),
            (3, true) => add16::<3>(&mut self.cols16, row),
            _ => add16::<4>(&mut self.cols16, row),
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends the band's averaged pixels (8-bit, rounded) to `out` and starts a new band.
    fn flush(&mut self, out: &mut Vec<u8>) {
        let alpha_in = self.channels.is_multiple_of(2);
        let grey = self.channels <= 2;
        let wide = self.wide;
        // Rounds `num / den` (in sample units) to 8 bits. 8-bit sums stay below 2^50, where
        // an f64 quotient lands on the same side of every k + ½ as the exact one (they differ
        // from it by at least 1 / 2·den) and is far cheaper than an integer division; 16-bit
        // ones take `u128`.
        let to8 = |num: u64, den: u64| -> u8 {
            if wide {
                let (num, den) = (num as u128, den as u128);
                ((num * 255 * 2 + den * 65535) / (den * 65535 * 2)).min(255) as u8
            } else {
                (num as f64 / den as f64 + 0.5).min(255.0) as u8
            }
        };
        let s = self.s as usize;
        for ox in 0..self.width.div_ceil(self.s) as usize {
            let x0 = ox * s * 4;
            let x1 = ((ox + 1) * s).min(self.width as usize) * 4;
            let mut sum = [0u64; 4];
            if self.wide {
                for c in self.cols16[x0..x1].chunks_exact(4) {
                    sum.iter_mut().zip(c).for_each(|(s, v)| *s += v);
                }
            } else {
                for c in self.cols8[x0..x1].chunks_exact(4) {
                    sum.iter_mut().zip(c).for_each(|(s, v)| *s += *v as u64);
                }
            }
            if grey {
                sum[1] = sum[0];
                sum[2] = sum[0];
            }
            let count = ((x1 - x0) / 4) as u64 * self.rows as u64;
            let (rgb, a) = if alpha_in {
                let a = sum[3];
                // Colour weighted by alpha; a fully transparent box keeps black.
                let c = |v: u64| if a == 0 { 0 } else { to8(v, a) };
                ([c(sum[0]), c(sum[1]), c(sum[2])], to8(a, count))
            } else {
                ([to8(sum[0], count), to8(sum[1], count), to8(sum[2], count)], 255)
            };
            out.extend_from_slice(&rgb);
            if self.kind == PixelKind::Rgba8 {
                out.push(a);
            }
        }
        self.cols8.fill(0);
        self.cols16.fill(0);
        self.rows = 0;
    }
}

/// Adds an 8-bit row of `C` samples a pixel to the column sums.
fn add8<const C: usize>(cols: &mut [u32], row: &[u8]) {
    let (cols, _) = cols.as_chunks_mut::<4>();
    let (row, _) = row.as_chunks::<C>();
    for (c, p) in cols.iter_mut().zip(row) {
        match C {
            1 => c[0] += p[0] as u32,
            2 => {
                let a = p[1] as u32;
                c[0] += p[0] as u32 * a;
                c[3] += a;
            }
            3 => {
                c[0] += p[0] as u32;
                c[1] += p[1] as u32;
                c[2] += p[2] as u32;
            }
            _ => {
                let a = p[3] as u32;
                *c = [c[0] + p[0] as u32 * a, c[1] + p[1] as u32 * a, c[2] + p[2] as u32 * a, c[3] + a];
            }
        }
    }
}

/// Adds a 16-bit (big-endian) row of `C` samples a pixel to the column sums.
fn add16<const C: usize>(cols: &mut [u64], row: &[u8]) {
    for (c, p) in cols.chunks_exact_mut(4).zip(row.chunks_exact(2 * C)) {
        let v = |i: usize| u16::from_be_bytes([p[2 * i], p[2 * i + 1]]) as u64;
        match C {
            1 => c[0] += v(0),
            2 => {
                let a = v(1);
                c[0] += v(0) * a;
                c[3] += a;
            }
            3 => {
                c[0] += v(0);
                c[1] += v(1);
                c[2] += v(2);
            }
            _ => {
                let a = v(3);
                c[0] += v(0) * a;
                c[1] += v(1) * a;
                c[2] += v(2) * a;
                c[3] += a;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::decode::{decode as decode_any, DecodeOptions};
    use crate::image::Orientation;
    use crate::image::testutil::*;

    /// Box-averages a full decode the way the streaming path should.
    fn reference(full: &Image, s: u32) -> Image {
        let (ow, oh) = (full.width.div_ceil(s), full.height.div_ceil(s));
        let alpha = full.pixels == PixelKind::Rgba8;
        let mut out = Vec::new();
        for oy in 0..oh {
            for ox in 0..ow {
                let mut sum = [0u64; 4];
                let mut n = 0u64;
                for y in oy * s..((oy + 1) * s).min(full.height) {
                    for x in ox * s..((ox + 1) * s).min(full.width) {
                        let p = full.rgba_at(x, y);
                        let a = if alpha { p[3] as u64 } else { 1 };
                        for (acc, v) in sum.iter_mut().zip(&p[..3]) {
                            *acc += *v as u64 * a;
                        }
                        sum[3] += p[3] as u64;
                        n += 1;
                    }
                }
                let den = if alpha { sum[3] } else { n };
                for v in &sum[..3] {
                    out.push(if den == 0 { 0 } else { ((v * 2 + den) / (den * 2)) as u8 });
                }
                if alpha {
                    out.push(((sum[3] * 2 + n) / (n * 2)) as u8);
                }
            }
        }
        Image::new(ow, oh, full.pixels, out).unwrap()
    }

    fn shrunk(data: &[u8], need: (u32, u32)) -> Image {
        decode_any(data, &DecodeOptions { max_pixels: u64::MAX, min_size: Some(need) }).unwrap().image
    }

    #[test]
    fn the_factor_leaves_twice_the_need() {
        assert_eq!(factor(2560, 1600, (256, 160)), 5);
        assert_eq!(factor(1000, 1000, (251, 100)), 1);
        assert_eq!(factor(1000, 1000, (250, 100)), 2);
        assert_eq!(factor(100, 100, (400, 400)), 1);
        assert_eq!(factor(100, 100, (0, 0)), 50);
        for (w, h, nw, nh) in [(2560, 1600, 256, 160), (1001, 333, 50, 16), (4000, 3000, 7, 640)] {
            let s = factor(w, h, (nw, nh));
            assert!(w.div_ceil(s) >= 2 * nw && h.div_ceil(s) >= 2 * nh, "{w}x{h} / {s}");
        }
    }

    #[test]
    fn rgb_and_rgba_shrink_to_the_box_average_of_the_full_decode() {
        for kind in [PixelKind::Rgb8, PixelKind::Rgba8] {
            // Odd sizes: the last column and row of boxes are partial.
            let mut img = gradient(203, 101, kind);
            if kind == PixelKind::Rgba8 {
                // Some fully transparent and half transparent pixels.
                for (i, px) in img.data.chunks_exact_mut(4).enumerate() {
                    px[3] = [0, 128, 255][i % 3];
                }
            }
            let png = png_bytes(&img);
            let full = decode_any(&png, &DecodeOptions::default()).unwrap().image;
            let got = shrunk(&png, (40, 20));
            assert_eq!((got.width, got.height), (203u32.div_ceil(2), 101u32.div_ceil(2)));
            let want = reference(&full, 2);
            assert_eq!(got, want, "{kind:?}");
            let got = shrunk(&png, (10, 10));
            assert_eq!((got.width, got.height), (203u32.div_ceil(5), 101u32.div_ceil(5)));
            assert_eq!(got, reference(&full, 5), "{kind:?} / 5");
        }
    }

    #[test]
    fn grey_sixteen_bit_and_palette_pngs_shrink_like_their_full_decode() {
        let grey16 = image::DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(64, 40, |x, y| image::Luma([(x * 1000 + y * 77) as u16])));
        let rgba16 = image::DynamicImage::ImageRgba16(image::ImageBuffer::from_fn(64, 40, |x, y| {
            image::Rgba([(x * 900) as u16, (y * 1500) as u16, 40000, if x % 4 == 0 { 0 } else { 65535 }])
        }));
        for img in [grey16, rgba16] {
            let mut png = Vec::new();
            img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
            let full = decode_any(&png, &DecodeOptions::default()).unwrap().image;
            let got = shrunk(&png, (16, 10));
            assert_eq!(got.pixels, full.pixels);
            let want = reference(&full, 2);
            // 16-bit samples are averaged before rounding to 8 bits: within one step.
            let diff = got.data.iter().zip(&want.data).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            assert!(diff <= 1, "max difference {diff}");
        }
        // A palette PNG (expanded to RGB).
        let mut enc_out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut enc_out, 30, 20);
            enc.set_color(png::ColorType::Indexed);
            enc.set_palette(vec![255, 0, 0, 0, 255, 0, 0, 0, 255]);
            let mut w = enc.write_header().unwrap();
            let pixels: Vec<u8> = (0..600).map(|i| (i % 3) as u8).collect();
            w.write_image_data(&pixels).unwrap();
        }
        let full = decode_any(&enc_out, &DecodeOptions::default()).unwrap().image;
        assert_eq!(shrunk(&enc_out, (7, 5)), reference(&full, 2));
    }

    #[test]
    fn interlaced_or_close_needs_decode_whole_and_truncation_is_corrupt() {
        let img = gradient(120, 80, PixelKind::Rgb8);
        let png = png_bytes(&img);
        // A need over half the size: full size.
        let got = shrunk(&png, (61, 10));
        assert_eq!((got.width, got.height), (120, 80));
        // Interlaced (the IHDR flag set by hand, CRC fixed): decoded whole by `image`.
        let mut adam7 = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut adam7, 120, 80);
            enc.set_color(png::ColorType::Rgb);
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&img.data).unwrap();
        }
        let info = crate::image::probe(&adam7, u64::MAX).unwrap();
        assert_eq!(decoded_dims(&adam7, &info, (20, 20)), (60, 40));
        adam7[28] = 1;
        assert_eq!(decoded_dims(&adam7, &info, (20, 20)), (120, 80));
        // Cut in the middle of the image data: a corrupt-input error, not a panic.
        for cut in [png.len() / 2, png.len() - 20] {
            let r = decode_any(&png[..cut], &DecodeOptions { max_pixels: u64::MAX, min_size: Some((10, 10)) });
            assert!(matches!(r, Err(ImageError::Corrupt(_))), "cut at {cut}: {r:?}");
        }
    }

    #[test]
    fn the_need_is_taken_in_display_orientation() {
        let png = png_bytes(&gradient(400, 100, PixelKind::Rgb8));
        let mut info = crate::image::probe(&png, u64::MAX).unwrap();
        // Needing 100 of the 100 rows: full size.
        assert_eq!(decoded_dims(&png, &info, (10, 100)), (400, 100));
        info.orientation = Orientation::Rotate90;
        // Displayed 100x400: needing 10 wide and 100 high is 100 wide and 10 high stored.
        assert_eq!(decoded_dims(&png, &info, (10, 100)), (200, 50));
    }
}
