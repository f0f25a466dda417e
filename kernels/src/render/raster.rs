//! Rasterising rectangles and placed images into [`Source`] tiles (premultiplied RGBA8).
//!
//! Rectangles are drawn analytically: a pixel's coverage is the area of the pixel square the
//! shape covers (box-filtered anti-aliasing, exact for axis-aligned edges). The stroke is
//! centred on the rectangle's edge and drawn over the fill. Images arrive already decoded and
//! resized to their box; rotation (degrees clockwise about the box's centre) is exact for
//! multiples of 90° and bilinear, with anti-aliased edges, otherwise.

use super::blend::{blend_px, fade};
use super::{premultiply, BlendMode, Source};
use crate::image::Image;

/// Area of [a0, a1] ∩ [b0, b1].
fn overlap(a0: f64, a1: f64, b0: f64, b1: f64) -> f64 {
    (a1.min(b1) - a0.max(b0)).max(0.0)
}

fn coverage8(c: f64) -> u32 {
    (c.clamp(0.0, 1.0) * 255.0).round() as u32
}

/// A filled and/or stroked rectangle, clipped to a `page`-sized canvas. `None` when nothing of
/// it is visible.
#[allow(clippy::too_many_arguments)]
pub fn rect(
    page: (u32, u32),
    (x, y, w, h): (f64, f64, f64, f64),
    fill: Option<[u8; 4]>,
    stroke: Option<([u8; 4], f64)>,
    opacity: u8,
    blend: BlendMode,
) -> Option<Source> {
    let half = stroke.map(|(_, sw)| sw.max(0.0) / 2.0).unwrap_or(0.0);
    let (ox0, oy0, ox1, oy1) = (x - half, y - half, x + w + half, y + h + half);
    let tx0 = ox0.floor().max(0.0);
    let ty0 = oy0.floor().max(0.0);
    let tx1 = ox1.ceil().min(page.0 as f64);
    let ty1 = oy1.ceil().min(page.1 as f64);
    if tx1 <= tx0 || ty1 <= ty0 {
        return None;
    }
    let (tw, th) = ((tx1 - tx0) as u32, (ty1 - ty0) as u32);
    let fill_px = fill.map(premultiply);
    let stroke_px = stroke.map(|(c, _)| premultiply(c));
    let mut pixels = vec![0u32; tw as usize * th as usize];
    for j in 0..th {
        let (py0, py1) = (ty0 + j as f64, ty0 + j as f64 + 1.0);
        for i in 0..tw {
            let (px0, px1) = (tx0 + i as f64, tx0 + i as f64 + 1.0);
            let area = |x0: f64, y0: f64, x1: f64, y1: f64| {
                if x1 <= x0 || y1 <= y0 {
                    0.0
                } else {
                    overlap(px0, px1, x0, x1) * overlap(py0, py1, y0, y1)
                }
            };
            let mut p = match fill_px {
                Some(f) => fade(f, coverage8(area(x, y, x + w, y + h))),
                None => 0,
            };
            if let Some(s) = stroke_px {
                let c = area(ox0, oy0, ox1, oy1) - area(x + half, y + half, x + w - half, y + h - half);
                p = blend_px(fade(s, coverage8(c)), p, BlendMode::Normal);
            }
            pixels[(j * tw + i) as usize] = p;
        }
    }
    Some(Source { x: tx0 as i64, y: ty0 as i64, width: tw, height: th, pixels, opacity, blend })
}

/// The premultiplied pixel at (x, y) of a straight RGB/RGBA image.
fn pm(img: &Image, x: u32, y: u32) -> u32 {
    premultiply(img.rgba_at(x, y))
}

/// A decoded image, already resized to its box, placed with its box's top-left at (`x`, `y`)
/// and rotated `rotate` degrees clockwise about the box's centre.
pub fn image(img: &Image, x: i64, y: i64, rotate: f64, opacity: u8, blend: BlendMode) -> Source {
    let (w, h) = (img.width, img.height);
    let turns = rotate.rem_euclid(360.0);
    let quarter = (turns / 90.0).round();
    if (turns - quarter * 90.0).abs() < 1e-9 {
        let q = quarter as u32 % 4;
        let (rw, rh) = if q % 2 == 1 { (h, w) } else { (w, h) };
        let mut pixels = Vec::with_capacity(rw as usize * rh as usize);
        for j in 0..rh {
            for i in 0..rw {
                // Destination (i, j) ← source pixel, clockwise rotation by q quarters.
                let (sx, sy) = match q {
                    0 => (i, j),
                    1 => (j, h - 1 - i),
                    2 => (w - 1 - i, h - 1 - j),
                    _ => (w - 1 - j, i),
                };
                pixels.push(pm(img, sx, sy));
            }
        }
        // Keep the centre where the unrotated box's centre was.
        let cx = x as f64 + w as f64 / 2.0;
        let cy = y as f64 + h as f64 / 2.0;
        let nx = (cx - rw as f64 / 2.0).round() as i64;
        let ny = (cy - rh as f64 / 2.0).round() as i64;
        return Source { x: nx, y: ny, width: rw, height: rh, pixels, opacity, blend };
    }
    rotated(img, x, y, turns.to_radians(), opacity, blend)
}

/// Arbitrary rotation: inverse-map each destination pixel centre into the source and sample
/// bilinearly (premultiplied); outside the source counts as transparent, which anti-aliases
/// the edges.
fn rotated(img: &Image, x: i64, y: i64, theta: f64, opacity: u8, blend: BlendMode) -> Source {
    let (w, h) = (img.width as f64, img.height as f64);
    let (s, c) = theta.sin_cos();
    let (cx, cy) = (x as f64 + w / 2.0, y as f64 + h / 2.0);
    let bw = (w * c.abs() + h * s.abs()).ceil();
    let bh = (w * s.abs() + h * c.abs()).ceil();
    let bx = (cx - bw / 2.0).floor();
    let by = (cy - bh / 2.0).floor();
    let (tw, th) = (bw as u32 + 1, bh as u32 + 1);
    let mut pixels = vec![0u32; tw as usize * th as usize];
    let sample = |sx: i64, sy: i64| -> [f64; 4] {
        if sx < 0 || sy < 0 || sx >= img.width as i64 || sy >= img.height as i64 {
            return [0.0; 4];
        }
        let p = pm(img, sx as u32, sy as u32);
        [(p & 255) as f64, ((p >> 8) & 255) as f64, ((p >> 16) & 255) as f64, (p >> 24) as f64]
    };
    for j in 0..th {
        for i in 0..tw {
            // Destination pixel centre relative to the rotation centre, rotated back.
            let dx = bx + i as f64 + 0.5 - cx;
            let dy = by + j as f64 + 0.5 - cy;
            let u = c * dx + s * dy + w / 2.0 - 0.5;
            let v = -s * dx + c * dy + h / 2.0 - 0.5;
            if u < -1.0 || v < -1.0 || u > w || v > h {
                continue;
            }
            let (u0, v0) = (u.floor(), v.floor());
            let (fu, fv) = (u - u0, v - v0);
            let (u0, v0) = (u0 as i64, v0 as i64);
            let (a, b, cc, d) = (sample(u0, v0), sample(u0 + 1, v0), sample(u0, v0 + 1), sample(u0 + 1, v0 + 1));
            let mut out = 0u32;
            for k in 0..4 {
                let top = a[k] * (1.0 - fu) + b[k] * fu;
                let bot = cc[k] * (1.0 - fu) + d[k] * fu;
                let val = (top * (1.0 - fv) + bot * fv).round().clamp(0.0, 255.0) as u32;
                out |= val << (8 * k);
            }
            let a8 = out >> 24;
            let clamp = |sh: u32| ((out >> sh) & 255).min(a8) << sh;
            pixels[(j * tw + i) as usize] = clamp(0) | clamp(8) | clamp(16) | (a8 << 24);
        }
    }
    Source { x: bx as i64, y: by as i64, width: tw, height: th, pixels, opacity, blend }
}
