//! The plain types the ladder's modules share (codec, encoder family, one rung's size and
//! bitrate, a finished segment file). They sit at the bottom of the video modules' one-way
//! order (`types` ← `plan`, `rung` ← `ladder`), so `plan` and `rung` need not import `ladder`.

use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    H264,
    Hevc,
}

/// Which encoder family runs the rungs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    /// libx264 / libx265.
    Cpu,
    /// h264_nvenc / hevc_nvenc.
    Nvenc,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RungConfig {
    pub width: u32,
    pub height: u32,
    pub bitrate_kbps: u32,
}

/// One finished segment file of one rung.
#[derive(Debug, Clone)]
pub struct SegmentFile {
    pub rung: usize,
    pub index: u32,
    pub path: PathBuf,
    /// Seconds, from its first frame to the next segment's first frame (or the end).
    pub duration: f64,
    /// Start time in seconds from the video's start.
    pub start: f64,
    pub bytes: u64,
    /// RFC 6381 codec string of the rung's video, once known.
    pub codecs: Option<String>,
}
