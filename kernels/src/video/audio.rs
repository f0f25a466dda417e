//! Audio, done once for every rung: decode the source's audio, convert it to planar float
//! (stereo at most, at the source rate when AAC supports it, else 48 kHz), cut it into AAC's
//! 1024-sample frames and encode AAC-LC. Packets come out in a `1/sample_rate` time base,
//! timed from the source's video start, so every rung muxes the same packets.

use super::VideoError;
use ffmpeg_next as ff;
use ff::format::sample::Type as SampleType;
use ff::format::Sample;
use ff::software::resampling;
use ff::util::channel_layout::ChannelLayout;
use ff::{codec, frame, Packet, Rational};

/// Sample rates AAC-LC encoders accept.
const AAC_RATES: [u32; 9] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000];

pub struct AudioPipeline {
    decoder: ff::decoder::Audio,
    resampler: Option<resampling::Context>,
    encoder: ff::encoder::Audio,
    in_tb: Rational,
    rate: u32,
    channels: usize,
    frame_size: usize,
    /// Pending planar samples, one Vec per channel.
    pending: Vec<Vec<f32>>,
    /// Sample index (in 1/rate) of `pending[..][0]`; set by the first kept frame.
    next_pts: Option<i64>,
    /// Video start in seconds: audio timestamps count from it.
    origin_s: f64,
    /// Audio before this many seconds (from origin) is dropped (a resumed run).
    skip_before_s: f64,
}

impl AudioPipeline {
    /// Builds the decoder and the AAC encoder for a source audio stream.
    pub fn new(stream: &ff::format::stream::Stream<'_>, bitrate_kbps: u32, origin_s: f64, skip_before_s: f64) -> Result<Self, VideoError> {
        let ctx = codec::context::Context::from_parameters(stream.parameters()).map_err(|e| VideoError::internal("audio decoder", e))?;
        let decoder = ctx.decoder().audio().map_err(|e| VideoError::Unsupported(format!("audio decoder: {e}")))?;
        let src_rate = decoder.rate().max(1);
        let rate = if AAC_RATES.contains(&src_rate) { src_rate } else { 48000 };
        let channels = usize::from(decoder.channels().clamp(1, 2));
        let layout = if channels == 1 { ChannelLayout::MONO } else { ChannelLayout::STEREO };
        let aac = ff::encoder::find(codec::Id::AAC).ok_or_else(|| VideoError::Internal("no AAC encoder in this FFmpeg build".into()))?;
        let mut enc = codec::context::Context::new_with_codec(aac).encoder().audio().map_err(|e| VideoError::internal("AAC encoder", e))?;
        enc.set_rate(rate as i32);
        enc.set_channel_layout(layout);
        enc.set_format(Sample::F32(SampleType::Planar));
        enc.set_bit_rate(bitrate_kbps as usize * 1000);
        enc.set_time_base(Rational::new(1, rate as i32));
        let encoder = enc.open().map_err(|e| VideoError::internal("opening the AAC encoder", e))?;
        let frame_size = (encoder.frame_size() as usize).max(1);
        Ok(AudioPipeline {
            decoder,
            resampler: None,
            encoder,
            in_tb: stream.time_base(),
            rate,
            channels,
            frame_size,
            pending: vec![Vec::new(); channels],
            next_pts: None,
            origin_s,
            skip_before_s,
        })
    }

    /// The AAC stream's parameters, for the segment muxers.
    pub fn parameters(&self) -> codec::Parameters {
        codec::Parameters::from(&*self.encoder)
    }

    pub fn time_base(&self) -> Rational {
        Rational::new(1, self.rate as i32)
    }

    /// Decodes one source packet and returns the AAC packets it completes.
    pub fn push(&mut self, packet: &Packet, out: &mut Vec<Packet>) -> Result<(), VideoError> {
        if self.decoder.send_packet(packet).is_err() {
            // A damaged audio packet loses its samples; the video decides whether the
            // input is corrupt.
            return Ok(());
        }
        self.drain_decoder(out)
    }

    /// Flushes decoder and encoder at the end of the source.
    pub fn finish(&mut self, out: &mut Vec<Packet>) -> Result<(), VideoError> {
        let _ = self.decoder.send_eof();
        self.drain_decoder(out)?;
        // The last, partial frame is padded with silence by the encoder.
        if self.pending.first().is_some_and(|p| !p.is_empty()) {
            let n = self.pending[0].len();
            self.encode_chunk(n, out)?;
        }
        let _ = self.encoder.send_eof();
        self.drain_encoder(out);
        Ok(())
    }

    fn drain_decoder(&mut self, out: &mut Vec<Packet>) -> Result<(), VideoError> {
        let mut decoded = frame::Audio::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            let pts_s = decoded.pts().map(|p| p as f64 * f64::from(self.in_tb) - self.origin_s);
            let converted = self.convert(&decoded)?;
            let samples = converted.samples();
            let dur_s = samples as f64 / self.rate as f64;
            let start_s = pts_s.unwrap_or(0.0);
            if self.next_pts.is_none() {
                if start_s + dur_s <= self.skip_before_s {
                    continue;
                }
                self.next_pts = Some((start_s.max(0.0) * self.rate as f64).round() as i64);
            }
            for (c, buf) in self.pending.iter_mut().enumerate() {
                let plane: &[f32] = converted.plane(c.min(converted.planes().saturating_sub(1)));
                buf.extend_from_slice(&plane[..samples.min(plane.len())]);
            }
            while self.pending[0].len() >= self.frame_size {
                self.encode_chunk(self.frame_size, out)?;
            }
        }
        Ok(())
    }

    /// Converts a decoded frame to planar f32 at the output rate and layout.
    fn convert(&mut self, input: &frame::Audio) -> Result<frame::Audio, VideoError> {
        let layout = if input.channel_layout().is_empty() { ChannelLayout::default(i32::from(input.channels())) } else { input.channel_layout() };
        let out_layout = if self.channels == 1 { ChannelLayout::MONO } else { ChannelLayout::STEREO };
        if self.resampler.is_none() {
            let r = resampling::Context::get(input.format(), layout, input.rate(), Sample::F32(SampleType::Planar), out_layout, self.rate)
                .map_err(|e| VideoError::internal("audio resampler", e))?;
            self.resampler = Some(r);
        }
        let Some(r) = self.resampler.as_mut() else { return Err(VideoError::Internal("no resampler".into())) };
        let mut src = input.clone();
        src.set_channel_layout(layout);
        let cap = input.samples() * self.rate as usize / input.rate().max(1) as usize + 64;
        let mut out = frame::Audio::new(Sample::F32(SampleType::Planar), cap, out_layout);
        out.set_rate(self.rate);
        r.run(&src, &mut out).map_err(|e| VideoError::internal("resampling audio", e))?;
        Ok(out)
    }

    fn encode_chunk(&mut self, n: usize, out: &mut Vec<Packet>) -> Result<(), VideoError> {
        let layout = if self.channels == 1 { ChannelLayout::MONO } else { ChannelLayout::STEREO };
        let mut f = frame::Audio::new(Sample::F32(SampleType::Planar), self.frame_size, layout);
        f.set_rate(self.rate);
        for (c, buf) in self.pending.iter_mut().enumerate() {
            let plane: &mut [f32] = f.plane_mut(c);
            plane.fill(0.0);
            plane[..n].copy_from_slice(&buf[..n]);
            buf.drain(..n);
        }
        let pts = self.next_pts.unwrap_or(0);
        f.set_pts(Some(pts));
        self.next_pts = Some(pts + n as i64);
        self.encoder.send_frame(&f).map_err(|e| VideoError::internal("AAC encode", e))?;
        self.drain_encoder(out);
        Ok(())
    }

    fn drain_encoder(&mut self, out: &mut Vec<Packet>) {
        let mut p = Packet::empty();
        while self.encoder.receive_packet(&mut p).is_ok() {
            out.push(std::mem::replace(&mut p, Packet::empty()));
        }
    }
}
