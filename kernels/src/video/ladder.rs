//! The ladder pipeline: decode once, encode every rung in parallel.
//!
//! ```text
//!  decoder thread ──Arc<frame>──▶ rung 0 thread (scale → encode → seg-*.ts) ─┐
//!  (demux, video decode,  ├─────▶ rung 1 thread ──Arc<scaled frame>──┐        ├─▶ caller's thread
//!   audio → AAC once)     └─audio─────────────────────────▶ rung 2 thread ◀─┘ ┘   (on_segment)
//! ```
//!
//! A rung scales from the decoded source, or from a larger rung's scaled frames when that
//! is within 2× (`plan.rs`: 720p → 480p, not 1080p → 480p). Audio goes from the decoder to
//! every rung. Channels are bounded, so a slow encoder holds back the decoder instead of piling up
//! frames. Segment `k` holds the frames whose time (from the video's start) lies in
//! `[k·S, (k+1)·S)`; its first frame is an IDR in every rung, so segments line up across
//! rungs. A resumed run (`start_segment > 0`) seeks to the keyframe before `start_segment·S`
//! (or decodes from the start when the input cannot seek) and drops the frames before it, so
//! it produces the same segments as an uninterrupted run.

use super::audio::AudioPipeline;
use super::scale::ScaleEngine;
use super::rung::{self, Msg, RungDone, RungSetup};
use super::plan;
use super::source::{read_packet, OpenedSource};
use super::types::{EncoderKind, RungConfig, SegmentFile, VideoCodec};
use super::{SharedFrame, VideoError};
use ffmpeg_next as ff;
use ff::packet::Mut as _;
use ff::{codec, frame, Packet, Rational};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct LadderConfig {
    pub rungs: Vec<RungConfig>,
    pub codec: VideoCodec,
    pub encoder: EncoderKind,
    /// Decode with NVDEC (`*_cuvid`) when FFmpeg has a cuvid decoder for the source codec.
    pub nvdec: bool,
    /// What resamples the scaled rungs (`ScaleEngine::Cuda`: scale_cuda on the GPU).
    pub scale: ScaleEngine,
    /// libx264/libx265 preset.
    pub preset: String,
    pub segment_seconds: f64,
    pub audio_bitrate_kbps: u32,
    /// First segment to produce (segments before it exist from an earlier attempt).
    pub start_segment: u32,
    /// Where rung `i` writes its segment files (`{work_dir}/r{i}/seg-00000.ts`).
    pub work_dir: PathBuf,
    /// Refuse sources whose frames run past this many seconds.
    pub max_duration_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LadderSummary {
    /// Per rung, the RFC 6381 codec string of its video.
    pub codecs: Vec<String>,
    pub frames_decoded: u64,
    pub frames_encoded: Vec<u64>,
    pub corrupt_packets: u64,
    pub has_audio: bool,
    pub decoder: String,
    /// Per rung, what resampled its frames (`none` for a rung the source's size).
    pub scalers: Vec<String>,
}

struct DecodeStats {
    frames: u64,
    corrupt_packets: u64,
    decoder: String,
}

/// Runs the ladder over an opened source. `on_segment` runs on the calling thread for every
/// finished segment file, in completion order; an error from it stops the pipeline and is
/// returned. `stop` is polled between packets: when it says true the pipeline ends with
/// `VideoError::Stopped`.
pub fn transcode(
    src: OpenedSource,
    cfg: &LadderConfig,
    stop: &(dyn Fn() -> bool + Sync),
    mut on_segment: impl FnMut(SegmentFile) -> Result<(), VideoError>,
) -> Result<LadderSummary, VideoError> {
    if cfg.rungs.is_empty() || cfg.segment_seconds <= 0.0 {
        return Err(VideoError::Internal("a ladder needs rungs and a positive segment length".into()));
    }
    let vstream = src.input.stream(src.video_index).ok_or_else(|| VideoError::Internal("video stream vanished".into()))?;
    let tb = vstream.time_base();
    let fps = {
        let r = vstream.avg_frame_rate();
        if r.numerator() > 0 && r.denominator() > 0 {
            r
        } else {
            let r = vstream.rate();
            if r.numerator() > 0 && r.denominator() > 0 { r } else { Rational::new(30, 1) }
        }
    };
    let origin_pts = if vstream.start_time() != ff::ffi::AV_NOPTS_VALUE { vstream.start_time() } else { 0 };
    let origin_s = origin_pts as f64 * f64::from(tb);
    let skip_before_s = cfg.start_segment as f64 * cfg.segment_seconds;
    let audio = match src.audio_index.and_then(|i| src.input.stream(i)) {
        Some(a) => Some(AudioPipeline::new(&a, cfg.audio_bitrate_kbps, origin_s, skip_before_s)?),
        None => None,
    };
    let audio_params = audio.as_ref().map(|a| (a.parameters(), a.time_base()));

    // Who scales from what, and each encoder's threads (plan.rs).
    let feeders = plan::feeders(&cfg.rungs, src.info.width, src.info.height);
    let threads = match cfg.encoder {
        EncoderKind::Cpu => plan::encoder_threads(&cfg.rungs, std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
        EncoderKind::Nvenc => vec![0; cfg.rungs.len()],
    };
    let (txs, rxs): (Vec<SyncSender<Msg>>, Vec<Receiver<Msg>>) = cfg.rungs.iter().map(|_| sync_channel::<Msg>(8)).unzip();
    // The decoder sends video to the rungs that scale from the source, audio to every rung.
    let video_txs: Vec<SyncSender<Msg>> = txs.iter().zip(&feeders).filter(|(_, f)| f.is_none()).map(|(t, _)| t.clone()).collect();
    let mut setups = Vec::with_capacity(cfg.rungs.len());
    for (i, r) in cfg.rungs.iter().enumerate() {
        let dir = cfg.work_dir.join(format!("r{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| VideoError::internal("work dir", e))?;
        let forward = feeders.iter().zip(&txs).filter(|(f, _)| **f == Some(i)).map(|(_, t)| t.clone()).collect();
        setups.push(RungSetup {
            index: i,
            cfg: r.clone(),
            codec: cfg.codec,
            encoder: cfg.encoder,
            preset: cfg.preset.clone(),
            tb,
            fps,
            audio: audio_params.clone(),
            dir,
            threads: threads.get(i).copied().unwrap_or(0),
            scale: cfg.scale.clone(),
            forward,
        });
    }
    tracing::debug!(?feeders, ?threads, "ladder plan");

    let halted = AtomicBool::new(false);
    let should_stop = || halted.load(Ordering::Relaxed) || stop();
    let should_stop = &should_stop;
    let (done_tx, done_rx) = sync_channel::<SegmentFile>(4 * cfg.rungs.len());
    std::thread::scope(|scope| {
        let mut rung_threads = Vec::new();
        for (setup, rx) in setups.into_iter().zip(rxs) {
            let done = done_tx.clone();
            let name = format!("kiln-rung-{}", setup.index);
            let h = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, move || rung::run(setup, rx, done))
                .map_err(|e| VideoError::internal("rung thread", e))?;
            rung_threads.push(h);
        }
        drop(done_tx);
        let decoder = std::thread::Builder::new()
            .name("kiln-decode".into())
            .spawn_scoped(scope, move || decode(src, cfg, audio, Senders { video: video_txs, all: txs }, should_stop, tb, origin_pts, skip_before_s))
            .map_err(|e| VideoError::internal("decoder thread", e))?;

        let mut failure: Option<VideoError> = None;
        for seg in done_rx.iter() {
            if let Err(e) = on_segment(seg) {
                halted.store(true, Ordering::SeqCst);
                failure = Some(e);
                break;
            }
        }
        drop(done_rx);
        let decoded = decoder.join().unwrap_or_else(|_| Err(VideoError::Internal("decoder thread panicked".into())));
        let mut rungs: Vec<RungDone> = Vec::new();
        let mut rung_error = None;
        for h in rung_threads {
            match h.join() {
                Ok(Ok(d)) => rungs.push(d),
                Ok(Err(e)) => rung_error = rung_error.or(Some(e)),
                Err(_) => rung_error = rung_error.or(Some(VideoError::Internal("rung thread panicked".into()))),
            }
        }
        // The most telling error first: the caller's own, then the input's, then a rung's.
        if let Some(e) = failure {
            return Err(e);
        }
        let stats = decoded?;
        if let Some(e) = rung_error {
            return Err(e);
        }
        if should_stop() {
            return Err(VideoError::Stopped);
        }
        Ok(LadderSummary {
            codecs: rungs.iter().map(|r| r.codecs.clone()).collect(),
            frames_encoded: rungs.iter().map(|r| r.frames).collect(),
            frames_decoded: stats.frames,
            corrupt_packets: stats.corrupt_packets,
            has_audio: audio_params.is_some(),
            decoder: stats.decoder,
            scalers: rungs.iter().map(|r| r.scaler.clone()).collect(),
        })
    })
}

/// Opens the video decoder: NVDEC's `*_cuvid` when asked and available, else FFmpeg's own,
/// with frame threading on.
fn open_decoder(src: &OpenedSource, nvdec: bool) -> Result<(ff::decoder::Video, String), VideoError> {
    let stream = src.input.stream(src.video_index).ok_or_else(|| VideoError::Internal("video stream vanished".into()))?;
    let params = stream.parameters();
    let id = params.id();
    let mut ctx = codec::context::Context::from_parameters(params).map_err(|e| VideoError::internal("video decoder", e))?;
    ctx.set_threading(codec::threading::Config { kind: codec::threading::Type::Frame, count: 0, ..Default::default() });
    // SAFETY: a plain field of the context, set before the decoder opens. A stream that
    // switches to a larger picture mid-way is refused frame by frame instead of allocated.
    unsafe { (*ctx.as_mut_ptr()).max_pixels = src.decoder_max_pixels };
    let cuvid = if nvdec { super::probe::cuvid_decoder(id) } else { None };
    let codec = match cuvid {
        Some(c) => c,
        None => ff::decoder::find(id).ok_or_else(|| VideoError::Unsupported(format!("this FFmpeg build cannot decode {id:?}")))?,
    };
    let name = codec.name().to_owned();
    let dec = ctx.decoder().open_as(codec).and_then(|o| o.video()).map_err(|e| VideoError::Unsupported(format!("cannot decode {id:?} video: {e}")))?;
    Ok((dec, name))
}

#[allow(clippy::too_many_arguments)]
fn decode(
    mut src: OpenedSource,
    cfg: &LadderConfig,
    mut audio: Option<AudioPipeline>,
    senders: Senders,
    stop: &(dyn Fn() -> bool + Sync),
    tb: Rational,
    origin_pts: i64,
    skip_before_s: f64,
) -> Result<DecodeStats, VideoError> {
    let (mut decoder, decoder_name) = open_decoder(&src, cfg.nvdec)?;
    let tbf = f64::from(tb);
    if skip_before_s > 0.0 && src.info.seekable {
        let ts = ((origin_pts as f64 * tbf + skip_before_s) * f64::from(ff::ffi::AV_TIME_BASE)) as i64;
        if let Err(e) = src.input.seek(ts, ..ts) {
            tracing::debug!(error = %e, "seek failed; decoding from the start");
        }
    }
    let mut stats = DecodeStats { frames: 0, corrupt_packets: 0, decoder: decoder_name };
    let mut state = FrameState { last_pts: None, senders: &senders.video, tb: tbf, origin_pts, skip_before_s, cfg };
    let mut frame = frame::Video::empty();
    let mut aac: Vec<Packet> = Vec::new();
    let mut packet = Packet::empty();
    let video_index = src.video_index;
    let audio_index = src.audio_index;
    loop {
        if stop() {
            return Err(VideoError::Stopped);
        }
        if !read_packet(&mut src.input, &mut packet, &mut stats.corrupt_packets)? {
            break;
        }
        let si = packet.stream();
        if si == video_index {
            if decoder.send_packet(&packet).is_err() {
                stats.corrupt_packets += 1;
                continue;
            }
            while decoder.receive_frame(&mut frame).is_ok() {
                let f = std::mem::replace(&mut frame, frame::Video::empty());
                if !state.emit(f, &mut stats)? {
                    return Err(VideoError::Stopped);
                }
            }
        } else if Some(si) == audio_index {
            if let Some(a) = audio.as_mut() {
                a.push(&packet, &mut aac)?;
                send_audio(&mut aac, &senders.all, audio.as_ref().map(|a| a.time_base()));
            }
        }
    }
    let _ = decoder.send_eof();
    while decoder.receive_frame(&mut frame).is_ok() {
        let f = std::mem::replace(&mut frame, frame::Video::empty());
        if !state.emit(f, &mut stats)? {
            return Err(VideoError::Stopped);
        }
    }
    if let Some(a) = audio.as_mut() {
        a.finish(&mut aac)?;
        send_audio(&mut aac, &senders.all, Some(a.time_base()));
    }
    if stats.frames == 0 && skip_before_s == 0.0 {
        return Err(VideoError::Corrupt("no video frame could be decoded".into()));
    }
    Ok(stats)
}

/// The decoder thread's channels to the rungs.
struct Senders {
    /// Rungs that scale from the decoded source.
    video: Vec<SyncSender<Msg>>,
    /// Every rung (audio).
    all: Vec<SyncSender<Msg>>,
}

struct FrameState<'a> {
    last_pts: Option<i64>,
    senders: &'a [SyncSender<Msg>],
    tb: f64,
    origin_pts: i64,
    skip_before_s: f64,
    cfg: &'a LadderConfig,
}

impl FrameState<'_> {
    /// Stamps a decoded frame with its time from the video start and sends it to every rung.
    /// `Ok(false)` when a rung has gone (it failed; its error is reported from its thread).
    fn emit(&mut self, mut f: frame::Video, stats: &mut DecodeStats) -> Result<bool, VideoError> {
        let raw = f.timestamp().or(f.pts()).map(|p| p - self.origin_pts);
        // Timestamps must rise; a missing or repeated one follows the previous frame.
        let pts = match (raw, self.last_pts) {
            (Some(p), Some(l)) if p > l => p,
            (Some(p), None) => p.max(0),
            (_, Some(l)) => l + 1,
            (None, None) => 0,
        };
        let t = pts as f64 * self.tb;
        if t + 1e-6 < self.skip_before_s {
            return Ok(true);
        }
        if let Some(max) = self.cfg.max_duration_s {
            if t > max {
                return Err(VideoError::TooLong(format!("the video runs past the limit of {max} s")));
            }
        }
        self.last_pts = Some(pts);
        stats.frames += 1;
        let seg = (t / self.cfg.segment_seconds + 1e-9).floor().max(0.0) as u32;
        f.set_pts(Some(pts));
        let shared = Arc::new(SharedFrame(f));
        for tx in self.senders {
            if tx.send(Msg::Video { frame: shared.clone(), seg }).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn send_audio(aac: &mut Vec<Packet>, senders: &[SyncSender<Msg>], tb: Option<Rational>) {
    let Some(tb) = tb else { return };
    for mut p in aac.drain(..) {
        // SAFETY: plain field write; rungs read it back to rescale.
        unsafe { (*p.as_mut_ptr()).time_base = tb.into() };
        for tx in senders {
            let _ = tx.send(Msg::Audio(p.clone()));
        }
    }
}
