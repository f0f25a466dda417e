//! The infer spec as submitted and its validation (no I/O):
//! `{"model": NAME, "images": [URI, …]}` or `{"model": NAME, "tensors": [{"shape": [...],
//! "data": [...]}, …]}`, plus `"accel": "auto|cpu|gpu"` and `"save_input": true` (stores each
//! preprocessed input tensor as `input-NNNN.f32`, for checking kiln against another runtime).

use super::config::ModelConfig;
use crate::context::{ensure, Limits};
use crate::error::JobError;
use crate::store::parse_uri;
use kiln_kernels::Accel;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferSpec {
    pub model: String,
    #[serde(default)]
    pub images: Option<Vec<String>>,
    #[serde(default)]
    pub tensors: Option<Vec<TensorSpec>>,
    #[serde(default)]
    pub accel: Accel,
    #[serde(default)]
    pub save_input: bool,
}

/// One input item, without the batch dimension.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
}

/// The job's inputs, validated.
#[derive(Debug, Clone)]
pub enum Inputs {
    Images(Vec<String>),
    Tensors(Vec<TensorSpec>),
}

#[derive(Debug, Clone)]
pub struct Resolved {
    pub model: ModelConfig,
    pub inputs: Inputs,
    pub accel: Accel,
    pub save_input: bool,
}

impl Resolved {
    pub fn len(&self) -> usize {
        match &self.inputs {
            Inputs::Images(v) => v.len(),
            Inputs::Tensors(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Most items (images or tensors) one job may carry.
pub const MAX_ITEMS: usize = 256;

impl InferSpec {
    pub fn parse(input: &serde_json::Value) -> Result<InferSpec, JobError> {
        InferSpec::deserialize(input).map_err(|e| JobError::invalid_spec(format!("infer spec: {e}")))
    }

    /// Checks the spec against the model registry and the limits. An unknown model is
    /// `invalid_spec` (the registry is the worker's configuration, known at admission).
    pub fn resolve(self, models: &[ModelConfig], limits: &Limits) -> Result<Resolved, JobError> {
        let model = models.iter().find(|m| m.name == self.model).cloned().ok_or_else(|| {
            let known: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            JobError::invalid_spec(format!("unknown model {:?}; this worker serves: {}", self.model, known.join(", ")))
        })?;
        let inputs = match (self.images, self.tensors) {
            (Some(images), None) => {
                ensure(model.input_size.is_some(), || format!("model {:?} takes tensors, not images", model.name))?;
                for uri in &images {
                    parse_uri(uri)?;
                }
                Inputs::Images(images)
            }
            (None, Some(tensors)) => {
                for (i, t) in tensors.iter().enumerate() {
                    ensure(!t.shape.is_empty() && t.shape.iter().all(|d| *d > 0), || {
                        format!("tensors[{i}].shape must be positive dimensions")
                    })?;
                    let n = t.shape.iter().try_fold(1u64, |a, d| a.checked_mul(*d as u64));
                    ensure(n == Some(t.data.len() as u64), || {
                        format!("tensors[{i}]: shape {:?} needs {} values, got {}", t.shape, n.unwrap_or(0), t.data.len())
                    })?;
                    ensure((t.data.len() as u64) * 4 <= limits.max_input_bytes, || format!("tensors[{i}] is too large"))?;
                }
                Inputs::Tensors(tensors)
            }
            (Some(_), Some(_)) => return Err(JobError::invalid_spec("give either images or tensors, not both")),
            (None, None) => return Err(JobError::invalid_spec("infer needs images or tensors")),
        };
        let r = Resolved { model, inputs, accel: self.accel, save_input: self.save_input };
        ensure(!r.is_empty(), || "infer needs at least one image or tensor".into())?;
        ensure(r.len() <= MAX_ITEMS, || format!("at most {MAX_ITEMS} images or tensors per job, got {}", r.len()))?;
        Ok(r)
    }
}
