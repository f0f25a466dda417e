//! Still images on the CPU: sniff, decode (JPEG with DCT shrink-on-load), orient, colour-manage
//! (ICC → sRGB), resize (SIMD convolution, premultiplied alpha), composite and encode.
//!
//! A thumbnail pipeline is: [`probe`] the header (format, dimensions, orientation; refuse
//! decompression bombs before any pixel is allocated) → plan each output with [`fit::plan`] →
//! [`decode`] once at the largest size any output needs → [`orient::apply`] → colour
//! ([`color::SrgbTransform`]) → per output: [`resize::resize`], [`composite`], [`encode::encode`].
//!
//! Every function here is safe on hostile input: errors, never panics.

pub mod color;
pub mod composite;
pub mod decode;
pub mod encode;
pub mod fit;
pub mod jpeg;
pub mod orient;
pub mod png_shrink;
pub mod progressive;
pub mod resize;
pub mod sniff;

pub use color::SrgbTransform;
pub use composite::{flatten, pad, watermark, Gravity};
pub use decode::{decode, probe, DecodeOptions, Decoded};
pub use encode::{encode, EncodeOptions, OutputFormat};
pub use fit::{plan, Fit, Plan};
pub use orient::Orientation;
pub use resize::resize;
pub use sniff::{sniff, Format};

/// How the bytes of [`Image::data`] are laid out: 8 bits per channel, rows packed, no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelKind {
    Rgb8,
    /// Straight (not premultiplied) alpha.
    Rgba8,
}

impl PixelKind {
    pub fn channels(self) -> usize {
        match self {
            PixelKind::Rgb8 => 3,
            PixelKind::Rgba8 => 4,
        }
    }
    pub fn has_alpha(self) -> bool {
        matches!(self, PixelKind::Rgba8)
    }
}

/// A decoded image in memory.
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub pixels: PixelKind,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Image({}x{} {:?}, {} bytes)", self.width, self.height, self.pixels, self.data.len())
    }
}

impl Image {
    /// Wraps a pixel buffer, checking that its length matches the dimensions.
    pub fn new(width: u32, height: u32, pixels: PixelKind, data: Vec<u8>) -> Result<Image, ImageError> {
        let want = byte_len(width, height, pixels)?;
        if data.len() != want {
            return Err(ImageError::Internal(format!(
                "{width}x{height} {pixels:?} needs {want} bytes, got {}",
                data.len()
            )));
        }
        Ok(Image { width, height, pixels, data })
    }

    /// A new image filled with one colour (`rgba`; the alpha is dropped for `Rgb8`).
    pub fn filled(width: u32, height: u32, pixels: PixelKind, rgba: [u8; 4]) -> Result<Image, ImageError> {
        let n = byte_len(width, height, pixels)?;
        let px = &rgba[..pixels.channels()];
        let mut data = Vec::with_capacity(n);
        for _ in 0..(width as usize * height as usize) {
            data.extend_from_slice(px);
        }
        Ok(Image { width, height, pixels, data })
    }

    pub fn channels(&self) -> usize {
        self.pixels.channels()
    }

    pub fn pixel_count(&self) -> u64 {
        self.width as u64 * self.height as u64
    }

    /// The pixel at (x, y) as RGBA (alpha 255 for `Rgb8`). Panics when out of bounds: for
    /// tests and small tools, not for pixel loops.
    pub fn rgba_at(&self, x: u32, y: u32) -> [u8; 4] {
        let c = self.channels();
        let i = (y as usize * self.width as usize + x as usize) * c;
        let p = &self.data[i..i + c];
        [p[0], p[1], p[2], if c == 4 { p[3] } else { 255 }]
    }

    /// Whether every pixel is fully opaque (always true for `Rgb8`).
    pub fn is_opaque(&self) -> bool {
        match self.pixels {
            PixelKind::Rgb8 => true,
            PixelKind::Rgba8 => self.data.chunks_exact(4).all(|p| p[3] == 255),
        }
    }
}

/// Bytes needed for an image, refusing sizes that overflow.
pub fn byte_len(width: u32, height: u32, pixels: PixelKind) -> Result<usize, ImageError> {
    (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(pixels.channels()))
        .ok_or_else(|| ImageError::Internal(format!("{width}x{height} overflows")))
}

/// What [`probe`] learns from the header alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: Format,
    /// As stored, before orientation.
    pub width: u32,
    pub height: u32,
    pub orientation: Orientation,
    pub has_alpha: bool,
}

impl ImageInfo {
    /// Dimensions once the EXIF orientation is applied (width and height swap for 5-8).
    pub fn oriented_dims(&self) -> (u32, u32) {
        self.orientation.apply_dims(self.width, self.height)
    }
    pub fn pixels(&self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

/// Why an image could not be processed. Each variant maps to one job error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// A format we do not read (HEIC, SVG, …) or a feature of one we do (→ `unsupported`).
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// Empty, truncated or malformed data (→ `corrupt_input`).
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// More pixels than allowed, found from the header before decoding (→ `input_too_large`).
    #[error("image is {width}x{height} ({} pixels), over the limit of {limit} pixels", *width as u64 * *height as u64)]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    /// A bug or resource failure on our side (→ `internal`).
    #[error("image processing failed: {0}")]
    Internal(String),
}

#[cfg(test)]
pub(crate) mod testutil;
#[cfg(test)]
mod corpus_tests;
