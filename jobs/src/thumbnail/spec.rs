//! The thumbnail spec as submitted (serde, unknown fields refused) and its validation into a
//! [`Resolved`] job: every default filled in, every limit checked, no I/O.

use crate::context::{ensure, Limits};
use crate::error::JobError;
use crate::spec_util::parse_color;
use crate::store::{join_output, parse_uri};
use kiln_kernels::image::{Fit, Gravity, OutputFormat};
use kiln_kernels::Accel;
use serde::Deserialize;
use std::collections::HashSet;
use url::Url;

pub const DEFAULT_QUALITY: u32 = 80;

/// `{"source": URI, "outputs": [...], "watermark"?: {...}, "accel"?: "auto|cpu|gpu"}`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSpec {
    pub source: String,
    pub outputs: Vec<OutputSpec>,
    #[serde(default)]
    pub watermark: Option<WatermarkSpec>,
    /// `gpu`: decode (nvJPEG) and resize on a GPU, or fail `unsupported`; `auto`: the GPU when
    /// the worker resolved the job to it and one is granted, else the CPU.
    #[serde(default)]
    pub accel: Accel,
}

/// One output: `{"name":"256.webp","width":256,"height":256,"fit":"cover","format":"webp",
/// "quality":80,"lossless":false,"background":"#ffffff"}`. `format` defaults from the name's
/// extension, `fit` to `inside`, `quality` to 80. At least one of width and height.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub fit: Fit,
    #[serde(default)]
    pub format: Option<OutputFormat>,
    #[serde(default)]
    pub quality: Option<u32>,
    #[serde(default)]
    pub lossless: bool,
    /// Padding colour for `contain`, and what alpha is flattened onto for JPEG: `#rrggbb` or
    /// `#rrggbbaa`. Default: transparent padding where the format has alpha, else white.
    #[serde(default)]
    pub background: Option<String>,
}

/// `{"source": URI, "gravity": "south-east", "opacity": 0.5, "margin": 8}`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSpec {
    pub source: String,
    #[serde(default)]
    pub gravity: Gravity,
    #[serde(default = "one")]
    pub opacity: f64,
    /// Pixels from the edges; default 2% of the output's shorter side.
    #[serde(default)]
    pub margin: Option<u32>,
}

fn one() -> f64 {
    1.0
}

/// A validated output.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    pub format: OutputFormat,
    pub quality: u8,
    pub lossless: bool,
    /// RGBA; `None` = the default (transparent, or white for JPEG).
    pub background: Option<[u8; 4]>,
}

impl Output {
    /// The padding colour for `contain`.
    pub fn pad_color(&self) -> [u8; 4] {
        match self.background {
            Some(c) => c,
            None if self.format.supports_alpha() => [0, 0, 0, 0],
            None => [255, 255, 255, 255],
        }
    }
    /// What alpha is flattened onto when the format has none.
    pub fn flatten_color(&self) -> [u8; 3] {
        match self.background {
            Some([r, g, b, _]) => [r, g, b],
            None => [255, 255, 255],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Watermark {
    pub source: String,
    pub gravity: Gravity,
    pub opacity: f32,
    pub margin: Option<u32>,
}

/// A validated thumbnail job.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub source: String,
    pub outputs: Vec<Output>,
    pub watermark: Option<Watermark>,
    pub accel: Accel,
}

impl ThumbnailSpec {
    pub fn parse(input: &serde_json::Value) -> Result<ThumbnailSpec, JobError> {
        ThumbnailSpec::deserialize(input).map_err(|e| JobError::invalid_spec(format!("thumbnail spec: {e}")))
    }

    /// Checks the spec against the limits and fills in the defaults.
    pub fn resolve(self, limits: &Limits) -> Result<Resolved, JobError> {
        parse_uri(&self.source).map_err(|e| JobError { message: format!("source: {}", e.message), ..e })?;
        ensure(!self.outputs.is_empty(), || "thumbnail needs at least one output".into())?;
        ensure(self.outputs.len() <= limits.max_outputs, || {
            format!("{} outputs asked for; at most {} are allowed", self.outputs.len(), limits.max_outputs)
        })?;
        let probe_prefix = Url::parse("file:///kiln/out/").map_err(|e| JobError::internal(e.to_string()))?;
        let mut names = HashSet::new();
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for (i, o) in self.outputs.into_iter().enumerate() {
            let at = format!("outputs[{i}] ({:?})", o.name);
            join_output(&probe_prefix, &o.name).map_err(|e| JobError::invalid_spec(format!("{at}: {}", e.message)))?;
            ensure(names.insert(o.name.clone()), || format!("{at}: output names must be unique"))?;
            ensure(o.width.is_some() || o.height.is_some(), || format!("{at}: give a width, a height, or both"))?;
            for (side, v) in [("width", o.width), ("height", o.height)] {
                if let Some(v) = v {
                    ensure((1..=limits.max_output_dimension).contains(&v), || {
                        format!("{at}: {side} {v} is outside 1..={}", limits.max_output_dimension)
                    })?;
                }
            }
            let format = match o.format.or_else(|| OutputFormat::from_name(&o.name)) {
                Some(f) => f,
                None => {
                    return Err(JobError::invalid_spec(format!(
                        "{at}: no format given and none follows from the name; use jpeg, png, webp or avif"
                    )))
                }
            };
            let quality = o.quality.unwrap_or(DEFAULT_QUALITY);
            ensure((1..=100).contains(&quality), || format!("{at}: quality {quality} is outside 1..=100"))?;
            let background = match &o.background {
                None => None,
                Some(s) => Some(parse_color(s).ok_or_else(|| {
                    JobError::invalid_spec(format!("{at}: background {s:?} is not #rrggbb or #rrggbbaa"))
                })?),
            };
            outputs.push(Output {
                name: o.name,
                width: o.width,
                height: o.height,
                fit: o.fit,
                format,
                quality: quality as u8,
                lossless: o.lossless,
                background,
            });
        }
        let watermark = match self.watermark {
            None => None,
            Some(w) => {
                parse_uri(&w.source).map_err(|e| JobError { message: format!("watermark source: {}", e.message), ..e })?;
                ensure(w.opacity.is_finite() && (0.0..=1.0).contains(&w.opacity), || {
                    format!("watermark opacity {} is outside 0..=1", w.opacity)
                })?;
                Some(Watermark { source: w.source, gravity: w.gravity, opacity: w.opacity as f32, margin: w.margin })
            }
        };
        Ok(Resolved { source: self.source, outputs, watermark, accel: self.accel })
    }
}
