//! Compositing: flatten alpha onto a background, pad onto a canvas, and watermark.

use super::{Image, ImageError, PixelKind};
use serde::{Deserialize, Serialize};

/// Where a watermark sits on the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gravity {
    North,
    South,
    East,
    West,
    #[serde(alias = "center")]
    Centre,
    NorthEast,
    NorthWest,
    #[default]
    SouthEast,
    SouthWest,
}

impl Gravity {
    /// Top-left position of an `inner`-sized box in an `outer`-sized one, `margin` from the
    /// edges it leans on.
    pub fn place(self, outer: (u32, u32), inner: (u32, u32), margin: u32) -> (u32, u32) {
        let free_x = outer.0.saturating_sub(inner.0);
        let free_y = outer.1.saturating_sub(inner.1);
        let (lo_x, hi_x) = (margin.min(free_x), free_x.saturating_sub(margin));
        let (lo_y, hi_y) = (margin.min(free_y), free_y.saturating_sub(margin));
        let (cx, cy) = (free_x / 2, free_y / 2);
        match self {
            Gravity::North => (cx, lo_y),
            Gravity::South => (cx, hi_y),
            Gravity::East => (hi_x, cy),
            Gravity::West => (lo_x, cy),
            Gravity::Centre => (cx, cy),
            Gravity::NorthEast => (hi_x, lo_y),
            Gravity::NorthWest => (lo_x, lo_y),
            Gravity::SouthEast => (hi_x, hi_y),
            Gravity::SouthWest => (lo_x, hi_y),
        }
    }
}

#[inline]
fn blend(fg: u8, bg: u8, a: u32) -> u8 {
    // a in 0..=255; rounded fg*a + bg*(255-a) over 255.
    ((fg as u32 * a + bg as u32 * (255 - a) + 127) / 255) as u8
}

/// Drops the alpha channel by compositing onto `bg` (RGB). `Rgb8` images pass through.
pub fn flatten(img: Image, bg: [u8; 3]) -> Image {
    if img.pixels == PixelKind::Rgb8 {
        return img;
    }
    let data = img
        .data
        .chunks_exact(4)
        .flat_map(|p| {
            let a = p[3] as u32;
            [blend(p[0], bg[0], a), blend(p[1], bg[1], a), blend(p[2], bg[2], a)]
        })
        .collect();
    Image { width: img.width, height: img.height, pixels: PixelKind::Rgb8, data }
}

/// Places `img` at `offset` on a `canvas`-sized image filled with `bg` (RGBA). The result has
/// alpha when the image or the background has.
pub fn pad(img: &Image, canvas: (u32, u32), offset: (u32, u32), bg: [u8; 4]) -> Result<Image, ImageError> {
    let kind = if img.pixels.has_alpha() || bg[3] < 255 { PixelKind::Rgba8 } else { PixelKind::Rgb8 };
    let mut out = Image::filled(canvas.0, canvas.1, kind, bg)?;
    let (c_in, c_out) = (img.channels(), kind.channels());
    let w = img.width.min(canvas.0.saturating_sub(offset.0)) as usize;
    let h = img.height.min(canvas.1.saturating_sub(offset.1)) as usize;
    for y in 0..h {
        let src = &img.data[y * img.width as usize * c_in..][..w * c_in];
        let start = ((offset.1 as usize + y) * canvas.0 as usize + offset.0 as usize) * c_out;
        let dst = &mut out.data[start..start + w * c_out];
        if c_in == c_out {
            dst.copy_from_slice(src);
        } else {
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(3)) {
                d[..3].copy_from_slice(s);
                d[3] = 255;
            }
        }
    }
    Ok(out)
}

/// Composites `mark` onto `base` at `gravity`, `margin` pixels from the edges, with its alpha
/// multiplied by `opacity` (0..=1). A mark larger than the base (less its margins) is scaled
/// down to fit first.
pub fn watermark(base: &mut Image, mark: &Image, gravity: Gravity, opacity: f32, margin: u32) -> Result<(), ImageError> {
    let opacity = if opacity.is_finite() { opacity.clamp(0.0, 1.0) } else { 1.0 };
    let room = (base.width.saturating_sub(margin.saturating_mul(2)).max(1), base.height.saturating_sub(margin.saturating_mul(2)).max(1));
    let scaled = super::resize::shrink_to_fit(mark, room)?;
    let mark = scaled.as_ref().unwrap_or(mark);
    let (x0, y0) = gravity.place((base.width, base.height), (mark.width, mark.height), margin);
    let op = (opacity * 256.0).round() as u32; // 0..=256
    let (cb, cm) = (base.channels(), mark.channels());
    let w = mark.width.min(base.width - x0) as usize;
    let h = mark.height.min(base.height - y0) as usize;
    for y in 0..h {
        let mrow = &mark.data[y * mark.width as usize * cm..][..w * cm];
        let start = ((y0 as usize + y) * base.width as usize + x0 as usize) * cb;
        let brow = &mut base.data[start..start + w * cb];
        for (b, m) in brow.chunks_exact_mut(cb).zip(mrow.chunks_exact(cm)) {
            let ma = if cm == 4 { m[3] as u32 } else { 255 };
            let a = (ma * op) >> 8; // 0..=255
            if a == 0 {
                continue;
            }
            if cb == 3 {
                for c in 0..3 {
                    b[c] = blend(m[c], b[c], a);
                }
            } else {
                // Straight-alpha "over".
                let ba = b[3] as u32;
                let out_a = a * 255 + ba * (255 - a); // scaled by 255
                for c in 0..3 {
                    let v = (m[c] as u32 * a * 255 + b[c] as u32 * ba * (255 - a) + out_a / 2) / out_a.max(1);
                    b[c] = v.min(255) as u8;
                }
                b[3] = ((out_a + 127) / 255) as u8;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gravity_places_with_margins() {
        let (o, i, m) = ((100, 50), (20, 10), 5);
        assert_eq!(Gravity::NorthWest.place(o, i, m), (5, 5));
        assert_eq!(Gravity::SouthEast.place(o, i, m), (75, 35));
        assert_eq!(Gravity::Centre.place(o, i, m), (40, 20));
        assert_eq!(Gravity::North.place(o, i, m), (40, 5));
        assert_eq!(Gravity::East.place(o, i, m), (75, 20));
        // Too big for the margin: clamps inside.
        assert_eq!(Gravity::SouthEast.place((20, 10), (20, 10), 5), (0, 0));
        let g: Gravity = serde_json::from_str("\"south-east\"").unwrap();
        assert_eq!(g, Gravity::SouthEast);
        assert_eq!(serde_json::from_str::<Gravity>("\"center\"").unwrap(), Gravity::Centre);
    }

    #[test]
    fn flatten_and_pad() {
        let img = Image::new(2, 1, PixelKind::Rgba8, vec![0, 0, 0, 0, 10, 20, 30, 255]).unwrap();
        let flat = flatten(img.clone(), [255, 255, 255]);
        assert_eq!(flat.data, vec![255, 255, 255, 10, 20, 30]);
        let rgb = Image::new(1, 1, PixelKind::Rgb8, vec![1, 2, 3]).unwrap();
        let p = pad(&rgb, (3, 2), (1, 1), [0, 0, 0, 0]).unwrap();
        assert_eq!(p.pixels, PixelKind::Rgba8);
        assert_eq!(p.rgba_at(1, 1), [1, 2, 3, 255]);
        assert_eq!(p.rgba_at(0, 0), [0, 0, 0, 0]);
        let p = pad(&rgb, (3, 2), (2, 0), [255, 255, 255, 255]).unwrap();
        assert_eq!(p.pixels, PixelKind::Rgb8);
        assert_eq!(p.rgba_at(2, 0), [1, 2, 3, 255]);
        assert_eq!(p.rgba_at(0, 1), [255, 255, 255, 255]);
    }

    #[test]
    fn watermark_blends_with_opacity_and_scales_down() {
        let mut base = Image::filled(40, 20, PixelKind::Rgb8, [0, 0, 0, 255]).unwrap();
        let mark = Image::filled(10, 10, PixelKind::Rgba8, [255, 255, 255, 255]).unwrap();
        watermark(&mut base, &mark, Gravity::SouthEast, 0.5, 2).unwrap();
        assert_eq!(base.rgba_at(0, 0), [0, 0, 0, 255]);
        let v = base.rgba_at(37, 17)[0];
        assert!((126..=130).contains(&v), "{v}");
        assert_eq!(base.rgba_at(27, 7)[0], 0); // just outside the mark
        assert!(base.rgba_at(28, 8)[0] > 100);

        // A mark bigger than the base is shrunk to fit inside the margins.
        let mut base = Image::filled(30, 30, PixelKind::Rgba8, [0, 0, 0, 0]).unwrap();
        let big = Image::filled(100, 50, PixelKind::Rgba8, [255, 0, 0, 255]).unwrap();
        watermark(&mut base, &big, Gravity::Centre, 1.0, 5).unwrap();
        assert_eq!(base.rgba_at(15, 15), [255, 0, 0, 255]);
        assert_eq!(base.rgba_at(2, 15), [0, 0, 0, 0]);
        assert_eq!(base.rgba_at(15, 2), [0, 0, 0, 0]);
    }
}
