//! One rung of the ladder, on its own thread: scale each shared decoded frame (a reused
//! `scale::Scaler`: swscale, or scale_cuda on the GPU), encode it (libx264 or NVENC, an IDR
//! forced on the first frame of every segment), and cut the packets into MPEG-TS segment
//! files — one muxer per segment, so each file is complete (and handed back) as soon as the
//! next segment's IDR comes out.

use super::types::{EncoderKind, RungConfig, SegmentFile, VideoCodec};
use super::{SharedFrame, VideoError};
use ffmpeg_next as ff;
use ff::format::Pixel;
use super::scale::{ScaleEngine, Scaler};
use ff::packet::Ref as _;
use ff::{codec, frame, picture, Packet, Rational};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

/// What the decoder thread sends every rung, in decode order.
pub(crate) enum Msg {
    /// A frame (pts relative to the video start, in the video time base) and its segment.
    Video { frame: Arc<SharedFrame>, seg: u32 },
    /// An AAC packet (in the audio time base).
    Audio(Packet),
}

/// What a rung thread needs to know.
pub(crate) struct RungSetup {
    pub index: usize,
    pub cfg: RungConfig,
    pub codec: VideoCodec,
    pub encoder: EncoderKind,
    pub preset: String,
    /// Video time base (source stream's) and average frame rate.
    pub tb: Rational,
    pub fps: Rational,
    pub audio: Option<(codec::Parameters, Rational)>,
    pub dir: PathBuf,
    /// Encoder threads (0: the encoder's own choice).
    pub threads: usize,
    /// What resamples the frames (swscale, or scale_cuda on the GPU).
    pub scale: ScaleEngine,
    /// Rungs that scale from this rung's frames (see `plan::feeders`).
    pub forward: Vec<SyncSender<Msg>>,
}

/// What a rung reports when its input ends.
#[derive(Debug, Clone)]
pub struct RungDone {
    pub index: usize,
    /// RFC 6381 codec string of the video (e.g. `avc1.64001f`).
    pub codecs: String,
    pub frames: u64,
    /// What resampled this rung's frames (`none`: none needed it).
    pub scaler: String,
}

struct Segment {
    octx: ff::format::context::Output,
    index: u32,
    path: PathBuf,
    start_pts: i64,
    v_tb: Rational,
    a_tb: Option<Rational>,
}

/// Runs a rung until its input channel closes; finished segments go to `done`.
pub(crate) fn run(setup: RungSetup, rx: Receiver<Msg>, done: SyncSender<SegmentFile>) -> Result<RungDone, VideoError> {
    let mut encoder = open_encoder(&setup)?;
    let vparams = codec::Parameters::from(&encoder);
    let (w, h) = (setup.cfg.width, setup.cfg.height);
    let mut scaler = Scaler::new(setup.scale.clone(), w, h);
    let mut starts: VecDeque<(u32, i64)> = VecDeque::new();
    let mut cur_seg: Option<u32> = None;
    let mut current: Option<Segment> = None;
    let mut audio: VecDeque<Packet> = VecDeque::new();
    let mut last_pts = 0i64;
    let mut last_dur = 1i64;
    let mut codecs: Option<String> = None;
    let mut frames = 0u64;
    let mut packet = Packet::empty();
    let mut w_ctx = Writer { setup: &setup, vparams: &vparams, done: &done };

    for msg in rx {
        match msg {
            Msg::Audio(p) => audio.push_back(p),
            Msg::Video { frame: shared, seg } => {
                let src = &shared.0;
                let pts = src.pts().unwrap_or(last_pts + last_dur);
                if pts > last_pts && frames > 0 {
                    last_dur = pts - last_pts;
                }
                last_pts = pts;
                let mut scaled = if src.format() == Pixel::YUV420P && src.width() == w && src.height() == h {
                    // The rung is the source size: a new reference to the same pixels (no copy);
                    // only this reference's pts and picture type are set below.
                    let mut r = frame::Video::empty();
                    // SAFETY: both are valid AVFrames; `r` is empty, so av_frame_ref fills it.
                    let ret = unsafe { ff::ffi::av_frame_ref(r.as_mut_ptr(), src.as_ptr()) };
                    if ret < 0 {
                        return Err(VideoError::internal("frame reference", ff::Error::from(ret)));
                    }
                    r
                } else {
                    match scaler.run(src) {
                        Ok(f) => f,
                        Err(e) if *scaler.engine() != ScaleEngine::Cpu && frames == 0 => {
                            // The GPU chain would not start: this rung scales on the CPU.
                            tracing::warn!(rung = setup.index, engine = scaler.engine().name(), error = %e,
                                "GPU scaling failed on the first frame; using swscale");
                            scaler = Scaler::new(ScaleEngine::Cpu, w, h);
                            scaler.run(src)?
                        }
                        Err(e) => return Err(e),
                    }
                };
                scaled.set_pts(Some(pts));
                if cur_seg != Some(seg) {
                    cur_seg = Some(seg);
                    starts.push_back((seg, pts));
                    scaled.set_kind(picture::Type::I);
                } else {
                    scaled.set_kind(picture::Type::None);
                }
                drop(shared);
                // Smaller rungs cascaded from this one get the scaled frame (read-only, as the
                // encoder only reads it too). A rung that has gone reports its own error.
                let scaled = Arc::new(SharedFrame(scaled));
                for tx in &setup.forward {
                    let _ = tx.send(Msg::Video { frame: scaled.clone(), seg });
                }
                let scaled = &scaled.0;
                encoder.send_frame(scaled).map_err(|e| VideoError::internal("encoding", e))?;
                frames += 1;
                while encoder.receive_packet(&mut packet).is_ok() {
                    w_ctx.video_packet(&mut packet, &mut starts, &mut current, &mut audio, &mut codecs)?;
                }
            }
        }
    }
    // End of input: drain the encoder, then close the last segment with all remaining audio.
    let _ = encoder.send_eof();
    while encoder.receive_packet(&mut packet).is_ok() {
        w_ctx.video_packet(&mut packet, &mut starts, &mut current, &mut audio, &mut codecs)?;
    }
    if let Some(seg) = current.take() {
        let end = last_pts + last_dur;
        w_ctx.close(seg, end, &mut audio, None, &codecs)?;
    }
    let scaler = scaler.used_name().to_string();
    Ok(RungDone { index: setup.index, codecs: codecs.unwrap_or_else(|| default_codecs(setup.codec)), frames, scaler })
}

struct Writer<'a> {
    setup: &'a RungSetup,
    vparams: &'a codec::Parameters,
    done: &'a SyncSender<SegmentFile>,
}

impl Writer<'_> {
    fn video_packet(
        &mut self,
        p: &mut Packet,
        starts: &mut VecDeque<(u32, i64)>,
        current: &mut Option<Segment>,
        audio: &mut VecDeque<Packet>,
        codecs: &mut Option<String>,
    ) -> Result<(), VideoError> {
        let pts = p.pts().unwrap_or(0);
        if let Some(&(idx, start)) = starts.front() {
            if pts >= start && (p.is_key() || current.is_none()) {
                starts.pop_front();
                if let Some(seg) = current.take() {
                    self.close(seg, start, audio, Some(start), codecs)?;
                }
                *current = Some(self.open(idx, start)?);
            }
        }
        if codecs.is_none() {
            *codecs = codec_string(self.setup.codec, p.data().unwrap_or(&[]));
        }
        let Some(seg) = current.as_mut() else { return Ok(()) };
        // Audio up to this video instant goes in first (the muxer interleaves by dts).
        let t = pts as f64 * f64::from(self.setup.tb);
        write_audio(seg, audio, |at| at <= t)?;
        p.set_stream(0);
        p.set_duration(0);
        p.rescale_ts(self.setup.tb, seg.v_tb);
        shift(p, seg.v_tb);
        p.write_interleaved(&mut seg.octx).map_err(|e| VideoError::internal("muxing video", e))?;
        Ok(())
    }

    fn open(&self, index: u32, start_pts: i64) -> Result<Segment, VideoError> {
        let path = self.setup.dir.join(format!("seg-{index:05}.ts"));
        let mut octx = ff::format::output_as(&path, "mpegts").map_err(|e| VideoError::internal("segment muxer", e))?;
        {
            let mut vs = octx.add_stream(None::<ff::Codec>).map_err(|e| VideoError::internal("segment video stream", e))?;
            vs.set_parameters(self.vparams.clone());
            vs.set_time_base(self.setup.tb);
            // SAFETY: plain field writes on the stream's own parameters before the header.
            unsafe { (*(*vs.as_mut_ptr()).codecpar).codec_tag = 0 };
        }
        if let Some((ap, atb)) = &self.setup.audio {
            let mut st = octx.add_stream(None::<ff::Codec>).map_err(|e| VideoError::internal("segment audio stream", e))?;
            st.set_parameters(ap.clone());
            st.set_time_base(*atb);
            unsafe { (*(*st.as_mut_ptr()).codecpar).codec_tag = 0 };
        }
        octx.write_header().map_err(|e| VideoError::internal("segment header", e))?;
        let v_tb = octx.stream(0).map(|s| s.time_base()).unwrap_or(self.setup.tb);
        let a_tb = octx.stream(1).map(|s| s.time_base());
        Ok(Segment { octx, index, path, start_pts, v_tb, a_tb })
    }

    /// Writes the segment's remaining audio (before `next_start`, or all), closes the file and
    /// hands it back.
    fn close(
        &self,
        mut seg: Segment,
        end_pts: i64,
        audio: &mut VecDeque<Packet>,
        next_start: Option<i64>,
        codecs: &Option<String>,
    ) -> Result<(), VideoError> {
        let tb = f64::from(self.setup.tb);
        match next_start {
            Some(n) => {
                let end = n as f64 * tb;
                write_audio(&mut seg, audio, |at| at < end)?;
            }
            None => write_audio(&mut seg, audio, |_| true)?,
        }
        seg.octx.write_trailer().map_err(|e| VideoError::internal("segment trailer", e))?;
        let bytes = std::fs::metadata(&seg.path).map(|m| m.len()).unwrap_or(0);
        let duration = (end_pts - seg.start_pts).max(0) as f64 * tb;
        let file = SegmentFile {
            rung: self.setup.index,
            index: seg.index,
            path: seg.path,
            duration,
            bytes,
            start: seg.start_pts as f64 * tb,
            codecs: codecs.clone(),
        };
        self.done.send(file).map_err(|_| VideoError::Stopped)
    }
}

fn write_audio(seg: &mut Segment, audio: &mut VecDeque<Packet>, keep: impl Fn(f64) -> bool) -> Result<(), VideoError> {
    let Some(a_tb) = seg.a_tb else {
        audio.clear();
        return Ok(());
    };
    while let Some(p) = audio.front() {
        let t = p.pts().unwrap_or(0) as f64 * f64::from(p_tb(p));
        if !keep(t) {
            break;
        }
        let Some(mut p) = audio.pop_front() else { break };
        let from = p_tb(&p);
        p.set_stream(1);
        p.rescale_ts(from, a_tb);
        shift(&mut p, a_tb);
        p.write_interleaved(&mut seg.octx).map_err(|e| VideoError::internal("muxing audio", e))?;
    }
    Ok(())
}

/// Every segment's timestamps are the source's plus this constant (as FFmpeg's own MPEG-TS
/// output starts at 1.4 s). B-frames and AAC priming give the first packets a negative DTS,
/// which a muxer would otherwise shift away in the first segment only, putting it a few
/// frames out of step with the rest.
pub const TS_OFFSET_MS: i64 = 1400;

fn shift(p: &mut Packet, tb: Rational) {
    let (num, den) = (i64::from(tb.numerator().max(1)), i64::from(tb.denominator().max(1)));
    let off = TS_OFFSET_MS * den / (1000 * num);
    if let Some(t) = p.pts() {
        p.set_pts(Some(t + off));
    }
    if let Some(t) = p.dts() {
        p.set_dts(Some(t + off));
    }
}

/// The time base an AAC packet was stamped in (its `time_base` field, set by the sender).
fn p_tb(p: &Packet) -> Rational {
    // SAFETY: reads a plain field of the packet.
    let tb = unsafe { (*p.as_ptr()).time_base };
    if tb.num > 0 && tb.den > 0 {
        Rational::new(tb.num, tb.den)
    } else {
        Rational::new(1, 48000)
    }
}

fn open_encoder(setup: &RungSetup) -> Result<ff::encoder::Video, VideoError> {
    let name = encoder_name(setup.codec, setup.encoder);
    let codec = ff::encoder::find_by_name(name).ok_or_else(|| VideoError::Unsupported(format!("this FFmpeg build has no {name} encoder")))?;
    let mut enc = codec::context::Context::new_with_codec(codec).encoder().video().map_err(|e| VideoError::internal("video encoder", e))?;
    let bps = setup.cfg.bitrate_kbps as usize * 1000;
    enc.set_width(setup.cfg.width);
    enc.set_height(setup.cfg.height);
    enc.set_format(Pixel::YUV420P);
    enc.set_time_base(setup.tb);
    enc.set_frame_rate(Some(setup.fps));
    enc.set_bit_rate(bps);
    enc.set_max_bit_rate(bps * 11 / 10);
    // SAFETY: plain fields of a not-yet-opened codec context.
    unsafe {
        let raw = enc.as_mut_ptr();
        (*raw).rc_buffer_size = (bps * 2).min(i32::MAX as usize) as i32;
        // 0 = let the encoder pick its thread count (the ffmpeg CLI's default).
        (*raw).thread_count = i32::try_from(setup.threads).unwrap_or(0);
    }
    let mut opts = ff::Dictionary::new();
    opts.set("forced-idr", "1");
    match setup.encoder {
        EncoderKind::Cpu => opts.set("preset", &setup.preset),
        EncoderKind::Nvenc => opts.set("preset", "p4"),
    }
    if setup.codec == VideoCodec::Hevc && setup.encoder == EncoderKind::Cpu {
        opts.set("x265-params", "log-level=error");
    }
    enc.open_with(opts).map_err(|e| VideoError::internal(&format!("opening {name}"), e))
}

/// The FFmpeg encoder a rung uses for a codec and encoder family.
pub fn encoder_name(codec: VideoCodec, kind: EncoderKind) -> &'static str {
    match (codec, kind) {
        (VideoCodec::H264, EncoderKind::Cpu) => "libx264",
        (VideoCodec::Hevc, EncoderKind::Cpu) => "libx265",
        (VideoCodec::H264, EncoderKind::Nvenc) => "h264_nvenc",
        (VideoCodec::Hevc, EncoderKind::Nvenc) => "hevc_nvenc",
    }
}

fn default_codecs(codec: VideoCodec) -> String {
    match codec {
        VideoCodec::H264 => "avc1.640028".into(),
        VideoCodec::Hevc => "hvc1.1.6.L120.B0".into(),
    }
}

/// The RFC 6381 codec string from the first packet's parameter sets (Annex B).
pub fn codec_string(codec: VideoCodec, data: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            let nal = &data[i + 3..];
            match codec {
                VideoCodec::H264 if nal.len() >= 4 && nal[0] & 0x1f == 7 => {
                    return Some(format!("avc1.{:02x}{:02x}{:02x}", nal[1], nal[2], nal[3]));
                }
                // HEVC SPS (type 33): 2-byte header, 1 byte of ids, then profile_tier_level.
                VideoCodec::Hevc if nal.len() >= 15 && (nal[0] >> 1) & 0x3f == 33 => {
                    let ptl = &nal[3..];
                    let tier = if ptl[0] & 0x20 != 0 { 'H' } else { 'L' };
                    let profile = ptl[0] & 0x1f;
                    let level = ptl[11];
                    return Some(format!("hvc1.{profile}.6.{tier}{level}.B0"));
                }
                _ => {}
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_codec_string_from_sps() {
        let data = [0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f, 0xac, 0, 0, 1, 0x68];
        assert_eq!(codec_string(VideoCodec::H264, &data).as_deref(), Some("avc1.64001f"));
        assert_eq!(codec_string(VideoCodec::H264, &[0, 0, 1, 0x65, 1, 2, 3]), None);
    }
}
