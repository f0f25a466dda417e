//! kiln-kernels: pixel and tensor kernels behind one API, and the hardware probe.
//!
//! - [`accel`]: [`Accel`], the `auto | cpu | gpu` choice of job specs and the worker.
//! - [`image`]: decode (with shrink-on-load), orientation, colour management, resize, composite
//!   and encode of still images, on the CPU (libjpeg-turbo, fast_image_resize SIMD).
//! - [`render`]: page compositing for render jobs: layer rasterising (rects, images, shaped
//!   text) and blending, with a CPU reference and a wgpu compute backend.
//! - [`video`]: FFmpeg (ffmpeg-next) demux, decode, scale, encode and mux for transcode
//!   ladders, and the NVENC/NVDEC probe.
//! - [`cuda`]: kiln's CUDA kernels (cudarc + NVRTC, PTX cached on disk), their CPU references,
//!   and nvJPEG decode; a clean error without CUDA.
//! - [`probe`]: what this host offers (CPU features, NVIDIA GPUs and their codec engines).
//!
//! This crate knows nothing of jobs.

pub mod accel;
pub mod cuda;
pub mod image;
pub mod probe;
pub mod render;
pub mod video;

pub use accel::Accel;
