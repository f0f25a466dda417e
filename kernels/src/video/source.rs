//! Opening a video source and reading what its header says. A source is a local path (opened
//! by FFmpeg directly, seekable) or any `Read` (an object-store stream, read as it is decoded:
//! never loaded whole; not seekable, so a resume decodes and drops up to its first segment).

use super::VideoError;
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
    /// The `max_pixels` this source's decoders get ([`decoder_max_pixels`] of the caller's
    /// picture limit): the transcoder's decoder refuses larger frames instead of allocating them.
    pub decoder_max_pixels: i64,
}

/// Opens a source and reads its header. Unreadable or truncated containers are `Corrupt`;
/// a file without a video stream, or with a codec this FFmpeg cannot decode, is `Unsupported`.
///
/// `max_pixels` bounds the pictures FFmpeg's probing decoders may allocate (their
/// `max_pixels` option) while it reads the streams' parameters: a 38-byte H.264 stream whose
/// SPS says 1024x107296 made that probe allocate ~300 MB (fuzz/regressions/video_open-oom-f8d05054.h264).
/// A larger picture is still opened and reported with its size, for the caller's limit check;
/// it is never decoded at that size. The same bound goes to the transcoder's decoder
/// ([`OpenedSource::decoder_max_pixels`]). A stream that a demuxer only creates while probing
/// (MPEG-PS) gets no `max_pixels` (FFmpeg passes options only to the streams known at open);
/// FFmpeg's allocation cap, sized from `max_pixels` ([`super::allocation_cap_for`]), bounds
/// its pictures instead.
pub fn open(src: SourceInput, max_pixels: u64) -> Result<OpenedSource, VideoError> {
    super::init_for_pictures_of(max_pixels);
    let seekable = matches!(src, SourceInput::Path(_));
    let decoder_max_pixels = decoder_max_pixels(max_pixels);
    let input = open_input(src, decoder_max_pixels)?;
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
    Ok(OpenedSource { input, info, video_index, audio_index, decoder_max_pixels })
}

/// The `max_pixels` a decoder gets for a picture limit of `max_pixels`: FFmpeg checks the
/// padded size (width rounded up to 64: 160x120 counts as 192x120) and the job checks the
/// exact one, so the decoder's bound is looser — twice the limit plus a megapixel, within
/// FFmpeg's `int` range — still far below what a hostile header can declare.
fn decoder_max_pixels(max_pixels: u64) -> i64 {
    max_pixels.saturating_mul(2).saturating_add(1 << 20).min(i32::MAX as u64) as i64
}

/// `avformat_open_input` + `avformat_find_stream_info` (what `ffmpeg_next::format::input` and
/// `input_from_stream` do), with `decoder_max_pixels` for the probing decoders, and without
/// their panic on a path that is not UTF-8.
fn open_input(src: SourceInput, decoder_max_pixels: i64) -> Result<Input, VideoError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::ptr;
    let (path, mut custom_io) = match src {
        SourceInput::Path(p) => {
            let c = CString::new(p.as_os_str().as_bytes()).map_err(|_| VideoError::Corrupt("a source path with a NUL byte".into()))?;
            (Some(c), None)
        }
        SourceInput::Reader(r) => (None, Some(StreamIo::from_read(r).map_err(|e| VideoError::internal("stream reader", e))?)),
    };
    let limit = CString::new(decoder_max_pixels.to_string()).map_err(|e| VideoError::internal("max_pixels", e))?;
    // SAFETY: the FFmpeg calls below follow ffmpeg-next's own `input_from_stream_impl`: the
    // context is allocated here; with custom I/O `pb` is the StreamIo's context, which outlives
    // the format context (the Input takes both, and closes the format context first); on a
    // failed open FFmpeg frees the context itself; the option dictionaries are freed here.
    unsafe {
        let mut ps = ff::ffi::avformat_alloc_context();
        if ps.is_null() {
            return Err(VideoError::Internal("FFmpeg could not allocate a format context".into()));
        }
        if let Some(io) = custom_io.as_mut() {
            (*ps).pb = io.as_mut_ptr();
            (*ps).flags |= ff::ffi::AVFMT_FLAG_CUSTOM_IO;
        }
        let url = path.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        let r = ff::ffi::avformat_open_input(&mut ps, url, ptr::null(), ptr::null_mut());
        if r < 0 {
            return Err(open_error(ff::Error::from(r)));
        }
        let n = (*ps).nb_streams as usize;
        let mut options: Vec<*mut ff::ffi::AVDictionary> = vec![ptr::null_mut(); n];
        for o in options.iter_mut() {
            ff::ffi::av_dict_set(o, c"max_pixels".as_ptr(), limit.as_ptr(), 0);
        }
        let r = ff::ffi::avformat_find_stream_info(ps, if n == 0 { ptr::null_mut() } else { options.as_mut_ptr() });
        for o in options.iter_mut() {
            ff::ffi::av_dict_free(o);
        }
        if r < 0 {
            ff::ffi::avformat_close_input(&mut ps);
            return Err(open_error(ff::Error::from(r)));
        }
        Ok(match custom_io {
            Some(io) => Input::wrap_with_custom_io(ps, io),
            None => Input::wrap(ps),
        })
    }
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
            let mut src = open(input, 3840 * 2160).expect("open clip");
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

    /// Opens `fuzz/regressions/<input>` streamed (as from a store) in a child process that
    /// runs only the test `name` of this module (this test binary, `--exact`), so that other
    /// tests in this process do not count, and returns the child's peak RSS in kB and the
    /// open's result as text. In the child it opens, prints both, and returns `None`.
    fn peak_rss_of_streamed_open(name: &str, input: &str) -> Option<(u64, String)> {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions").join(input);
        if std::env::var_os("KILN_OPEN_CHILD").is_some() {
            let data = std::fs::read(file).expect("regression input");
            let r = open(SourceInput::Reader(Box::new(std::io::Cursor::new(data))), 3840 * 2160);
            let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
            let peak = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap_or("?").trim().to_owned();
            let what = match r {
                Ok(s) => format!("opened {}x{}", s.info.width, s.info.height),
                Err(e) => format!("{e:?}"),
            };
            println!("KILN_OPEN_RESULT peak={peak} result={what}");
            return None;
        }
        let test = format!("video::source::tests::{name}");
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args(["--exact", &test, "--nocapture", "--test-threads=1"])
            .env("KILN_OPEN_CHILD", "1")
            .output()
            .expect("child test");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "the child failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
        let line = text.lines().find_map(|l| l.split_once("KILN_OPEN_RESULT ").map(|(_, r)| r)).expect("the child's result line");
        let peak = line.strip_prefix("peak=").and_then(|r| r.split(" kB").next()).and_then(|v| v.trim().parse().ok()).expect("peak");
        let result = line.split_once("result=").map(|(_, r)| r.to_owned()).unwrap_or_default();
        Some((peak, result))
    }

    /// The fuzz finding of 2026-12-04 (`fuzz/regressions/video_open-oom-945a04ef.mp4`): a 3 KB
    /// MP4 whose header made the mov demuxer allocate 2 GiB and read into it; streamed, the
    /// reader's staging buffer was zero-filled to that size (2.1 GB of RSS). With FFmpeg's
    /// allocations capped the source is refused as corrupt, in a few tens of MB.
    #[test]
    fn a_header_that_names_a_2_gib_atom_is_refused_without_touching_2_gib() {
        let name = "a_header_that_names_a_2_gib_atom_is_refused_without_touching_2_gib";
        let Some((peak_kb, result)) = peak_rss_of_streamed_open(name, "video_open-oom-945a04ef.mp4") else { return };
        assert!(result.starts_with("Corrupt"), "expected Corrupt, got {result}");
        assert!(peak_kb < 200 << 10, "peak RSS {peak_kb} kB: the 2 GiB allocation was touched");
    }

    /// The fuzz finding of 2026-12-04 (`fuzz/regressions/video_open-oom-f8d05054.h264`): 38
    /// bytes of raw H.264 whose SPS says 1024x107296. Probing decoded it at that size (~300 MB
    /// of frame buffers, as `ffprobe` still does); with the probing decoders' `max_pixels` the
    /// source opens without allocating such a picture and reports its size, for the job's
    /// limit check (`input_too_large`).
    #[test]
    fn a_tiny_stream_that_declares_a_huge_picture_is_probed_without_allocating_it() {
        let name = "a_tiny_stream_that_declares_a_huge_picture_is_probed_without_allocating_it";
        let Some((peak_kb, result)) = peak_rss_of_streamed_open(name, "video_open-oom-f8d05054.h264") else { return };
        assert!(peak_kb < 200 << 10, "peak RSS {peak_kb} kB ({result}): the declared picture was allocated");
    }

    /// The same 38-byte stream copied into MPEG-PS (`ffmpeg -f h264 -i … -c copy -f mpeg`):
    /// that demuxer creates its streams only while probing, where FFmpeg passes no options, so
    /// the probing decoder had no `max_pixels` and allocated the picture (325 MB, as `ffprobe`
    /// does). With the allocation cap sized from the picture limit (79 MiB at 4K, below the
    /// 110 MB luma plane) it cannot.
    #[test]
    fn a_huge_picture_in_a_stream_found_only_while_probing_is_not_allocated() {
        let name = "a_huge_picture_in_a_stream_found_only_while_probing_is_not_allocated";
        let Some((peak_kb, result)) = peak_rss_of_streamed_open(name, "video_open-oom-f8d05054-in-mpeg-ps.mpg") else { return };
        assert!(peak_kb < 200 << 10, "peak RSS {peak_kb} kB ({result}): the declared picture was allocated");
    }

    #[test]
    fn the_allocation_cap_fits_the_picture_limit_within_its_bounds() {
        use super::super::{allocation_cap_for, LEAST_FFMPEG_ALLOCATION, MOST_FFMPEG_ALLOCATION};
        assert_eq!(allocation_cap_for(0), LEAST_FFMPEG_ALLOCATION);
        assert_eq!(allocation_cap_for(3840 * 2160), 3840 * 2160 * 10, "a 4K packed 16-bit RGBA frame fits");
        assert!(allocation_cap_for(3840 * 2160) < 1024 * 107296, "the fuzz finding's luma plane does not");
        assert_eq!(allocation_cap_for(7680 * 4320), MOST_FFMPEG_ALLOCATION);
        assert_eq!(allocation_cap_for(u64::MAX), MOST_FFMPEG_ALLOCATION);
    }
}
