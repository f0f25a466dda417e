//! Fit modes: where a source image goes in an output box. Pure arithmetic, no pixels.
//!
//! - `cover`: fill the box exactly, keeping the aspect ratio; the overflow is cropped, centred.
//! - `contain`: fit inside the box keeping the aspect ratio, then pad to the exact box size
//!   (with the caller's background: transparent where the format has alpha, else white).
//! - `fill`: stretch to the exact box size, ignoring the aspect ratio.
//! - `inside`: fit inside the box keeping the aspect ratio, no padding, and never enlarge (a
//!   source smaller than the box is kept at its size), as thumbnailers do.
//!
//! With only a width or only a height the other side follows the aspect ratio (then every mode
//! scales to that side; `inside` still never enlarges).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    Cover,
    Contain,
    Fill,
    #[default]
    Inside,
}

/// A region of the source, in source pixels (fractional: the resizer samples sub-pixel).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropRect {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// How one output is made from a source: resize `crop` to `resize`, place it at `offset` on a
/// `canvas`-sized image (the canvas equals `resize` except for `contain`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub crop: CropRect,
    pub resize: (u32, u32),
    pub canvas: (u32, u32),
    pub offset: (u32, u32),
}

impl Plan {
    /// Whether the canvas is larger than the resized image (padding needed).
    pub fn pads(&self) -> bool {
        self.canvas != self.resize
    }

    /// The smallest source size (for a source of `src` dims) that still gives at least one
    /// source pixel per output pixel: what shrink-on-load may decode down to.
    pub fn min_source(&self, src: (u32, u32)) -> (u32, u32) {
        let need = |out: u32, crop: f64, full: u32| -> u32 {
            let v = (out as f64 * full as f64 / crop.max(1e-9) - 1e-6).ceil();
            (v.max(1.0) as u32).min(full)
        };
        (need(self.resize.0, self.crop.width, src.0), need(self.resize.1, self.crop.height, src.1))
    }

    /// The same plan for the source decoded at another size (`from` → `to`, e.g. after JPEG
    /// shrink-on-load): the crop is scaled, the output stays the same.
    pub fn rescaled(&self, from: (u32, u32), to: (u32, u32)) -> Plan {
        let sx = to.0 as f64 / from.0.max(1) as f64;
        let sy = to.1 as f64 / from.1.max(1) as f64;
        let c = self.crop;
        let mut crop = CropRect { left: c.left * sx, top: c.top * sy, width: c.width * sx, height: c.height * sy };
        crop.width = crop.width.min(to.0 as f64 - crop.left).max(1e-3);
        crop.height = crop.height.min(to.1 as f64 - crop.top).max(1e-3);
        Plan { crop, ..*self }
    }
}

fn round_dim(v: f64, max: u32) -> u32 {
    (v.round().max(1.0) as u32).min(max.max(1))
}

/// Plans one output for a source of `src` = (width, height) pixels (display orientation).
pub fn plan(src: (u32, u32), width: Option<u32>, height: Option<u32>, fit: Fit) -> Plan {
    let (sw, sh) = (src.0.max(1), src.1.max(1));
    let (fw, fh) = (sw as f64, sh as f64);
    let full = CropRect { left: 0.0, top: 0.0, width: fw, height: fh };
    let simple = |w: u32, h: u32| Plan { crop: full, resize: (w, h), canvas: (w, h), offset: (0, 0) };
    let (bw, bh) = match (width, height) {
        (None, None) => return simple(sw, sh),
        (Some(w), None) => {
            let w = if fit == Fit::Inside { w.min(sw) } else { w };
            return simple(w.max(1), round_dim(fh * w as f64 / fw, u32::MAX));
        }
        (None, Some(h)) => {
            let h = if fit == Fit::Inside { h.min(sh) } else { h };
            return simple(round_dim(fw * h as f64 / fh, u32::MAX), h.max(1));
        }
        (Some(w), Some(h)) => (w.max(1), h.max(1)),
    };
    let (kx, ky) = (bw as f64 / fw, bh as f64 / fh);
    match fit {
        Fit::Fill => simple(bw, bh),
        Fit::Inside => {
            let s = kx.min(ky).min(1.0);
            simple(round_dim(fw * s, bw), round_dim(fh * s, bh))
        }
        Fit::Contain => {
            let s = kx.min(ky);
            let (rw, rh) = (round_dim(fw * s, bw), round_dim(fh * s, bh));
            Plan { crop: full, resize: (rw, rh), canvas: (bw, bh), offset: ((bw - rw) / 2, (bh - rh) / 2) }
        }
        Fit::Cover => {
            let s = kx.max(ky);
            let (cw, ch) = ((bw as f64 / s).min(fw), (bh as f64 / s).min(fh));
            let crop = CropRect { left: (fw - cw) / 2.0, top: (fh - ch) / 2.0, width: cw, height: ch };
            Plan { crop, resize: (bw, bh), canvas: (bw, bh), offset: (0, 0) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_keeps_aspect_and_never_enlarges() {
        let p = plan((6000, 4000), Some(256), Some(256), Fit::Inside);
        assert_eq!((p.resize, p.canvas), ((256, 171), (256, 171)));
        assert_eq!(p.crop, CropRect { left: 0.0, top: 0.0, width: 6000.0, height: 4000.0 });
        let p = plan((4000, 6000), Some(256), Some(256), Fit::Inside);
        assert_eq!(p.resize, (171, 256));
        let p = plan((100, 50), Some(256), Some(256), Fit::Inside);
        assert_eq!(p.resize, (100, 50));
        // Extreme aspect ratios never reach zero.
        let p = plan((10000, 1), Some(100), Some(100), Fit::Inside);
        assert_eq!(p.resize, (100, 1));
    }

    #[test]
    fn cover_fills_and_crops_the_centre() {
        let p = plan((6000, 4000), Some(256), Some(256), Fit::Cover);
        assert_eq!((p.resize, p.canvas, p.offset), ((256, 256), (256, 256), (0, 0)));
        assert_eq!(p.crop, CropRect { left: 1000.0, top: 0.0, width: 4000.0, height: 4000.0 });
        let p = plan((400, 800), Some(200), Some(100), Fit::Cover);
        assert_eq!(p.crop, CropRect { left: 0.0, top: 300.0, width: 400.0, height: 200.0 });
        // Enlarges a small source.
        let p = plan((50, 50), Some(100), Some(200), Fit::Cover);
        assert_eq!(p.resize, (100, 200));
        assert_eq!(p.crop.width, 25.0);
    }

    #[test]
    fn contain_pads_to_the_box_and_fill_stretches() {
        let p = plan((6000, 4000), Some(256), Some(256), Fit::Contain);
        assert_eq!((p.resize, p.canvas, p.offset), ((256, 171), (256, 256), (0, 42)));
        assert!(p.pads());
        let p = plan((100, 50), Some(300), Some(300), Fit::Contain);
        assert_eq!((p.resize, p.offset), ((300, 150), (0, 75)));
        let p = plan((6000, 4000), Some(256), Some(256), Fit::Fill);
        assert_eq!((p.resize, p.canvas), ((256, 256), (256, 256)));
        assert!(!p.pads());
    }

    #[test]
    fn one_side_given_follows_the_aspect_ratio() {
        for fit in [Fit::Cover, Fit::Contain, Fit::Fill, Fit::Inside] {
            assert_eq!(plan((6000, 4000), Some(300), None, fit).canvas, (300, 200), "{fit:?}");
            assert_eq!(plan((6000, 4000), None, Some(100), fit).canvas, (150, 100), "{fit:?}");
        }
        assert_eq!(plan((200, 100), Some(400), None, Fit::Inside).canvas, (200, 100));
        assert_eq!(plan((200, 100), Some(400), None, Fit::Cover).canvas, (400, 200));
        assert_eq!(plan((200, 100), None, None, Fit::Cover).canvas, (200, 100));
    }

    #[test]
    fn min_source_and_rescale() {
        let src = (6000, 4000);
        let p = plan(src, Some(256), Some(256), Fit::Inside);
        assert_eq!(p.min_source(src), (256, 171));
        let p = plan(src, Some(256), Some(256), Fit::Cover);
        assert_eq!(p.min_source(src), (384, 256));
        let p = plan(src, Some(256), Some(256), Fit::Fill);
        assert_eq!(p.min_source(src), (256, 256));
        // Enlarging needs the whole source, no more.
        let p = plan((50, 50), Some(100), Some(100), Fit::Cover);
        assert_eq!(p.min_source((50, 50)), (50, 50));
        let p = plan(src, Some(256), Some(256), Fit::Cover).rescaled(src, (750, 500));
        assert_eq!(p.crop, CropRect { left: 125.0, top: 0.0, width: 500.0, height: 500.0 });
        assert_eq!(p.resize, (256, 256));
    }
}
