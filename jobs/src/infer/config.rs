//! The model registry (`[[models]]` in the worker's config) and the engine settings
//! (`[infer]`): what each model is, how its input is prepared and its output read, and the
//! cache's memory budgets. Validated once at start, so a running job never meets a bad entry.

use crate::error::JobError;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// What a model's output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// YOLO-style boxes: output `[N, 4 + classes, anchors]` (or `[N, anchors, 4 + classes]`),
    /// `cx, cy, w, h` in input pixels, then one score per class.
    Detect,
    /// Class scores `[N, classes]`: the top-k as tags.
    Classify,
    /// Every output as a raw tensor.
    Tensor,
}

/// Where the input tensor's channels go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    #[default]
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

/// Where a letterboxed image sits in the padded square.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadAlign {
    /// Centred (Ultralytics' letterbox).
    #[default]
    Center,
    /// At the top left, padding right and bottom (nudenet's own preprocessing).
    TopLeft,
}

/// One `[[models]]` entry (DESIGN.md), with kiln's additions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    /// `file:///…` or `s3://bucket/key` (read through the job's object store).
    pub uri: String,
    #[serde(default = "default_task")]
    pub task: Task,
    /// `[width, height]` of the image input; required for image inputs.
    #[serde(default)]
    pub input_size: Option<[u32; 2]>,
    /// Keep the aspect ratio and pad (true), or stretch to `input_size` (false).
    #[serde(default = "yes")]
    pub letterbox: bool,
    #[serde(default)]
    pub pad_align: PadAlign,
    /// Padding colour, RGB.
    #[serde(default = "default_pad")]
    pub pad_color: [u8; 3],
    /// pixel / scale, then (x - mean) / std.
    #[serde(default = "default_scale")]
    pub scale: f32,
    #[serde(default)]
    pub mean: [f32; 3],
    #[serde(default = "ones")]
    pub std: [f32; 3],
    #[serde(default)]
    pub layout: Layout,
    #[serde(default)]
    pub channel_order: ChannelOrder,
    /// Class names; empty: taken from the model's `names` metadata, else `class_N`.
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default = "default_score")]
    pub score_threshold: f32,
    /// IoU above which NMS drops the weaker of two same-class boxes.
    #[serde(default = "default_iou")]
    pub nms_iou: f32,
    /// Most detections kept per image.
    #[serde(default = "default_max_det")]
    pub max_detections: usize,
    /// Tags returned per image (classify).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Apply softmax to class scores first (classify).
    #[serde(default)]
    pub softmax: bool,
    /// Most items run as one batch.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Longest a request waits for others to join its batch.
    #[serde(default = "default_delay")]
    pub max_delay_ms: u64,
    /// Sessions of this model running batches side by side (each its own thread and memory).
    /// Unset: chosen from the cores on CPU ([`cpu_sessions`]), one on CUDA.
    #[serde(default)]
    pub instances: Option<usize>,
    /// Run every batch at `max_batch` items, zero-padded, so the session sees one input shape.
    /// Unset: padded on CUDA (batches of varying size were measured slow there), not on CPU
    /// (where the padding would be wasted work).
    #[serde(default)]
    pub pad_batches: Option<bool>,
    /// Load at start (before /readyz answers 200) and never evict.
    #[serde(default)]
    pub warm: bool,
}

fn default_task() -> Task {
    Task::Tensor
}
fn yes() -> bool {
    true
}
fn default_pad() -> [u8; 3] {
    [114, 114, 114]
}
fn default_scale() -> f32 {
    255.0
}
fn ones() -> [f32; 3] {
    [1.0; 3]
}
fn default_score() -> f32 {
    0.25
}
fn default_iou() -> f32 {
    0.45
}
fn default_max_det() -> usize {
    300
}
fn default_top_k() -> usize {
    5
}
fn default_max_batch() -> usize {
    16
}
fn default_delay() -> u64 {
    5
}

impl ModelConfig {
    /// Checks one entry; the message names the model and the field.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        let err = |m: String| Err(format!("model {n:?}: {m}"));
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!("model name {n:?}: use letters, digits, '-', '_' or '.'"));
        }
        match url::Url::parse(&self.uri) {
            Ok(u) if u.scheme() == "file" || u.scheme() == "s3" => {}
            Ok(u) => return err(format!("uri scheme {:?} is not file:// or s3://", u.scheme())),
            Err(e) => return err(format!("uri {:?}: {e}", self.uri)),
        }
        if let Some([w, h]) = self.input_size {
            if w == 0 || h == 0 || w > 8192 || h > 8192 {
                return err(format!("input_size {w}x{h} is out of range"));
            }
        }
        if self.task != Task::Tensor && self.input_size.is_none() {
            return err("input_size is required for detect and classify".into());
        }
        if self.scale.is_nan() || self.scale <= 0.0 || self.std.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return err("scale and std must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.score_threshold) || !(0.0..=1.0).contains(&self.nms_iou) {
            return err("score_threshold and nms_iou must be within 0..1".into());
        }
        if self.max_batch == 0 || self.max_batch > 1024 {
            return err("max_batch must be within 1..1024".into());
        }
        if self.instances.is_some_and(|n| n == 0 || n > 64) {
            return err("instances must be within 1..64".into());
        }
        if self.max_delay_ms > 10_000 {
            return err("max_delay_ms at most 10000".into());
        }
        if self.top_k == 0 || self.max_detections == 0 {
            return err("top_k and max_detections must be positive".into());
        }
        Ok(())
    }
}

/// `[infer]`: the engine's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferConfig {
    /// Path of libonnxruntime.so (env KILN_ORT_DYLIB); else ORT_DYLIB_PATH, else the system's
    /// library search path.
    pub ort_dylib: Option<String>,
    /// Host memory the loaded models may use (estimated as file size × `memory_factor`).
    pub host_memory_mb: u64,
    /// GPU memory the models loaded on CUDA may use.
    pub gpu_memory_mb: u64,
    /// A loaded model's memory per byte of its file (weights, arena, optimised graph).
    pub memory_factor: f64,
    /// ONNX Runtime intra-op threads per session; 0: chosen from the cores and the model's
    /// instances on CPU ([`cpu_sessions`]), ONNX Runtime's default on CUDA.
    pub intra_threads: usize,
}

impl Default for InferConfig {
    fn default() -> Self {
        InferConfig { ort_dylib: None, host_memory_mb: 4096, gpu_memory_mb: 8192, memory_factor: 3.0, intra_threads: 0 }
    }
}

/// Sessions of a CPU model and intra-op threads per session, from the cores, unless the
/// config says: `instances` (0: unset) and `intra_threads` (0: unset). Several
/// single-threaded sessions beat one multi-threaded session on this kind of model (ONNX
/// Runtime's intra-op scaling is poor: measured on 2 cores, two sessions of one thread served
/// 51 images/s against 41 for one session of two; on 16 cores four sessions of four threads
/// beat two of eight). So: about √cores sessions (2 on 2–4 cores, 3 up to 9, at most 4),
/// sharing the cores between them.
pub fn cpu_sessions(cores: usize, instances: Option<usize>, intra_threads: usize) -> (usize, usize) {
    let cores = cores.max(1);
    let auto = ((cores as f64).sqrt().ceil() as usize).clamp(1, 4).min(cores);
    let n = instances.filter(|n| *n > 0).unwrap_or(auto);
    let threads = if intra_threads > 0 { intra_threads } else { (cores / n).max(1) };
    (n, threads)
}

/// Checks the whole registry: each entry, and that names are unique.
pub fn validate_models(models: &[ModelConfig]) -> Result<(), JobError> {
    let mut seen = HashSet::new();
    for m in models {
        m.validate().map_err(JobError::invalid_spec)?;
        if !seen.insert(m.name.as_str()) {
            return Err(JobError::invalid_spec(format!("model {:?} is registered twice", m.name)));
        }
    }
    Ok(())
}
