//! The infer job: ONNX Runtime models from a registry, kept warm in a cache, run in dynamic
//! batches, on CUDA where present and allowed, else CPU.
//!
//! Spec (DESIGN.md, "Job kinds"): `{"model": NAME, "images": [URI, …]}` or `{"model": NAME,
//! "tensors": [{"shape": [...], "data": [...]}, …]}` → result field `"inference"`, one entry
//! per input: `{"image": i, "width", "height", "detections": [{"label","score","box"}]}`
//! (boxes `[x1,y1,x2,y2]` in source pixels), `{"image": i, "tags": [{"label","score"}]}` or
//! `{"image": i, "tensors": [{"name","shape","data"}]}`. Result field `"infer"` says how the
//! job ran: `{"model", "device", "cache": "hit|miss", "batches": [sizes]}`.
//!
//! Decisions the design leaves open:
//! - Unknown model → `invalid_spec` (at admission). Model file missing → `input_not_found`;
//!   not a loadable ONNX model → `corrupt_input`; ONNX Runtime library missing →
//!   `unsupported` (the worker keeps serving the other kinds); an input whose shape does not
//!   fit the model → `invalid_spec`; `accel: "gpu"` without a usable CUDA device →
//!   `unsupported`.
//! - Batching (see [`batcher`]): each job preprocesses its own images on its job thread, then
//!   hands the tensors to the model's batch threads (one per instance) and waits without its
//!   CPU slot ([`JobContext::idle`]), so the scheduler starts the next jobs meanwhile. Jobs of
//!   the same model that arrive within `max_delay_ms` of each other share a batch of up to
//!   `max_batch` items; a batch waits only while another job has announced it is coming.
//! - The cache (see [`cache`]) counts a model's memory as its file size × `memory_factor`.

pub mod batcher;
pub mod cache;
pub mod config;
pub mod model;
pub mod ortenv;
pub mod postprocess;
pub mod preprocess;
pub mod spec;
#[cfg(test)]
mod gpu_tests;
#[cfg(test)]
mod tests;

pub use config::{InferConfig, ModelConfig, Task};
pub use ortenv::OrtProbe;
pub use spec::{InferSpec, Inputs, Resolved};

use crate::context::{JobContext, Limits};
use crate::envelope::OutputInfo;
use crate::error::JobError;
use crate::kind::{JobKind, JobOutput, Needs, PreparedJob};
use crate::resources::GpuLedger;
use crate::store::{parse_uri, ObjectStore};
use batcher::{BatchStats, Item, ItemOutput};
use bytes::Bytes;
use kiln_kernels::Accel;
use cache::{ModelCache, Outcome};
use model::LoadedModel;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

/// The engine behind the infer kind: registry, settings, cache, batch counters.
pub struct Engine {
    models: Vec<ModelConfig>,
    cfg: InferConfig,
    cuda_allowed: bool,
    cache: ModelCache<LoadedModel>,
    batch_stats: Mutex<BTreeMap<String, Arc<BatchStats>>>,
    /// The worker's GPUs: a model loaded on CUDA holds its memory there while it stays loaded.
    gpus: OnceLock<Arc<dyn GpuLedger>>,
}

/// The CUDA device ONNX Runtime's CUDA provider runs sessions on (its default, device 0).
const CUDA_DEVICE: u32 = 0;

/// The infer job kind.
#[derive(Clone)]
pub struct Infer {
    engine: Arc<Engine>,
    /// Where warm `s3://` models are read from at warm-up (jobs use their context's store).
    warm_store: Option<Arc<dyn ObjectStore>>,
}

/// Largest model file read.
const MODEL_LIMIT: u64 = 4 << 30;

impl Infer {
    /// `accel` is the worker's setting: `auto` and `gpu` allow CUDA, `cpu` does not.
    pub fn new(models: Vec<ModelConfig>, cfg: InferConfig, accel: Accel) -> Result<Infer, JobError> {
        config::validate_models(&models)?;
        let mb = 1024 * 1024;
        let cache = ModelCache::new(cfg.host_memory_mb.saturating_mul(mb), cfg.gpu_memory_mb.saturating_mul(mb));
        let engine = Engine { models, cfg, cuda_allowed: accel != Accel::Cpu, cache, batch_stats: Mutex::new(BTreeMap::new()), gpus: OnceLock::new() };
        Ok(Infer { engine: Arc::new(engine), warm_store: None })
    }

    /// The store warm models with `s3://` URIs are read from at warm-up.
    pub fn with_store(mut self, store: Arc<dyn ObjectStore>) -> Self {
        self.warm_store = Some(store);
        self
    }

    /// Reads a model file for warm-up: `file://` from disk, other schemes through the store
    /// (warm-up runs on a blocking thread of the worker's runtime).
    fn read_for_warm_up(&self, m: &ModelConfig) -> Result<Bytes, JobError> {
        let url = parse_uri(&m.uri)?;
        if url.scheme() == "file" {
            let p = url.to_file_path().map_err(|_| JobError::invalid_spec(format!("model {:?}: bad path {}", m.name, m.uri)))?;
            return std::fs::read(&p)
                .map(Bytes::from)
                .map_err(|err| JobError::new(crate::ErrorCode::InputNotFound, format!("model {:?}: {}: {err}", m.name, p.display())));
        }
        let (Some(store), Ok(rt)) = (&self.warm_store, tokio::runtime::Handle::try_current()) else {
            return Err(JobError::unsupported(format!("model {:?}: no object store at warm-up for {}", m.name, m.uri)));
        };
        rt.block_on(store.get(&url, MODEL_LIMIT)).map_err(|e| e.into_input_error())
    }

    /// ONNX Runtime's library and execution providers, for `kiln probe`.
    pub fn probe(&self) -> OrtProbe {
        let mut p = ortenv::probe(self.engine.cfg.ort_dylib.as_deref());
        p.cuda &= self.engine.cuda_allowed;
        p
    }

    /// The cache's counters: (hits, misses, loads, evictions).
    pub fn cache_counts(&self) -> (u64, u64, u64, u64) {
        let s = &self.engine.cache.stats;
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        (l(&s.hits), l(&s.misses), l(&s.loads), l(&s.evictions))
    }
}

impl Engine {
    fn stats_for(&self, name: &str) -> Arc<BatchStats> {
        self.batch_stats.lock().unwrap_or_else(|p| p.into_inner()).entry(name.to_owned()).or_default().clone()
    }

    /// The model, from the cache or loaded with the file `read` returns.
    fn model(
        &self,
        m: &ModelConfig,
        want_cuda: bool,
        read: impl FnOnce() -> Result<Bytes, JobError>,
    ) -> Result<(Arc<LoadedModel>, Outcome), JobError> {
        self.cache.get(&m.name, m.warm, || {
            let bytes = read()?;
            let (mut lm, size) = LoadedModel::load(m, &bytes, &self.cfg, want_cuda && self.cuda_allowed, self.stats_for(&m.name))?;
            if size.gpu_bytes > 0 {
                lm.gpu_memory = self.gpus.get().and_then(|g| g.reserve_gpu(CUDA_DEVICE, size.gpu_bytes));
            }
            Ok((lm, size))
        })
    }
}

impl JobKind for Infer {
    fn name(&self) -> &'static str {
        "infer"
    }

    fn prepare(&self, input: &Value, limits: &Limits) -> Result<Box<dyn PreparedJob>, JobError> {
        let job = InferSpec::parse(input)?.resolve(&self.engine.models, limits)?;
        Ok(Box::new(Prepared { job, engine: self.engine.clone() }))
    }

    /// Loads every `warm = true` model (from disk, or through the store given by
    /// [`Infer::with_store`]). Runs before /readyz reports ready.
    fn warm_up(&self) -> Result<(), JobError> {
        let e = &self.engine;
        if !e.models.iter().any(|m| m.warm) {
            return Ok(());
        }
        ortenv::environment(e.cfg.ort_dylib.as_deref())?;
        let want_cuda = ortenv::cuda_usable(e.cuda_allowed);
        let mut first_err = None;
        for m in e.models.iter().filter(|m| m.warm) {
            let read = || self.read_for_warm_up(m);
            match e.model(m, want_cuda, read) {
                Ok((lm, _)) => tracing::info!(model = %m.name, device = lm.device.name(), load_ms = lm.load_ms, "warm model ready"),
                Err(err) => {
                    tracing::warn!(model = %m.name, error = %err, "warm model failed to load");
                    first_err.get_or_insert(err);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn warm_models(&self) -> Vec<String> {
        self.engine.cache.loaded()
    }

    fn attach_gpus(&self, ledger: Arc<dyn GpuLedger>) {
        let _ = self.engine.gpus.set(ledger);
    }

    fn render_metrics(&self, out: &mut String) {
        let e = &self.engine;
        let s = &e.cache.stats;
        let mut counter = |name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter("kiln_infer_model_cache_hits_total", "Model lookups served by a loaded model", s.hits.load(Ordering::Relaxed) as f64);
        counter("kiln_infer_model_cache_misses_total", "Model lookups that loaded the model", s.misses.load(Ordering::Relaxed) as f64);
        counter("kiln_infer_model_loads_total", "Models loaded", s.loads.load(Ordering::Relaxed) as f64);
        counter("kiln_infer_model_load_failures_total", "Model loads that failed", s.load_failures.load(Ordering::Relaxed) as f64);
        counter("kiln_infer_model_evictions_total", "Models evicted from the cache", s.evictions.load(Ordering::Relaxed) as f64);
        let loads = s.loads.load(Ordering::Relaxed) + s.load_failures.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP kiln_infer_model_load_seconds Time spent loading models\n# TYPE kiln_infer_model_load_seconds summary\nkiln_infer_model_load_seconds_sum {}\nkiln_infer_model_load_seconds_count {loads}",
            s.load_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let (host, gpu) = e.cache.used();
        let _ = writeln!(out, "# HELP kiln_infer_models_loaded Models in the cache\n# TYPE kiln_infer_models_loaded gauge\nkiln_infer_models_loaded {}", e.cache.loaded().len());
        let _ = writeln!(out, "# HELP kiln_infer_cache_bytes Estimated memory of the loaded models\n# TYPE kiln_infer_cache_bytes gauge\nkiln_infer_cache_bytes{{memory=\"host\"}} {host}\nkiln_infer_cache_bytes{{memory=\"gpu\"}} {gpu}");
        let stats = e.batch_stats.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# HELP kiln_infer_batches_total Batches run\n# TYPE kiln_infer_batches_total counter");
        for (m, st) in stats.iter() {
            let _ = writeln!(out, "kiln_infer_batches_total{{model=\"{m}\"}} {}", st.batches.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP kiln_infer_batch_items_total Items run in batches\n# TYPE kiln_infer_batch_items_total counter");
        for (m, st) in stats.iter() {
            let _ = writeln!(out, "kiln_infer_batch_items_total{{model=\"{m}\"}} {}", st.items.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP kiln_infer_batch_padding_items_total Zero items added to pad batches to max_batch\n# TYPE kiln_infer_batch_padding_items_total counter");
        for (m, st) in stats.iter() {
            let _ = writeln!(out, "kiln_infer_batch_padding_items_total{{model=\"{m}\"}} {}", st.padding.load(Ordering::Relaxed));
        }
    }
}

/// A validated infer job.
pub struct Prepared {
    pub job: Resolved,
    engine: Arc<Engine>,
}

impl PreparedJob for Prepared {
    fn run(self: Box<Self>, ctx: &JobContext) -> Result<JobOutput, JobError> {
        run(&self.job, &self.engine, ctx)
    }

    fn needs(&self) -> Needs {
        let reads = match &self.job.inputs {
            Inputs::Images(uris) => uris.clone(),
            Inputs::Tensors(_) => Vec::new(),
        };
        Needs { accel: self.job.accel, source: None, reads }
    }
}

fn run(job: &Resolved, engine: &Engine, ctx: &JobContext) -> Result<JobOutput, JobError> {
    let m = &job.model;
    let span = tracing::info_span!("infer", model = %m.name, items = job.len(), cache = tracing::field::Empty, device = tracing::field::Empty, load_ms = tracing::field::Empty);
    let _entered = span.enter();
    ctx.check()?;
    // Load the library first: every other ort call needs it.
    ortenv::environment(engine.cfg.ort_dylib.as_deref())?;
    let cuda_here = ortenv::cuda_usable(engine.cuda_allowed);
    if job.accel == Accel::Gpu && !cuda_here {
        return Err(JobError::unsupported("accel gpu: no NVIDIA GPU with ONNX Runtime's CUDA execution provider on this worker"));
    }
    let want_cuda = job.accel != Accel::Cpu && cuda_here;
    // The loader reads the model file keeping its CPU slot (`block_on`, not `read_input`):
    // jobs wanting the same model wait for this load (single-flight) holding theirs, so a
    // loader that gave its slot back could never get one again (deadlock with one slot).
    let (model, outcome) = engine.model(m, want_cuda, || {
        let url = parse_uri(&m.uri)?;
        ctx.block_on(ctx.store().get(&url, ctx.limits.max_input_bytes))
            .map_err(|e| e.into_input_error())
            .map_err(|e| JobError { message: format!("model {:?}: {}", m.name, e.message), ..e })
    })?;
    span.record("cache", outcome.as_str());
    span.record("device", model.device.name());
    if outcome == Outcome::Miss {
        span.record("load_ms", model.load_ms);
    }
    ctx.check()?;
    // Batches forming while this job decodes its images wait for it (up to their delay).
    let mut arrival = Some(model.batcher.announce());

    // Inputs → tensors (images are decoded and preprocessed here, on the job's thread).
    let total = job.len() as u64;
    let mut items = Vec::with_capacity(job.len());
    let mut geometry = Vec::new();
    let mut stored = Vec::new();
    match &job.inputs {
        Inputs::Images(uris) => {
            for (i, uri) in uris.iter().enumerate() {
                ctx.check()?;
                let data = ctx.read_input(uri).map_err(|e| JobError { message: format!("images[{i}]: {}", e.message), ..e })?;
                let p = preprocess::image(&data, m, ctx.limits.max_pixels)
                    .map_err(|e| JobError { message: format!("images[{i}]: {}", e.message), ..e })?;
                if job.save_input {
                    stored.extend(save_input(ctx, i, &p.item)?);
                }
                items.push(p.item);
                geometry.push(Some(p.geometry));
            }
        }
        Inputs::Tensors(ts) => {
            for t in ts {
                items.push(Item { shape: t.shape.clone(), data: t.data.clone() });
                geometry.push(None);
            }
        }
    }
    for (i, it) in items.iter().enumerate() {
        model.check_item(i, it)?;
    }

    // On CUDA the job's tensors are device buffers while its batches run: a GPU slot and
    // their memory (inputs, and as much again for outputs and activations) on the session's
    // device, waited for without the CPU slot, held until the outputs are back.
    let _gpu = match model.device {
        ortenv::Device::Cuda => {
            let bytes: u64 = items.iter().map(|it| it.data.len() as u64 * 4).sum();
            Some(ctx.gpu_on(Some(CUDA_DEVICE), bytes.saturating_mul(2))?)
        }
        ortenv::Device::Cpu => None,
    };

    // Chunks of one shape, at most max_batch each, through the model's batcher.
    let mut outputs: Vec<Vec<ItemOutput>> = Vec::with_capacity(items.len());
    let mut batches = Vec::new();
    let mut rest = items.into_iter().peekable();
    while let Some(first) = rest.next() {
        let mut chunk = vec![first];
        while chunk.len() < model.batcher.max_batch && rest.peek().is_some_and(|n| n.shape == chunk[0].shape) {
            chunk.extend(rest.next());
        }
        // The batch runs on the model's threads: the job's CPU slot goes to another job
        // (which may decode the next request of this batch) until the outputs are back.
        let arriving = arrival.take();
        let (outs, n) = ctx.idle(|| model.batcher.infer(chunk, arriving, || ctx.check()))??;
        batches.push(n);
        outputs.extend(outs);
        ctx.progress(outputs.len() as u64, total, "infer");
    }

    let mut inference = Vec::with_capacity(outputs.len());
    for (i, (out, geo)) in outputs.into_iter().zip(geometry).enumerate() {
        let mut entry = serde_json::Map::new();
        entry.insert("image".into(), json!(i));
        if let Some(g) = &geo {
            entry.insert("width".into(), json!(g.source.0));
            entry.insert("height".into(), json!(g.source.1));
        }
        match (m.task, &geo) {
            (Task::Detect, Some(g)) => {
                entry.insert("detections".into(), json!(postprocess::detect(&out, m, &model.labels, g)?));
            }
            (Task::Classify, _) => {
                entry.insert("tags".into(), json!(postprocess::classify(&out, m, &model.labels)?));
            }
            _ => {
                entry.insert("tensors".into(), json!(postprocess::tensors(out)));
            }
        }
        inference.push(Value::Object(entry));
    }
    tracing::debug!(batches = ?batches, "infer done");
    let mut extra = serde_json::Map::new();
    extra.insert("inference".into(), Value::Array(inference));
    extra.insert(
        "infer".into(),
        json!({"model": m.name, "device": model.device.name(), "cache": outcome.as_str(), "batches": batches}),
    );
    Ok(JobOutput { outputs: stored, extra, resumed: false })
}

/// Stores a preprocessed input as raw little-endian f32 (`input-NNNN.f32`), its shape in the
/// output's name-sibling `input-NNNN.json`.
fn save_input(ctx: &JobContext, i: usize, item: &Item) -> Result<[OutputInfo; 2], JobError> {
    let bytes: Vec<u8> = item.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let data = ctx.write_output(&format!("input-{i:04}.f32"), Bytes::from(bytes), "application/octet-stream", None)?;
    let shape = serde_json::to_vec(&json!({"shape": item.shape})).map_err(|e| JobError::internal(e.to_string()))?;
    let meta = ctx.write_output(&format!("input-{i:04}.json"), Bytes::from(shape), "application/json", None)?;
    Ok([data, meta])
}
