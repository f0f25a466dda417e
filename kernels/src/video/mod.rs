//! Video kernels on the system FFmpeg (ffmpeg-next): open and probe a source, decode once,
//! scale and encode every rung of an adaptive-bitrate ladder in parallel, and cut each rung
//! into MPEG-TS segments whose first frame is an IDR at the same instant in every rung.
//!
//! - [`source`]: opening a source (a path, or any `Read` for object-store streams) and what
//!   its header says (codec, size, duration, frame rate, audio).
//! - [`ladder`]: the pipeline — one decoder thread, one thread per rung (scale + encode +
//!   segment muxer), finished segments handed to the caller's thread as they complete.
//! - [`rung`]: one rung's scaler, encoder and segment writer.
//! - [`scale`]: a rung's resampler, swscale or scale_cuda (an FFmpeg filter graph).
//! - [`plan`]: which rung scales from which frames (cascade), and each encoder's threads.
//! - [`audio`]: audio decode, resample and AAC encode (once, shared by every rung).
//! - [`probe`]: which codecs this FFmpeg build has and whether NVENC/NVDEC really open.
//! - [`types`]: the plain types the others share (codec, encoder family, rung, segment file).
//!
//! Dependencies point one way: `ladder` → `rung`, `plan`, `scale`, `audio`, `source`, `probe`;
//! `rung` → `scale`; `probe` → `scale`; everything → `types`, which imports none of them.
//!
//! This module knows nothing of jobs, stores or playlists.

pub mod audio;
mod avfilter;
pub mod ladder;
pub mod probe;
pub mod rung;
pub mod plan;
pub mod scale;
pub mod source;
pub mod types;

pub use ladder::{transcode, LadderConfig, LadderSummary};
pub use scale::ScaleEngine;
pub use rung::encoder_name as rung_encoder_name;
pub use source::{open, read_packet, OpenedSource, SourceInfo, SourceInput};
pub use types::{EncoderKind, RungConfig, SegmentFile, VideoCodec};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

/// What can go wrong in a video kernel, by what the caller should report.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The input is not a video we can read: not a container, truncated, undecodable data.
    #[error("{0}")]
    Corrupt(String),
    /// A well-formed input we do not handle (a codec this FFmpeg build cannot decode, …).
    #[error("{0}")]
    Unsupported(String),
    /// The source runs longer than the configured limit.
    #[error("{0}")]
    TooLong(String),
    /// The caller asked to stop (cancel, deadline, a failed store).
    #[error("stopped")]
    Stopped,
    /// Something on our side failed (an encoder would not open, a temp file).
    #[error("{0}")]
    Internal(String),
}

impl VideoError {
    pub(crate) fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        VideoError::Internal(format!("{what}: {e}"))
    }
}

/// Unreadable packets (`AVERROR_INVALIDDATA`) in a row after which a source is `Corrupt`. A
/// demuxer resyncs past a damaged packet or a few, but one whose next root atom lies past the
/// end of the file (fuzz/regressions/video_open-71109926.mp4) answers every read with the same
/// error without moving: without a bound the read loop spun until the job's deadline.
pub const MOST_UNREADABLE_IN_A_ROW: u32 = 100;

/// The largest single allocation FFmpeg may make in this process (`av_max_alloc`; FFmpeg's
/// own default is 2 GiB), whatever the picture limit. A container header can name any size,
/// and some demuxers allocate what it says and read into it: a 3 KB MP4
/// (fuzz/regressions/video_open-oom-945a04ef.mp4) made the mov demuxer allocate 2 GiB, and a
/// streamed source's reader (ffmpeg-next's `StreamIo` stages every read in a buffer of the
/// requested size, zero-filled) then touched all of it: 2.1 GB of RSS from one hostile upload.
/// Under the cap such an allocation fails and the source is `Corrupt`.
pub const MOST_FFMPEG_ALLOCATION: usize = 128 << 20;

/// The least cap, for small picture limits: room for packets, indexes and I/O buffers.
pub const LEAST_FFMPEG_ALLOCATION: usize = 64 << 20;

/// Bytes per pixel of the largest legitimate single buffer of a picture: a packed 16-bit RGBA
/// frame (8 bytes a pixel) with FFmpeg's row and edge padding.
const PICTURE_BYTES_PER_PIXEL: u64 = 10;

/// The allocation cap for pictures of up to `max_pixels`: a picture buffer of that size fits,
/// within [`LEAST_FFMPEG_ALLOCATION`]..=[`MOST_FFMPEG_ALLOCATION`]. At the default 4K limit it
/// is 79 MiB, below a 1024x107296 luma plane (110 MB): a stream that declares such a picture
/// where the probing decoder gets no `max_pixels` (a stream the MPEG-PS demuxer only creates
/// while probing) can no longer allocate it (325 MB of RSS before, 104 MB after).
pub fn allocation_cap_for(max_pixels: u64) -> usize {
    let want = max_pixels.saturating_mul(PICTURE_BYTES_PER_PIXEL);
    usize::try_from(want).unwrap_or(usize::MAX).clamp(LEAST_FFMPEG_ALLOCATION, MOST_FFMPEG_ALLOCATION)
}

/// The cap in force: 0 until a source is opened with a picture limit, then the largest cap any
/// opened source's limit asked for (every job of the process must fit under it).
static ALLOCATION_CAP: AtomicUsize = AtomicUsize::new(0);

/// Initialises FFmpeg ([`init`]) with an allocation cap that fits pictures of up to
/// `max_pixels`: the cap only grows from the first limit given.
pub(crate) fn init_for_pictures_of(max_pixels: u64) {
    init();
    let want = allocation_cap_for(max_pixels);
    if ALLOCATION_CAP.fetch_max(want, Ordering::SeqCst) < want {
        apply_allocation_cap();
    }
}

/// Hands the cap in force to FFmpeg; serialised, so the last one applied is the largest.
fn apply_allocation_cap() {
    static APPLYING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = APPLYING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let cap = match ALLOCATION_CAP.load(Ordering::SeqCst) {
        0 => MOST_FFMPEG_ALLOCATION,
        cap => cap,
    };
    // SAFETY: av_max_alloc only stores the limit.
    unsafe { ffmpeg_next::ffi::av_max_alloc(cap) };
}

/// Initialises FFmpeg once per process, caps its allocations ([`allocation_cap_for`] the
/// largest picture limit seen so far, else [`MOST_FFMPEG_ALLOCATION`]) and quiets its logging
/// (errors only).
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Err(e) = ffmpeg_next::init() {
            tracing::warn!(error = %e, "FFmpeg init failed");
        }
        apply_allocation_cap();
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    });
}

/// A decoded frame shared read-only between the rung threads.
pub(crate) struct SharedFrame(pub ffmpeg_next::frame::Video);

// SAFETY: the AVFrame and its reference-counted buffers are written only by the thread that
// made it (the decoder, or a rung for the frames it scaled) before the frame is wrapped;
// afterwards every reader only reads it (swscale reads the source planes, an encoder copies
// them in), and the last `Arc` owner frees it, on whichever thread.
unsafe impl Send for SharedFrame {}
unsafe impl Sync for SharedFrame {}
