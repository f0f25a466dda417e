//! Opening a video source and reading what its header says. A source is a local path (opened
//! by FFmpeg directly, seekable) or any `Read` (an object-store stream, read as it is decoded:
//! never loaded whole; not seekable, so a resume decodes and drops up to its first segment).

use super::{init, VideoError};
use ffmpeg_next as ff;
use ff::format::context::{Input, StreamIo};
use ff::media::Type;
use serde::Serialize;
use std::io::Read;
use std::path::PathBuf;

/// Where a source's bytes come from.
pub enum SourceInput {
    Path(PathBuf),
    Reader(Box<dyn Read + Send + 'static>),
}

impl std::fmt::Debug for SourceInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceInput::Path(p) => write!(f, "Path({})", p.display()),
            SourceInput::Reader(_) => write!(f, "Reader"),
        }
    }
}

/// What the container header says about a source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    pub container: String,
    pub video_codec: String,
    pub width: u32,
    pub height: u32,
    /// Display aspect ratio (width / height, sample aspect ratio applied).
    pub display_aspect: f64,
    /// Seconds, when the container says.
    pub duration_s: Option<f64>,
    /// Average frame rate (frames per second), when known.
    pub fps: Option<f64>,
    pub audio_codec: Option<String>,
    /// Whether the input can seek (a resume then seeks instead of decoding from the start).
    pub seekable: bool,
}

/// An opened source: the demuxer plus its header facts.
pub struct OpenedSource {
    pub input: Input,
    pub info: SourceInfo,
    pub video_index: usize,
    pub audio_index: Option<usize>,
}

/// Opens a source and reads its header. Unreadable or truncated containers are `Corrupt`;
/// a file without a video stream, or with a codec this FFmpeg cannot decode, is `Unsupported`.
pub fn open(src: SourceInput) -> Result<OpenedSource, VideoError> {
    init();
    let (input, seekable) = match src {
        SourceInput::Path(p) => (ff::format::input(&p).map_err(open_error)?, true),
        SourceInput::Reader(r) => {
            let io = StreamIo::from_read(r).map_err(|e| VideoError::internal("stream reader", e))?;
            (ff::format::input_from_stream(io, None, None).map_err(open_error)?, false)
        }
    };
    let video = input
        .streams()
        .best(Type::Video)
        .ok_or_else(|| VideoError::Unsupported("the source has no video stream".into()))?;
    let video_index = video.index();
    let params = video.parameters();
    let codec_id = params.id();
    if ff::decoder::find(codec_id).is_none() {
        return Err(VideoError::Unsupported(format!("this FFmpeg build cannot decode {codec_id:?} video")));
    }
    // SAFETY: the parameters belong to the open stream and are only read.
    let (width, height, sar) = unsafe {
        let p = &*params.as_ptr();
        (p.width.max(0) as u32, p.height.max(0) as u32, p.sample_aspect_ratio)
    };
    if width == 0 || height == 0 {
        return Err(VideoError::Corrupt("the video stream has no frame size".into()));
    }
    let sar = if sar.num > 0 && sar.den > 0 { sar.num as f64 / sar.den as f64 } else { 1.0 };
    let rate = video.avg_frame_rate();
    let fps = (rate.numerator() > 0 && rate.denominator() > 0).then(|| f64::from(rate));
    let duration_s = if input.duration() > 0 {
        Some(input.duration() as f64 / f64::from(ff::ffi::AV_TIME_BASE))
    } else if video.duration() > 0 {
        Some(video.duration() as f64 * f64::from(video.time_base()))
    } else {
        None
    };
    let audio = input.streams().best(Type::Audio).filter(|a| ff::decoder::find(a.parameters().id()).is_some());
    let audio_index = audio.as_ref().map(|a| a.index());
    let audio_codec = audio.map(|a| format!("{:?}", a.parameters().id()).to_lowercase());
    let info = SourceInfo {
        container: input.format().name().to_owned(),
        video_codec: format!("{codec_id:?}").to_lowercase(),
        width,
        height,
        display_aspect: width as f64 * sar / height as f64,
        duration_s,
        fps,
        audio_codec,
        seekable,
    };
    Ok(OpenedSource { input, info, video_index, audio_index })
}

/// Reads the next packet of `input` into `packet`; `Ok(false)` at the end. A damaged packet
/// (`InvalidData`, which a demuxer resyncs past) is skipped and counted in `corrupt`, but
/// [`super::MOST_UNREADABLE_IN_A_ROW`] of them in a row make the source `Corrupt`: a demuxer
/// that answers every read so without moving would otherwise be retried forever (ffmpeg-next's
/// `packets()` does). Any other error is `Corrupt` at once.
///
/// The previous contents of `packet` are released first: FFmpeg 5.1's `av_read_frame` resets
/// the packet it is given without unreferencing it, so reading into a reused packet leaked every
/// packet's buffer (the whole compressed input of a transcode; the fuzzer's OOM of 2026-12-04).
pub fn read_packet(input: &mut Input, packet: &mut ff::Packet, corrupt: &mut u64) -> Result<bool, VideoError> {
    let mut in_a_row = 0;
    loop {
        // Dropping the old packet unreferences its buffer; an empty one costs no allocation.
        *packet = ff::Packet::empty();
        match packet.read(input) {
            Ok(()) => return Ok(true),
            Err(ff::Error::Eof) => return Ok(false),
            Err(ff::Error::InvalidData) => {
                *corrupt += 1;
                in_a_row += 1;
                if in_a_row >= super::MOST_UNREADABLE_IN_A_ROW {
                    return Err(VideoError::Corrupt(format!(
                        "the demuxer could not read {in_a_row} packets in a row (a container that points past its end?)"
                    )));
                }
            }
            Err(e) => return Err(VideoError::Corrupt(format!("reading the source failed: {e}"))),
        }
    }
}

fn open_error(e: ff::Error) -> VideoError {
    VideoError::Corrupt(format!("not a readable video container: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff::packet::Ref;

    /// Reading into a reused packet must release the previous packet's buffer. An extra
    /// reference to the first packet's buffer shows it: after the next read it must be the only
    /// one left (before the fix FFmpeg overwrote the packet and that count stayed at 2, leaking
    /// every packet read).
    #[test]
    fn reading_the_next_packet_releases_the_previous_ones_buffer() {
        let dir = std::env::temp_dir().join(format!("kiln-read-packet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // Matroska: readable as a stream too (an MP4 with its index at the end is not).
        let clip = dir.join("clip.mkv");
        let st = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1"])
            .args(["-c:v", "libx264", "-preset", "ultrafast"])
            .arg(&clip)
            .status()
            .expect("ffmpeg CLI");
        assert!(st.success());
        for input in [SourceInput::Path(clip.clone()), SourceInput::Reader(Box::new(std::fs::File::open(&clip).expect("clip")))] {
            let mut src = open(input).expect("open clip");
            let (mut packet, mut corrupt) = (ff::Packet::empty(), 0);
            let mut read = 0;
            while read_packet(&mut src.input, &mut packet, &mut corrupt).expect("read") {
                // SAFETY: the packet was just filled by av_read_frame; its buffer is
                // reference-counted, and the extra reference taken here is released below.
                let mut extra = unsafe { ff::ffi::av_buffer_ref((*packet.as_ptr()).buf) };
                assert!(!extra.is_null(), "packet {read} has no reference-counted buffer");
                let more = read_packet(&mut src.input, &mut packet, &mut corrupt).expect("read");
                // SAFETY: `extra` is the live reference taken above.
                let left = unsafe { ff::ffi::av_buffer_get_ref_count(extra) };
                unsafe { ff::ffi::av_buffer_unref(&mut extra) };
                assert_eq!(left, 1, "packet {read}'s buffer is still referenced after the next read (leaked)");
                read += 2;
                if !more {
                    break;
                }
            }
            assert!(read >= 24, "read only {read} packets of a 25-frame clip");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
