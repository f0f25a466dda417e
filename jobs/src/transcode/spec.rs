//! The transcode spec as submitted (serde, unknown fields refused) and its validation: every
//! default filled in, every limit that needs no I/O checked.

use crate::context::{ensure, Limits};
use crate::error::JobError;
use crate::store::parse_uri;
use kiln_kernels::accel::ParseAccelError;
use kiln_kernels::video::VideoCodec;
use kiln_kernels::Accel;
use serde::Deserialize;
use std::collections::HashSet;

/// x264's presets (libx265 knows the same names).
pub const PRESETS: [&str; 10] = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"];

/// `{"source": URI, "ladder": [{"height":720,"bitrate_kbps":3000}], "codec":"h264",
/// "segment_seconds":4, "package":"hls", "accel":"auto", "preset":"veryfast",
/// "audio_bitrate_kbps":128}`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscodeSpec {
    pub source: String,
    pub ladder: Vec<RungSpec>,
    #[serde(default = "default_codec")]
    pub codec: String,
    #[serde(default = "default_segment")]
    pub segment_seconds: f64,
    #[serde(default = "default_package")]
    pub package: String,
    #[serde(default = "default_accel")]
    pub accel: String,
    #[serde(default = "default_preset")]
    pub preset: String,
    #[serde(default = "default_audio")]
    pub audio_bitrate_kbps: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RungSpec {
    pub height: u32,
    pub bitrate_kbps: u32,
}

fn default_codec() -> String {
    "h264".into()
}
fn default_segment() -> f64 {
    4.0
}
fn default_package() -> String {
    "hls".into()
}
fn default_accel() -> String {
    "auto".into()
}
fn default_preset() -> String {
    "veryfast".into()
}
fn default_audio() -> u32 {
    128
}

/// A validated transcode job.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub source: String,
    /// Requested rungs, in the order given.
    pub ladder: Vec<RungSpec>,
    pub codec: VideoCodec,
    pub segment_seconds: f64,
    pub accel: Accel,
    pub preset: String,
    pub audio_bitrate_kbps: u32,
}

impl TranscodeSpec {
    pub fn parse(input: &serde_json::Value) -> Result<Self, JobError> {
        serde_json::from_value(input.clone()).map_err(|e| JobError::invalid_spec(format!("transcode spec: {e}")))
    }

    pub fn resolve(self, limits: &Limits) -> Result<Resolved, JobError> {
        parse_uri(&self.source)?;
        ensure(!self.ladder.is_empty(), || "ladder: at least one rung".into())?;
        ensure(self.ladder.len() <= limits.max_ladder_rungs, || {
            format!("ladder: {} rungs, at most {} allowed", self.ladder.len(), limits.max_ladder_rungs)
        })?;
        let mut heights = HashSet::new();
        for (i, r) in self.ladder.iter().enumerate() {
            ensure((16..=4320).contains(&r.height), || format!("ladder[{i}].height {} is outside 16..=4320", r.height))?;
            ensure((32..=100_000).contains(&r.bitrate_kbps), || {
                format!("ladder[{i}].bitrate_kbps {} is outside 32..=100000", r.bitrate_kbps)
            })?;
            ensure(heights.insert(r.height), || format!("ladder[{i}]: height {} appears twice", r.height))?;
        }
        let codec = match self.codec.as_str() {
            "h264" | "avc" => VideoCodec::H264,
            "hevc" | "h265" => VideoCodec::Hevc,
            other => return Err(JobError::unsupported(format!("codec {other:?}: this worker encodes h264 or hevc"))),
        };
        ensure(self.segment_seconds.is_finite() && (1.0..=60.0).contains(&self.segment_seconds), || {
            format!("segment_seconds {} is outside 1..=60", self.segment_seconds)
        })?;
        if self.package != "hls" {
            return Err(JobError::unsupported(format!("package {:?}: this worker packages hls", self.package)));
        }
        let accel: Accel = self.accel.parse().map_err(|e: ParseAccelError| JobError::invalid_spec(e.to_string()))?;
        ensure(PRESETS.contains(&self.preset.as_str()), || format!("preset {:?}: expected one of {}", self.preset, PRESETS.join(", ")))?;
        ensure((16..=512).contains(&self.audio_bitrate_kbps), || {
            format!("audio_bitrate_kbps {} is outside 16..=512", self.audio_bitrate_kbps)
        })?;
        Ok(Resolved {
            source: self.source,
            ladder: self.ladder,
            codec,
            segment_seconds: self.segment_seconds,
            accel,
            preset: self.preset,
            audio_bitrate_kbps: self.audio_bitrate_kbps,
        })
    }
}

/// A rung as it will be encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRung {
    /// Folder name, e.g. `720p`.
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bitrate_kbps: u32,
}

/// Sizes the ladder for a source: widths follow the display aspect ratio, rounded to even.
/// Rungs taller than the source are dropped (never upscaled); when that drops them all, one
/// rung at the source height remains, with the lowest requested bitrate.
pub fn plan_ladder(ladder: &[RungSpec], src_height: u32, display_aspect: f64) -> Vec<PlannedRung> {
    let src_h = (src_height & !1).max(2);
    let mut kept: Vec<(u32, u32)> = ladder.iter().filter(|r| r.height <= src_h).map(|r| (r.height & !1, r.bitrate_kbps)).collect();
    if kept.is_empty() {
        let low = ladder.iter().map(|r| r.bitrate_kbps).min().unwrap_or(1000);
        kept.push((src_h, low));
    }
    let mut seen = HashSet::new();
    kept.retain(|(h, _)| seen.insert(*h));
    let aspect = if display_aspect.is_finite() && display_aspect > 0.0 { display_aspect } else { 16.0 / 9.0 };
    kept.into_iter()
        .map(|(height, bitrate_kbps)| {
            // Clamped: a hostile container can claim any display aspect (found by the
            // `envelope` fuzz target: u32 overflow); the encoder then refuses the width.
            let width = ((((height as f64 * aspect) / 2.0).round() as u32).min(u32::MAX / 2) * 2).max(2);
            PlannedRung { name: format!("{height}p"), width, height, bitrate_kbps }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    /// Regression (fuzz/artifacts envelope crash, 2026-12-03): an absurd source height and
    /// display aspect overflowed the width computation.
    #[test]
    fn absurd_source_sizes_and_aspects_plan_without_overflow() {
        let ladder = [RungSpec { height: 720, bitrate_kbps: 3000 }, RungSpec { height: 240, bitrate_kbps: 400 }];
        for (h, aspect) in [(u32::MAX, 1e9), (1, 0.001), (1080, f64::MAX), (1080, f64::NAN), (2, 1e-300)] {
            for r in plan_ladder(&ladder, h, aspect) {
                assert!(r.width >= 2 && r.width % 2 == 0 && r.height >= 2, "{h} {aspect}: {r:?}");
            }
        }
    }

    fn rungs(v: &[(u32, u32)]) -> Vec<RungSpec> {
        v.iter().map(|&(height, bitrate_kbps)| RungSpec { height, bitrate_kbps }).collect()
    }

    #[test]
    fn defaults_and_validation() {
        let l = Limits::default();
        let r = TranscodeSpec::parse(&json!({"source":"/x.mp4","ladder":[{"height":720,"bitrate_kbps":3000}]}))
            .unwrap()
            .resolve(&l)
            .unwrap();
        assert_eq!((r.codec, r.segment_seconds, r.accel, r.preset.as_str()), (VideoCodec::H264, 4.0, Accel::Auto, "veryfast"));
        let bad = |v: serde_json::Value| TranscodeSpec::parse(&v).and_then(|s| s.resolve(&l)).unwrap_err().code;
        assert_eq!(bad(json!({"source":"/x.mp4","ladder":[]})), ErrorCode::InvalidSpec);
        assert_eq!(bad(json!({"source":"/x.mp4","ladder":[{"height":720}]})), ErrorCode::InvalidSpec);
        assert_eq!(bad(json!({"source":"/x.mp4","ladder":[{"height":720,"bitrate_kbps":1}]})), ErrorCode::InvalidSpec);
        let two = json!([{"height":720,"bitrate_kbps":3000},{"height":720,"bitrate_kbps":2000}]);
        assert_eq!(bad(json!({"source":"/x.mp4","ladder":two})), ErrorCode::InvalidSpec);
        let one = json!([{"height":720,"bitrate_kbps":3000}]);
        assert_eq!(bad(json!({"source":"/x.mp4","ladder":one,"codec":"vp9"})), ErrorCode::Unsupported);
        assert_eq!(bad(json!({"source":"/x.mp4","ladder":one,"package":"dash"})), ErrorCode::Unsupported);
        assert_eq!(bad(json!({"source":"/x.mp4","ladder":one,"accel":"tpu"})), ErrorCode::InvalidSpec);
        assert_eq!(bad(json!({"source":"/x.mp4","ladder":one,"segment_seconds":0.2})), ErrorCode::InvalidSpec);
        assert_eq!(bad(json!({"source":"/x.mp4","ladder":one,"preset":"warp"})), ErrorCode::InvalidSpec);
        assert_eq!(bad(json!({"source":"/x.mp4","ladder":one,"extra":1})), ErrorCode::InvalidSpec);
        let many: Vec<_> = (1..=7).map(|i| json!({"height": 100 * i, "bitrate_kbps": 500})).collect();
        assert_eq!(bad(json!({"source":"/x.mp4","ladder":many})), ErrorCode::InvalidSpec);
    }

    #[test]
    fn ladder_keeps_aspect_and_never_upscales() {
        let p = plan_ladder(&rungs(&[(1080, 5000), (720, 3000), (480, 1500)]), 720, 16.0 / 9.0);
        assert_eq!(p.iter().map(|r| (r.width, r.height)).collect::<Vec<_>>(), vec![(1280, 720), (854, 480)]);
        assert_eq!(p[0].name, "720p");
        // Everything too tall: one rung at the source height, lowest bitrate.
        let p = plan_ladder(&rungs(&[(1080, 5000), (720, 3000)]), 360, 4.0 / 3.0);
        assert_eq!(p, vec![PlannedRung { name: "360p".into(), width: 480, height: 360, bitrate_kbps: 3000 }]);
        // Odd sizes round to even.
        let p = plan_ladder(&rungs(&[(241, 500)]), 480, 1.5);
        assert_eq!((p[0].width, p[0].height), (360, 240));
    }
}
