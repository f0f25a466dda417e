//! The render spec as submitted (serde, unknown fields refused) and its validation into a
//! [`Resolved`] job: defaults filled in, every limit checked, no I/O.

use crate::context::{ensure, Limits};
use crate::error::JobError;
use crate::store::parse_uri;
use crate::spec_util::parse_color;
use kiln_kernels::render::{text, BlendMode};
use kiln_kernels::Accel;
use serde::Deserialize;
use serde_json::Value;

pub const DEFAULT_DPI: f64 = 150.0;
pub const DEFAULT_JPEG_QUALITY: u8 = 90;
/// Longest text of one text layer, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlendSpec {
    #[default]
    Normal,
    Multiply,
    Screen,
}

impl From<BlendSpec> for BlendMode {
    fn from(b: BlendSpec) -> BlendMode {
        match b {
            BlendSpec::Normal => BlendMode::Normal,
            BlendSpec::Multiply => BlendMode::Multiply,
            BlendSpec::Screen => BlendMode::Screen,
        }
    }
}

/// `{"pages": [...], "format": "pdf|png|pdf+png", "accel": "auto|cpu|gpu", "jpeg_quality": 90}`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderSpec {
    pub pages: Vec<Value>,
    #[serde(default = "default_format")]
    pub format: String,
    #[serde(default)]
    pub accel: Accel,
    #[serde(default)]
    pub jpeg_quality: Option<u8>,
}

fn default_format() -> String {
    "pdf".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrawnSpec {
    width: u32,
    height: u32,
    #[serde(default)]
    dpi: Option<f64>,
    #[serde(default)]
    background: Option<String>,
    #[serde(default)]
    layers: Vec<LayerSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeSpec {
    pdf_page: PdfPageSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PdfPageSpec {
    source: String,
    #[serde(default = "one_u32")]
    page: u32,
}

fn one_u32() -> u32 {
    1
}
fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum LayerSpec {
    Image(ImageSpec),
    Rect(RectSpec),
    Text(TextSpec),
}

/// A region of the source image, in its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crop {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageSpec {
    source: String,
    #[serde(default)]
    x: f64,
    #[serde(default)]
    y: f64,
    #[serde(default)]
    width: Option<u32>,
    #[serde(default)]
    height: Option<u32>,
    #[serde(default = "one")]
    opacity: f64,
    #[serde(default)]
    blend: BlendSpec,
    #[serde(default)]
    rotate: f64,
    #[serde(default)]
    crop: Option<Crop>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RectSpec {
    x: f64,
    y: f64,
    width: f64,
    height: f64,
    #[serde(default)]
    fill: Option<String>,
    #[serde(default)]
    stroke: Option<String>,
    #[serde(default)]
    stroke_width: Option<f64>,
    #[serde(default = "one")]
    opacity: f64,
    #[serde(default)]
    blend: BlendSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextSpec {
    x: f64,
    y: f64,
    text: String,
    #[serde(default = "default_size")]
    size: f64,
    #[serde(default)]
    color: Option<String>,
    #[serde(default = "default_font")]
    font: String,
    #[serde(default = "one")]
    opacity: f64,
    #[serde(default)]
    blend: BlendSpec,
}

fn default_size() -> f64 {
    16.0
}
fn default_font() -> String {
    "sans".into()
}

/// A validated layer. Opacity is 0..=255.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    Image {
        source: String,
        x: f64,
        y: f64,
        /// `None`: from the image (keeping its aspect ratio when the other side is given).
        width: Option<u32>,
        height: Option<u32>,
        crop: Option<Crop>,
        rotate: f64,
        opacity: u8,
        blend: BlendMode,
    },
    Rect {
        x: f64,
        y: f64,
        width: f64,
        height: f64,
        fill: Option<[u8; 4]>,
        stroke: Option<([u8; 4], f64)>,
        opacity: u8,
        blend: BlendMode,
    },
    Text {
        x: f64,
        y: f64,
        text: String,
        size: f32,
        color: [u8; 4],
        font: String,
        opacity: u8,
        blend: BlendMode,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DrawnPage {
    pub width: u32,
    pub height: u32,
    pub dpi: f64,
    pub background: [u8; 4],
    pub layers: Vec<Layer>,
}

impl DrawnPage {
    /// The page size in PDF points.
    pub fn size_pt(&self) -> (f64, f64) {
        (self.width as f64 * 72.0 / self.dpi, self.height as f64 * 72.0 / self.dpi)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Page {
    Drawn(DrawnPage),
    /// Page `page` (1-based) of the PDF at `source`, copied whole.
    Merge { source: String, page: u32 },
}

/// A validated render job.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub pages: Vec<Page>,
    pub pdf: bool,
    pub png: bool,
    pub accel: Accel,
    pub jpeg_quality: u8,
}

fn opacity(at: &str, v: f64) -> Result<u8, JobError> {
    ensure(v.is_finite() && (0.0..=1.0).contains(&v), || format!("{at}: opacity {v} is outside 0..=1"))?;
    Ok((v * 255.0).round() as u8)
}

fn color(at: &str, what: &str, s: &str) -> Result<[u8; 4], JobError> {
    parse_color(s).ok_or_else(|| JobError::invalid_spec(format!("{at}: {what} {s:?} is not #rrggbb or #rrggbbaa")))
}

fn finite(at: &str, vals: &[(&str, f64)]) -> Result<(), JobError> {
    for (name, v) in vals {
        ensure(v.is_finite() && v.abs() <= 1e7, || format!("{at}: {name} {v} is not a usable number"))?;
    }
    Ok(())
}

impl RenderSpec {
    pub fn parse(input: &Value) -> Result<RenderSpec, JobError> {
        RenderSpec::deserialize(input).map_err(|e| JobError::invalid_spec(format!("render spec: {e}")))
    }

    pub fn resolve(self, limits: &Limits) -> Result<Resolved, JobError> {
        let (pdf, png) = match self.format.as_str() {
            "pdf" => (true, false),
            "png" => (false, true),
            "pdf+png" | "png+pdf" => (true, true),
            f => return Err(JobError::invalid_spec(format!("format {f:?}: use pdf, png or pdf+png"))),
        };
        ensure(!self.pages.is_empty(), || "render needs at least one page".into())?;
        ensure(self.pages.len() <= limits.max_render_pages, || {
            format!("{} pages asked for; at most {} are allowed", self.pages.len(), limits.max_render_pages)
        })?;
        let jpeg_quality = self.jpeg_quality.unwrap_or(DEFAULT_JPEG_QUALITY);
        ensure((1..=100).contains(&jpeg_quality), || format!("jpeg_quality {jpeg_quality} is outside 1..=100"))?;
        let mut pages = Vec::with_capacity(self.pages.len());
        for (i, p) in self.pages.iter().enumerate() {
            let at = format!("pages[{i}]");
            if p.get("pdf_page").is_some() {
                let m = MergeSpec::deserialize(p).map_err(|e| JobError::invalid_spec(format!("{at}: {e}")))?;
                ensure(pdf, || format!("{at}: a pdf_page page needs PDF output (format pdf or pdf+png)"))?;
                parse_uri(&m.pdf_page.source).map_err(|e| JobError { message: format!("{at}: source: {}", e.message), ..e })?;
                ensure(m.pdf_page.page >= 1, || format!("{at}: pdf_page.page counts from 1"))?;
                pages.push(Page::Merge { source: m.pdf_page.source, page: m.pdf_page.page });
            } else {
                let d = DrawnSpec::deserialize(p).map_err(|e| JobError::invalid_spec(format!("{at}: {e}")))?;
                pages.push(Page::Drawn(resolve_drawn(&at, d, limits)?));
            }
        }
        Ok(Resolved { pages, pdf, png, accel: self.accel, jpeg_quality })
    }
}

fn resolve_drawn(at: &str, d: DrawnSpec, limits: &Limits) -> Result<DrawnPage, JobError> {
    ensure(d.width >= 1 && d.height >= 1, || format!("{at}: width and height must be at least 1"))?;
    let px = d.width as u64 * d.height as u64;
    ensure(px <= limits.max_page_pixels, || {
        format!("{at}: {}x{} is {px} pixels; at most {} are allowed", d.width, d.height, limits.max_page_pixels)
    })?;
    let dpi = d.dpi.unwrap_or(DEFAULT_DPI);
    ensure(dpi.is_finite() && (1.0..=2400.0).contains(&dpi), || format!("{at}: dpi {dpi} is outside 1..=2400"))?;
    let background = match &d.background {
        Some(s) => color(at, "background", s)?,
        None => [255, 255, 255, 255],
    };
    ensure(d.layers.len() <= limits.max_layers_per_page, || {
        format!("{at}: {} layers; at most {} are allowed per page", d.layers.len(), limits.max_layers_per_page)
    })?;
    let mut layers = Vec::with_capacity(d.layers.len());
    for (j, l) in d.layers.into_iter().enumerate() {
        let at = format!("{at}.layers[{j}]");
        layers.push(match l {
            LayerSpec::Image(s) => {
                parse_uri(&s.source).map_err(|e| JobError { message: format!("{at}: source: {}", e.message), ..e })?;
                finite(&at, &[("x", s.x), ("y", s.y), ("rotate", s.rotate)])?;
                for (side, v) in [("width", s.width), ("height", s.height)] {
                    ensure(v != Some(0), || format!("{at}: {side} must be at least 1"))?;
                }
                if let (Some(w), Some(h)) = (s.width, s.height) {
                    ensure(w as u64 * h as u64 <= limits.max_page_pixels, || {
                        format!("{at}: a {w}x{h} image box is over the limit of {} pixels", limits.max_page_pixels)
                    })?;
                }
                if let Some(c) = &s.crop {
                    finite(&at, &[("crop.x", c.x), ("crop.y", c.y), ("crop.width", c.width), ("crop.height", c.height)])?;
                    ensure(c.x >= 0.0 && c.y >= 0.0 && c.width > 0.0 && c.height > 0.0, || {
                        format!("{at}: crop needs x, y >= 0 and a positive width and height")
                    })?;
                }
                Layer::Image {
                    source: s.source,
                    x: s.x,
                    y: s.y,
                    width: s.width,
                    height: s.height,
                    crop: s.crop,
                    rotate: s.rotate,
                    opacity: opacity(&at, s.opacity)?,
                    blend: s.blend.into(),
                }
            }
            LayerSpec::Rect(s) => {
                finite(&at, &[("x", s.x), ("y", s.y), ("width", s.width), ("height", s.height)])?;
                ensure(s.width >= 0.0 && s.height >= 0.0, || format!("{at}: width and height must not be negative"))?;
                ensure(s.fill.is_some() || s.stroke.is_some(), || format!("{at}: a rect needs a fill, a stroke, or both"))?;
                let fill = s.fill.as_deref().map(|c| color(&at, "fill", c)).transpose()?;
                let stroke = match &s.stroke {
                    Some(c) => {
                        let sw = s.stroke_width.unwrap_or(1.0);
                        finite(&at, &[("stroke_width", sw)])?;
                        ensure(sw > 0.0, || format!("{at}: stroke_width must be positive"))?;
                        Some((color(&at, "stroke", c)?, sw))
                    }
                    None => None,
                };
                Layer::Rect {
                    x: s.x,
                    y: s.y,
                    width: s.width,
                    height: s.height,
                    fill,
                    stroke,
                    opacity: opacity(&at, s.opacity)?,
                    blend: s.blend.into(),
                }
            }
            LayerSpec::Text(s) => {
                finite(&at, &[("x", s.x), ("y", s.y)])?;
                ensure(s.size.is_finite() && s.size > 0.0 && s.size <= 2000.0, || {
                    format!("{at}: size {} is outside (0, 2000]", s.size)
                })?;
                ensure(s.text.chars().count() <= MAX_TEXT_CHARS, || format!("{at}: text is over {MAX_TEXT_CHARS} characters"))?;
                ensure(text::is_known_font(&s.font), || {
                    let names: Vec<_> = text::FONTS.iter().map(|(n, _)| *n).collect();
                    format!("{at}: unknown font {:?}; use one of {}", s.font, names.join(", "))
                })?;
                let color = match &s.color {
                    Some(c) => color(&at, "color", c)?,
                    None => [0, 0, 0, 255],
                };
                Layer::Text {
                    x: s.x,
                    y: s.y,
                    text: s.text,
                    size: s.size as f32,
                    color,
                    font: s.font,
                    opacity: opacity(&at, s.opacity)?,
                    blend: s.blend.into(),
                }
            }
        });
    }
    Ok(DrawnPage { width: d.width, height: d.height, dpi, background, layers })
}
