//! One GPU: its CUDA context, a few streams (independent images run on different streams, so
//! one image's copies overlap another's kernels), the kernels loaded from the PTX cache, and
//! pools of device buffers reused across jobs. Opening it is the warm-up: NVRTC compiles only
//! what the disk cache lacks.

use super::cache::PtxCache;
use super::{guarded, libs, CudaError, SOURCES};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, ValidAsZeroBits};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How to open a [`Gpu`].
#[derive(Debug, Clone)]
pub struct GpuOptions {
    /// CUDA device ordinal.
    pub ordinal: usize,
    /// PTX cache folder; [`PtxCache::default_dir`] when `None`.
    pub cache_dir: Option<PathBuf>,
    /// Streams images are spread over (at least 1).
    pub streams: usize,
}

impl Default for GpuOptions {
    fn default() -> GpuOptions {
        GpuOptions { ordinal: 0, cache_dir: None, streams: 4 }
    }
}

/// What warm-up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Warmup {
    /// Sources NVRTC compiled now.
    pub compiled: usize,
    /// Sources read from the PTX cache.
    pub cached: usize,
}

/// Device buffers of one element type, bucketed by capacity (powers of two), for reuse.
pub(crate) struct Pool<T> {
    free: Mutex<HashMap<usize, Vec<CudaSlice<T>>>>,
}

impl<T: DeviceRepr + ValidAsZeroBits> Pool<T> {
    fn new() -> Pool<T> {
        Pool { free: Mutex::new(HashMap::new()) }
    }

    /// A buffer of at least `len` elements (contents undefined: kernels write all they read).
    pub(crate) fn take(&self, gpu: &Gpu, stream: &Arc<CudaStream>, len: usize) -> Result<CudaSlice<T>, CudaError> {
        let cap = len.max(1).next_power_of_two();
        if let Some(b) = self.free.lock().ok().and_then(|mut f| f.get_mut(&cap).and_then(|v| v.pop())) {
            gpu.pooled.fetch_sub((cap * std::mem::size_of::<T>()) as u64, Ordering::Relaxed);
            return Ok(b);
        }
        let b = guarded("alloc", || stream.alloc_zeros::<T>(cap))?;
        gpu.allocated.fetch_add((cap * std::mem::size_of::<T>()) as u64, Ordering::Relaxed);
        Ok(b)
    }

    pub(crate) fn give(&self, gpu: &Gpu, b: CudaSlice<T>) {
        let cap = b.len();
        if !cap.is_power_of_two() {
            return;
        }
        if let Ok(mut f) = self.free.lock() {
            gpu.pooled.fetch_add((cap * std::mem::size_of::<T>()) as u64, Ordering::Relaxed);
            f.entry(cap).or_default().push(b);
        }
    }

    fn clear(&self) -> usize {
        self.free.lock().map(|mut f| f.drain().map(|(c, v)| c * v.len() * std::mem::size_of::<T>()).sum()).unwrap_or(0)
    }
}

/// An image in device memory: packed rows of `channels` u8 (1, 3 or 4), on one stream.
pub struct DeviceImage {
    pub width: u32,
    pub height: u32,
    pub channels: usize,
    pub(crate) buf: CudaSlice<u8>,
    pub(crate) stream: Arc<CudaStream>,
}

impl DeviceImage {
    pub fn len(&self) -> usize {
        self.width as usize * self.height as usize * self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stream this image's work is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}

/// An opened GPU with kiln's kernels loaded.
pub struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    streams: Vec<Arc<CudaStream>>,
    next: AtomicUsize,
    funcs: HashMap<&'static str, CudaFunction>,
    /// (major, minor) compute capability.
    pub cc: (i32, i32),
    /// The device's name.
    pub name: String,
    pub warmup: Warmup,
    pub(crate) u8s: Pool<u8>,
    pub(crate) f32s: Pool<f32>,
    allocated: AtomicU64,
    pooled: AtomicU64,
}

impl Gpu {
    /// Opens device `o.ordinal`, compiling (or reading from the PTX cache) every kernel.
    /// `Err(Unavailable)` without the CUDA driver library or a device; never panics.
    pub fn open(o: &GpuOptions) -> Result<Gpu, CudaError> {
        if !libs::driver_present() {
            return Err(CudaError::Unavailable("libcuda.so not found (no NVIDIA driver)".into()));
        }
        let n = guarded("cuDeviceGetCount", CudaContext::device_count).map_err(|e| CudaError::Unavailable(e.to_string()))?;
        if n <= o.ordinal as i32 {
            return Err(CudaError::Unavailable(format!("no CUDA device {} ({n} present)", o.ordinal)));
        }
        let ctx = guarded("cuCtxCreate", || CudaContext::new(o.ordinal))?;
        let cc = guarded("compute capability", || ctx.compute_capability())?;
        let name = guarded("device name", || ctx.name()).unwrap_or_default();
        let cache = PtxCache::new(o.cache_dir.clone().unwrap_or_else(PtxCache::default_dir));
        let mut funcs = HashMap::new();
        let mut warmup = Warmup::default();
        for src in SOURCES.iter() {
            let (ptx, hit) = cache.get_or_compile(src, cc, || super::compile(src, Some(cc)))?;
            if hit {
                warmup.cached += 1;
            } else {
                warmup.compiled += 1;
            }
            let module = guarded("cuModuleLoadData", || ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx)))?;
            for f in src.functions {
                funcs.insert(*f, guarded("cuModuleGetFunction", || module.load_function(f))?);
            }
        }
        let mut streams = Vec::new();
        for _ in 0..o.streams.max(1) {
            streams.push(guarded("cuStreamCreate", || ctx.new_stream())?);
        }
        tracing::info!(device = %name, cc = ?cc, compiled = warmup.compiled, cached = warmup.cached, cache = %cache.dir().display(), "CUDA kernels ready");
        Ok(Gpu {
            ctx,
            streams,
            next: AtomicUsize::new(0),
            funcs,
            cc,
            name,
            warmup,
            u8s: Pool::new(),
            f32s: Pool::new(),
            allocated: AtomicU64::new(0),
            pooled: AtomicU64::new(0),
        })
    }

    /// The next stream, round robin.
    pub fn stream(&self) -> Arc<CudaStream> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.streams.len();
        self.streams[i].clone()
    }

    pub(crate) fn func(&self, name: &str) -> Result<&CudaFunction, CudaError> {
        self.funcs.get(name).ok_or_else(|| CudaError::Driver(format!("kernel {name} not loaded")))
    }

    /// Device bytes this GPU's pools have allocated (in use or free): what the scheduler's GPU
    /// memory budget counts for kiln's kernels.
    pub fn device_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Frees the pooled buffers not in use; returns the bytes freed.
    pub fn trim(&self) -> u64 {
        let n = (self.u8s.clear() + self.f32s.clear()) as u64;
        self.pooled.fetch_sub(n.min(self.pooled.load(Ordering::Relaxed)), Ordering::Relaxed);
        self.allocated.fetch_sub(n.min(self.allocated.load(Ordering::Relaxed)), Ordering::Relaxed);
        n
    }

    /// Free and total device memory.
    pub fn mem_info(&self) -> Result<(usize, usize), CudaError> {
        guarded("cuMemGetInfo", || self.ctx.mem_get_info())
    }

    /// Copies a host image (RGB8/RGBA8) to the device, on the next stream.
    pub fn upload(&self, img: &crate::image::Image) -> Result<DeviceImage, CudaError> {
        let stream = self.stream();
        let mut buf = self.u8s.take(self, &stream, img.data.len())?;
        guarded("memcpy HtoD", || stream.memcpy_htod(img.data.as_slice(), &mut buf))?;
        Ok(DeviceImage { width: img.width, height: img.height, channels: img.channels(), buf, stream })
    }

    /// Copies a device image back (waits for its stream).
    pub fn download(&self, d: &DeviceImage) -> Result<crate::image::Image, CudaError> {
        let kind = match d.channels {
            3 => crate::image::PixelKind::Rgb8,
            4 => crate::image::PixelKind::Rgba8,
            c => return Err(CudaError::Input(format!("{c}-channel image has no host form"))),
        };
        let data = guarded("memcpy DtoH", || d.stream.clone_dtoh(&d.buf.slice(..d.len())))?;
        crate::image::Image::new(d.width, d.height, kind, data).map_err(|e| CudaError::Input(e.to_string()))
    }

    /// Returns a device image's buffer to the pool.
    pub fn recycle(&self, d: DeviceImage) {
        self.u8s.give(self, d.buf);
    }

    /// A launch configuration covering `w` × `h` threads in 32 × 8 blocks.
    pub(crate) fn grid(w: u32, h: u32) -> LaunchConfig {
        LaunchConfig { grid_dim: (w.div_ceil(32).max(1), h.div_ceil(8).max(1), 1), block_dim: (32, 8, 1), shared_mem_bytes: 0 }
    }
}

/// The process's GPUs, each opened once (the first open is the warm-up; a failure is kept, so
/// later jobs fall back to the CPU at once). The PTX cache is `KILN_CUDA_CACHE_DIR` when set,
/// else [`PtxCache::default_dir`].
pub fn shared(ordinal: usize) -> Result<Arc<Gpu>, String> {
    type Opened = Mutex<HashMap<usize, Result<Arc<Gpu>, String>>>;
    static OPEN: std::sync::OnceLock<Opened> = std::sync::OnceLock::new();
    let mut open = OPEN.get_or_init(Default::default).lock().map_err(|_| "GPU registry poisoned".to_string())?;
    open.entry(ordinal)
        .or_insert_with(|| {
            let cache_dir = std::env::var_os("KILN_CUDA_CACHE_DIR").map(PathBuf::from);
            Gpu::open(&GpuOptions { ordinal, cache_dir, ..Default::default() }).map(Arc::new).map_err(|e| e.to_string())
        })
        .clone()
}
