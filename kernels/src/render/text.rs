//! Text layers: fonts by name, shaping with rustybuzz (HarfBuzz's algorithm: kerning,
//! ligatures, marks, complex scripts), glyph outlines rasterised with anti-aliasing by
//! ab_glyph into a coverage mask, then tinted into a [`Source`] tile.
//!
//! Fonts: `sans`, `serif`, `mono` and their `-bold` variants name DejaVu files in the font
//! directory (`KILN_FONT_DIR`, default `/usr/share/fonts/truetype/dejavu`, Debian's
//! fonts-dejavu-core). Files are read once per process and kept.
//!
//! Geometry: (`x`, `y`) is the top-left of the text box; the first baseline sits at
//! `y + ascender`, `size` is the em size in pixels, and each `\n` starts a new line one line
//! height (ascender − descender + line gap) lower.

use super::blend::fade;
use super::{premultiply, BlendMode, RenderError, Source};
use ab_glyph::{Font, FontRef, GlyphId, PxScale};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

pub const DEFAULT_FONT_DIR: &str = "/usr/share/fonts/truetype/dejavu";

/// The font names a spec may use, and their files.
pub const FONTS: [(&str, &str); 6] = [
    ("sans", "DejaVuSans.ttf"),
    ("sans-bold", "DejaVuSans-Bold.ttf"),
    ("serif", "DejaVuSerif.ttf"),
    ("serif-bold", "DejaVuSerif-Bold.ttf"),
    ("mono", "DejaVuSansMono.ttf"),
    ("mono-bold", "DejaVuSansMono-Bold.ttf"),
];

pub fn is_known_font(name: &str) -> bool {
    FONTS.iter().any(|(n, _)| *n == name)
}

fn font_dir() -> PathBuf {
    std::env::var_os("KILN_FONT_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_FONT_DIR))
}

static LOADED: OnceLock<Mutex<HashMap<String, Arc<Vec<u8>>>>> = OnceLock::new();

/// The bytes of font `name`, read on first use.
pub fn load_font(name: &str) -> Result<Arc<Vec<u8>>, RenderError> {
    let file = FONTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .ok_or_else(|| RenderError::Font(format!("unknown font {name:?}")))?;
    let cache = LOADED.get_or_init(Default::default);
    let mut map = cache.lock().map_err(|_| RenderError::Internal("font cache poisoned".into()))?;
    if let Some(f) = map.get(name) {
        return Ok(f.clone());
    }
    let path = font_dir().join(file);
    let data = std::fs::read(&path).map_err(|e| RenderError::Font(format!("{name}: {}: {e}", path.display())))?;
    if rustybuzz::Face::from_slice(&data, 0).is_none() {
        return Err(RenderError::Font(format!("{name}: {} is not a font", path.display())));
    }
    let data = Arc::new(data);
    map.insert(name.to_owned(), data.clone());
    Ok(data)
}

/// What to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct TextStyle {
    pub size: f32,
    /// Straight RGBA.
    pub color: [u8; 4],
    pub opacity: u8,
    pub blend: BlendMode,
}

/// One shaped glyph, in font units (y up, as the font has it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapedGlyph {
    pub id: u16,
    pub x_advance: i32,
    pub x_offset: i32,
    pub y_offset: i32,
    /// The text this glyph stands for: its cluster's characters on the first glyph of a
    /// cluster, empty on the others (what a PDF ToUnicode map needs).
    pub text: String,
}

/// One line of shaped text.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapedLine {
    /// Baseline in page pixels (y down).
    pub baseline: f32,
    /// Pen start in page pixels.
    pub x: f32,
    pub glyphs: Vec<ShapedGlyph>,
}

/// A text layer shaped with rustybuzz: what both the rasteriser and the PDF writer draw, so
/// both put every glyph at the same place.
#[derive(Debug, Clone, PartialEq)]
pub struct Shaped {
    pub units_per_em: u16,
    /// Em size in pixels.
    pub size: f32,
    pub lines: Vec<ShapedLine>,
}

impl Shaped {
    /// Pixels per font unit.
    pub fn scale(&self) -> f32 {
        self.size / self.units_per_em as f32
    }
}

/// Shapes `text` (lines split at `\n`) with its box's top-left at (`x`, `y`), `size` the em
/// size in pixels. For many layers in one font, a [`Shaper`] parses the font and builds each
/// shaping plan once.
pub fn shape(font: &[u8], x: f64, y: f64, text: &str, size: f32) -> Result<Shaped, RenderError> {
    Shaper::new(font)?.shape(x, y, text, size)
}

/// One font parsed for shaping, with the shaping plans built so far (one per direction,
/// script and language met): a plan is costly to build and the same for every line of a
/// script, so a page's text layers in one font share them.
pub struct Shaper<'a> {
    face: rustybuzz::Face<'a>,
    plans: Vec<(rustybuzz::Direction, rustybuzz::Script, Option<rustybuzz::Language>, rustybuzz::ShapePlan)>,
}

impl<'a> Shaper<'a> {
    pub fn new(font: &'a [u8]) -> Result<Self, RenderError> {
        let face = rustybuzz::Face::from_slice(font, 0).ok_or_else(|| RenderError::Font("font does not parse".into()))?;
        Ok(Shaper { face, plans: Vec::new() })
    }

    /// The glyphs of one line, shaped with the plan for its direction, script and language.
    fn shape_line(&mut self, line: &str) -> rustybuzz::GlyphBuffer {
        let mut buf = rustybuzz::UnicodeBuffer::new();
        buf.push_str(line);
        buf.guess_segment_properties();
        let (dir, script, lang) = (buf.direction(), buf.script(), buf.language());
        let i = match self.plans.iter().position(|(d, s, l, _)| *d == dir && *s == script && *l == lang) {
            Some(i) => i,
            None => {
                // The buffer reports "no script guessed" as UNKNOWN (guessing never picks
                // UNKNOWN): the plan gets `None` then, as `rustybuzz::shape` gives it.
                let guessed = (script != rustybuzz::script::UNKNOWN).then_some(script);
                let plan = rustybuzz::ShapePlan::new(&self.face, dir, guessed, lang.as_ref(), &[]);
                self.plans.push((dir, script, lang, plan));
                self.plans.len() - 1
            }
        };
        rustybuzz::shape_with_plan(&self.face, &self.plans[i].3, buf)
    }

    /// Shapes `text` (lines split at `\n`) with its box's top-left at (`x`, `y`), `size` the
    /// em size in pixels.
    pub fn shape(&mut self, x: f64, y: f64, text: &str, size: f32) -> Result<Shaped, RenderError> {
        let face = &self.face;
        let upem = face.units_per_em() as f32;
        let k = size / upem;
        let ascender = face.ascender() as f32 * k;
        let line_height = (face.ascender() as f32 - face.descender() as f32 + face.line_gap() as f32) * k;
        let units_per_em = u16::try_from(face.units_per_em()).unwrap_or(1000);
        let mut lines = Vec::new();
        for (line_no, line) in text.split('\n').enumerate() {
            let shaped = self.shape_line(line);
            let infos = shaped.glyph_infos();
            // Cluster starts (byte offsets) in ascending order: a cluster's text runs to the next.
            let mut starts: Vec<usize> = infos.iter().map(|i| i.cluster as usize).collect();
            starts.sort_unstable();
            starts.dedup();
            let mut seen = std::collections::HashSet::new();
            let glyphs = infos
                .iter()
                .zip(shaped.glyph_positions())
                .map(|(info, pos)| {
                    let c = info.cluster as usize;
                    let text = if seen.insert(c) {
                        let end = starts.iter().find(|s| **s > c).copied().unwrap_or(line.len());
                        line.get(c..end).unwrap_or("").to_owned()
                    } else {
                        String::new()
                    };
                    ShapedGlyph {
                        id: u16::try_from(info.glyph_id).unwrap_or(0),
                        x_advance: pos.x_advance,
                        x_offset: pos.x_offset,
                        y_offset: pos.y_offset,
                        text,
                    }
                })
                .collect();
            let baseline = y as f32 + ascender + line_no as f32 * line_height;
            lines.push(ShapedLine { baseline, x: x as f32, glyphs });
        }
        Ok(Shaped { units_per_em, size, lines })
    }
}

/// Shapes and rasterises `text` with its box's top-left at (`x`, `y`), clipped to a
/// `page`-sized canvas. `None` when no pixel is drawn (blank text, off the page).
pub fn text(font: &[u8], page: (u32, u32), x: f64, y: f64, text: &str, style: &TextStyle) -> Result<Option<Source>, RenderError> {
    let shaped = shape(font, x, y, text, style.size)?;
    let outlines = FontRef::try_from_slice(font).map_err(|e| RenderError::Font(e.to_string()))?;
    let upem = shaped.units_per_em as f32;
    let k = style.size / upem;
    let px_scale = PxScale::from(style.size * outlines.height_unscaled() / upem);

    let mut glyphs = Vec::new();
    for line in &shaped.lines {
        let mut pen = line.x;
        for g in &line.glyphs {
            let gx = pen + g.x_offset as f32 * k;
            let gy = line.baseline - g.y_offset as f32 * k;
            pen += g.x_advance as f32 * k;
            if let Some(o) = outlines.outline_glyph(GlyphId(g.id).with_scale_and_position(px_scale, ab_glyph::point(gx, gy))) {
                glyphs.push(o);
            }
        }
    }
    if glyphs.is_empty() {
        return Ok(None);
    }
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for g in &glyphs {
        let b = g.px_bounds();
        x0 = x0.min(b.min.x);
        y0 = y0.min(b.min.y);
        x1 = x1.max(b.max.x);
        y1 = y1.max(b.max.y);
    }
    let tx0 = (x0.floor() as i64).max(0);
    let ty0 = (y0.floor() as i64).max(0);
    let tx1 = (x1.ceil() as i64).min(page.0 as i64);
    let ty1 = (y1.ceil() as i64).min(page.1 as i64);
    if tx1 <= tx0 || ty1 <= ty0 {
        return Ok(None);
    }
    let (tw, th) = ((tx1 - tx0) as usize, (ty1 - ty0) as usize);
    let mut mask = vec![0f32; tw * th];
    for g in &glyphs {
        let b = g.px_bounds();
        let (gx, gy) = (b.min.x as i64 - tx0, b.min.y as i64 - ty0);
        g.draw(|dx, dy, c| {
            let (mx, my) = (gx + dx as i64, gy + dy as i64);
            if mx >= 0 && my >= 0 && (mx as usize) < tw && (my as usize) < th {
                let m = &mut mask[my as usize * tw + mx as usize];
                *m = (*m + c).min(1.0);
            }
        });
    }
    let colour = premultiply(style.color);
    let pixels = mask.iter().map(|&c| fade(colour, (c * 255.0).round() as u32)).collect();
    Ok(Some(Source { x: tx0, y: ty0, width: tw as u32, height: th as u32, pixels, opacity: style.opacity, blend: style.blend }))
}

/// What a PDF font descriptor and width array need from a font file.
#[derive(Debug, Clone, PartialEq)]
pub struct FontInfo {
    /// The PostScript name (`name` table id 6), or a name made from the file's family.
    pub postscript_name: String,
    pub units_per_em: u16,
    pub ascender: i16,
    pub descender: i16,
    pub cap_height: i16,
    /// x min, y min, x max, y max, font units.
    pub bbox: [i16; 4],
    pub italic_angle: f32,
    pub monospaced: bool,
    pub serif: bool,
    /// Whether the outlines are CFF (an OpenType `OTTO` file) rather than TrueType `glyf`.
    pub cff: bool,
    /// Advance width of every glyph, font units.
    pub advances: Vec<u16>,
}

/// Reads [`FontInfo`] from a font file.
pub fn font_info(font: &[u8]) -> Result<FontInfo, RenderError> {
    use rustybuzz::ttf_parser::{name_id, Face, GlyphId as Gid, Tag};
    let face = Face::parse(font, 0).map_err(|e| RenderError::Font(e.to_string()))?;
    let name = face
        .names()
        .into_iter()
        .filter(|n| n.name_id == name_id::POST_SCRIPT_NAME)
        .find_map(|n| n.to_string())
        .unwrap_or_else(|| "KilnFont".to_owned());
    // PDF names: keep printable ASCII without delimiters.
    let postscript_name: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    let b = face.global_bounding_box();
    let advances = (0..face.number_of_glyphs()).map(|g| face.glyph_hor_advance(Gid(g)).unwrap_or(0)).collect();
    Ok(FontInfo {
        postscript_name: if postscript_name.is_empty() { "KilnFont".into() } else { postscript_name },
        units_per_em: face.units_per_em(),
        ascender: face.ascender(),
        descender: face.descender(),
        cap_height: face.capital_height().unwrap_or(face.ascender()),
        bbox: [b.x_min, b.y_min, b.x_max, b.y_max],
        italic_angle: face.italic_angle(),
        monospaced: face.is_monospaced(),
        serif: name.contains("Serif") && !name.contains("Sans"),
        cff: face.raw_face().table(Tag::from_bytes(b"CFF ")).is_some(),
        advances,
    })
}
