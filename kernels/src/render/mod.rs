//! Page compositing for the render job: layers are rasterised on the CPU into premultiplied
//! RGBA [`Source`] tiles ([`raster`]: rectangles, placed/rotated images; [`text`]: shaped,
//! anti-aliased glyphs), then a [`Compositor`] blends the tiles in order onto the page
//! canvas with an opacity and a [`BlendMode`]. Two backends share that API: [`cpu`] (the
//! reference) and [`gpu`] (wgpu compute: Vulkan on GPU nodes, Mesa's lavapipe on CPU
//! machines).
//!
//! **Invariant:** both backends run the same integer arithmetic ([`blend::blend_px`] and its
//! WGSL twin) on premultiplied 8-bit channels, so they produce the same pixels; the tests
//! hold them to a per-channel difference of at most 1 on every test page.

pub mod blend;
pub mod cpu;
pub mod gpu;
pub mod raster;
pub mod text;

use crate::accel::Accel;
use crate::image::{Image, PixelKind};
use std::sync::Arc;

/// How a layer's colours combine with what is beneath (W3C compositing, separable modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlendMode {
    #[default]
    Normal,
    Multiply,
    Screen,
}

impl BlendMode {
    pub fn code(self) -> u32 {
        match self {
            BlendMode::Normal => 0,
            BlendMode::Multiply => 1,
            BlendMode::Screen => 2,
        }
    }
}

/// One rasterised layer: a tile of premultiplied RGBA8 pixels (`r | g<<8 | b<<16 | a<<24`)
/// whose top-left corner sits at (`x`, `y`) on the page (may be negative or overhang: the
/// compositor clips).
#[derive(Clone, PartialEq, Eq)]
pub struct Source {
    pub x: i64,
    pub y: i64,
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u32>,
    /// 0..=255, applied to the whole tile.
    pub opacity: u8,
    pub blend: BlendMode,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Source({}x{} at {},{} op {} {:?})", self.width, self.height, self.x, self.y, self.opacity, self.blend)
    }
}

impl Source {
    /// The part of this tile that lands on a `page`-sized canvas, as (page x, page y, tile x,
    /// tile y, width, height); `None` when nothing does.
    pub fn clip(&self, page: (u32, u32)) -> Option<(u32, u32, u32, u32, u32, u32)> {
        let x0 = self.x.max(0);
        let y0 = self.y.max(0);
        let x1 = (self.x + self.width as i64).min(page.0 as i64);
        let y1 = (self.y + self.height as i64).min(page.1 as i64);
        if x1 <= x0 || y1 <= y0 || self.opacity == 0 {
            return None;
        }
        Some((x0 as u32, y0 as u32, (x0 - self.x) as u32, (y0 - self.y) as u32, (x1 - x0) as u32, (y1 - y0) as u32))
    }
}

/// What a page is made of, ready to blend.
#[derive(Debug, Clone)]
pub struct PageLayers {
    pub width: u32,
    pub height: u32,
    /// Straight RGBA.
    pub background: [u8; 4],
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// No usable wgpu adapter (→ `unsupported` when the GPU backend was demanded).
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// A font that is not installed or does not parse.
    #[error("font: {0}")]
    Font(String),
    #[error("compositor: {0}")]
    Internal(String),
}

/// Which backend composites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Gpu,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Gpu => "gpu",
        }
    }
}

/// Blends a page's sources onto its background. Implementations are shared across jobs and
/// threads.
pub trait Compositor: Send + Sync {
    fn backend(&self) -> Backend;
    /// Premultiplied RGBA8 canvas, one `u32` per pixel, row-major.
    fn composite(&self, page: &PageLayers) -> Result<Vec<u32>, RenderError>;
}

/// The compositor for an acceleration choice: `gpu` fails with [`RenderError::NoAdapter`]
/// when wgpu finds no adapter; `auto` falls back to the CPU then.
pub fn compositor(accel: Accel) -> Result<Arc<dyn Compositor>, RenderError> {
    match accel {
        Accel::Cpu => Ok(Arc::new(cpu::CpuCompositor)),
        Accel::Gpu => Ok(gpu::shared()?),
        Accel::Auto => match gpu::shared() {
            Ok(g) => Ok(g),
            Err(e) => {
                tracing::debug!(error = %e, "no wgpu adapter; compositing on the CPU");
                Ok(Arc::new(cpu::CpuCompositor))
            }
        },
    }
}

/// Packs straight RGBA into the premultiplied `u32` the compositor works on.
pub fn premultiply(rgba: [u8; 4]) -> u32 {
    let a = rgba[3] as u32;
    let c = |v: u8| blend::mul255(v as u32, a);
    c(rgba[0]) | (c(rgba[1]) << 8) | (c(rgba[2]) << 16) | (a << 24)
}

/// Turns a composited canvas into an image: RGB when every pixel is opaque, else straight
/// RGBA.
pub fn to_image(width: u32, height: u32, canvas: &[u32]) -> Result<Image, RenderError> {
    let opaque = canvas.iter().all(|p| p >> 24 == 255);
    let (kind, ch) = if opaque { (PixelKind::Rgb8, 3) } else { (PixelKind::Rgba8, 4) };
    let mut data = Vec::with_capacity(canvas.len() * ch);
    for &p in canvas {
        let a = p >> 24;
        let un = |c: u32| (c * 255 + a / 2).checked_div(a).map_or(0, |v| v.min(255) as u8);
        let (r, g, b) = (p & 255, (p >> 8) & 255, (p >> 16) & 255);
        if opaque {
            data.extend_from_slice(&[r as u8, g as u8, b as u8]);
        } else {
            data.extend_from_slice(&[un(r), un(g), un(b), a as u8]);
        }
    }
    Image::new(width, height, kind, data).map_err(|e| RenderError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests;
