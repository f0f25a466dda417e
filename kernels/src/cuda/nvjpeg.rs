//! JPEG decode on the GPU with nvJPEG, loaded at run time with libloading (like NVML): its
//! hardware engine (A100/H100/H200, `NVJPEG_BACKEND_HARDWARE`, batched API) where the GPU has
//! one, else the default (CUDA) backend. Only baseline/extended Huffman JPEGs with 1 or 3
//! components in 4:4:4, 4:2:2, 4:2:0 or grey ([`gpu_decodable`]) are offered to it; progressive,
//! CMYK/Adobe RGB and odd sampling stay with the CPU decoder. No libnvjpeg: a clean
//! [`CudaError::Unavailable`].

use super::context::{DeviceImage, Gpu};
use super::CudaError;
use cudarc::driver::DevicePtrMut;
use std::ffi::c_void;
use std::os::raw::{c_int, c_uint, c_uchar};

type Handle = *mut c_void;
type State = *mut c_void;
type Status = c_int;

const BACKEND_DEFAULT: c_int = 0;
const BACKEND_HARDWARE: c_int = 3;
const OUTPUT_RGBI: c_int = 5;
const MAX_COMPONENT: usize = 4;

#[repr(C)]
struct NvImage {
    channel: [*mut c_uchar; MAX_COMPONENT],
    pitch: [usize; MAX_COMPONENT],
}

type CreateEx = unsafe extern "C" fn(c_int, *mut c_void, *mut c_void, c_uint, *mut Handle) -> Status;
type Destroy = unsafe extern "C" fn(Handle) -> Status;
type StateCreate = unsafe extern "C" fn(Handle, *mut State) -> Status;
type StateDestroy = unsafe extern "C" fn(State) -> Status;
type GetImageInfo = unsafe extern "C" fn(Handle, *const c_uchar, usize, *mut c_int, *mut c_int, *mut c_int, *mut c_int) -> Status;
type Decode = unsafe extern "C" fn(Handle, State, *const c_uchar, usize, c_int, *mut NvImage, *mut c_void) -> Status;
type BatchedInit = unsafe extern "C" fn(Handle, State, c_int, c_int, c_int) -> Status;
type Batched = unsafe extern "C" fn(Handle, State, *const *const c_uchar, *const usize, *mut NvImage, *mut c_void) -> Status;

/// The library names tried, newest first.
pub const LIBRARY_NAMES: [&str; 3] = ["libnvjpeg.so.13", "libnvjpeg.so.12", "libnvjpeg.so"];

/// Whether a JPEG is one nvJPEG decodes the same as the CPU path: SOF0/SOF1 (baseline or
/// extended Huffman, 8-bit), 1 component or 3 YCbCr components with chroma 1×1 and luma 1×1,
/// 2×1 or 2×2, no Adobe transform 0 (RGB) marker. Everything else goes to the CPU decoder.
pub fn gpu_decodable(data: &[u8]) -> bool {
    if data.len() < 4 || data[0] != 0xFF || data[1] != 0xD8 {
        return false;
    }
    let mut i = 2;
    while i + 4 <= data.len() {
        if data[i] != 0xFF {
            return false;
        }
        let m = data[i + 1];
        if m == 0xFF {
            i += 1;
            continue;
        }
        let len = u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize;
        let seg = data.get(i + 4..i + 2 + len);
        match m {
            0xEE => {
                // Adobe APP14: transform byte 0 means RGB (or CMYK) without YCbCr.
                if let Some(s) = seg {
                    if s.len() >= 12 && &s[..5] == b"Adobe" && s[11] == 0 {
                        return false;
                    }
                }
            }
            0xC0 | 0xC1 => {
                let Some(s) = seg else { return false };
                if s.len() < 6 || s[0] != 8 {
                    return false;
                }
                let n = s[5] as usize;
                if s.len() < 6 + 3 * n {
                    return false;
                }
                let f = |c: usize| (s[6 + 3 * c + 1] >> 4, s[6 + 3 * c + 1] & 15);
                return match n {
                    1 => true,
                    3 => matches!(f(0), (1, 1) | (2, 1) | (2, 2)) && f(1) == (1, 1) && f(2) == (1, 1),
                    _ => false,
                };
            }
            0xC2..=0xCF if m != 0xC4 && m != 0xC8 && m != 0xCC => return false,
            0xDA | 0xD9 => return false,
            _ => {}
        }
        i += 2 + len;
    }
    false
}

/// nvJPEG's entry points, from the shared library.
struct Api {
    _lib: libloading::Library,
    create_ex: CreateEx,
    destroy: Destroy,
    state_create: StateCreate,
    state_destroy: StateDestroy,
    image_info: GetImageInfo,
    decode: Decode,
    batched_init: BatchedInit,
    batched: Batched,
}

fn load() -> Result<Api, CudaError> {
    super::libs::preload_env();
    let mut last = String::new();
    for name in LIBRARY_NAMES {
        // SAFETY: loading NVIDIA's nvJPEG runs its initialisers only.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => {
                // SAFETY: the symbol types are nvjpeg.h's prototypes.
                let api = unsafe {
                    let sym = |n: &[u8]| -> Result<*const c_void, CudaError> {
                        lib.get::<*const c_void>(n).map(|s| *s).map_err(|e| CudaError::Unavailable(format!("{name}: {e}")))
                    };
                    Api {
                        create_ex: std::mem::transmute::<*const c_void, CreateEx>(sym(b"nvjpegCreateEx\0")?),
                        destroy: std::mem::transmute::<*const c_void, Destroy>(sym(b"nvjpegDestroy\0")?),
                        state_create: std::mem::transmute::<*const c_void, StateCreate>(sym(b"nvjpegJpegStateCreate\0")?),
                        state_destroy: std::mem::transmute::<*const c_void, StateDestroy>(sym(b"nvjpegJpegStateDestroy\0")?),
                        image_info: std::mem::transmute::<*const c_void, GetImageInfo>(sym(b"nvjpegGetImageInfo\0")?),
                        decode: std::mem::transmute::<*const c_void, Decode>(sym(b"nvjpegDecode\0")?),
                        batched_init: std::mem::transmute::<*const c_void, BatchedInit>(sym(b"nvjpegDecodeBatchedInitialize\0")?),
                        batched: std::mem::transmute::<*const c_void, Batched>(sym(b"nvjpegDecodeBatched\0")?),
                        _lib: lib,
                    }
                };
                return Ok(api);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(CudaError::Unavailable(format!("libnvjpeg not found ({last})")))
}

/// An nvJPEG decoder bound to one [`Gpu`].
pub struct Nvjpeg {
    api: Api,
    handle: Handle,
    state: State,
    /// Whether the hardware engine is in use.
    pub hardware: bool,
}

// SAFETY: the handle and state are used by one thread at a time (`&mut self` for decode).
unsafe impl Send for Nvjpeg {}

fn ok(what: &str, s: Status) -> Result<(), CudaError> {
    if s == 0 {
        Ok(())
    } else {
        Err(CudaError::Nvjpeg(format!("{what}: status {s}")))
    }
}

impl Nvjpeg {
    /// Loads nvJPEG and creates a handle: the hardware backend when the GPU has the engine,
    /// else the default one. Needs the GPU's context current (`gpu`).
    pub fn open(gpu: &Gpu) -> Result<Nvjpeg, CudaError> {
        let api = load()?;
        gpu.ctx.bind_to_thread()?;
        let mut handle: Handle = std::ptr::null_mut();
        // SAFETY: nvjpegCreateEx with null allocators (the defaults) writes a handle.
        let (hardware, s) = unsafe {
            let s = (api.create_ex)(BACKEND_HARDWARE, std::ptr::null_mut(), std::ptr::null_mut(), 0, &mut handle);
            if s == 0 {
                (true, 0)
            } else {
                (false, (api.create_ex)(BACKEND_DEFAULT, std::ptr::null_mut(), std::ptr::null_mut(), 0, &mut handle))
            }
        };
        ok("nvjpegCreateEx", s)?;
        let mut state: State = std::ptr::null_mut();
        // SAFETY: a valid handle from above.
        if let Err(e) = ok("nvjpegJpegStateCreate", unsafe { (api.state_create)(handle, &mut state) }) {
            // SAFETY: the handle is ours.
            unsafe { (api.destroy)(handle) };
            return Err(e);
        }
        if hardware {
            // SAFETY: as above; batch of 1, RGB interleaved.
            ok("nvjpegDecodeBatchedInitialize", unsafe { (api.batched_init)(handle, state, 1, 1, OUTPUT_RGBI) })?;
        }
        Ok(Nvjpeg { api, handle, state, hardware })
    }

    /// (width, height, components) of a JPEG as nvJPEG reads it.
    pub fn info(&self, data: &[u8]) -> Result<(u32, u32, usize), CudaError> {
        let (mut n, mut sub) = (0 as c_int, 0 as c_int);
        let (mut w, mut h) = ([0 as c_int; MAX_COMPONENT], [0 as c_int; MAX_COMPONENT]);
        // SAFETY: data is a live slice; the arrays hold NVJPEG_MAX_COMPONENT entries.
        ok("nvjpegGetImageInfo", unsafe {
            (self.api.image_info)(self.handle, data.as_ptr(), data.len(), &mut n, &mut sub, w.as_mut_ptr(), h.as_mut_ptr())
        })?;
        if w[0] <= 0 || h[0] <= 0 {
            return Err(CudaError::Nvjpeg("no image size".into()));
        }
        Ok((w[0] as u32, h[0] as u32, n as usize))
    }

    /// Decodes a JPEG ([`gpu_decodable`] ones; others are `Err(Input)`) to a device RGB8 image.
    pub fn decode(&mut self, gpu: &Gpu, data: &[u8]) -> Result<DeviceImage, CudaError> {
        if !gpu_decodable(data) {
            return Err(CudaError::Input("JPEG needs the CPU decoder (progressive, CMYK or odd sampling)".into()));
        }
        let (w, h, _) = self.info(data)?;
        let stream = gpu.stream();
        let mut buf = gpu.u8s.take(gpu, &stream, w as usize * h as usize * 3)?;
        let len = buf.len();
        {
            let (ptr, _sync) = buf.device_ptr_mut(&stream);
            debug_assert!(len >= w as usize * h as usize * 3);
            let mut img = NvImage { channel: [std::ptr::null_mut(); MAX_COMPONENT], pitch: [0; MAX_COMPONENT] };
            img.channel[0] = ptr as *mut c_uchar;
            img.pitch[0] = w as usize * 3;
            let cu_stream = stream.cu_stream() as *mut c_void;
            // SAFETY: the output buffer holds w × h × 3 bytes at pitch w × 3 on `stream`.
            let s = unsafe {
                if self.hardware {
                    let ptrs = [data.as_ptr()];
                    let lens = [data.len()];
                    (self.api.batched)(self.handle, self.state, ptrs.as_ptr(), lens.as_ptr(), &mut img, cu_stream)
                } else {
                    (self.api.decode)(self.handle, self.state, data.as_ptr(), data.len(), OUTPUT_RGBI, &mut img, cu_stream)
                }
            };
            ok("nvjpegDecode", s)?;
        }
        Ok(DeviceImage { width: w, height: h, channels: 3, buf, stream })
    }
}

impl Drop for Nvjpeg {
    fn drop(&mut self) {
        // SAFETY: state and handle were created by this value and are destroyed once.
        unsafe {
            (self.api.state_destroy)(self.state);
            (self.api.destroy)(self.handle);
        }
    }
}

/// Whether libnvjpeg can be loaded here (no GPU needed to load it).
pub fn library_present() -> bool {
    load().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::testutil::{jpeg_bytes, jpeg_progressive_bytes};

    #[test]
    fn only_baseline_ycbcr_jpegs_are_offered_to_the_gpu() {
        assert!(gpu_decodable(&jpeg_bytes(33, 17, 80)));
        assert!(!gpu_decodable(&jpeg_progressive_bytes(33, 17)));
        assert!(!gpu_decodable(b"\x89PNG\r\n\x1a\n"));
        assert!(!gpu_decodable(&[0xFF, 0xD8, 0xFF]));
        // A CMYK (4-component) SOF0.
        let mut cmyk = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 20, 8, 0, 16, 0, 16, 4];
        for c in 1..=4u8 {
            cmyk.extend_from_slice(&[c, 0x11, 0]);
        }
        assert!(!gpu_decodable(&cmyk));
        // 4:1:1 sampling (luma 4×1).
        let mut odd = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8, 0, 16, 0, 16, 3];
        odd.extend_from_slice(&[1, 0x41, 0, 2, 0x11, 1, 3, 0x11, 1]);
        assert!(!gpu_decodable(&odd));
    }

    #[test]
    fn without_libnvjpeg_loading_is_a_clean_error() {
        match load() {
            Ok(_) => eprintln!("libnvjpeg present: the absent-library path is not exercised here"),
            Err(e) => assert!(matches!(e, CudaError::Unavailable(ref m) if m.contains("libnvjpeg")), "{e}"),
        }
    }
}
