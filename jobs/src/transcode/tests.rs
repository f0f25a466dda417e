//! Transcode runs against a filesystem-backed store and an in-memory checkpoint: segments are
//! recorded as units, an interrupted run resumes from the first missing segment and yields
//! the same segment list and durations. Clips are made with the `ffmpeg` CLI.

use super::*;
use crate::checkpoint::{Checkpointer, UnitRecord};
use crate::context::{CancelSignal, EventSink};
use crate::envelope::Event;
use crate::error::ErrorCode;
use crate::store::{ByteStream, ObjectMeta, ObjectStore, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use url::Url;

/// `file://` URLs straight onto the filesystem.
struct DiskStore;

/// `s3://bucket/key` is served from `$TMPDIR/kiln-transcode-s3/bucket/key`: a source that
/// goes through `ObjectStore::open` (streamed, not seekable) instead of a local path.
fn path_of(uri: &Url) -> Result<std::path::PathBuf, StoreError> {
    if uri.scheme() == "s3" {
        let root = std::env::temp_dir().join("kiln-transcode-s3");
        return Ok(root.join(uri.host_str().unwrap_or("")).join(uri.path().trim_start_matches('/')));
    }
    uri.to_file_path().map_err(|_| StoreError::UnsupportedUri(uri.to_string()))
}

#[async_trait]
impl ObjectStore for DiskStore {
    async fn get(&self, uri: &Url, _limit: u64) -> Result<Bytes, StoreError> {
        std::fs::read(path_of(uri)?).map(Bytes::from).map_err(|e| StoreError::io(uri, e))
    }
    async fn open(&self, uri: &Url) -> Result<ByteStream, StoreError> {
        let f = tokio::fs::File::open(path_of(uri)?).await.map_err(|e| StoreError::io(uri, e))?;
        Ok(Box::pin(f))
    }
    async fn head(&self, uri: &Url) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(std::fs::metadata(path_of(uri)?).ok().map(|m| ObjectMeta { uri: uri.clone(), size: m.len() }))
    }
    async fn put(&self, uri: &Url, data: Bytes, _ct: &str) -> Result<(), StoreError> {
        let p = path_of(uri)?;
        std::fs::create_dir_all(p.parent().unwrap()).map_err(|e| StoreError::io(uri, e))?;
        std::fs::write(p, data).map_err(|e| StoreError::io(uri, e))
    }
    async fn put_file(&self, uri: &Url, path: &Path, ct: &str) -> Result<(), StoreError> {
        let data = std::fs::read(path).map_err(|e| StoreError::io(uri, e))?;
        self.put(uri, Bytes::from(data), ct).await
    }
    async fn put_if_absent(&self, uri: &Url, data: Bytes, ct: &str) -> Result<bool, StoreError> {
        self.put(uri, data, ct).await.map(|_| true)
    }
    async fn delete(&self, uri: &Url) -> Result<(), StoreError> {
        std::fs::remove_file(path_of(uri)?).map_err(|e| StoreError::io(uri, e))
    }
    async fn list(&self, _prefix: &Url) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(vec![])
    }
}

/// An in-memory checkpoint that can be told to fail its Nth record (a lost lease).
#[derive(Default)]
struct MemCheckpoint {
    restored: BTreeMap<String, UnitRecord>,
    recorded: Mutex<Vec<(String, UnitRecord)>>,
    fail_at: Option<usize>,
}

#[async_trait]
impl Checkpointer for MemCheckpoint {
    fn restored(&self, key: &str) -> Option<UnitRecord> {
        self.restored.get(key).cloned()
    }
    async fn record(&self, key: &str, unit: UnitRecord) -> Result<u64, JobError> {
        let mut r = self.recorded.lock().unwrap();
        if self.fail_at == Some(r.len() + 1) {
            return Err(JobError::internal("lease lost (test)"));
        }
        r.push((key.to_owned(), unit));
        Ok(r.len() as u64)
    }
}

#[derive(Default)]
struct Events(AtomicUsize, AtomicUsize);
impl EventSink for Events {
    fn emit(&self, e: Event) {
        match e {
            Event::Output { .. } => self.0.fetch_add(1, Ordering::SeqCst),
            Event::Progress { .. } => self.1.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
    }
}

fn ffmpeg(args: &[&str]) {
    let st = Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args).status().expect("ffmpeg CLI");
    assert!(st.success(), "ffmpeg {args:?}");
}

fn clip(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("clip.mp4");
    ffmpeg(&[
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=7", "-f", "lavfi", "-i",
        "sine=frequency=440:sample_rate=48000:duration=7", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
        "yuv420p", "-c:a", "aac", "-shortest", p.to_str().unwrap(),
    ]);
    p
}

fn run_job(src: &Path, out: &Path, id: &str, ck: Arc<MemCheckpoint>, events: Arc<Events>) -> Result<JobOutput, JobError> {
    run_uri(src.to_str().unwrap(), out, id, ck, events)
}

fn run_uri(src: &str, out: &Path, id: &str, ck: Arc<MemCheckpoint>, events: Arc<Events>) -> Result<JobOutput, JobError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let spec = json!({"source": src, "segment_seconds": 2, "accel": "cpu", "preset": "ultrafast",
        "ladder": [{"height": 240, "bitrate_kbps": 400}, {"height": 160, "bitrate_kbps": 200}]});
    let job = Transcode.prepare(&spec, &Limits::default())?;
    assert!(job.checkpointed());
    let prefix = Url::from_directory_path(out).unwrap();
    let ctx = JobContext::new(id.into(), prefix, Limits::default(), "cpu".into(), Arc::new(DiskStore), events, CancelSignal::new(), rt.handle().clone())
        .with_checkpoint(ck);
    job.run(&ctx)
}

fn playlist(out: &Path, rung: &str) -> String {
    std::fs::read_to_string(out.join(rung).join("index.m3u8")).unwrap()
}

#[test]
fn segments_are_units_and_a_resumed_run_continues_from_the_first_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = clip(dir.path());

    // Uninterrupted: 7 s in 2 s segments = 4 units, each with both rungs' segments.
    let full_out = dir.path().join("full");
    let ck = Arc::new(MemCheckpoint::default());
    let ev = Arc::new(Events::default());
    let full = run_job(&src, &full_out, "full", ck.clone(), ev.clone()).unwrap();
    let rec = ck.recorded.lock().unwrap().clone();
    assert_eq!(rec.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["seg-00000", "seg-00001", "seg-00002", "seg-00003"]);
    assert!(rec.iter().all(|r| r.1.outputs.len() == 2));
    assert!(!full.resumed);
    assert_eq!(ev.1.load(Ordering::SeqCst), 4, "one progress event per segment");
    // 8 segments + 2 media playlists + master, each announced once.
    assert_eq!(ev.0.load(Ordering::SeqCst), 11);
    assert_eq!(full.extra["transcode"]["segments"], 4);
    let durations: Vec<f64> = serde_json::from_value(rec[0].1.data["durations"].clone()).unwrap();
    assert!((durations[0] - 2.0).abs() < 1e-6 && (durations[1] - 2.0).abs() < 1e-6, "{durations:?}");

    // Interrupted: the 3rd record fails (lease lost) after two units were recorded.
    let out = dir.path().join("resumed");
    let ck = Arc::new(MemCheckpoint { fail_at: Some(3), ..Default::default() });
    let err = run_job(&src, &out, "cut", ck.clone(), Arc::new(Events::default())).unwrap_err();
    assert_eq!(err.code, ErrorCode::Internal);
    let done: BTreeMap<String, UnitRecord> = ck.recorded.lock().unwrap().iter().cloned().collect();
    assert_eq!(done.len(), 2);
    // What a player sees mid-job: EVENT playlists listing exactly the recorded segments (all
    // stored), and a master playlist pointing at them.
    for rung in ["240p", "160p"] {
        let live = playlist(&out, rung);
        assert!(live.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n") && !live.contains("#EXT-X-ENDLIST"), "{live}");
        let segs: Vec<&str> = live.lines().filter(|l| l.ends_with(".ts")).collect();
        assert_eq!(segs, ["seg-00000.ts", "seg-00001.ts"], "{rung}: {live}");
        assert!(segs.iter().all(|s| out.join(rung).join(s).is_file()));
    }
    let live_master = std::fs::read_to_string(out.join("master.m3u8")).unwrap();
    assert!(live_master.contains("240p/index.m3u8") && live_master.contains("160p/index.m3u8"), "{live_master}");

    // Resumed with those records: only units 2 and 3 are encoded again.
    let ck = Arc::new(MemCheckpoint { restored: done, ..Default::default() });
    let resumed = run_job(&src, &out, "cut", ck.clone(), Arc::new(Events::default())).unwrap();
    let again: Vec<String> = ck.recorded.lock().unwrap().iter().map(|r| r.0.clone()).collect();
    assert_eq!(again, ["seg-00002", "seg-00003"]);
    assert!(resumed.resumed);
    assert_eq!(resumed.extra["transcode"]["resumed_from_segment"], 2);
    for rung in ["240p", "160p"] {
        let (a, b) = (playlist(&full_out, rung), playlist(&out, rung));
        assert_eq!(a, b, "{rung} playlists differ");
        assert!(b.contains("#EXT-X-PLAYLIST-TYPE:VOD\n") && b.ends_with("#EXT-X-ENDLIST\n"), "{b}");
    }
    let master = std::fs::read_to_string(out.join("master.m3u8")).unwrap();
    assert!(master.contains("RESOLUTION=320x240") && master.contains("RESOLUTION=214x160"), "{master}");
    assert!(master.contains("mp4a.40.2"));
}

#[test]
fn bad_inputs_get_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, vec![0x42u8; 10_000]).unwrap();
    let e = run_job(&junk, &dir.path().join("o1"), "junk", Arc::default(), Arc::default()).unwrap_err();
    assert_eq!(e.code, ErrorCode::CorruptInput, "{e:?}");
    let audio = dir.path().join("tone.m4a");
    ffmpeg(&["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", audio.to_str().unwrap()]);
    let e = run_job(&audio, &dir.path().join("o2"), "tone", Arc::default(), Arc::default()).unwrap_err();
    assert_eq!(e.code, ErrorCode::Unsupported, "{e:?}");
    let e = run_job(&dir.path().join("nope.mp4"), &dir.path().join("o3"), "nope", Arc::default(), Arc::default()).unwrap_err();
    assert_eq!(e.code, ErrorCode::InputNotFound, "{e:?}");
}

#[test]
fn store_streams_are_decoded_as_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = std::env::temp_dir().join("kiln-transcode-s3").join(format!("b{}", std::process::id()));
    std::fs::create_dir_all(&bucket).unwrap();
    let src = bucket.join("clip.ts");
    ffmpeg(&[
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=5", "-f", "lavfi", "-i", "sine=duration=5",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", src.to_str().unwrap(),
    ]);
    let uri = format!("s3://b{}/clip.ts", std::process::id());
    let ck = Arc::new(MemCheckpoint::default());
    let r = run_uri(&uri, dir.path(), "s3", ck.clone(), Arc::default());
    let _ = std::fs::remove_dir_all(&bucket);
    let r = r.unwrap();
    assert_eq!(r.extra["transcode"]["segments"], 3, "{:?}", r.extra);
    assert_eq!(r.extra["transcode"]["source"]["seekable"], false);
    assert_eq!(ck.recorded.lock().unwrap().len(), 3);
}

/// The fuzz finding of 2026-12-04 (`fuzz/regressions/video_open-71109926.mp4`): an MP4 whose
/// next root atom lies ~1 GB past its end. Streamed from a store (not seekable), every read of
/// the demuxer failed with `InvalidData` without moving, and the read loop retried it until the
/// job's deadline; now a run of unreadable packets makes it `corrupt_input`.
#[test]
fn a_stream_whose_demuxer_never_moves_past_a_bad_packet_is_corrupt_not_a_spin() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = std::env::temp_dir().join("kiln-transcode-s3").join(format!("h{}", std::process::id()));
    std::fs::create_dir_all(&bucket).unwrap();
    let found = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions/video_open-71109926.mp4");
    std::fs::copy(found, bucket.join("past-end.mp4")).unwrap();
    let uri = format!("s3://h{}/past-end.mp4", std::process::id());
    let r = run_uri(&uri, dir.path(), "past-end", Arc::default(), Arc::default());
    let _ = std::fs::remove_dir_all(&bucket);
    let e = r.unwrap_err();
    assert_eq!(e.code, ErrorCode::CorruptInput, "{e:?}");
    assert!(e.message.contains("packets in a row"), "{e:?}");
    // The same file as a local path (seekable) was already refused.
    let e = run_job(Path::new(found), &dir.path().join("o2"), "past-end-2", Arc::default(), Arc::default()).unwrap_err();
    assert_eq!(e.code, ErrorCode::CorruptInput, "{e:?}");
}

/// A probe as the codec probe would report it on a host with these engines.
fn probe_with(nvenc: bool, nvdec: bool, scale_cuda: bool) -> kiln_kernels::video::probe::CodecProbe {
    kiln_kernels::video::probe::CodecProbe {
        libavcodec: "59.37.100".into(),
        encoders: vec!["libx264", "aac"],
        decoders: vec!["h264"],
        nvenc_h264: nvenc,
        nvenc_hevc: nvenc,
        nvdec,
        scale_cuda,
        gpu_note: None,
    }
}

#[test]
fn accel_auto_uses_the_gpu_only_with_nvenc_and_gpu_uses_every_proven_engine() {
    use super::run::{accels_from, cpu_accels, Accels};
    use kiln_kernels::Accel;
    use kiln_kernels::video::{EncoderKind, ScaleEngine, VideoCodec};
    let h100 = probe_with(false, true, true);
    // No NVENC (an H100): auto stays on the CPU (NVDEC + scale_cuda feeding libx264 was
    // slower there); gpu still decodes on NVDEC and scales on scale_cuda.
    assert_eq!(accels_from(Accel::Auto, VideoCodec::H264, &h100).unwrap(), cpu_accels());
    assert_eq!(
        accels_from(Accel::Gpu, VideoCodec::H264, &h100).unwrap(),
        Accels { encoder: EncoderKind::Cpu, nvdec: true, scale: ScaleEngine::Cuda }
    );
    // NVENC proven: auto and gpu use the whole GPU path.
    let l4 = probe_with(true, true, true);
    let all = Accels { encoder: EncoderKind::Nvenc, nvdec: true, scale: ScaleEngine::Cuda };
    assert_eq!(accels_from(Accel::Auto, VideoCodec::Hevc, &l4).unwrap(), all);
    assert_eq!(accels_from(Accel::Gpu, VideoCodec::H264, &l4).unwrap(), all);
    // Nothing proven: auto is the CPU, gpu is a clear `unsupported`.
    let none = probe_with(false, false, false);
    assert_eq!(accels_from(Accel::Auto, VideoCodec::H264, &none).unwrap(), cpu_accels());
    let err = accels_from(Accel::Gpu, VideoCodec::H264, &none).unwrap_err();
    assert_eq!(err.code.as_str(), "unsupported", "{err:?}");
    // No libx264 and no NVENC: nothing can encode.
    let mut bare = probe_with(false, true, true);
    bare.encoders = vec!["aac"];
    assert!(accels_from(Accel::Auto, VideoCodec::H264, &bare).is_err());
}
