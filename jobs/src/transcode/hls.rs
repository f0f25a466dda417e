//! HLS playlists: one media playlist per rung (EVENT while the job runs, VOD once it ends)
//! and the master playlist. BANDWIDTH is the
//! peak segment bitrate and AVERAGE-BANDWIDTH the mean, both measured on the stored segment
//! files (so they include MPEG-TS overhead and the audio); CODECS comes from the encoded
//! stream's own SPS (`avc1.PPCCLL`) plus `mp4a.40.2` when there is audio.

use std::fmt::Write as _;

/// One stored segment of one rung.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentEntry {
    pub uri: String,
    pub duration: f64,
    pub bytes: u64,
}

/// What the master playlist says about a rung.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub playlist_uri: String,
    pub width: u32,
    pub height: u32,
    pub codecs: String,
    pub frame_rate: Option<f64>,
    pub peak_bps: u64,
    pub average_bps: u64,
}

/// Peak and average bitrate (bits per second) of a rung's segments.
pub fn bandwidth(segments: &[SegmentEntry]) -> (u64, u64) {
    let peak = segments
        .iter()
        .filter(|s| s.duration > 0.0)
        .map(|s| (s.bytes as f64 * 8.0 / s.duration).ceil() as u64)
        .max()
        .unwrap_or(0);
    let total_s: f64 = segments.iter().map(|s| s.duration).sum();
    let total_b: u64 = segments.iter().map(|s| s.bytes).sum();
    let avg = if total_s > 0.0 { (total_b as f64 * 8.0 / total_s).ceil() as u64 } else { 0 };
    (peak, avg)
}

/// Whether a media playlist is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    /// The job is still running: segments are only appended (`#EXT-X-PLAYLIST-TYPE:EVENT`,
    /// no end tag), so a player can start on the first segments.
    Event,
    /// The ladder is complete (`#EXT-X-PLAYLIST-TYPE:VOD` … `#EXT-X-ENDLIST`).
    Vod,
}

/// `#EXT-X-TARGETDURATION`: the segment length rounded up, or a longer segment's rounded
/// duration (a player rounds EXTINF to the nearest second and needs it ≤ the target). The
/// same value for the EVENT and the final playlist, as a playlist's target must not change.
pub fn target_duration(segment_seconds: f64, segments: &[SegmentEntry]) -> u64 {
    let longest = segments.iter().map(|s| s.duration).fold(0.0f64, f64::max).round();
    (segment_seconds - 1e-6).ceil().max(longest).max(1.0) as u64
}

/// A media playlist listing `segments` in order.
pub fn media_playlist(segments: &[SegmentEntry], target: u64, kind: PlaylistKind) -> String {
    let mut m = String::new();
    m.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
    let _ = writeln!(m, "#EXT-X-TARGETDURATION:{target}");
    let kind_tag = match kind {
        PlaylistKind::Event => "EVENT",
        PlaylistKind::Vod => "VOD",
    };
    let _ = writeln!(m, "#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:{kind_tag}\n#EXT-X-INDEPENDENT-SEGMENTS");
    for s in segments {
        let _ = writeln!(m, "#EXTINF:{:.6},\n{}", s.duration, s.uri);
    }
    if kind == PlaylistKind::Vod {
        m.push_str("#EXT-X-ENDLIST\n");
    }
    m
}

/// The master playlist, variants in the order given.
pub fn master_playlist(variants: &[Variant]) -> String {
    let mut m = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for v in variants {
        let _ = write!(
            m,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION={}x{},CODECS=\"{}\"",
            v.peak_bps, v.average_bps, v.width, v.height, v.codecs
        );
        if let Some(fr) = v.frame_rate {
            let _ = write!(m, ",FRAME-RATE={fr:.3}");
        }
        let _ = writeln!(m, "\n{}", v.playlist_uri);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_carry_the_measured_numbers() {
        let segs = vec![
            SegmentEntry { uri: "seg-00000.ts".into(), duration: 4.0, bytes: 500_000 },
            SegmentEntry { uri: "seg-00001.ts".into(), duration: 2.5, bytes: 100_000 },
        ];
        assert_eq!(bandwidth(&segs), (1_000_000, 738_462));
        assert_eq!(target_duration(4.0, &segs), 4);
        assert_eq!(target_duration(2.5, &segs), 4);
        assert_eq!(target_duration(6.0, &segs[1..]), 6);
        let m = media_playlist(&segs, 4, PlaylistKind::Vod);
        assert!(m.starts_with("#EXTM3U\n"));
        assert!(m.contains("#EXT-X-TARGETDURATION:4\n"));
        assert!(m.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!(m.contains("#EXTINF:2.500000,\nseg-00001.ts\n"));
        assert!(m.ends_with("#EXT-X-ENDLIST\n"));
        let live = media_playlist(&segs[..1], 4, PlaylistKind::Event);
        assert!(live.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"));
        assert!(live.ends_with("#EXTINF:4.000000,\nseg-00000.ts\n"), "{live}");
        let v = Variant {
            playlist_uri: "720p/index.m3u8".into(),
            width: 1280,
            height: 720,
            codecs: "avc1.64001f,mp4a.40.2".into(),
            frame_rate: Some(30.0),
            peak_bps: 1_000_000,
            average_bps: 738_462,
        };
        let master = master_playlist(&[v]);
        assert!(master.contains(
            "#EXT-X-STREAM-INF:BANDWIDTH=1000000,AVERAGE-BANDWIDTH=738462,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\",FRAME-RATE=30.000\n720p/index.m3u8\n"
        ));
    }
}
