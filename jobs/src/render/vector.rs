//! A drawn page as a vector PDF part: every layer in PDF terms, nothing rasterised.
//!
//! The content stream first maps page pixels to points with the y axis pointing down
//! (`72/dpi 0 0 −72/dpi 0 H cm`), so every layer is written in the same pixel coordinates the
//! PNG path uses:
//! - background: a filled rectangle (its alpha as `/ca`, over the white paper);
//! - rect: `re f`; the stroke (centred on the edge, miter joins, as the rasteriser draws it)
//!   as the area it covers, filled even-odd (`stroke_outline`); colour alpha × layer
//!   opacity as `/ca`, the blend as `/BM`. A rect with
//!   both fill and stroke under an opacity below 1 or a non-normal blend is a transparency
//!   group (form XObject) painted with that opacity and blend, because the rasteriser also
//!   blends the stroked-over-fill tile as one;
//! - text: shaped by the same [`text::shape`] as the PNG path (same glyphs, same positions),
//!   written as `TJ` arrays of glyph ids with the shaped advances and offsets as adjustments
//!   and text rise; the font is a placeholder the assembler embeds as a subset;
//! - image: an image XObject ([`super::pdfimage`]) drawn into the same box, rotated about the
//!   same centre as the rasteriser's (the box inset by `IMAGE_INSET`, so that Splash too
//!   draws the samples on the rasteriser's pixels), opacity `/ca`, blend `/BM`.
//!
//! Normal, multiply and screen with any opacity are all plain PDF, so no layer needs a raster
//! fallback.

use super::cache::Cache;
use super::pdf::{font::pdf_width, Form, Resources};
use super::pdfimage::PdfImages;
use super::spec::{DrawnPage, Layer};
use crate::context::JobContext;
use crate::error::JobError;
use kiln_kernels::render::text::{self, FontInfo};
use kiln_kernels::render::BlendMode;
use lopdf::{Dictionary, Object};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

/// Fonts of a job: bytes and metrics, read once.
pub struct Fonts(Cache<String, (Arc<Vec<u8>>, Arc<FontInfo>)>);

impl Default for Fonts {
    fn default() -> Self {
        Fonts(Cache::new(u64::MAX))
    }
}

impl Fonts {
    fn get(&self, name: &str) -> Result<(Arc<Vec<u8>>, Arc<FontInfo>), JobError> {
        self.0.get(&name.to_owned(), |_| 0, || {
            let data = text::load_font(name)?;
            let info = Arc::new(text::font_info(&data)?);
            Ok((data, info))
        })
    }
}

/// A number for a content stream: at most 3 decimals, no trailing zeros, no `-0`.
fn n(v: f64) -> String {
    let r = (v * 1000.0).round() / 1000.0;
    if r == 0.0 {
        return "0".into();
    }
    let s = format!("{r:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A rotation matrix entry: 6 decimals (3 would move a 500 px image's corner by 0.25 px).
fn rot(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_owned() } else { s.to_owned() }
}

/// How much smaller than its tile an image's box is drawn, in page pixels (see `part`).
const IMAGE_INSET: f64 = 0.01;

/// The area a rectangle's stroke covers, as two `re` for an even-odd fill: the stroke is
/// centred on the edge with miter joins, so it is the outer rectangle less the inner one
/// (all of the outer one when the stroke is wider than the rectangle), exactly what the
/// rasteriser covers. Filled rather than stroked because renderers snap strokes to whole
/// pixels (Splash's stroke adjustment draws a 3 px stroke on half-pixel edges as 3 full
/// rows), while they anti-alias a fill's edges as the rasteriser does.
fn stroke_outline((x, y, w, h): (f64, f64, f64, f64), sw: f64) -> String {
    let half = sw.max(0.0) / 2.0;
    let mut p = format!("{} {} {} {} re", n(x - half), n(y - half), n(w + 2.0 * half), n(h + 2.0 * half));
    if w - 2.0 * half > 0.0 && h - 2.0 * half > 0.0 {
        let _ = write!(p, " {} {} {} {} re", n(x + half), n(y + half), n(w - 2.0 * half), n(h - 2.0 * half));
    }
    p
}

fn rgb(c: [u8; 4]) -> String {
    format!("{} {} {}", n(c[0] as f64 / 255.0), n(c[1] as f64 / 255.0), n(c[2] as f64 / 255.0))
}

/// Graphics states of one resource scope, deduplicated.
#[derive(Default)]
struct GStates {
    list: Vec<Dictionary>,
    index: HashMap<(u32, u32, u32), usize>,
}

impl GStates {
    /// `/Gi gs` for a fill alpha, a stroke alpha (0..=1) and a blend mode; empty when all
    /// are the defaults.
    fn set(&mut self, fill: f64, stroke: f64, blend: BlendMode) -> String {
        let q = |a: f64| (a.clamp(0.0, 1.0) * 1000.0).round() as u32;
        let key = (q(fill), q(stroke), blend.code());
        if key == (1000, 1000, 0) {
            return String::new();
        }
        let i = *self.index.entry(key).or_insert_with(|| {
            let mut d = Dictionary::new();
            d.set("Type", Object::Name(b"ExtGState".to_vec()));
            d.set("ca", Object::Real(key.0 as f32 / 1000.0));
            d.set("CA", Object::Real(key.1 as f32 / 1000.0));
            let bm: &[u8] = match blend {
                BlendMode::Normal => b"Normal",
                BlendMode::Multiply => b"Multiply",
                BlendMode::Screen => b"Screen",
            };
            d.set("BM", Object::Name(bm.to_vec()));
            self.list.push(d);
            self.list.len() - 1
        });
        format!("/G{i} gs ")
    }
}

/// The page as a vector part (see the module doc).
pub fn part(ctx: &JobContext, page: &DrawnPage, fonts: &Fonts, images: &PdfImages, jpeg_quality: u8) -> Result<Vec<u8>, JobError> {
    let (wpt, hpt) = page.size_pt();
    let s = 72.0 / page.dpi;
    let (w, h) = (page.width as f64, page.height as f64);
    let mut c = String::new();
    let mut gs = GStates::default();
    let mut res = Resources::default();
    let mut font_index: HashMap<String, usize> = HashMap::new();
    // The page's fonts, each parsed for shaping once and its shaping plans built once.
    let mut faces: HashMap<String, (Arc<Vec<u8>>, Arc<FontInfo>)> = HashMap::new();
    let mut shapers: HashMap<String, text::Shaper<'_>> = HashMap::new();
    for layer in &page.layers {
        if let Layer::Text { font, .. } = layer {
            if !faces.contains_key(font) {
                faces.insert(font.clone(), fonts.get(font)?);
            }
        }
    }
    for (name, (data, _)) in &faces {
        shapers.insert(name.clone(), text::Shaper::new(data)?);
    }
    // The page scale exactly (more digits than a coordinate needs: it multiplies them all);
    // the top edge as the MediaBox states it.
    let _ = writeln!(c, "{s:.6} 0 0 {:.6} 0 {} cm", -s, n(hpt));
    let bg = page.background;
    if bg[3] > 0 {
        let g = gs.set(bg[3] as f64 / 255.0, 1.0, BlendMode::Normal);
        let _ = writeln!(c, "q {g}{} rg 0 0 {} {} re f Q", rgb(bg), n(w), n(h));
    }
    for layer in &page.layers {
        match layer {
            Layer::Rect { x, y, width, height, fill, stroke, opacity, blend } => {
                let op = *opacity as f64 / 255.0;
                let rect = format!("{} {} {} {} re", n(*x), n(*y), n(*width), n(*height));
                let stroke_ops = |c: [u8; 4], sw: f64| format!("{} rg {} f*", rgb(c), stroke_outline((*x, *y, *width, *height), sw));
                if let (Some(f), Some((sc, sw)), true) = (fill, stroke, *opacity < 255 || *blend != BlendMode::Normal) {
                    // One group, as the rasteriser blends the stroked-over-fill tile as one.
                    let mut inner = GStates::default();
                    let mut fc = String::new();
                    let gf = inner.set(f[3] as f64 / 255.0, 1.0, BlendMode::Normal);
                    let _ = writeln!(fc, "q {gf}{} rg {rect} f Q", rgb(*f));
                    let gsk = inner.set(sc[3] as f64 / 255.0, 1.0, BlendMode::Normal);
                    let _ = writeln!(fc, "q {gsk}{} Q", stroke_ops(*sc, *sw));
                    let half = sw / 2.0;
                    let bbox = [x - half - 1.0, y - half - 1.0, x + width + half + 1.0, y + height + half + 1.0];
                    res.forms.push(Form { bbox, content: fc.into_bytes(), gstates: inner.list });
                    let g = gs.set(op, op, *blend);
                    let _ = writeln!(c, "q {g}/Fm{} Do Q", res.forms.len() - 1);
                    continue;
                }
                if let Some(f) = fill {
                    let g = gs.set(f[3] as f64 / 255.0 * op, 1.0, *blend);
                    let _ = writeln!(c, "q {g}{} rg {rect} f Q", rgb(*f));
                }
                if let Some((sc, sw)) = stroke {
                    let g = gs.set(sc[3] as f64 / 255.0 * op, 1.0, *blend);
                    let _ = writeln!(c, "q {g}{} Q", stroke_ops(*sc, *sw));
                }
            }
            Layer::Text { x, y, text: t, size, color, font, opacity, blend } => {
                let (info, shaper) = match (faces.get(font), shapers.get_mut(font)) {
                    (Some((_, info)), Some(shaper)) => (info, shaper),
                    _ => return Err(JobError::internal(format!("font {font} was not loaded"))),
                };
                let shaped = shaper.shape(*x, *y, t, *size)?;
                if shaped.lines.iter().all(|l| l.glyphs.is_empty()) {
                    continue;
                }
                let fi = *font_index.entry(font.clone()).or_insert_with(|| {
                    res.fonts.push((font.clone(), BTreeMap::new()));
                    res.fonts.len() - 1
                });
                let used = &mut res.fonts[fi].1;
                let g = gs.set(color[3] as f64 / 255.0 * *opacity as f64 / 255.0, 1.0, *blend);
                let _ = writeln!(c, "q {g}{} rg BT /F{fi} {} Tf", rgb(*color), n(*size as f64));
                let upem = shaped.units_per_em;
                let k = 1000.0 / upem as f64; // font units → thousandths of an em
                for line in &shaped.lines {
                    if line.glyphs.is_empty() {
                        continue;
                    }
                    let _ = writeln!(c, "1 0 0 -1 {} {} Tm", n(line.x as f64), n(line.baseline as f64));
                    let (mut pen, mut cur, mut rise) = (0.0f64, 0.0f64, 0i32);
                    let mut tj = String::from("[");
                    let mut open = false;
                    for gl in &line.glyphs {
                        let e = used.entry(gl.id).or_default();
                        if e.is_empty() {
                            e.clone_from(&gl.text);
                        }
                        if gl.y_offset != rise {
                            // Text rise applies to a whole TJ: start a new one.
                            if open {
                                tj.push('>');
                                open = false;
                            }
                            tj.push_str("] TJ\n");
                            c.push_str(&tj);
                            rise = gl.y_offset;
                            tj = format!("{} Ts [", n(rise as f64 * *size as f64 / upem as f64));
                        }
                        let target = pen + gl.x_offset as f64 * k;
                        let adj = ((cur - target) * 1000.0).round() / 1000.0;
                        if adj != 0.0 {
                            if open {
                                tj.push('>');
                                open = false;
                            }
                            let _ = write!(tj, " {} ", n(adj));
                            cur -= adj;
                        }
                        if !open {
                            tj.push('<');
                            open = true;
                        }
                        let _ = write!(tj, "{:04X}", gl.id);
                        cur += pdf_width(info.advances.get(gl.id as usize).copied().unwrap_or(0), upem);
                        pen += gl.x_advance as f64 * k;
                    }
                    if open {
                        tj.push('>');
                    }
                    tj.push_str("] TJ\n");
                    c.push_str(&tj);
                    if rise != 0 {
                        c.push_str("0 Ts\n");
                    }
                }
                c.push_str("ET Q\n");
            }
            Layer::Image { source, x, y, width, height, crop, rotate, opacity, blend } => {
                let placed = images.get(ctx, source, (*width, *height), crop.as_ref(), jpeg_quality)?;
                let (bw, bh) = (placed.box_w as f64, placed.box_h as f64);
                let (xr, yr) = (x.round(), y.round());
                let turns = rotate.rem_euclid(360.0);
                let quarter = (turns / 90.0).round();
                let (cx, cy, theta) = if (turns - quarter * 90.0).abs() < 1e-9 {
                    // As the rasteriser: the rotated tile's corner is rounded to a pixel.
                    let q = quarter as u32 % 4;
                    let (rw, rh) = if q % 2 == 1 { (bh, bw) } else { (bw, bh) };
                    let nx = (xr + bw / 2.0 - rw / 2.0).round();
                    let ny = (yr + bh / 2.0 - rh / 2.0).round();
                    (nx + rw / 2.0, ny + rh / 2.0, (q as f64 * 90.0).to_radians())
                } else {
                    (xr + bw / 2.0, yr + bh / 2.0, turns.to_radians())
                };
                let idx = match res.images.iter().position(|i| Arc::ptr_eq(i, &placed.image)) {
                    Some(i) => i,
                    None => {
                        res.images.push(placed.image.clone());
                        res.images.len() - 1
                    }
                };
                let g = gs.set(*opacity as f64 / 255.0, 1.0, *blend);
                let (sn, cs) = theta.sin_cos();
                // The box a hair smaller than the tile (IMAGE_INSET): Splash (pdftoppm) maps
                // an image to the device pixels floor(x0)..floor(x1)+1, one row and column
                // more than a box on whole pixels covers, and stretches the samples over
                // them; inset, both Splash and Cairo draw the samples 1:1 on the rasteriser's
                // pixels.
                let (iw, ih) = (bw - IMAGE_INSET, bh - IMAGE_INSET);
                let _ = writeln!(
                    c,
                    "q {g}{} {} {} {} {} {} cm {} 0 0 {} {} {} cm /Im{idx} Do Q",
                    rot(cs),
                    rot(sn),
                    rot(-sn),
                    rot(cs),
                    n(cx),
                    n(cy),
                    n(iw),
                    n(-ih),
                    n(-iw / 2.0),
                    n(ih / 2.0)
                );
            }
        }
    }
    res.gstates = gs.list;
    super::pdf::vector_part((wpt, hpt), c.as_bytes(), &res)
}

#[cfg(test)]
mod tests {
    use super::n;

    #[test]
    fn numbers_are_short_and_never_negative_zero() {
        assert_eq!(n(0.0), "0");
        assert_eq!(n(-0.0001), "0");
        assert_eq!(n(1.5), "1.5");
        assert_eq!(n(-2.0), "-2");
        assert_eq!(n(0.48), "0.48");
        assert_eq!(n(12.34567), "12.346");
    }

    #[test]
    fn a_stroke_is_the_outer_rectangle_less_the_inner_one() {
        assert_eq!(super::stroke_outline((30.0, 640.0, 560.0, 200.0), 3.0), "28.5 638.5 563 203 re 31.5 641.5 557 197 re");
        // Wider than the rectangle: all of the outer one.
        assert_eq!(super::stroke_outline((10.0, 10.0, 4.0, 40.0), 6.0), "7 7 10 46 re");
        assert_eq!(super::rot(-0.0000001), "0");
        assert_eq!(super::rot(0.2079116908), "0.207912");
    }
}
