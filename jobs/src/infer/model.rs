//! A loaded model: its ONNX Runtime sessions (one per instance, each owned by its batch
//! thread), its input's
//! name and shape, its labels, and the device it runs on.

use super::batcher::{BatchOutput, BatchStats, Batcher, Item, RunBatch};
use super::cache::Footprint;
use super::config::{cpu_sessions, InferConfig, ModelConfig};
use super::ortenv::{self, Device};
use super::postprocess::parse_names;
use crate::error::JobError;
use ort::session::Session;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct LoadedModel {
    pub name: String,
    pub input_name: String,
    /// The input's dimensions without the batch one; -1 where free.
    pub item_dims: Vec<i64>,
    pub labels: Vec<String>,
    pub device: Device,
    pub batcher: Batcher,
    pub load_ms: f64,
    /// The GPU memory this model holds in the worker's scheduler while loaded (CUDA).
    pub gpu_memory: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl LoadedModel {
    /// Builds the session from the model file's bytes and starts its batch thread.
    pub fn load(
        m: &ModelConfig,
        bytes: &[u8],
        engine: &InferConfig,
        want_cuda: bool,
        stats: Arc<BatchStats>,
    ) -> Result<(LoadedModel, Footprint), JobError> {
        let started = Instant::now();
        let env = ortenv::environment(engine.ort_dylib.as_deref())?;
        // Sessions and threads: from the cores on CPU unless configured (see `cpu_sessions`);
        // one session with ONNX Runtime's threads on CUDA unless configured.
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let (cpu_instances, cpu_threads) = cpu_sessions(cores, m.instances, engine.intra_threads);
        let first_threads = if want_cuda { engine.intra_threads } else { cpu_threads };
        let (session, device) = ortenv::session(env, &m.name, bytes, want_cuda, first_threads)?;
        let (instances, intra) = match device {
            Device::Cpu => (cpu_instances, cpu_threads),
            Device::Cuda => (m.instances.unwrap_or(1).max(1), engine.intra_threads),
        };
        let inputs = session.inputs();
        if inputs.len() != 1 {
            return Err(JobError::unsupported(format!("model {:?} has {} inputs; kiln feeds models with one", m.name, inputs.len())));
        }
        let input = &inputs[0];
        let dims: Vec<i64> = input
            .dtype()
            .tensor_shape()
            .map(|s| s.iter().copied().collect())
            .ok_or_else(|| JobError::unsupported(format!("model {:?}: input {:?} is not a tensor", m.name, input.name())))?;
        if dims.is_empty() {
            return Err(JobError::unsupported(format!("model {:?}: input {:?} has no batch dimension", m.name, input.name())));
        }
        if input.dtype().tensor_type() != Some(ort::value::TensorElementType::Float32) {
            return Err(JobError::unsupported(format!("model {:?}: input {:?} is {:?}; kiln feeds float32", m.name, input.name(), input.dtype())));
        }
        // A fixed batch dimension caps the batch.
        let max_batch = if dims[0] > 0 { m.max_batch.min(dims[0] as usize) } else { m.max_batch };
        let labels = if m.labels.is_empty() {
            session.metadata().ok().and_then(|md| md.custom("names")).map(|n| parse_names(&n)).unwrap_or_default()
        } else {
            m.labels.clone()
        };
        let input_name = input.name().to_owned();
        let item_dims = dims[1..].to_vec();
        let mut runners = vec![OrtRunner { session, input: input_name.clone(), model: m.name.clone() }];
        for _ in 1..instances {
            let (session, _) = ortenv::session(env, &m.name, bytes, device == Device::Cuda, intra)?;
            runners.push(OrtRunner { session, input: input_name.clone(), model: m.name.clone() });
        }
        // A fixed batch dimension above 1 only takes full batches: pad to it as well.
        let pad = dims[0] > 1 || m.pad_batches.unwrap_or(device == Device::Cuda);
        let batcher = Batcher::start(&m.name, runners, max_batch, Duration::from_millis(m.max_delay_ms), pad, stats)?;
        let estimate = (bytes.len() as f64 * engine.memory_factor) as u64 * instances as u64;
        let footprint = match device {
            Device::Cpu => Footprint { host_bytes: estimate, gpu_bytes: 0 },
            Device::Cuda => Footprint { host_bytes: bytes.len() as u64, gpu_bytes: estimate },
        };
        let load_ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(model = %m.name, device = device.name(), load_ms, max_batch, instances, intra_threads = intra, pad, "model loaded");
        Ok((LoadedModel { name: m.name.clone(), input_name, item_dims, labels, device, batcher, load_ms, gpu_memory: None }, footprint))
    }

    /// Checks an item against the model's input: same rank, same fixed dimensions.
    pub fn check_item(&self, i: usize, item: &Item) -> Result<(), JobError> {
        let fits = item.shape.len() == self.item_dims.len()
            && item.shape.iter().zip(&self.item_dims).all(|(got, want)| *want <= 0 || got == want);
        if fits {
            Ok(())
        } else {
            Err(JobError::invalid_spec(format!(
                "input {i} has shape {:?}; model {:?} takes {:?} per item (-1: any)",
                item.shape, self.name, self.item_dims
            )))
        }
    }
}

struct OrtRunner {
    session: Session,
    input: String,
    model: String,
}

impl RunBatch for OrtRunner {
    fn run(&mut self, shape: &[i64], data: Vec<f32>) -> Result<Vec<BatchOutput>, JobError> {
        let failed = |e: ort::Error| JobError::internal(format!("model {:?}: {e}", self.model));
        let tensor = ort::value::Tensor::from_array((shape.to_vec(), data)).map_err(failed)?;
        let outputs = self.session.run(ort::inputs![self.input.as_str() => tensor]).map_err(failed)?;
        let mut out = Vec::with_capacity(outputs.len());
        for (name, value) in outputs.iter() {
            let (shape, data) = match value.try_extract_tensor::<f32>() {
                Ok((s, d)) => (s.iter().copied().collect::<Vec<i64>>(), d.to_vec()),
                Err(_) => match value.try_extract_tensor::<i64>() {
                    Ok((s, d)) => (s.iter().copied().collect(), d.iter().map(|v| *v as f32).collect()),
                    Err(e) => return Err(JobError::unsupported(format!("model {:?}: output {name:?}: {e}", self.model))),
                },
            };
            out.push((name.to_owned(), shape, data));
        }
        Ok(out)
    }
}
