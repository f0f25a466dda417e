//! Running a transcode: open the source (a local path, or the store's stream read as it is
//! decoded), check the limits, choose CPU or NVIDIA encoders, run the ladder pipeline, store
//! each segment as soon as its file is complete, record unit `seg-k` once every rung's
//! segment `k` is stored and rewrite the EVENT playlists, and finally write the VOD media
//! and master playlists.

use super::hls::{self, PlaylistKind, SegmentEntry, Variant};
use super::spec::{plan_ladder, PlannedRung, Resolved};
use crate::context::JobContext;
use crate::convert::ReadingInput;
use crate::envelope::OutputInfo;
use crate::error::JobError;
use crate::kind::JobOutput;
use crate::store::parse_uri;
use bytes::Bytes;
use kiln_kernels::Accel;
use kiln_kernels::video::{self, EncoderKind, LadderConfig, RungConfig, ScaleEngine, SegmentFile, SourceInput, VideoCodec, VideoError};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

const TS: &str = "video/mp2t";
const M3U8: &str = "application/vnd.apple.mpegurl";

pub fn unit_key(index: u32) -> String {
    format!("seg-{index:05}")
}

/// One segment index across all rungs, as recorded (or restored).
#[derive(Debug, Clone, Default)]
struct Unit {
    outputs: Vec<Option<OutputInfo>>,
    durations: Vec<f64>,
    codecs: Vec<Option<String>>,
}

/// Deletes the job's scratch folder however the job ends.
struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(job: &Resolved, ctx: &JobContext) -> Result<JobOutput, JobError> {
    let started = Instant::now();
    ctx.check()?;
    let input = open_input(&job.source, ctx)?;
    let src = video::open(input, ctx.limits.max_video_pixels)?;
    let info = src.info.clone();
    let pixels = info.width as u64 * info.height as u64;
    if pixels > ctx.limits.max_video_pixels {
        return Err(JobError::too_large(format!(
            "source is {}x{}, more than the limit of {} pixels",
            info.width, info.height, ctx.limits.max_video_pixels
        )));
    }
    let max_s = ctx.limits.max_video_seconds;
    if let Some(d) = info.duration_s.filter(|d| *d > max_s) {
        return Err(JobError::too_large(format!("source runs {d:.1} s, more than the limit of {max_s} s")));
    }
    let Accels { encoder, nvdec, scale } = choose_accel(job.accel, job.codec)?;
    let rungs = plan_ladder(&job.ladder, info.height, info.display_aspect);

    // Units an earlier attempt completed: a prefix of segment indices.
    let mut units: BTreeMap<u32, Unit> = BTreeMap::new();
    let mut start_segment = 0u32;
    while let Some(rec) = ctx.restored_unit(&unit_key(start_segment)) {
        units.insert(start_segment, restored_unit(&rec, rungs.len()));
        start_segment += 1;
    }
    let resumed = start_segment > 0;
    let expected = info.duration_s.map(|d| (d / job.segment_seconds).ceil().max(1.0) as u64).unwrap_or(0);

    let scratch = Scratch(std::env::temp_dir().join(format!("kiln-transcode-{}-{}", sanitize(&ctx.job_id), std::process::id())));
    let _ = std::fs::remove_dir_all(&scratch.0);
    let cfg = LadderConfig {
        rungs: rungs.iter().map(|r| RungConfig { width: r.width, height: r.height, bitrate_kbps: r.bitrate_kbps }).collect(),
        codec: job.codec,
        encoder,
        nvdec,
        scale: scale.clone(),
        preset: job.preset.clone(),
        segment_seconds: job.segment_seconds,
        audio_bitrate_kbps: job.audio_bitrate_kbps,
        start_segment,
        work_dir: scratch.0.clone(),
        max_duration_s: Some(max_s),
    };
    tracing::info!(job = %ctx.job_id, source = %job.source, codec = %info.video_codec, width = info.width, height = info.height,
        rungs = rungs.len(), ?encoder, nvdec, scaler = scale.name(), start_segment, "transcode starting");

    let has_audio = info.audio_codec.is_some();
    let lists = Playlists { job, rungs: &rungs, frame_rate: info.fps };
    let mut next_unit = start_segment;
    let mut job_error: Option<JobError> = None;
    let cancel = ctx.cancel_signal().clone();
    let stop = move || cancel.is_fired();
    let result = video::transcode(src, &cfg, &stop, |seg: SegmentFile| {
        match on_segment(ctx, &lists, has_audio, &mut units, &mut next_unit, expected, seg) {
            Ok(()) => Ok(()),
            Err(e) => {
                job_error = Some(e);
                Err(VideoError::Stopped)
            }
        }
    });
    let summary = match result {
        Ok(s) => Some(s),
        Err(e) => {
            ctx.check()?;
            return Err(job_error.unwrap_or_else(|| JobError::from(e)));
        }
    };
    ctx.check()?;
    // A unit is complete only with every rung's segment; the last ones may still be pending
    // if a rung produced fewer segments (it cannot: every rung sees every frame).
    if let Some((k, _)) = units.range(next_unit..).next() {
        return Err(JobError::internal(format!("segment {k} is missing in some rungs")));
    }

    // The final playlists (VOD), announced with the segments.
    let has_audio = summary.as_ref().map(|s| s.has_audio).unwrap_or(has_audio);
    let written = lists.write(ctx, &units, has_audio, PlaylistKind::Vod)?;
    let outputs = written.outputs;
    let rung_results = written.rungs;

    let duration: f64 = units.values().map(|u| u.durations.first().copied().unwrap_or(0.0)).sum();
    let mut extra = serde_json::Map::new();
    extra.insert(
        "transcode".into(),
        json!({
            "segments": units.len(),
            "segment_seconds": job.segment_seconds,
            "resumed_from_segment": start_segment,
            "duration_s": duration,
            "source": info,
            "encoder": video::rung_encoder_name(job.codec, encoder),
            "decoder": summary.as_ref().map(|s| s.decoder.clone()),
            "scalers": summary.as_ref().map(|s| s.scalers.clone()),
            "frames_decoded": summary.as_ref().map(|s| s.frames_decoded),
            "rungs": rung_results,
            "run_ms": started.elapsed().as_secs_f64() * 1e3,
        }),
    );
    Ok(JobOutput { outputs, extra, resumed })
}

/// Stores one finished segment file, then records every unit that is now complete, in order.
fn on_segment(
    ctx: &JobContext,
    lists: &Playlists<'_>,
    has_audio: bool,
    units: &mut BTreeMap<u32, Unit>,
    next_unit: &mut u32,
    expected: u64,
    seg: SegmentFile,
) -> Result<(), JobError> {
    let rungs = lists.rungs;
    let r = rungs.get(seg.rung).ok_or_else(|| JobError::internal("segment from an unknown rung"))?;
    let name = format!("{}/seg-{:05}.ts", r.name, seg.index);
    let info = ctx.store_output_file(&name, &seg.path, TS, Some((r.width, r.height)))?;
    let _ = std::fs::remove_file(&seg.path);
    let n = rungs.len();
    let u = units.entry(seg.index).or_insert_with(|| Unit { outputs: vec![None; n], durations: vec![0.0; n], codecs: vec![None; n] });
    u.outputs[seg.rung] = Some(info);
    u.durations[seg.rung] = seg.duration;
    u.codecs[seg.rung] = seg.codecs;
    // Record complete units in index order (a rung may run ahead of another).
    let first = *next_unit;
    while let Some((&k, u)) = units.range(*next_unit..).next() {
        if u.outputs.iter().any(|o| o.is_none()) {
            break;
        }
        let outs: Vec<OutputInfo> = u.outputs.iter().flatten().cloned().collect();
        let data = json!({"durations": u.durations, "codecs": u.codecs});
        ctx.complete_unit(&unit_key(k), &outs, data)?;
        *next_unit = k + 1;
        ctx.progress(u64::from(k) + 1, expected.max(u64::from(k) + 1), &unit_key(k));
    }
    if *next_unit > first {
        // EVENT playlists of the recorded units, so a player can start while the job runs.
        let recorded: BTreeMap<u32, Unit> = units.range(..*next_unit).map(|(k, u)| (*k, u.clone())).collect();
        lists.write(ctx, &recorded, has_audio, PlaylistKind::Event)?;
    }
    Ok(())
}

/// Writes a ladder's playlists from its recorded units.
struct Playlists<'a> {
    job: &'a Resolved,
    rungs: &'a [PlannedRung],
    frame_rate: Option<f64>,
}

/// What [`Playlists::write`] produced.
struct Written {
    /// Per rung its segments then its media playlist, then the master playlist.
    outputs: Vec<OutputInfo>,
    /// Per rung, what the result says of it.
    rungs: Vec<serde_json::Value>,
}

impl Playlists<'_> {
    /// Every rung's media playlist over `units` (all complete), then the master playlist.
    /// EVENT playlists are stored quietly (they are rewritten per unit); the final VOD ones are
    /// announced as outputs.
    fn write(&self, ctx: &JobContext, units: &BTreeMap<u32, Unit>, has_audio: bool, kind: PlaylistKind) -> Result<Written, JobError> {
        let put = |name: &str, text: String| match kind {
            PlaylistKind::Event => ctx.store_output(name, Bytes::from(text), M3U8, None),
            PlaylistKind::Vod => ctx.write_output(name, Bytes::from(text), M3U8, None),
        };
        let mut outputs: Vec<OutputInfo> = Vec::new();
        let mut variants = Vec::new();
        let mut rung_results = Vec::new();
        for (i, r) in self.rungs.iter().enumerate() {
            let mut entries = Vec::new();
            let mut codecs = None;
            for u in units.values() {
                let Some(Some(o)) = u.outputs.get(i) else { continue };
                let file = o.name.rsplit('/').next().unwrap_or(&o.name).to_owned();
                entries.push(SegmentEntry { uri: file, duration: u.durations.get(i).copied().unwrap_or(0.0), bytes: o.bytes });
                outputs.push(o.clone());
                if codecs.is_none() {
                    codecs = u.codecs.get(i).cloned().flatten();
                }
            }
            let target = hls::target_duration(self.job.segment_seconds, &entries);
            let name = format!("{}/index.m3u8", r.name);
            outputs.push(put(&name, hls::media_playlist(&entries, target, kind))?);
            let (peak, avg) = hls::bandwidth(&entries);
            let video_codecs = codecs.unwrap_or_else(|| default_codecs(self.job.codec).to_owned());
            let codecs = if has_audio { format!("{video_codecs},mp4a.40.2") } else { video_codecs };
            rung_results.push(json!({"name": r.name, "width": r.width, "height": r.height, "bitrate_kbps": r.bitrate_kbps,
                "bandwidth": peak, "average_bandwidth": avg, "codecs": codecs, "segments": entries.len()}));
            variants.push(Variant {
                playlist_uri: name,
                width: r.width,
                height: r.height,
                codecs,
                frame_rate: self.frame_rate,
                peak_bps: peak,
                average_bps: avg,
            });
        }
        outputs.push(put("master.m3u8", hls::master_playlist(&variants))?);
        Ok(Written { outputs, rungs: rung_results })
    }
}

fn restored_unit(rec: &crate::checkpoint::UnitRecord, n: usize) -> Unit {
    let durations: Vec<f64> = rec.data.get("durations").and_then(|d| serde_json::from_value(d.clone()).ok()).unwrap_or_default();
    let codecs: Vec<Option<String>> = rec.data.get("codecs").and_then(|d| serde_json::from_value(d.clone()).ok()).unwrap_or_default();
    let mut outputs: Vec<Option<OutputInfo>> = rec.outputs.iter().cloned().map(Some).collect();
    outputs.resize(n, None);
    Unit { outputs, durations, codecs }
}

/// What runs on the GPU for one job.
#[derive(Debug, PartialEq)]
pub(super) struct Accels {
    pub(super) encoder: EncoderKind,
    pub(super) nvdec: bool,
    pub(super) scale: ScaleEngine,
}

/// Picks the encoder family, whether to decode on NVDEC and what scales the rungs, from what
/// the probe proved (an opened session, a frame through scale_cuda). `cpu` never consults the
/// GPU probe; `gpu` uses every proven engine and fails `unsupported` when none works; `auto`
/// uses the GPU only with NVENC (see the module doc for why).
fn choose_accel(accel: Accel, codec: VideoCodec) -> Result<Accels, JobError> {
    if accel == Accel::Cpu {
        return Ok(cpu_accels());
    }
    accels_from(accel, codec, video::probe::codecs())
}

pub(super) fn cpu_accels() -> Accels {
    Accels { encoder: EncoderKind::Cpu, nvdec: false, scale: ScaleEngine::Cpu }
}

pub(super) fn accels_from(accel: Accel, codec: VideoCodec, p: &video::probe::CodecProbe) -> Result<Accels, JobError> {
    let nvenc = match codec {
        VideoCodec::H264 => p.nvenc_h264,
        VideoCodec::Hevc => p.nvenc_hevc,
    };
    if accel == Accel::Gpu && !nvenc && !p.nvdec {
        let why = p.gpu_note.clone().unwrap_or_else(|| "no NVENC or NVDEC session opened".into());
        return Err(JobError::unsupported(format!("accel \"gpu\": this worker has no usable NVIDIA video engine ({why})")));
    }
    let kind = if nvenc { EncoderKind::Nvenc } else { EncoderKind::Cpu };
    let cpu_name = video::rung_encoder_name(codec, EncoderKind::Cpu);
    if kind == EncoderKind::Cpu && !p.encoders.contains(&cpu_name) {
        return Err(JobError::unsupported(format!("this worker's FFmpeg has no {cpu_name} encoder")));
    }
    if accel == Accel::Auto && kind == EncoderKind::Cpu {
        return Ok(cpu_accels());
    }
    let scale = if p.scale_cuda { ScaleEngine::Cuda } else { ScaleEngine::Cpu };
    Ok(Accels { encoder: kind, nvdec: p.nvdec, scale })
}

fn default_codecs(codec: VideoCodec) -> &'static str {
    match codec {
        VideoCodec::H264 => "avc1.640028",
        VideoCodec::Hevc => "hvc1.1.6.L120.B0",
    }
}

/// Opens the source: local files directly (seekable); store objects as a stream read while
/// decoding (never loaded whole). Both are checked against `max_input_bytes` first.
fn open_input(source: &str, ctx: &JobContext) -> Result<SourceInput, JobError> {
    let url = parse_uri(source)?;
    let limit = ctx.limits.max_input_bytes;
    let meta = ctx.block_on(ctx.store().head(&url)).map_err(ReadingInput)?;
    let Some(meta) = meta else {
        return Err(JobError::new(crate::error::ErrorCode::InputNotFound, format!("object not found: {url}")));
    };
    if meta.size > limit {
        return Err(JobError::too_large(format!("source is {} bytes, more than the limit of {limit}", meta.size)));
    }
    if meta.size == 0 {
        return Err(JobError::corrupt("source is empty"));
    }
    if url.scheme() == "file" {
        if let Ok(path) = url.to_file_path() {
            return Ok(SourceInput::Path(path));
        }
    }
    let stream = ctx.block_on(ctx.store().open(&url)).map_err(ReadingInput)?;
    let bridge = tokio_util::io::SyncIoBridge::new_with_handle(stream, ctx.runtime().clone());
    Ok(SourceInput::Reader(Box::new(std::io::Read::take(bridge, limit))))
}

fn sanitize(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(64).collect()
}
