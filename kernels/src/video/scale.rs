//! A rung's scaler: swscale on the CPU, or an FFmpeg filter graph — on NVIDIA GPUs
//! `hwupload_cuda → scale_cuda (bicubic) → hwdownload`, so the resampling runs on the GPU and
//! only the upload and the smaller download cross the bus.
//!
//! Both turn any decoded frame (YUV420P from FFmpeg's decoders, NV12 from NVDEC) into a
//! YUV420P frame of the rung's size. A graph is built for the first frame's format and size
//! and rebuilt when they change, like the swscale context.

use super::VideoError;
use ffmpeg_next as ff;
use ff::format::Pixel;
use ff::software::scaling;
use ff::frame;
use super::avfilter;

/// Which engine resamples the frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleEngine {
    /// swscale, bicubic.
    Cpu,
    /// `scale_cuda` (bicubic) between `hwupload_cuda` and `hwdownload`.
    Cuda,
    /// Any filter chain written with `{w}` and `{h}` for the target size, ending in frames of
    /// that size (tests drive the graph path with CPU filters through this).
    Filter(String),
}

impl ScaleEngine {
    /// The name results and logs report.
    pub fn name(&self) -> &str {
        match self {
            ScaleEngine::Cpu => "swscale",
            ScaleEngine::Cuda => "scale_cuda",
            ScaleEngine::Filter(_) => "filter",
        }
    }

    fn chain(&self, w: u32, h: u32) -> Option<String> {
        match self {
            ScaleEngine::Cpu => None,
            ScaleEngine::Cuda => Some(format!(
                "hwupload_cuda,scale_cuda=w={w}:h={h}:interp_algo=bicubic:format=yuv420p,hwdownload,format=yuv420p"
            )),
            ScaleEngine::Filter(c) => Some(c.replace("{w}", &w.to_string()).replace("{h}", &h.to_string())),
        }
    }
}

enum Engine {
    Sws(scaling::Context),
    Graph(avfilter::Graph),
}

/// Scales frames to one size, keeping its engine between frames of the same format and size.
pub struct Scaler {
    engine: ScaleEngine,
    w: u32,
    h: u32,
    current: Option<(Engine, Pixel, u32, u32)>,
}

impl Scaler {
    pub fn new(engine: ScaleEngine, w: u32, h: u32) -> Self {
        Scaler { engine, w, h, current: None }
    }

    pub fn engine(&self) -> &ScaleEngine {
        &self.engine
    }

    /// What results report: the engine's name once it has scaled a frame, else `none`.
    pub fn used_name(&self) -> &str {
        if self.current.is_some() { self.engine.name() } else { "none" }
    }

    /// `src` scaled to the target size as YUV420P. `src` is only read.
    pub fn run(&mut self, src: &frame::Video) -> Result<frame::Video, VideoError> {
        let key = (src.format(), src.width(), src.height());
        let fresh = matches!(&self.current, Some((_, f, w, h)) if (*f, *w, *h) == key);
        if !fresh {
            let engine = match self.engine.chain(self.w, self.h) {
                None => Engine::Sws(
                    scaling::Context::get(key.0, key.1, key.2, Pixel::YUV420P, self.w, self.h, scaling::Flags::BICUBIC)
                        .map_err(|e| VideoError::internal("scaler", e))?,
                ),
                Some(chain) => Engine::Graph(graph(&chain, key.0, key.1, key.2)?),
            };
            self.current = Some((engine, key.0, key.1, key.2));
        }
        let Some((engine, ..)) = self.current.as_mut() else {
            return Err(VideoError::Internal("scaler missing".into()));
        };
        match engine {
            Engine::Sws(sws) => {
                let mut out = frame::Video::new(Pixel::YUV420P, self.w, self.h);
                sws.run(src, &mut out).map_err(|e| VideoError::internal("scaling", e))?;
                Ok(out)
            }
            Engine::Graph(g) => {
                // The graph takes new references: the shared source frame is left untouched.
                g.push(src).map_err(|e| VideoError::internal("scaling (filter input)", e))?;
                let mut out = frame::Video::empty();
                g.pull(&mut out).map_err(|e| VideoError::internal("scaling (filter output)", e))?;
                if out.format() != Pixel::YUV420P || out.width() != self.w || out.height() != self.h {
                    return Err(VideoError::Internal(format!(
                        "scaling filter gave {:?} {}x{}, not yuv420p {}x{}",
                        out.format(),
                        out.width(),
                        out.height(),
                        self.w,
                        self.h
                    )));
                }
                Ok(out)
            }
        }
    }
}

/// `buffer → chain → buffersink` for frames of one format and size.
fn graph(chain: &str, format: Pixel, w: u32, h: u32) -> Result<avfilter::Graph, VideoError> {
    let pix = match format.descriptor() {
        Some(d) => d.name().to_string(),
        None => (ff::ffi::AVPixelFormat::from(format) as i32).to_string(),
    };
    let args = format!("video_size={w}x{h}:pix_fmt={pix}:time_base=1/90000:pixel_aspect=1/1");
    avfilter::Graph::new(&args, chain)
}

/// Whether `scale_cuda` works here: a small frame through the whole GPU chain.
pub fn cuda_works() -> Result<(), VideoError> {
    super::init();
    let mut s = Scaler::new(ScaleEngine::Cuda, 64, 36);
    let src = frame::Video::new(Pixel::NV12, 128, 72);
    s.run(&src).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(format: Pixel, w: u32, h: u32) -> frame::Video {
        let mut f = frame::Video::new(format, w, h);
        for plane in 0..f.planes() {
            let stride = f.stride(plane);
            let (pw, ph) = (f.plane_width(plane) as usize, f.plane_height(plane) as usize);
            let data = f.data_mut(plane);
            for y in 0..ph {
                for x in 0..pw {
                    data[y * stride + x] = ((x * 255 / pw.max(1) + y * 64 / ph.max(1)) % 256) as u8;
                }
            }
        }
        f
    }

    fn luma_diff(a: &frame::Video, b: &frame::Video) -> f64 {
        let (sa, sb) = (a.stride(0), b.stride(0));
        let (w, h) = (a.width() as usize, a.height() as usize);
        let mut sum = 0u64;
        for y in 0..h {
            for x in 0..w {
                sum += u64::from(a.data(0)[y * sa + x].abs_diff(b.data(0)[y * sb + x]));
            }
        }
        sum as f64 / (w * h) as f64
    }

    #[test]
    fn a_filter_graph_scales_like_swscale_and_leaves_the_source_alone() {
        super::super::init();
        let src = gradient(Pixel::YUV420P, 640, 360);
        let before = src.data(0).to_vec();
        let mut cpu = Scaler::new(ScaleEngine::Cpu, 320, 180);
        let mut graph = Scaler::new(ScaleEngine::Filter("scale={w}:{h}:flags=bicubic,format=yuv420p".into()), 320, 180);
        for _ in 0..3 {
            let a = cpu.run(&src).expect("swscale");
            let b = graph.run(&src).expect("filter graph");
            assert_eq!((b.width(), b.height(), b.format()), (320, 180, Pixel::YUV420P));
            assert!(luma_diff(&a, &b) < 1.0, "graph and swscale differ by {}", luma_diff(&a, &b));
        }
        assert_eq!(src.data(0), &before[..], "the shared source frame was modified");
        // A new input format (NV12, as NVDEC gives) rebuilds the graph.
        let nv12 = gradient(Pixel::NV12, 640, 360);
        let c = graph.run(&nv12).expect("nv12 through the graph");
        assert_eq!((c.width(), c.height(), c.format()), (320, 180, Pixel::YUV420P));
    }

    #[test]
    fn a_broken_chain_is_an_error_not_a_panic() {
        super::super::init();
        let src = gradient(Pixel::YUV420P, 64, 64);
        let mut s = Scaler::new(ScaleEngine::Filter("no_such_filter={w}".into()), 32, 32);
        assert!(matches!(s.run(&src), Err(VideoError::Internal(_))));
        // The wrong output size is caught too.
        let mut s = Scaler::new(ScaleEngine::Filter("scale=16:16,format=yuv420p".into()), 32, 32);
        assert!(matches!(s.run(&src), Err(VideoError::Internal(m)) if m.contains("not yuv420p 32x32")));
    }

    #[test]
    fn a_ladder_asked_for_scale_cuda_without_a_gpu_falls_back_to_swscale() {
        use crate::video::{open, transcode, EncoderKind, LadderConfig, RungConfig, SourceInput, VideoCodec};
        if !crate::probe::gpus().devices.is_empty() {
            return; // a GPU host runs the real thing (benches/gpu/run.sh)
        }
        let dir = std::env::temp_dir().join(format!("kiln-scale-fallback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let clip = dir.join("clip.mp4");
        let st = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2"])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
            .arg(&clip)
            .status()
            .expect("ffmpeg CLI");
        assert!(st.success());
        let cfg = LadderConfig {
            rungs: vec![
                RungConfig { width: 320, height: 240, bitrate_kbps: 400 },
                RungConfig { width: 160, height: 120, bitrate_kbps: 200 },
            ],
            codec: VideoCodec::H264,
            encoder: EncoderKind::Cpu,
            nvdec: false,
            scale: ScaleEngine::Cuda,
            preset: "ultrafast".into(),
            segment_seconds: 1.0,
            audio_bitrate_kbps: 64,
            start_segment: 0,
            work_dir: dir.join("work"),
            max_duration_s: None,
        };
        let src = open(SourceInput::Path(clip), 3840 * 2160).expect("open clip");
        let mut segments = 0;
        let summary = transcode(src, &cfg, &|| false, |_| {
            segments += 1;
            Ok(())
        })
        .expect("the ladder still runs");
        // The source-size rung passes frames through; the scaled one fell back to swscale.
        assert_eq!(summary.scalers, ["none", "swscale"]);
        assert_eq!(summary.frames_encoded, [50, 50]);
        assert_eq!(segments, 4, "2 rungs x 2 one-second segments");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn scale_cuda_is_refused_cleanly_without_a_gpu() {
        // On a host with a working CUDA device this passes either way; without one the probe
        // must report an error (hwupload_cuda cannot create its device), never panic.
        if crate::probe::gpus().devices.is_empty() {
            assert!(cuda_works().is_err());
        }
    }
}
