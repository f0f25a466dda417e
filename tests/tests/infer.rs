//! End-to-end tests of the infer kind through `kiln run` and `kiln serve`.
//!
//! Needs `scripts/fetch-tools.sh` (ONNX Runtime's library in .tools/onnxruntime/, the venv
//! with onnxruntime + onnx, and nudenet's 320n.onnx in .tools/models/). Small models are
//! generated per test run by tests/infer/make_models.py; the real detector is compared with
//! Python onnxruntime by tests/infer/reference.py.

use kiln_tests::proc::{kiln, serve as spawn_serve, wait_ready, Proc};
use kiln_tests::{run_jobs_full, workspace_root};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

fn tools() -> PathBuf {
    workspace_root().join(".tools")
}

fn ort_lib() -> PathBuf {
    let p = tools().join("onnxruntime/libonnxruntime.so");
    assert!(p.exists(), "{} is missing: run scripts/fetch-tools.sh", p.display());
    p
}

fn python() -> PathBuf {
    let p = tools().join("venv/bin/python");
    assert!(p.exists(), "{} is missing: run scripts/fetch-tools.sh", p.display());
    p
}

/// The generated models, made once per test process.
fn models_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = workspace_root().join("target/kiln-tests/infer-models");
        let out = Command::new(python())
            .arg(workspace_root().join("tests/infer/make_models.py"))
            .arg(&dir)
            .output()
            .expect("run make_models.py");
        assert!(out.status.success(), "make_models.py failed: {}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

fn model_uri(name: &str) -> String {
    format!("file://{}", models_dir().join(name).display())
}

/// A scratch dir with a kiln.toml: `[infer]` pointing at the library, plus `extra` TOML.
fn config(extra: &str, ort: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("[infer]\nort_dylib = {:?}\n{extra}\n", ort.display().to_string());
    let path = dir.path().join("kiln.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

fn model_toml(name: &str, uri: &str, rest: &str) -> String {
    format!("[[models]]\nname = {name:?}\nuri = {uri:?}\n{rest}\n")
}

/// Runs the jobs through `kiln run -` with the config and `slots` job threads.
fn run(cfg: &Path, slots: usize, jobs: &[Value]) -> Vec<Value> {
    let jsonl: Vec<String> = jobs.iter().map(|j| j.to_string()).collect();
    let slots = slots.to_string();
    let out = run_jobs_full(
        &jsonl.join("\n"),
        &[("KILN_CONFIG", cfg.to_str().unwrap()), ("KILN_CPU_SLOTS", &slots), ("KILN_DEBUG_KINDS", "1")],
    );
    let mut rs = out.results;
    assert_eq!(rs.len(), jobs.len(), "one result per job; stderr:\n{}", out.stderr);
    rs.sort_by_key(|r| jobs.iter().position(|j| j["id"] == r["id"]).unwrap_or(usize::MAX));
    rs
}

fn ok(r: &Value) -> &Value {
    assert_eq!(r["status"], "succeeded", "{r:#}");
    r
}

fn code(r: &Value) -> &str {
    assert_eq!(r["status"], "failed", "{r:#}");
    r["error"]["code"].as_str().unwrap()
}

fn tensor_job(id: &str, model: &str, items: &[Vec<f32>]) -> Value {
    let tensors: Vec<Value> = items.iter().map(|v| json!({"shape": [v.len()], "data": v})).collect();
    json!({"id": id, "kind": "infer", "input": {"model": model, "tensors": tensors}})
}

/// The output named `name` of item `i`.
fn output<'a>(r: &'a Value, i: usize, name: &str) -> &'a Value {
    r["inference"][i]["tensors"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()
}

#[test]
fn concurrent_jobs_share_batches_and_get_their_own_outputs() {
    // Two instances (two ONNX Runtime sessions taking batches from one queue): outputs still
    // go back to the job that sent each item.
    let extra = model_toml("double", &model_uri("double_a.onnx"), "task = \"tensor\"\nmax_batch = 4\nmax_delay_ms = 300\ninstances = 2");
    let (_d, cfg) = config(&extra, &ort_lib());
    let jobs: Vec<Value> = (0..8).map(|i| tensor_job(&format!("j{i}"), "double", &[vec![i as f32; 4]])).collect();
    let mut all = jobs.clone();
    all.push(tensor_job("many", "double", &(0..6).map(|i| vec![i as f32, 1.0, 2.0, 3.0]).collect::<Vec<_>>()));
    let rs = run(&cfg, 9, &all);
    let mut largest = 0;
    for (i, r) in rs.iter().take(8).enumerate() {
        ok(r);
        let y = output(r, 0, "y");
        assert_eq!(y["shape"], json!([4]));
        assert_eq!(y["data"], json!(vec![2.0 * i as f64; 4]), "job {i} got another job's output");
        let n = output(r, 0, "n")["data"][0].as_f64().unwrap() as usize;
        assert!(n <= 4, "a batch of {n} exceeds max_batch 4");
        assert_eq!(r["infer"]["batches"], json!([n]));
        largest = largest.max(n);
    }
    assert!(largest >= 2, "8 concurrent jobs never shared a batch");
    // One job of 6 items: two chunks (4 + 2, each batch possibly shared with other jobs'
    // items, never above max_batch), outputs in order.
    let many = ok(&rs[8]);
    let sizes: Vec<u64> = many["infer"]["batches"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(sizes.len(), 2, "{sizes:?}");
    assert!(sizes[0] == 4 && sizes[1] >= 2 && sizes[1] <= 4, "{sizes:?}");
    for i in 0..6 {
        assert_eq!(output(many, i, "y")["data"], json!([2.0 * i as f64, 2.0, 4.0, 6.0]));
    }
}

#[test]
fn concurrent_first_requests_load_the_model_once() {
    let extra = model_toml("double", &model_uri("double_b.onnx"), "task = \"tensor\"\nmax_delay_ms = 0");
    let (_d, cfg) = config(&extra, &ort_lib());
    let jobs: Vec<Value> = (0..6).map(|i| tensor_job(&format!("s{i}"), "double", &[vec![1.0; 4]])).collect();
    let rs = run(&cfg, 6, &jobs);
    let misses = rs.iter().filter(|r| ok(r)["infer"]["cache"] == "miss").count();
    let hits = rs.iter().filter(|r| r["infer"]["cache"] == "hit").count();
    assert_eq!((misses, hits), (1, 5), "{rs:#?}");
}

#[test]
fn lru_eviction_under_the_host_budget_counts_loads() {
    // Each model file is ~341 bytes; × 10000 ≈ 3.3 MB: a 5 MB budget holds one of them.
    let mut extra = String::from("host_memory_mb = 5\nmemory_factor = 10000.0\n");
    extra += &model_toml("a", &model_uri("double_a.onnx"), "task = \"tensor\"\nmax_delay_ms = 0");
    extra += &model_toml("b", &model_uri("double_b.onnx"), "task = \"tensor\"\nmax_delay_ms = 0");
    let (_d, cfg) = config(&extra, &ort_lib());
    let order = ["a", "a", "b", "a", "b", "b"];
    let jobs: Vec<Value> = order.iter().enumerate().map(|(i, m)| tensor_job(&format!("e{i}"), m, &[vec![1.0; 4]])).collect();
    // One job thread: jobs run one at a time, in order.
    let rs = run(&cfg, 1, &jobs);
    let outcomes: Vec<&str> = rs.iter().map(|r| ok(r)["infer"]["cache"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["miss", "hit", "miss", "miss", "miss", "hit"]);

    // With room for both, each loads once.
    let extra_big = extra.replace("host_memory_mb = 5", "host_memory_mb = 100");
    let (_d2, cfg2) = config(&extra_big, &ort_lib());
    let rs = run(&cfg2, 1, &jobs);
    let outcomes: Vec<&str> = rs.iter().map(|r| ok(r)["infer"]["cache"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["miss", "hit", "miss", "hit", "hit", "hit"]);
}

#[test]
fn bad_models_shapes_and_names_give_clear_codes() {
    let mut extra = String::new();
    extra += &model_toml("double", &model_uri("double_a.onnx"), "task = \"tensor\"\nmax_delay_ms = 0");
    extra += &model_toml("bad", &model_uri("bad.onnx"), "task = \"tensor\"");
    extra += &model_toml("gone", &model_uri("no-such-model.onnx"), "task = \"tensor\"");
    extra += &model_toml("fixed", &model_uri("fixed1.onnx"), "task = \"tensor\"\nmax_delay_ms = 0");
    let (_d, cfg) = config(&extra, &ort_lib());
    let jobs = vec![
        tensor_job("unknown", "nope", &[vec![1.0; 4]]),
        tensor_job("bad", "bad", &[vec![1.0; 4]]),
        tensor_job("gone", "gone", &[vec![1.0; 4]]),
        tensor_job("shape", "double", &[vec![1.0; 3]]),
        json!({"id": "rank", "kind": "infer", "input": {"model": "double", "tensors": [{"shape": [2, 2], "data": [1, 2, 3, 4]}]}}),
        json!({"id": "count", "kind": "infer", "input": {"model": "double", "tensors": [{"shape": [4], "data": [1, 2]}]}}),
        json!({"id": "image", "kind": "infer", "input": {"model": "double", "images": ["file:///x.jpg"]}}),
        tensor_job("fixed", "fixed", &[vec![1.0; 4], vec![2.0; 4]]),
        json!({"id": "gpu", "kind": "infer", "input": {"model": "double", "accel": "gpu", "tensors": [{"shape": [4], "data": [1, 2, 3, 4]}]}}),
    ];
    let rs = run(&cfg, 2, &jobs);
    assert_eq!(code(&rs[0]), "invalid_spec");
    assert!(rs[0]["error"]["message"].as_str().unwrap().contains("unknown model"), "{:#}", rs[0]);
    assert_eq!(code(&rs[1]), "corrupt_input");
    assert!(rs[1]["error"]["message"].as_str().unwrap().contains("\"bad\""), "{:#}", rs[1]);
    assert_eq!(code(&rs[2]), "input_not_found");
    assert_eq!(code(&rs[3]), "invalid_spec");
    assert!(rs[3]["error"]["message"].as_str().unwrap().contains("shape"), "{:#}", rs[3]);
    assert_eq!(code(&rs[4]), "invalid_spec");
    assert_eq!(code(&rs[5]), "invalid_spec");
    assert_eq!(code(&rs[6]), "invalid_spec");
    // A model with a fixed batch of 1 runs two items as two batches.
    let fixed = ok(&rs[7]);
    assert_eq!(fixed["infer"]["batches"], json!([1, 1]));
    assert_eq!(output(fixed, 1, "y")["data"], json!(vec![3.0; 4]));
    // accel gpu: CUDA or a clear refusal, never a silent CPU run.
    match rs[8]["status"].as_str() {
        Some("succeeded") => assert_eq!(rs[8]["infer"]["device"], "cuda"),
        _ => {
            assert_eq!(code(&rs[8]), "unsupported");
            assert!(rs[8]["error"]["message"].as_str().unwrap().contains("CUDA"), "{:#}", rs[8]);
        }
    }
}

#[test]
fn a_missing_runtime_library_fails_infer_only() {
    let extra = model_toml("double", &model_uri("double_a.onnx"), "task = \"tensor\"");
    let (_d, cfg) = config(&extra, Path::new("/nonexistent/libonnxruntime.so"));
    let jobs = vec![
        tensor_job("i", "double", &[vec![1.0; 4]]),
        json!({"id": "d", "kind": "debug", "input": {"output": "d.txt"}}),
    ];
    let rs = run(&cfg, 2, &jobs);
    assert_eq!(code(&rs[0]), "unsupported");
    let msg = rs[0]["error"]["message"].as_str().unwrap();
    assert!(msg.contains("/nonexistent/libonnxruntime.so") && msg.contains("ort_dylib"), "{msg}");
    ok(&rs[1]);
}

/// Writes a solid-colour PNG.
fn solid_png(path: &Path, rgb: [u8; 3], w: u32, h: u32) {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).unwrap();
}

#[test]
fn classify_preprocesses_images_and_returns_top_k_tags() {
    let extra = model_toml(
        "colour",
        &model_uri("rgb_mean.onnx"),
        "task = \"classify\"\ninput_size = [8, 8]\nletterbox = false\nlabels = [\"red\", \"green\", \"blue\"]\ntop_k = 2\nmax_delay_ms = 0",
    );
    let (d, cfg) = config(&extra, &ort_lib());
    let red = d.path().join("red.png");
    let blue = d.path().join("blue.png");
    solid_png(&red, [250, 10, 0], 40, 30);
    solid_png(&blue, [0, 51, 204], 17, 9);
    let job = json!({"id": "c", "kind": "infer", "input": {"model": "colour", "images": [
        format!("file://{}", red.display()), format!("file://{}", blue.display())]}});
    let rs = run(&cfg, 1, &[job]);
    let r = ok(&rs[0]);
    let tags = &r["inference"][0]["tags"];
    assert_eq!(tags.as_array().unwrap().len(), 2);
    assert_eq!(tags[0]["label"], "red");
    assert!((tags[0]["score"].as_f64().unwrap() - 250.0 / 255.0).abs() < 0.01, "{tags}");
    assert_eq!(r["inference"][1]["tags"][0]["label"], "blue");
    assert!((r["inference"][1]["tags"][0]["score"].as_f64().unwrap() - 0.8).abs() < 0.01);
    assert_eq!(r["inference"][1]["width"], 17);
}

fn nudenet_model() -> PathBuf {
    let p = tools().join("models/320n.onnx");
    assert!(p.exists(), "{} is missing: run scripts/fetch-tools.sh", p.display());
    p
}

const NUDENET: &str = "task = \"detect\"\ninput_size = [320, 320]\nletterbox = true\npad_align = \"top_left\"\npad_color = [0, 0, 0]\nscale = 255.0\nscore_threshold = 0.05\nnms_iou = 0.45\nmax_delay_ms = 2";

/// Photos from data/mate-backgrounds, one of each size class.
fn photos() -> Vec<PathBuf> {
    let root = workspace_root().join("data/mate-backgrounds/usr/share/backgrounds/mate");
    ["nature/Dune.jpg", "nature/Garden.jpg", "abstract/Elephants.jpg", "nature/TwoWings.jpg", "desktop/GreenTraditional.jpg"]
        .iter()
        .map(|p| root.join(p))
        .filter(|p| p.exists())
        .collect()
}

/// Issue 15: with the default configuration (the model as the README registers it, nothing
/// about the scheduler or sessions) concurrent jobs share batches. The machine is pinned to
/// one CPU slot: under the old one-slot-per-job model only one job could be in flight, so no
/// batch could ever hold two jobs' images; now a job waiting for its batch gives its slot to
/// the next job, which decodes meanwhile.
#[test]
fn the_default_config_batches_concurrent_jobs_without_raising_cpu_slots() {
    let model = nudenet_model();
    // The README's registration, with a longer batch window: a test build decodes several
    // times slower than a release build, and a batch should not miss the next job only
    // because its decode outlasts 5 ms. The scheduler and the sessions keep their defaults.
    let rest = "task = \"detect\"\ninput_size = [320, 320]\nletterbox = true\npad_align = \"top_left\"\nmax_batch = 16\nmax_delay_ms = 300\nwarm = true";
    let extra = model_toml("detector", &format!("file://{}", model.display()), rest);
    let (_d, cfg) = config(&extra, &ort_lib());
    let photos = photos();
    assert!(photos.len() >= 3, "photos missing under data/mate-backgrounds (scripts/fetch-photos.sh)");
    let jobs: Vec<Value> = (0..12)
        .map(|i| {
            let img = format!("file://{}", photos[i % photos.len()].display());
            json!({"id": format!("b{i}"), "kind": "infer", "input": {"model": "detector", "images": [img]}})
        })
        .collect();
    let rs = run(&cfg, 1, &jobs);
    let sizes: Vec<u64> = rs.iter().map(|r| ok(r)["infer"]["batches"][0].as_u64().unwrap()).collect();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    assert!(largest >= 2, "12 concurrent jobs on one CPU slot never shared a batch: {sizes:?}");
    assert!(sizes.iter().all(|n| (1..=16).contains(n)), "{sizes:?}");
    // Every detection is still the job's own: each result has its image's size.
    for (i, r) in rs.iter().enumerate() {
        let want = image_size(&photos[i % photos.len()]);
        assert_eq!((r["inference"][0]["width"].as_u64(), r["inference"][0]["height"].as_u64()), want, "job {i}");
    }
}

/// A JPEG's width and height, from its header (kiln's result reports the source's size).
fn image_size(p: &Path) -> (Option<u64>, Option<u64>) {
    let img = kiln_tests::decode_rgb8(p);
    (Some(img.width as u64), Some(img.height as u64))
}

#[test]
fn nudenet_detections_match_python_onnxruntime() {
    let model = nudenet_model();
    let extra = model_toml("nudenet", &format!("file://{}", model.display()), NUDENET);
    let (d, cfg) = config(&extra, &ort_lib());
    let photos = photos();
    assert!(photos.len() >= 3, "photos missing under data/mate-backgrounds (scripts/fetch-photos.sh)");
    let out_dir = d.path().join("out");
    let images: Vec<String> = photos.iter().map(|p| format!("file://{}", p.display())).collect();
    let job = json!({"id": "nude", "kind": "infer", "output": format!("file://{}/", out_dir.display()),
        "input": {"model": "nudenet", "images": images, "save_input": true}});
    let rs = run(&cfg, 2, &[job]);
    let r = ok(&rs[0]);
    let result_path = d.path().join("result.json");
    std::fs::write(&result_path, r.to_string()).unwrap();
    let py = Command::new(python())
        .arg(workspace_root().join("tests/infer/reference.py"))
        .args([model.to_str().unwrap(), result_path.to_str().unwrap(), out_dir.to_str().unwrap(), "0.05", "0.45", "320", "320"])
        .output()
        .unwrap();
    assert!(py.status.success(), "reference.py: {}", String::from_utf8_lossy(&py.stderr));
    let reference: Vec<Vec<Value>> = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(reference.len(), photos.len());
    let mut total = 0;
    for (i, want) in reference.iter().enumerate() {
        let got = r["inference"][i]["detections"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "image {i}: kiln {got:?}\npython {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["label"], w["label"], "image {i}");
            let ds = (g["score"].as_f64().unwrap() - w["score"].as_f64().unwrap()).abs();
            assert!(ds < 1e-3, "image {i}: score {g} vs {w}");
            for k in 0..4 {
                let db = (g["box"][k].as_f64().unwrap() - w["box"][k].as_f64().unwrap()).abs();
                assert!(db < 1.0, "image {i}: box {g} vs {w} (tolerance 1 source pixel)");
            }
        }
        total += got.len();
    }
    assert!(total > 0, "no detections at all: the comparison proved nothing");
}

#[test]
fn probe_lists_execution_providers() {
    let (_d, cfg) = config("", &ort_lib());
    let out = kiln().arg("probe").env("KILN_CONFIG", &cfg).env("KILN_LOG", "warn").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ort = &p["onnxruntime"];
    assert_eq!(ort["loaded"], true, "{p:#}");
    assert!(ort["providers"].as_array().unwrap().iter().any(|v| v == "CPUExecutionProvider"), "{ort}");
    // This host has no NVIDIA GPU (and the CPU wheel has no CUDA provider).
    if p["gpus"]["devices"].as_array().is_none_or(|d| d.is_empty()) {
        assert_eq!(ort["cuda"], false);
    }
    assert!(p["kinds"].as_array().unwrap().iter().any(|k| k == "infer"));
}

/// Starts `kiln serve` with the config (store under `dir`) and waits (bounded) until
/// /readyz says it is warm. Returns the process and its base URL.
fn serve(cfg: &Path, dir: &Path, env: &[(&str, &str)]) -> (Proc, String) {
    let mut cmd = kiln();
    cmd.env("KILN_CONFIG", cfg)
        .env("KILN_STORE_URL", format!("file://{}/store/", dir.display()))
        // serve is confined: the photos are read from the workspace's data/.
        .env("KILN_SOURCES_ALLOW", format!("file://{}/data/", workspace_root().display()))
        .env("KILN_LOG", "warn")
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (served, base) = spawn_serve(&mut cmd);
    wait_ready(&base, Duration::from_secs(60));
    (served, base)
}

#[test]
fn serve_warms_models_before_ready_and_reports_them() {
    let model = nudenet_model();
    let mut extra = model_toml("nudenet", &format!("file://{}", model.display()), &format!("{NUDENET}\nwarm = true"));
    extra += &model_toml("cold", &model_uri("double_a.onnx"), "task = \"tensor\"");
    let (d, cfg) = config(&extra, &ort_lib());
    let (_server, base) = serve(&cfg, d.path(), &[]);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let get = |p: &str| client.get(format!("{base}{p}")).send().unwrap();
    // Ready means the warm model is loaded: no job has run, yet it is in the cache.
    let cap: Value = get("/v1/capacity").json().unwrap();
    assert_eq!(cap["warm"]["models"], json!(["nudenet"]), "{cap:#}");
    let metrics = get("/metrics").text().unwrap();
    assert!(metrics.contains("kiln_infer_model_loads_total 1"), "{metrics}");
    assert!(metrics.contains("kiln_infer_model_load_seconds_count 1"), "{metrics}");

    // A job on the warm model is a cache hit; the cold one loads on first use.
    let photo = &photos()[0];
    let job = json!({"id": "w1", "kind": "infer", "input": {"model": "nudenet", "images": [format!("file://{}", photo.display())]}});
    let r: Value = client.post(format!("{base}/v1/jobs")).body(job.to_string()).send().unwrap().json().unwrap();
    assert_eq!(ok(&r)["infer"]["cache"], "hit");
    let cold = tensor_job("w2", "cold", &[vec![1.0; 4]]);
    let r: Value = client.post(format!("{base}/v1/jobs")).body(cold.to_string()).send().unwrap().json().unwrap();
    assert_eq!(ok(&r)["infer"]["cache"], "miss");
    let cap: Value = get("/v1/capacity").json().unwrap();
    assert_eq!(cap["warm"]["models"], json!(["cold", "nudenet"]));
    let metrics = get("/metrics").text().unwrap();
    assert!(metrics.contains("kiln_infer_model_cache_hits_total 1"), "{metrics}");
    assert!(metrics.contains("kiln_infer_model_cache_misses_total 2"), "{metrics}");
}

#[test]
fn padded_batches_run_at_max_batch_and_answer_only_the_real_items() {
    // `pad_batches` (the default on CUDA) on a CPU session: a 3-item job runs as one batch of
    // max_batch 4 with a zero item, which ONNX Runtime really computes; the answer holds 3.
    let extra = model_toml("double", &model_uri("double_a.onnx"), "task = \"tensor\"\nmax_batch = 4\nmax_delay_ms = 0\npad_batches = true");
    let (d, cfg) = config(&extra, &ort_lib());
    let (_server, base) = serve(&cfg, d.path(), &[]);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let job = tensor_job("p1", "double", &[vec![1.0; 4], vec![2.0; 4], vec![3.0; 4]]);
    let r: Value = client.post(format!("{base}/v1/jobs")).body(job.to_string()).send().unwrap().json().unwrap();
    let r = ok(&r);
    assert_eq!(r["infer"]["batches"], json!([3]));
    assert_eq!(r["inference"].as_array().unwrap().len(), 3);
    for i in 0..3 {
        assert_eq!(output(r, i, "y")["data"], json!(vec![2.0 * (i as f64 + 1.0); 4]), "{r:#}");
        // The model reports the batch it ran: the padded one.
        assert_eq!(output(r, i, "n")["data"], json!([4.0]), "{r:#}");
    }
    let metrics = client.get(format!("{base}/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("kiln_infer_batch_padding_items_total{model=\"double\"} 1"), "{metrics}");
    assert!(metrics.contains("kiln_infer_batch_items_total{model=\"double\"} 3"), "{metrics}");
}

#[test]
fn models_load_from_s3_at_warm_up_and_on_first_use() {
    use kiln_jobs::ObjectStore;
    use kiln_tests::moto::{Moto, AWS_ENV};
    let moto = Moto::start();
    moto.create_bucket("models");
    let s3 = kiln_worker::config::S3Config { endpoint: Some(moto.endpoint()), path_style: true, region: Some("us-east-1".into()) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = kiln_worker::store::s3::S3Store::connect(&s3).await;
        for name in ["double_a.onnx", "double_b.onnx"] {
            let url = url::Url::parse(&format!("s3://models/zoo/{name}")).unwrap();
            store.put_file(&url, &models_dir().join(name), "application/octet-stream").await.unwrap();
        }
    });
    let mut extra = model_toml("warm", "s3://models/zoo/double_a.onnx", "task = \"tensor\"\nwarm = true\nmax_delay_ms = 0");
    extra += &model_toml("cold", "s3://models/zoo/double_b.onnx", "task = \"tensor\"\nmax_delay_ms = 0");
    extra += &model_toml("absent", "s3://models/zoo/none.onnx", "task = \"tensor\"\nmax_delay_ms = 0");
    let (d, cfg) = config(&extra, &ort_lib());
    let endpoint = moto.endpoint();
    let mut env = vec![("KILN_S3_ENDPOINT", endpoint.as_str()), ("KILN_S3_PATH_STYLE", "true"), ("KILN_S3_REGION", "us-east-1")];
    env.extend_from_slice(AWS_ENV);
    let (_server, base) = serve(&cfg, d.path(), &env);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    // Ready means the warm model was read from S3 and loaded.
    let cap: Value = client.get(format!("{base}/v1/capacity")).send().unwrap().json().unwrap();
    assert_eq!(cap["warm"]["models"], json!(["warm"]), "{cap:#}");
    let by = |job: Value| -> Value { client.post(format!("{base}/v1/jobs")).body(job.to_string()).send().unwrap().json().unwrap() };
    let w = by(tensor_job("w", "warm", &[vec![1.0, 2.0, 3.0, 4.0]]));
    assert_eq!(ok(&w)["infer"]["cache"], "hit", "{w:#}");
    assert_eq!(output(&w, 0, "y")["data"], json!([2.0, 4.0, 6.0, 8.0]));
    let c = by(tensor_job("c", "cold", &[vec![1.0; 4]]));
    assert_eq!(ok(&c)["infer"]["cache"], "miss");
    assert_eq!(code(&by(tensor_job("a", "absent", &[vec![1.0; 4]]))), "input_not_found");
}
