//! What this FFmpeg build and this host can do for video: which encoders and decoders exist,
//! and whether NVENC and NVDEC actually work. FFmpeg lists `h264_nvenc` and the `*_cuvid`
//! decoders whether or not a GPU is present (and H100/H200 have NVDEC but no NVENC), so they
//! are proven by opening a session, once per process (at warm-up), and only when NVML sees
//! an NVIDIA device — a CPU-only host never loads CUDA.

use super::{init, VideoError};
use ffmpeg_next as ff;
use ff::codec;
use ff::format::Pixel;
use ff::Rational;
use serde::Serialize;
use std::sync::OnceLock;

const ENCODERS: [&str; 6] = ["libx264", "libx265", "h264_nvenc", "hevc_nvenc", "aac", "libfdk_aac"];
const DECODERS: [&str; 11] =
    ["h264", "hevc", "vp8", "vp9", "av1", "libdav1d", "libaom-av1", "h264_cuvid", "hevc_cuvid", "vp9_cuvid", "av1_cuvid"];

/// The codec probe's findings.
#[derive(Debug, Clone, Serialize)]
pub struct CodecProbe {
    /// libavcodec's version string.
    pub libavcodec: String,
    /// Encoders of interest this build has (listed, not necessarily usable).
    pub encoders: Vec<&'static str>,
    pub decoders: Vec<&'static str>,
    /// An `h264_nvenc` encode session opened.
    pub nvenc_h264: bool,
    /// An `hevc_nvenc` encode session opened.
    pub nvenc_hevc: bool,
    /// An `h264_cuvid` (NVDEC) decoder opened.
    pub nvdec: bool,
    /// A frame went through `hwupload_cuda → scale_cuda → hwdownload` (GPU scaling).
    pub scale_cuda: bool,
    /// Why NVENC/NVDEC are not available, when they are not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_note: Option<String>,
}

static PROBE: OnceLock<CodecProbe> = OnceLock::new();

/// The probe, run on first use and cached for the process.
pub fn codecs() -> &'static CodecProbe {
    PROBE.get_or_init(run_probe)
}

/// The probe's findings if it has run (the transcode warm-up runs it); never starts it.
pub fn proven() -> Option<&'static CodecProbe> {
    PROBE.get()
}

fn run_probe() -> CodecProbe {
    init();
    let encoders = ENCODERS.into_iter().filter(|n| ff::encoder::find_by_name(n).is_some()).collect::<Vec<_>>();
    let decoders = DECODERS.into_iter().filter(|n| ff::decoder::find_by_name(n).is_some()).collect::<Vec<_>>();
    let v = unsafe { ff::ffi::avcodec_version() };
    let libavcodec = format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff);
    let gpus = crate::probe::gpus();
    let mut p = CodecProbe { libavcodec, encoders, decoders, nvenc_h264: false, nvenc_hevc: false, nvdec: false, scale_cuda: false, gpu_note: None };
    if gpus.devices.is_empty() {
        p.gpu_note = Some(gpus.unavailable.unwrap_or_else(|| "no NVIDIA device".into()));
        return p;
    }
    let mut notes = Vec::new();
    // An engine that does not open is an expected finding (an H100 has no NVENC), reported in
    // `gpu_note`: FFmpeg's own error lines for it would only alarm whoever reads stderr.
    let level = ff::util::log::get_level().unwrap_or(ff::util::log::Level::Error);
    ff::util::log::set_level(ff::util::log::Level::Quiet);
    for (name, flag) in [("h264_nvenc", &mut p.nvenc_h264), ("hevc_nvenc", &mut p.nvenc_hevc)] {
        match open_encoder_session(name) {
            Ok(()) => *flag = true,
            Err(e) => notes.push(format!("{name}: {e}")),
        }
    }
    match open_decoder_session("h264_cuvid") {
        Ok(()) => p.nvdec = true,
        Err(e) => notes.push(format!("h264_cuvid: {e}")),
    }
    match super::scale::cuda_works() {
        Ok(()) => p.scale_cuda = true,
        Err(e) => notes.push(format!("scale_cuda: {e}")),
    }
    ff::util::log::set_level(level);
    if !notes.is_empty() {
        p.gpu_note = Some(notes.join("; "));
    }
    tracing::info!(nvenc_h264 = p.nvenc_h264, nvenc_hevc = p.nvenc_hevc, nvdec = p.nvdec, scale_cuda = p.scale_cuda, note = ?p.gpu_note, "video codec probe");
    p
}

/// Opens (and closes) a small encode session with `name`.
fn open_encoder_session(name: &str) -> Result<(), VideoError> {
    let c = ff::encoder::find_by_name(name).ok_or_else(|| VideoError::Unsupported("not in this FFmpeg build".into()))?;
    let mut enc = codec::context::Context::new_with_codec(c).encoder().video().map_err(|e| VideoError::internal("context", e))?;
    enc.set_width(256);
    enc.set_height(256);
    enc.set_format(Pixel::YUV420P);
    enc.set_time_base(Rational::new(1, 30));
    enc.set_frame_rate(Some(Rational::new(30, 1)));
    enc.open().map(drop).map_err(|e| VideoError::Unsupported(format!("encode session did not open: {e}")))
}

/// Opens (and closes) a decoder session with `name`.
fn open_decoder_session(name: &str) -> Result<(), VideoError> {
    let c = ff::decoder::find_by_name(name).ok_or_else(|| VideoError::Unsupported("not in this FFmpeg build".into()))?;
    let mut ctx = codec::context::Context::new_with_codec(c);
    // SAFETY: plain fields of a not-yet-opened context; cuvid needs a size to create a parser.
    unsafe {
        (*ctx.as_mut_ptr()).width = 256;
        (*ctx.as_mut_ptr()).height = 256;
    }
    ctx.decoder().open_as(c).map(drop).map_err(|e| VideoError::Unsupported(format!("decoder did not open: {e}")))
}

/// NVDEC's decoder for a codec, when the probe proved NVDEC works.
pub fn cuvid_decoder(id: codec::Id) -> Option<ff::Codec> {
    if !codecs().nvdec {
        return None;
    }
    let name = match id {
        codec::Id::H264 => "h264_cuvid",
        codec::Id::HEVC => "hevc_cuvid",
        codec::Id::VP9 => "vp9_cuvid",
        codec::Id::AV1 => "av1_cuvid",
        codec::Id::MPEG2VIDEO => "mpeg2_cuvid",
        _ => return None,
    };
    ff::decoder::find_by_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_lists_the_cpu_codecs_and_never_claims_an_unproven_gpu() {
        let p = codecs();
        assert!(p.encoders.contains(&"libx264"), "{p:?}");
        assert!(p.encoders.contains(&"aac"));
        assert!(p.decoders.contains(&"h264"));
        if crate::probe::gpus().devices.is_empty() {
            assert!(!p.nvenc_h264 && !p.nvenc_hevc && !p.nvdec && !p.scale_cuda);
            assert!(p.gpu_note.is_some());
        }
    }
}
