//! EXIF orientation (1-8): reading it from EXIF data and applying it so the image is upright.

use super::{Image, ImageError};

/// The EXIF orientation tag's values, named for what displaying the stored image needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Orientation {
    /// 1
    #[default]
    Normal,
    /// 2
    FlipH,
    /// 3
    Rotate180,
    /// 4
    FlipV,
    /// 5: mirror across the main diagonal.
    Transpose,
    /// 6: rotate 90° clockwise.
    Rotate90,
    /// 7: mirror across the anti-diagonal.
    Transverse,
    /// 8: rotate 270° clockwise (90° counter-clockwise).
    Rotate270,
}

impl Orientation {
    /// From the EXIF value; anything outside 1-8 is treated as 1 (as browsers do).
    pub fn from_exif(v: u32) -> Orientation {
        match v {
            2 => Orientation::FlipH,
            3 => Orientation::Rotate180,
            4 => Orientation::FlipV,
            5 => Orientation::Transpose,
            6 => Orientation::Rotate90,
            7 => Orientation::Transverse,
            8 => Orientation::Rotate270,
            _ => Orientation::Normal,
        }
    }

    pub fn to_exif(self) -> u32 {
        match self {
            Orientation::Normal => 1,
            Orientation::FlipH => 2,
            Orientation::Rotate180 => 3,
            Orientation::FlipV => 4,
            Orientation::Transpose => 5,
            Orientation::Rotate90 => 6,
            Orientation::Transverse => 7,
            Orientation::Rotate270 => 8,
        }
    }

    /// Whether applying it swaps width and height.
    pub fn swaps_dims(self) -> bool {
        matches!(self, Orientation::Transpose | Orientation::Rotate90 | Orientation::Transverse | Orientation::Rotate270)
    }

    /// Dimensions after applying it to a `w`×`h` image.
    pub fn apply_dims(self, w: u32, h: u32) -> (u32, u32) {
        if self.swaps_dims() {
            (h, w)
        } else {
            (w, h)
        }
    }

    /// Reads the orientation from a TIFF-structured EXIF block (as in JPEG APP1 after
    /// `Exif\0\0`, or a PNG `eXIf` chunk). Unreadable EXIF means [`Orientation::Normal`].
    pub fn from_exif_block(tiff: &[u8]) -> Orientation {
        let Ok(exif) = exif::Reader::new().read_raw(tiff.to_vec()) else {
            return Orientation::Normal;
        };
        exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
            .and_then(|f| f.value.get_uint(0))
            .map(Orientation::from_exif)
            .unwrap_or_default()
    }
}

/// Applies `o` so the image is upright. Flips and 180° work in place; the rest make one copy.
pub fn apply(img: Image, o: Orientation) -> Result<Image, ImageError> {
    match img.channels() {
        3 => apply_n::<3>(img, o),
        4 => apply_n::<4>(img, o),
        c => Err(ImageError::Internal(format!("orient: {c} channels"))),
    }
}

fn apply_n<const C: usize>(mut img: Image, o: Orientation) -> Result<Image, ImageError> {
    let (w, h) = (img.width as usize, img.height as usize);
    let row = w * C;
    match o {
        Orientation::Normal => {}
        Orientation::FlipH => img.data.chunks_exact_mut(row).for_each(flip_row::<C>),
        Orientation::FlipV => flip_rows(&mut img.data, row, h),
        Orientation::Rotate180 => {
            flip_rows(&mut img.data, row, h);
            img.data.chunks_exact_mut(row).for_each(flip_row::<C>);
        }
        _ => {
            // Output is h×w; for output (x, y) find the source (sx, sy).
            let src = &img.data;
            let mut out = vec![0u8; src.len()];
            let (ow, oh) = (h, w);
            for y in 0..oh {
                let dst_row = &mut out[y * ow * C..(y + 1) * ow * C];
                for x in 0..ow {
                    let (sx, sy) = match o {
                        Orientation::Transpose => (y, x),
                        Orientation::Rotate90 => (y, h - 1 - x),
                        Orientation::Transverse => (w - 1 - y, h - 1 - x),
                        _ => (w - 1 - y, x), // Rotate270
                    };
                    let s = (sy * w + sx) * C;
                    dst_row[x * C..x * C + C].copy_from_slice(&src[s..s + C]);
                }
            }
            img.data = out;
            img.width = ow as u32;
            img.height = oh as u32;
        }
    }
    Ok(img)
}

fn flip_row<const C: usize>(r: &mut [u8]) {
    let n = r.len() / C;
    for i in 0..n / 2 {
        let j = n - 1 - i;
        for c in 0..C {
            r.swap(i * C + c, j * C + c);
        }
    }
}

fn flip_rows(data: &mut [u8], row: usize, h: usize) {
    for y in 0..h / 2 {
        let (top, bottom) = data.split_at_mut((h - 1 - y) * row);
        top[y * row..(y + 1) * row].swap_with_slice(&mut bottom[..row]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::PixelKind;

    /// An asymmetric 5×3 image whose every pixel is distinct.
    fn pattern(kind: PixelKind) -> Image {
        let (w, h) = (5u32, 3u32);
        let c = kind.channels();
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let px = [(x * 40) as u8, (y * 80) as u8, (x + y * w) as u8, 200 + x as u8];
                data.extend_from_slice(&px[..c]);
            }
        }
        Image::new(w, h, kind, data).unwrap()
    }

    #[test]
    fn all_eight_orientations_match_an_independent_implementation() {
        for kind in [PixelKind::Rgb8, PixelKind::Rgba8] {
            for v in 1..=8u32 {
                let img = pattern(kind);
                let ours = apply(img.clone(), Orientation::from_exif(v)).unwrap();
                // The image crate's implementation as the oracle.
                let mut theirs = match kind {
                    PixelKind::Rgb8 => image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(5, 3, img.data.clone()).unwrap()),
                    PixelKind::Rgba8 => image::DynamicImage::ImageRgba8(image::RgbaImage::from_raw(5, 3, img.data.clone()).unwrap()),
                };
                theirs.apply_orientation(image::metadata::Orientation::from_exif(v as u8).unwrap());
                assert_eq!((ours.width, ours.height), (theirs.width(), theirs.height()), "orientation {v}");
                assert_eq!(ours.data, theirs.as_bytes(), "orientation {v} {kind:?}");
                assert_eq!(Orientation::from_exif(v).apply_dims(5, 3), (ours.width, ours.height));
            }
        }
    }

    #[test]
    fn rotate90_puts_the_bottom_left_corner_at_the_top_left() {
        let img = pattern(PixelKind::Rgb8);
        let bottom_left = img.rgba_at(0, 2);
        let r = apply(img, Orientation::Rotate90).unwrap();
        assert_eq!((r.width, r.height), (3, 5));
        assert_eq!(r.rgba_at(0, 0), bottom_left);
    }

    #[test]
    fn exif_values_round_trip_and_bad_exif_is_normal() {
        for v in 1..=8 {
            assert_eq!(Orientation::from_exif(v).to_exif(), v);
        }
        assert_eq!(Orientation::from_exif(0), Orientation::Normal);
        assert_eq!(Orientation::from_exif(99), Orientation::Normal);
        assert_eq!(Orientation::from_exif_block(b"garbage"), Orientation::Normal);
        assert_eq!(Orientation::from_exif_block(&crate::image::testutil::exif_with_orientation(6)), Orientation::Rotate90);
    }
}
