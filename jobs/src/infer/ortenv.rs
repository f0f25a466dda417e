//! The ONNX Runtime library: loaded once per process from a configured path (ort's
//! `load-dynamic`), the execution providers it offers, and session creation on CUDA or CPU.
//!
//! The library is found at `infer.ort_dylib` (env KILN_ORT_DYLIB), else ORT_DYLIB_PATH, else
//! `libonnxruntime.so` on the system's library path. A missing or too-old library fails
//! every infer job with `unsupported` and a message saying where kiln looked; the other job
//! kinds are not affected.

use crate::error::JobError;
use ort::environment::Environment;
use ort::ep::ExecutionProvider;
use std::sync::OnceLock;

static ENV: OnceLock<Result<Loaded, String>> = OnceLock::new();

struct Loaded {
    env: Environment,
    path: String,
}

/// Where the library will be looked for, from the config value and the environment.
pub fn dylib_path(configured: Option<&str>) -> String {
    configured
        .map(str::to_owned)
        .filter(|p| !p.is_empty())
        .or_else(|| std::env::var("ORT_DYLIB_PATH").ok().filter(|p| !p.is_empty()))
        .unwrap_or_else(|| "libonnxruntime.so".to_owned())
}

/// The process's ONNX Runtime environment, loading the library on first use. The first
/// caller's path wins (the library can be loaded once per process).
pub fn environment(configured: Option<&str>) -> Result<&'static Environment, JobError> {
    let loaded = ENV.get_or_init(|| {
        let path = dylib_path(configured);
        let builder = ort::init_from(&path).map_err(|e| format!("loading ONNX Runtime from {path}: {e}"))?;
        let env = builder.with_name("kiln").build().map_err(|e| format!("starting ONNX Runtime ({path}): {e}"))?;
        tracing::info!(library = %path, "ONNX Runtime loaded");
        Ok(Loaded { env, path })
    });
    match loaded {
        Ok(l) => Ok(&l.env),
        Err(e) => Err(JobError::unsupported(format!(
            "{e} — set infer.ort_dylib (KILN_ORT_DYLIB) or ORT_DYLIB_PATH to libonnxruntime.so (scripts/fetch-tools.sh unpacks it to .tools/onnxruntime/)"
        ))),
    }
}

/// What `kiln probe` says about ONNX Runtime.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OrtProbe {
    pub library: String,
    pub loaded: bool,
    pub error: Option<String>,
    /// Execution providers this build of the library offers.
    pub providers: Vec<String>,
    /// Whether the CUDA provider can run here (offered by the library and a GPU present).
    pub cuda: bool,
}

/// Loads the library (if not yet) and lists its execution providers.
pub fn probe(configured: Option<&str>) -> OrtProbe {
    let library = ENV.get().and_then(|r| r.as_ref().ok()).map(|l| l.path.clone()).unwrap_or_else(|| dylib_path(configured));
    match environment(configured) {
        Ok(_) => {
            let mut providers = Vec::new();
            type Available = fn() -> ort::Result<bool>;
            let candidates: [(&str, Available); 2] = [
                ("CPUExecutionProvider", ort::ep::CPU::is_available),
                ("CUDAExecutionProvider", ort::ep::CUDA::is_available),
            ];
            for (name, available) in candidates {
                if available().unwrap_or(false) {
                    providers.push(name.to_owned());
                }
            }
            let cuda = providers.iter().any(|p| p == "CUDAExecutionProvider") && gpu_present();
            OrtProbe { library, loaded: true, error: None, providers, cuda }
        }
        Err(e) => OrtProbe { library, loaded: false, error: Some(e.message), providers: Vec::new(), cuda: false },
    }
}

fn gpu_present() -> bool {
    !kiln_kernels::probe::gpus().devices.is_empty()
}

/// Where a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

/// Builds a session for `model` (the file's bytes). With `want_cuda`, registers the CUDA
/// provider first and falls back to CPU when it cannot be registered.
pub fn session(
    env: &Environment,
    name: &str,
    bytes: &[u8],
    want_cuda: bool,
    intra_threads: usize,
) -> Result<(ort::session::Session, Device), JobError> {
    let bad = |e: ort::Error| {
        JobError::corrupt(format!("model {name:?}: ONNX Runtime cannot load it: {e}"))
    };
    let mut builder = ort::session::Session::builder(env).map_err(|e| JobError::internal(format!("session builder: {e}")))?;
    if intra_threads > 0 {
        builder = builder.with_intra_threads(intra_threads).map_err(|e| JobError::internal(format!("intra threads: {e}")))?;
    }
    let mut device = Device::Cpu;
    if want_cuda {
        // Heuristic cuDNN algorithm choice: the default exhaustive search benchmarks every
        // Conv again for each new input shape, and dynamic batching makes a new shape of every
        // batch size, so the first batches of each size would stall for seconds.
        let cuda = ort::ep::CUDA::default().with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Heuristic);
        match cuda.register(&mut builder) {
            Ok(()) => device = Device::Cuda,
            Err(e) => tracing::warn!(model = name, error = %e, "CUDA execution provider unavailable; running on CPU"),
        }
    }
    let session = builder.commit_from_memory(bytes).map_err(bad)?;
    Ok((session, device))
}

/// Whether sessions should try CUDA: allowed by accel, offered by the loaded library, GPU
/// present. False while the library is not loaded (asking ort before `init_from` would make
/// it load a default library, and panic when there is none).
pub fn cuda_usable(accel_allows: bool) -> bool {
    if !accel_allows || !matches!(ENV.get(), Some(Ok(_))) {
        return false;
    }
    ort::ep::CUDA::is_available().unwrap_or(false) && gpu_present()
}
