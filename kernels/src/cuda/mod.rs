//! kiln's own CUDA kernels through cudarc: resize (bilinear, bicubic, Lanczos3 and the
//! thumbnailer's box + Lanczos3), YUV ↔ RGB (BT.601/709, full/limited range, NV12 and I420),
//! letterbox + normalise to NCHW/NHWC f32 for inference, and alpha compositing; plus nvJPEG
//! decode ([`nvjpeg`]).
//!
//! The CUDA C sources (`cu/*.cu`) are compiled with NVRTC when a [`Gpu`] opens (warm-up) and
//! the PTX is cached on disk keyed by compute capability and source hash ([`cache`]), so a
//! restarted pod loads modules without compiling. Each kernel module also holds a CPU reference
//! of the kernel's exact arithmetic (same weight tables, same matrices, same rounding), which
//! the tests compare with kiln's CPU paths and, on a GPU host, with the device.
//!
//! Nothing here panics without CUDA: cudarc's dynamic loader panics when a library is absent, so
//! every entry checks for the library first ([`libs`]) and runs cudarc calls that could still
//! panic under `catch_unwind`; absence is [`CudaError::Unavailable`] and callers use the CPU.

#[cfg(test)]
mod bench;
pub mod cache;
pub mod color;
pub mod composite;
pub mod context;
pub mod letterbox;
pub mod libs;
pub mod nvjpeg;
pub mod resize;
#[cfg(test)]
mod tests;

pub use context::{shared, DeviceImage, Gpu, GpuOptions};

use std::path::PathBuf;

/// Why a CUDA path did not run.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// No CUDA library, driver or device: use the CPU.
    #[error("CUDA unavailable: {0}")]
    Unavailable(String),
    /// NVRTC rejected a kernel source (the log).
    #[error("NVRTC compile of {name}: {log}")]
    Compile { name: &'static str, log: String },
    /// A CUDA driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(String),
    /// The on-disk kernel cache could not be written.
    #[error("kernel cache {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
    /// Arguments a kernel cannot take (sizes, formats).
    #[error("invalid kernel input: {0}")]
    Input(String),
    /// nvJPEG refused an image or failed.
    #[error("nvJPEG: {0}")]
    Nvjpeg(String),
}

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> CudaError {
        CudaError::Driver(format!("{e:?}"))
    }
}

/// One CUDA C translation unit and the kernels it defines.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub name: &'static str,
    pub text: &'static str,
    pub functions: &'static [&'static str],
}

/// Every kernel source kiln compiles at warm-up.
pub const SOURCES: [Source; 4] = [
    Source { name: "resize", text: include_str!("cu/resize.cu"), functions: &["resize_h", "resize_v"] },
    Source { name: "color", text: include_str!("cu/color.cu"), functions: &["yuv_to_rgb", "rgb_to_yuv"] },
    Source { name: "letterbox", text: include_str!("cu/letterbox.cu"), functions: &["letterbox"] },
    Source { name: "composite", text: include_str!("cu/composite.cu"), functions: &["over", "flatten"] },
];

/// NVRTC options for every source: no fused multiply-add, so results match the CPU references.
pub const NVRTC_OPTIONS: &[&str] = &["--fmad=false", "--std=c++17"];

/// Compiles one source to PTX for `arch` = (major, minor) compute capability (NVRTC's default
/// architecture when `None`). Needs libnvrtc, not a GPU.
pub fn compile(src: &Source, arch: Option<(i32, i32)>) -> Result<String, CudaError> {
    if !libs::nvrtc_present() {
        return Err(CudaError::Unavailable("libnvrtc not found (set KILN_CUDA_LIB_DIR or LD_LIBRARY_PATH)".into()));
    }
    let mut opts = cudarc::nvrtc::CompileOptions { name: Some(format!("{}.cu", src.name)), ..Default::default() };
    opts.options = NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect();
    if let Some((a, b)) = arch {
        opts.options.push(format!("--gpu-architecture=compute_{a}{b}"));
    }
    let text = src.text;
    let r = std::panic::catch_unwind(move || cudarc::nvrtc::compile_ptx_with_opts(text, opts))
        .map_err(|_| CudaError::Unavailable("NVRTC call panicked (library incomplete?)".into()))?;
    match r {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => {
            Err(CudaError::Compile { name: src.name, log: log.to_string_lossy().into_owned() })
        }
        Err(e) => Err(CudaError::Compile { name: src.name, log: format!("{e:?}") }),
    }
}

/// Runs a cudarc call that may panic when a library is missing, as a clean error.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, cudarc::driver::DriverError>) -> Result<T, CudaError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| CudaError::Driver(format!("{what}: {e:?}"))),
        Err(_) => Err(CudaError::Unavailable(format!("{what}: CUDA library call panicked"))),
    }
}
