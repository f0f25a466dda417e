//! Finding the CUDA libraries at run time. cudarc's dynamic loader looks for `libcuda.so`,
//! `libnvrtc.so.13` (and older names) on the default search path and panics when they are
//! absent; these checks say first whether they are there. [`preload_dir`] loads the libraries
//! of one folder (a PyPI `nvidia-*` wheel's `lib/`, `KILN_CUDA_LIB_DIR`) with their full paths
//! and RTLD_GLOBAL, so later loads by soname (cudarc's, NVRTC's own of its builtins) find them
//! without LD_LIBRARY_PATH.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The folder named by `KILN_CUDA_LIB_DIR`, preloaded once (see [`preload_dir`]).
pub fn preload_env() {
    static DONE: OnceLock<usize> = OnceLock::new();
    DONE.get_or_init(|| std::env::var_os("KILN_CUDA_LIB_DIR").map(|d| preload_dir(Path::new(&d))).unwrap_or(0));
}

/// Loads every `libnvrtc*`, `libnvjpeg*` and `libcudart*` shared library in `dir` (dependencies
/// first: builtins before NVRTC) and keeps it loaded for the life of the process. Returns how
/// many loaded. Unloadable files are skipped (they are only a search aid).
pub fn preload_dir(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    let mut libs: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            n.contains(".so") && !n.contains(".alt.") && ["libnvrtc", "libnvjpeg", "libcudart"].iter().any(|s| n.starts_with(s))
        })
        .collect();
    // Builtins and the runtime before the libraries that load them.
    libs.sort_by_key(|p| {
        let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        (!(n.contains("builtins") || n.starts_with("libcudart")), n)
    });
    let mut n = 0;
    for p in libs {
        // SAFETY: loading a shared library runs its initialisers; these are NVIDIA's CUDA
        // libraries from a folder the operator named.
        let lib = unsafe { libloading::os::unix::Library::open(Some(&p), libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL) };
        match lib {
            Ok(l) => {
                std::mem::forget(l);
                n += 1;
            }
            Err(e) => tracing::debug!(path = %p.display(), error = %e, "CUDA library not preloaded"),
        }
    }
    n
}

/// Whether NVRTC can be loaded (no GPU needed).
pub fn nvrtc_present() -> bool {
    preload_env();
    // SAFETY: only tries dlopen on cudarc's candidate names.
    std::panic::catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }).unwrap_or(false)
}

/// Whether the CUDA driver library (libcuda, installed with the NVIDIA driver) can be loaded.
pub fn driver_present() -> bool {
    preload_env();
    // SAFETY: as above.
    std::panic::catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() }).unwrap_or(false)
}
