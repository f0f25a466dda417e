//! Hostile inputs for every kind, end to end through `kiln serve` over HTTP (issue 22). Each
//! case asserts its DESIGN.md code (and HTTP status); after each group the same worker still
//! answers `/healthz` and a good job, and its peak RSS (`VmHWM`, /proc) stays under a stated
//! bound, so a bomb was refused from its header rather than allocated.
//!
//! - thumbnail: decompression bombs in PNG, JPEG, WebP, GIF and TIFF (a small real file with
//!   its header patched: tests/src/hostile.rs), the same as a watermark, truncated files of
//!   each format, and spec limits (outputs, output size);
//! - transcode: WebM, TS and MKV made by ffmpeg's lavfi then truncated, cut to the header, or
//!   corrupted in the middle; a Matroska file whose header understates its duration (caught
//!   while decoding); durations and frame sizes past the limits;
//! - render: hostile PDFs for `pdf_page` (deep nesting, reference loops, a 2^24-page DAG page
//!   tree, a deflate bomb, lying xref and stream lengths) and specs at every limit (exactly at
//!   the limit succeeds, one past is `invalid_spec`);
//! - infer: truncated, empty, garbage and adversarial ONNX models (huge declared initializer,
//!   unknown opset, a graph whose output is not produced), and a corrupt image in a batch of
//!   jobs batched together: that job fails, the others are answered.

use kiln_tests::hostile;
use kiln_tests::proc::{kiln, serve, wait_ready, Proc};
use kiln_tests::{scratch_dir, workspace_root};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One `kiln serve` on loopback for a group of cases, reading sources under `dir`.
struct Worker {
    proc: Proc,
    base: String,
    dir: PathBuf,
    http: reqwest::blocking::Client,
}

impl Worker {
    fn start(tag: &str, env: &[(&str, &str)]) -> Worker {
        let dir = scratch_dir(tag).canonicalize().unwrap();
        std::fs::create_dir_all(dir.join("store")).unwrap();
        let mut cmd = kiln();
        cmd.env("KILN_STORE_URL", format!("file://{}/store/", dir.display()))
            .env("KILN_SOURCES_ALLOW", format!("file://{}/", dir.display()))
            .env("KILN_LOG", "warn")
            .env("KILN_CPU_SLOTS", "2")
            .env_remove("KILN_CONFIG")
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (proc, base) = serve(&mut cmd);
        wait_ready(&base, Duration::from_secs(60));
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();
        Worker { proc, base, dir, http }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    }

    /// Submits an envelope and waits for its result: (HTTP status, result).
    fn submit(&self, env: &Value) -> (u16, Value) {
        let r = self.http.post(format!("{}/v1/jobs", self.base)).json(env).send().unwrap_or_else(|e| panic!("{}: {e}", env["id"]));
        let status = r.status().as_u16();
        (status, r.json().unwrap())
    }

    /// Submits and asserts the result's code (`"succeeded"` for a success) and the HTTP status.
    fn expect(&self, env: &Value, code: &str) -> Value {
        let (status, r) = self.submit(env);
        let got = if r["status"] == "succeeded" { "succeeded" } else { r["error"]["code"].as_str().unwrap_or("none") };
        assert_eq!(got, code, "{}: {r:#}", env["id"]);
        assert_eq!(status, http_status(code), "{}: {r}", env["id"]);
        r
    }

    /// The worker is alive and still runs a good job; its peak RSS stays under `bound_mb`.
    fn assert_healthy(&mut self, bound_mb: u64, good: &Value) {
        assert!(self.proc.child().try_wait().unwrap().is_none(), "the worker exited");
        let h = self.http.get(format!("{}/healthz", self.base)).send().unwrap();
        assert_eq!(h.status().as_u16(), 200);
        self.expect(good, "succeeded");
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.id())).unwrap();
        let hwm_kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        eprintln!("{}: peak RSS {} MiB (bound {bound_mb} MiB)", self.dir.display(), hwm_kb / 1024);
        assert!(hwm_kb < bound_mb * 1024, "peak RSS {} MiB over the bound of {bound_mb} MiB", hwm_kb / 1024);
    }
}

/// ARCHITECTURE.md's "HTTP status of a result".
fn http_status(code: &str) -> u16 {
    match code {
        "succeeded" => 200,
        "invalid_spec" => 400,
        "input_too_large" => 413,
        "unsupported" | "input_not_found" | "corrupt_input" | "too_long_for_tier" => 422,
        "forbidden" => 403,
        "deadline_exceeded" => 504,
        "overloaded" => 503,
        "cancelled" => 409,
        _ => 500,
    }
}

fn thumb(id: &str, source: &str) -> Value {
    json!({"id": id, "kind": "thumbnail", "input": {"source": source,
        "outputs": [{"name": "t.png", "width": 32, "height": 32, "format": "png"}]}})
}

#[test]
fn image_bombs_and_truncated_images_in_every_format() {
    use image::ImageFormat as F;
    let mut w = Worker::start("hostile-images", &[]);
    let good = w.file("good.png", &hostile::small(F::Png));
    let bombs: Vec<(&str, Vec<u8>)> = vec![
        ("png", hostile::png_bomb(100_000, 100_000)),
        ("png-wide", hostile::png_bomb(u32::MAX >> 1, 1)),
        ("jpeg", hostile::jpeg_bomb(65000, 65000)),
        ("webp", hostile::webp_bomb()),
        ("gif", hostile::gif_bomb()),
        ("tiff", hostile::tiff_bomb(65535, 65535)),
        ("tiff-long", hostile::tiff_bomb(1_000_000, 1_000_000)),
    ];
    // A TIFF whose sizes disagree with its strips is refused as corrupt, before any pixel.
    let src = w.file("tiff-inconsistent", &hostile::tiff_patched(65535, 65535));
    w.expect(&thumb("tiff-inconsistent", &src), "corrupt_input");
    for (name, bytes) in &bombs {
        let src = w.file(&format!("bomb-{name}"), bytes);
        let r = w.expect(&thumb(&format!("bomb-{name}"), &src), "input_too_large");
        assert!(r["error"]["message"].as_str().unwrap().contains("pixels"), "{r}");
        // As a watermark over a good image: refused the same way.
        let mut wm = thumb(&format!("wm-{name}"), &good);
        wm["input"]["watermark"] = json!({"source": src});
        w.expect(&wm, "input_too_large");
    }
    for (name, format) in [("png", F::Png), ("jpeg", F::Jpeg), ("webp", F::WebP), ("gif", F::Gif), ("tiff", F::Tiff)] {
        let b = hostile::small(format);
        // Cut inside the pixel data, and cut right after the first 16 bytes (the header).
        let half = w.file(&format!("half.{name}"), &b[..b.len() / 2]);
        w.expect(&thumb(&format!("half-{name}"), &half), "corrupt_input");
        let head = w.file(&format!("head.{name}"), &b[..16]);
        w.expect(&thumb(&format!("head-{name}"), &head), "corrupt_input");
    }
    let empty = w.file("empty.png", b"");
    w.expect(&thumb("empty", &empty), "corrupt_input");
    // Spec limits: 16 outputs allowed, 17 not; 8192 wide allowed, 8193 not.
    let outs = |n: usize| (0..n).map(|i| json!({"name": format!("{i}.png"), "width": 8, "format": "png"})).collect::<Vec<_>>();
    w.expect(&json!({"id": "outputs-at-limit", "kind": "thumbnail", "input": {"source": good, "outputs": outs(16)}}), "succeeded");
    w.expect(&json!({"id": "outputs-past-limit", "kind": "thumbnail", "input": {"source": good, "outputs": outs(17)}}), "invalid_spec");
    w.expect(&json!({"id": "dim-past-limit", "kind": "thumbnail", "input": {"source": good, "outputs": [{"name": "x.png", "width": 8193}]}}), "invalid_spec");
    // Bombs that would need 40 GB decoded: the worker never got near that.
    w.assert_healthy(300, &thumb("after-images", &good));
}

fn ffmpeg(args: &[&str]) {
    let st = Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args).status().expect("ffmpeg CLI");
    assert!(st.success(), "ffmpeg {args:?}");
}

fn transcode(id: &str, source: &str) -> Value {
    json!({"id": id, "kind": "transcode", "input": {"source": source, "accel": "cpu", "preset": "ultrafast",
        "segment_seconds": 1, "ladder": [{"height": 96, "bitrate_kbps": 100}]}})
}

/// The EBML Duration element (0x4489, a 4- or 8-byte float) of a Matroska file set to `ms`.
fn patch_mkv_duration(b: &mut [u8], ms: f64) {
    let at = b.windows(2).position(|w| w == [0x44, 0x89]).expect("a Duration element");
    match b[at + 2] {
        0x84 => b[at + 3..at + 7].copy_from_slice(&(ms as f32).to_be_bytes()),
        0x88 => b[at + 3..at + 11].copy_from_slice(&ms.to_be_bytes()),
        other => panic!("unexpected Duration size byte {other:#x}"),
    }
}

#[test]
fn hostile_and_truncated_videos() {
    let mut w = Worker::start("hostile-video", &[("KILN_MAX_VIDEO_SECONDS", "3")]);
    let d = w.dir.clone();
    let clip = |name: &str, secs: u32, codec: &[&str]| {
        let src = format!("testsrc2=size=160x120:rate=15:duration={secs}");
        let mut args = vec!["-f", "lavfi", "-i", &src];
        args.extend(codec);
        let out = d.join(name);
        args.push(out.to_str().unwrap());
        ffmpeg(&args);
        std::fs::read(out).unwrap()
    };
    let vp8 = ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"];
    let h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"];
    let files = [
        ("webm", clip("ok.webm", 2, &vp8)),
        ("ts", clip("ok.ts", 2, &h264)),
        ("mkv", clip("ok.mkv", 2, &h264)),
    ];
    for (ext, b) in &files {
        // Whole: fine (the baseline these cases are cut from).
        w.expect(&transcode(&format!("ok-{ext}"), &d.join(format!("ok.{ext}")).display().to_string()), "succeeded");
        // The container header alone.
        let head = w.file(&format!("head.{ext}"), &b[..b.len().min(600)]);
        w.expect(&transcode(&format!("head-{ext}"), &head), "corrupt_input");
        // 0xFF over the middle third (the frames' data): decoders reject it.
        let mut junk = b.clone();
        let (a, z) = (b.len() / 3, 2 * b.len() / 3);
        junk[a..z].iter_mut().for_each(|x| *x = 0xFF);
        let junk_src = w.file(&format!("junk.{ext}"), &junk);
        let (_, r) = w.submit(&transcode(&format!("junk-{ext}"), &junk_src));
        // What survives of a damaged stream may still make a (shorter) ladder; it must never
        // crash or hang, and a failure must say corrupt_input.
        assert!(r["status"] == "succeeded" || r["error"]["code"] == "corrupt_input", "junk-{ext}: {r}");
        // Cut in half: the first half transcodes, or the cut is reported as corrupt.
        let half = w.file(&format!("half.{ext}"), &b[..b.len() / 2]);
        let (_, r) = w.submit(&transcode(&format!("half-{ext}"), &half));
        assert!(r["status"] == "succeeded" || r["error"]["code"] == "corrupt_input", "half-{ext}: {r}");
    }
    // Past the limits: 5 s over a 3 s limit, in every container.
    for (ext, codec) in [("webm", &vp8[..]), ("ts", &h264[..]), ("mkv", &h264[..])] {
        clip(&format!("long.{ext}"), 5, codec);
        w.expect(&transcode(&format!("long-{ext}"), &d.join(format!("long.{ext}")).display().to_string()), "input_too_large");
    }
    // A Matroska header that says 0.5 s over 5 s of frames: caught while decoding.
    let mut lying = std::fs::read(d.join("long.mkv")).unwrap();
    patch_mkv_duration(&mut lying, 500.0);
    let lying = w.file("lying.mkv", &lying);
    let r = w.expect(&transcode("lying-mkv", &lying), "input_too_large");
    assert!(r["error"]["message"].as_str().unwrap().contains("limit"), "{r}");
    // Fuzz findings (fuzz/regressions): 38 bytes of H.264 whose SPS says 1024x107296 (reported
    // too large, never decoded at that size) and a 3 KB MP4 naming a 2 GiB atom (corrupt).
    let found = |name: &str| std::fs::read(workspace_root().join("fuzz/regressions").join(name)).unwrap();
    let sps = w.file("huge-sps.h264", &found("video_open-oom-f8d05054.h264"));
    w.expect(&transcode("huge-sps", &sps), "input_too_large");
    // The same stream copied into other containers. The TS demuxer finds no stream in it
    // (`corrupt_input`); the Matroska header says 1024x416, within the limit, and the decoder
    // (given max_pixels) refuses the SPS's picture, so no frame decodes (`corrupt_input`);
    // MPEG-PS creates the stream only while probing, beyond the decoder options' reach, and
    // FFmpeg's allocation cap keeps the picture from being allocated (`input_too_large`).
    // None allocates the declared picture (kiln run: 59, 71 and 104 MB peak; MPEG-PS 325 MB
    // before the cap).
    for (ext, format, code) in [("ts", "mpegts", "corrupt_input"), ("mkv", "matroska", "corrupt_input"), ("mpg", "mpeg", "input_too_large")] {
        let wrapped = d.join(format!("huge-sps.{ext}"));
        ffmpeg(&["-f", "h264", "-i", &sps, "-c", "copy", "-f", format, wrapped.to_str().unwrap()]);
        w.expect(&transcode(&format!("huge-sps-{ext}"), &wrapped.display().to_string()), code);
    }
    let atom = w.file("huge-atom.mp4", &found("video_open-oom-945a04ef.mp4"));
    w.expect(&transcode("huge-atom", &atom), "corrupt_input");
    w.assert_healthy(400, &transcode("after-video", &d.join("ok.mkv").display().to_string()));
}

fn render_pdf_page(id: &str, source: &str) -> Value {
    json!({"id": id, "kind": "render", "input": {"format": "pdf", "pages": [{"pdf_page": {"source": source, "page": 1}}]}})
}

#[test]
fn hostile_pdfs_for_pdf_page_import() {
    let mut w = Worker::start("hostile-pdf", &[]);
    let good = w.file("good.pdf", &hostile::pdf_page_with(""));
    w.expect(&render_pdf_page("good-pdf", &good), "succeeded");
    let mut seen = Vec::new();
    for (name, bytes) in hostile::hostile_pdfs() {
        let src = w.file(&format!("{name}.pdf"), &bytes);
        let (status, r) = w.submit(&render_pdf_page(name, &src));
        let code = if r["status"] == "succeeded" { "succeeded" } else { r["error"]["code"].as_str().unwrap_or("none") };
        assert_eq!(status, http_status(code), "{name}: {r}");
        seen.push((name, code.to_owned()));
    }
    eprintln!("hostile PDFs: {seen:?}");
    let want = |name: &str| seen.iter().find(|(n, _)| *n == name).map(|(_, c)| c.as_str()).unwrap();
    // Unparseable or lying files are corrupt input; a page tree that loops or explodes either
    // has no page 1 to give or gives its one page, never a hang.
    for name in ["truncated", "deep-array", "deep-dict", "mediabox-ref-loop", "parent-loop", "huge-mediabox"] {
        assert_eq!(want(name), "corrupt_input", "{name}");
    }
    // lopdf rebuilds a lying xref by scanning; the other cases hold a usable page 1 (the
    // deflate bomb's stream is copied, never inflated).
    for name in ["xref-past-end", "huge-tree", "ref-loop", "stream-length", "flate-bomb"] {
        assert!(["succeeded", "corrupt_input", "invalid_spec"].contains(&want(name)), "{name}: {}", want(name));
    }
    w.assert_healthy(300, &render_pdf_page("after-pdf", &good));
}

fn page(w: u32, h: u32, layers: Vec<Value>) -> Value {
    json!({"width": w, "height": h, "layers": layers})
}

fn render(id: &str, pages: Vec<Value>) -> Value {
    json!({"id": id, "kind": "render", "input": {"format": "png", "pages": pages}})
}

#[test]
fn render_specs_at_every_limit() {
    let limits = [("KILN_MAX_RENDER_PAGES", "3"), ("KILN_MAX_PAGE_PIXELS", "40000"), ("KILN_MAX_LAYERS_PER_PAGE", "4")];
    let mut w = Worker::start("hostile-render", &limits);
    let rect = json!({"type": "rect", "x": 1, "y": 1, "width": 10, "height": 10, "fill": "#ff000080"});
    let small = |n: usize| page(64, 64, vec![rect.clone(); n]);
    w.expect(&render("pages-at-limit", vec![small(1); 3]), "succeeded");
    w.expect(&render("pages-past-limit", vec![small(1); 4]), "invalid_spec");
    w.expect(&render("pixels-at-limit", vec![page(200, 200, vec![])]), "succeeded");
    w.expect(&render("pixels-past-limit", vec![page(200, 201, vec![])]), "invalid_spec");
    w.expect(&render("layers-at-limit", vec![small(4)]), "succeeded");
    w.expect(&render("layers-past-limit", vec![small(5)]), "invalid_spec");
    w.expect(&render("no-pages", vec![]), "invalid_spec");
    w.expect(&render("zero-size", vec![page(0, 64, vec![])]), "invalid_spec");
    w.expect(&render("huge-side", vec![page(u32::MAX, 1, vec![])]), "invalid_spec");
    let img = w.file("p.png", &hostile::small(image::ImageFormat::Png));
    let layer = |wd: u32, ht: u32| json!({"type": "image", "source": img, "x": 0, "y": 0, "width": wd, "height": ht});
    w.expect(&render("image-box-at-limit", vec![page(64, 64, vec![layer(200, 200)])]), "succeeded");
    w.expect(&render("image-box-past-limit", vec![page(64, 64, vec![layer(200, 201)])]), "invalid_spec");
    let bomb = w.file("bomb.png", &hostile::png_bomb(100_000, 100_000));
    let mut l = layer(32, 32);
    l["source"] = json!(bomb);
    w.expect(&render("image-bomb", vec![page(64, 64, vec![l])]), "input_too_large");
    // Layer limits (jobs/src/render/spec.rs): coordinates within ±1e7, text size in (0, 2000],
    // at most 10000 characters. At each limit the page renders (clipped to the page, in
    // bounded time); one past it is invalid_spec.
    let one = |id: &str, layer: Value| render(id, vec![page(64, 64, vec![layer])]);
    let text = |t: String, size: f64| json!({"type": "text", "x": 2, "y": 30, "text": t, "size": size, "color": "#000000"});
    let far = |v: f64| json!({"type": "rect", "x": -v, "y": v, "width": v, "height": v, "fill": "#000000"});
    w.expect(&one("coords-at-limit", far(1e7)), "succeeded");
    w.expect(&one("coords-past-limit", far(1.01e7)), "invalid_spec");
    w.expect(&one("text-at-limit", text("x".repeat(10_000), 12.0)), "succeeded");
    w.expect(&one("text-past-limit", text("x".repeat(10_001), 12.0)), "invalid_spec");
    w.expect(&one("size-at-limit", text("W".into(), 2000.0)), "succeeded");
    w.expect(&one("size-past-limit", text("W".into(), 2000.5)), "invalid_spec");
    let stroke = json!({"type": "rect", "x": 0, "y": 0, "width": 64, "height": 64, "fill": "#00ff00", "stroke": "#000000", "stroke_width": 1e7});
    w.expect(&one("stroke-at-limit", stroke), "succeeded");
    let mut rot = layer(200, 200);
    rot["rotate"] = json!(45.0);
    w.expect(&one("rotated-at-limit", rot), "succeeded");
    // Both outputs (a PDF with the same layers as vectors) at the limits.
    let mut both = render("pdf-at-limits", vec![page(200, 200, vec![text("x".repeat(10_000), 2000.0), far(1e7), layer(200, 200)])]);
    both["input"]["format"] = json!("pdf+png");
    w.expect(&both, "succeeded");
    w.expect(&render("bad-colour", vec![page(64, 64, vec![json!({"type": "rect", "x": 0, "y": 0, "width": 1, "height": 1, "fill": "#zzzzzz"})])]), "invalid_spec");
    w.assert_healthy(400, &render("after-render", vec![small(1)]));
}

fn tools() -> PathBuf {
    workspace_root().join(".tools")
}

/// Adversarial ONNX models written by the venv's `onnx` (scripts/fetch-tools.sh).
fn make_models(dir: &Path) {
    let script = r#"
import sys, onnx
from onnx import helper, TensorProto
out = sys.argv[1]
def graph(nodes, inits=(), outputs=None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    return helper.make_graph(nodes, "g", [x], outputs or [y], initializer=list(inits))
def save(g, name, opset=13):
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.save(m, f"{out}/{name}")
# a good model (y = x + x), then the hostile ones
save(graph([helper.make_node("Add", ["x", "x"], ["y"])]), "good.onnx")
# an initializer that declares 2^40 floats and carries none
big = TensorProto(); big.name = "w"; big.data_type = TensorProto.FLOAT; big.dims.extend([1 << 20, 1 << 20])
save(graph([helper.make_node("Add", ["x", "w"], ["y"])], [big]), "huge-init.onnx")
# an opset from the future
save(graph([helper.make_node("Add", ["x", "x"], ["y"])]), "opset.onnx", opset=9999)
# an operator nobody has
save(graph([helper.make_node("Teleport", ["x"], ["y"])]), "op.onnx")
# a graph whose output no node produces
save(graph([helper.make_node("Add", ["x", "x"], ["z"])]), "dangling.onnx")
# a node that consumes its own output (a cycle)
save(graph([helper.make_node("Add", ["x", "y"], ["y"])]), "cycle.onnx")
"#;
    let out = Command::new(tools().join("venv/bin/python")).arg("-c").arg(script).arg(dir).output().expect("the venv's python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let good = std::fs::read(dir.join("good.onnx")).unwrap();
    std::fs::write(dir.join("truncated.onnx"), &good[..good.len() / 2]).unwrap();
    std::fs::write(dir.join("empty.onnx"), b"").unwrap();
    std::fs::write(dir.join("garbage.onnx"), (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<u8>>()).unwrap();
}

const HOSTILE_MODELS: &[(&str, &str)] = &[
    ("truncated", "corrupt_input"),
    ("empty", "corrupt_input"),
    ("garbage", "corrupt_input"),
    ("huge-init", "corrupt_input"),
    ("opset", "corrupt_input"),
    ("op", "corrupt_input"),
    ("dangling", "corrupt_input"),
    ("cycle", "corrupt_input"),
];

#[test]
fn hostile_models_and_a_corrupt_image_in_a_batch() {
    let ort = tools().join("onnxruntime/libonnxruntime.so");
    assert!(ort.exists(), "{} is missing: run scripts/fetch-tools.sh", ort.display());
    let models = scratch_dir("hostile-models").canonicalize().unwrap();
    make_models(&models);
    let mut toml = format!("[infer]\nort_dylib = {:?}\n", ort.display().to_string());
    for (name, _) in HOSTILE_MODELS.iter().chain(&[("good", "")]) {
        toml += &format!("[[models]]\nname = {name:?}\nuri = \"file://{}/{name}.onnx\"\ntask = \"tensor\"\nmax_delay_ms = 0\n", models.display());
    }
    // The rgb_mean classifier of tests/infer/make_models.py, batching up to 8 images for 300 ms.
    let out = Command::new(tools().join("venv/bin/python")).arg(workspace_root().join("tests/infer/make_models.py")).arg(&models).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    toml += &format!(
        "[[models]]\nname = \"colour\"\nuri = \"file://{}/rgb_mean.onnx\"\ntask = \"classify\"\ninput_size = [8, 8]\nletterbox = false\nlabels = [\"red\", \"green\", \"blue\"]\nmax_batch = 8\nmax_delay_ms = 300\n",
        models.display()
    );
    let cfg = models.join("kiln.toml");
    std::fs::write(&cfg, toml).unwrap();
    let cfg_s = cfg.display().to_string();
    let allow = format!("file://{}/", models.display());
    let mut w = Worker::start("hostile-infer", &[("KILN_CONFIG", &cfg_s), ("KILN_SOURCES_ALLOW", &allow), ("KILN_CPU_SLOTS", "4")]);
    let tensor = |id: &str, model: &str| json!({"id": id, "kind": "infer", "input": {"model": model, "tensors": [{"shape": [4], "data": [1, 2, 3, 4]}]}});
    let r = w.expect(&tensor("good", "good"), "succeeded");
    let y = r["inference"][0]["tensors"].as_array().unwrap().iter().find(|t| t["name"] == "y").cloned().unwrap_or_default();
    assert_eq!(y["data"], json!([2.0, 4.0, 6.0, 8.0]), "{r}");
    for (name, code) in HOSTILE_MODELS {
        let r = w.expect(&tensor(&format!("model-{name}"), name), code);
        assert!(r["error"]["message"].as_str().unwrap().contains(name), "{name}: {r}");
    }

    // Six jobs sent together, batched together; one has a corrupt image, one a bomb.
    let img = |name: &str, bytes: &[u8]| {
        let p = models.join(name);
        std::fs::write(&p, bytes).unwrap();
        format!("file://{}", p.display())
    };
    let red = img("red.png", &{
        let mut c = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_pixel(16, 16, image::Rgb([250, 10, 0])).write_to(&mut c, image::ImageFormat::Png).unwrap();
        c.into_inner()
    });
    let png = hostile::small(image::ImageFormat::Png);
    let corrupt = img("corrupt.png", &png[..png.len() / 2]);
    let bomb = img("bomb.png", &hostile::png_bomb(100_000, 100_000));
    // Whether two jobs meet in one batch depends on their arrival (a lone request runs at
    // once), so the round repeats, a bounded number of times, until a one-image job has shared
    // a batch; every round's outcomes are checked. Without batching no round would pass.
    let mut shared = None;
    for round in 0..6 {
        let id = |n: u32| format!("r{round}-b{n}");
        let jobs: Vec<(Value, &str)> = vec![
            (json!({"id": id(0), "kind": "infer", "input": {"model": "colour", "images": [red]}}), "succeeded"),
            (json!({"id": id(1), "kind": "infer", "input": {"model": "colour", "images": [corrupt]}}), "corrupt_input"),
            (json!({"id": id(2), "kind": "infer", "input": {"model": "colour", "images": [red, red]}}), "succeeded"),
            (json!({"id": id(3), "kind": "infer", "input": {"model": "colour", "images": [red, corrupt]}}), "corrupt_input"),
            (json!({"id": id(4), "kind": "infer", "input": {"model": "colour", "images": [bomb]}}), "input_too_large"),
            (json!({"id": id(5), "kind": "infer", "input": {"model": "colour", "images": [red]}}), "succeeded"),
        ];
        let results: Vec<(u16, Value)> = std::thread::scope(|s| {
            let hs: Vec<_> = jobs.iter().map(|(j, _)| s.spawn(|| w.submit(j))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for ((job, want), (status, r)) in jobs.iter().zip(&results) {
            let got = if r["status"] == "succeeded" { "succeeded" } else { r["error"]["code"].as_str().unwrap_or("none") };
            assert_eq!(got, *want, "{}: {r:#}", job["id"]);
            assert_eq!(*status, http_status(want));
            if *want == "succeeded" {
                assert_eq!(r["inference"][0]["tags"][0]["label"], "red", "{r}");
            }
        }
        // The one-image jobs were batched with other jobs' images while the bad ones failed.
        let single = [&results[0].1, &results[5].1];
        let batched = single.iter().any(|r| r["infer"]["batches"].as_array().is_some_and(|b| b.iter().any(|n| n.as_u64() > Some(1))));
        if batched {
            shared = Some(round);
            break;
        }
        eprintln!("round {round}: no one-image job shared a batch: {single:?}");
    }
    assert!(shared.is_some(), "in 6 rounds no one-image job shared a batch with another job");
    w.assert_healthy(400, &tensor("after-infer", "good"));
}
