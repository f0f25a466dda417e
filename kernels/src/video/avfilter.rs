//! libavfilter, loaded with dlopen on first use instead of linked.
//!
//! Only the GPU scaler (`scale_cuda`, [`super::scale`]) needs filter graphs, but linking
//! libavfilter makes every process load it and the ~30 libraries it pulls in (librsvg,
//! libplacebo, libepoxy, flite voices, rubberband, …): about 40 ms of dynamic linking at each
//! start (`kiln run`, a Lambda cold start) and their pages in every worker's memory. Loaded
//! here, a process that never builds a filter graph never maps it.
//!
//! The library's major version is the one that goes with the libavutil this binary runs
//! with (FFmpeg 5: avutil 57 / avfilter 8, 6: 58 / 9, 7: 59 / 10), so a graph never mixes two
//! FFmpeg releases. The calls are FFmpeg's public C API; `AVFilterInOut` is its public,
//! stable struct. Graphs, filters and filter contexts stay opaque pointers.

use super::VideoError;
use ffmpeg_next::ffi;
use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr;
use std::sync::OnceLock;

/// `AVFilterInOut` (libavfilter/avfilter.h), unchanged from FFmpeg 1.0 to 7.
#[repr(C)]
struct InOut {
    name: *mut c_char,
    filter_ctx: *mut c_void,
    pad_idx: c_int,
    next: *mut InOut,
}

/// The entry points used, resolved once.
struct Api {
    graph_alloc: unsafe extern "C" fn() -> *mut c_void,
    graph_free: unsafe extern "C" fn(*mut *mut c_void),
    get_by_name: unsafe extern "C" fn(*const c_char) -> *const c_void,
    create_filter: unsafe extern "C" fn(*mut *mut c_void, *const c_void, *const c_char, *const c_char, *mut c_void, *mut c_void) -> c_int,
    inout_alloc: unsafe extern "C" fn() -> *mut InOut,
    inout_free: unsafe extern "C" fn(*mut *mut InOut),
    parse_ptr: unsafe extern "C" fn(*mut c_void, *const c_char, *mut *mut InOut, *mut *mut InOut, *mut c_void) -> c_int,
    config: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
    src_write_frame: unsafe extern "C" fn(*mut c_void, *const ffi::AVFrame) -> c_int,
    sink_get_frame: unsafe extern "C" fn(*mut c_void, *mut ffi::AVFrame) -> c_int,
    /// Kept loaded for the process's life: the function pointers above point into it.
    _lib: libloading::Library,
}

/// The file names to try: the major version matching the running libavutil first.
fn names() -> Vec<String> {
    // SAFETY: a plain version query of the linked libavutil.
    let avutil_major = unsafe { ffi::avutil_version() } >> 16;
    let mut names = Vec::new();
    if let Some(major) = avutil_major.checked_sub(49) {
        names.push(format!("libavfilter.so.{major}"));
    }
    names.push("libavfilter.so".to_owned());
    names
}

fn load() -> Result<Api, String> {
    let mut errors = Vec::new();
    for name in names() {
        // SAFETY: libavfilter's initialisers only register its filters; it links against the
        // libavutil/libavcodec already loaded (same major versions, see `names`).
        match unsafe { libloading::Library::new(&name) } {
            Ok(lib) => return resolve(lib).map_err(|e| format!("{name}: {e}")),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Err(errors.join("; "))
}

fn resolve(lib: libloading::Library) -> Result<Api, libloading::Error> {
    // SAFETY: each symbol is FFmpeg's public function of that name, with the signature
    // declared in `Api` (libavfilter/avfilter.h, buffersrc.h, buffersink.h).
    unsafe {
        Ok(Api {
            graph_alloc: *lib.get(b"avfilter_graph_alloc\0")?,
            graph_free: *lib.get(b"avfilter_graph_free\0")?,
            get_by_name: *lib.get(b"avfilter_get_by_name\0")?,
            create_filter: *lib.get(b"avfilter_graph_create_filter\0")?,
            inout_alloc: *lib.get(b"avfilter_inout_alloc\0")?,
            inout_free: *lib.get(b"avfilter_inout_free\0")?,
            parse_ptr: *lib.get(b"avfilter_graph_parse_ptr\0")?,
            config: *lib.get(b"avfilter_graph_config\0")?,
            src_write_frame: *lib.get(b"av_buffersrc_write_frame\0")?,
            sink_get_frame: *lib.get(b"av_buffersink_get_frame\0")?,
            _lib: lib,
        })
    }
}

fn api() -> Result<&'static Api, VideoError> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| {
        let loaded = load();
        match &loaded {
            Ok(_) => tracing::debug!("libavfilter loaded"),
            Err(e) => tracing::warn!(error = %e, "libavfilter could not be loaded: filter graphs (scale_cuda) are unavailable"),
        }
        loaded
    })
    .as_ref()
    .map_err(|e| VideoError::Internal(format!("libavfilter is not available: {e}")))
}

fn cstr(s: &str) -> Result<CString, VideoError> {
    CString::new(s).map_err(|_| VideoError::Internal(format!("a NUL byte in filter text {s:?}")))
}

fn check(ret: c_int) -> Result<c_int, ffmpeg_next::Error> {
    if ret < 0 { Err(ffmpeg_next::Error::from(ret)) } else { Ok(ret) }
}

/// `ENOMEM` as FFmpeg reports it.
const NO_MEMORY: c_int = -12;

/// A configured `buffer → chain → buffersink` graph. Frees itself when dropped.
pub struct Graph {
    api: &'static Api,
    graph: *mut c_void,
    input: *mut c_void,
    output: *mut c_void,
}

// SAFETY: a graph is used by one thread at a time (`&mut self` for every frame call), and
// libavfilter keeps no thread-local state for it.
unsafe impl Send for Graph {}

impl Graph {
    /// `buffer` (args: the input frames' size, format, time base) → `chain` → `buffersink`.
    /// An error names the chain and the step that failed.
    pub fn new(buffer_args: &str, chain: &str) -> Result<Graph, VideoError> {
        let api = api()?;
        // SAFETY: an allocation; checked for null below, and owned by `Graph` from here on
        // (freed in `Drop` on every path, also when a later step fails).
        let graph = unsafe { (api.graph_alloc)() };
        let err = |what: &str, e: ffmpeg_next::Error| VideoError::Internal(format!("scaling filter ({chain}): {what}: {e}"));
        if graph.is_null() {
            return Err(err("alloc", ffmpeg_next::Error::from(NO_MEMORY)));
        }
        let mut g = Graph { api, graph, input: ptr::null_mut(), output: ptr::null_mut() };
        g.build(buffer_args, chain, err)?;
        Ok(g)
    }

    fn build(&mut self, buffer_args: &str, chain: &str, err: impl Fn(&str, ffmpeg_next::Error) -> VideoError) -> Result<(), VideoError> {
        let api = self.api;
        let (buffer, sink) = (cstr("buffer")?, cstr("buffersink")?);
        let (name_in, name_out) = (cstr("in")?, cstr("out")?);
        let args = cstr(buffer_args)?;
        let chain_c = cstr(chain)?;
        // SAFETY: FFmpeg's documented graph-building sequence: filters looked up by name
        // (null when absent: checked), contexts created inside `self.graph` (owned by it),
        // in/out lists allocated here and freed by `inout_free` on every path (parse
        // consumes what it links and leaves the rest to us).
        unsafe {
            let (fb, fs) = ((api.get_by_name)(buffer.as_ptr()), (api.get_by_name)(sink.as_ptr()));
            if fb.is_null() || fs.is_null() {
                return Err(VideoError::Internal("FFmpeg has no buffer/buffersink filter".into()));
            }
            check((api.create_filter)(&mut self.input, fb, name_in.as_ptr(), args.as_ptr(), ptr::null_mut(), self.graph)).map_err(|e| err("source", e))?;
            check((api.create_filter)(&mut self.output, fs, name_out.as_ptr(), ptr::null(), ptr::null_mut(), self.graph)).map_err(|e| err("sink", e))?;
            let mut outputs = (api.inout_alloc)();
            let mut inputs = (api.inout_alloc)();
            if outputs.is_null() || inputs.is_null() {
                (api.inout_free)(&mut outputs);
                (api.inout_free)(&mut inputs);
                return Err(err("parse", ffmpeg_next::Error::from(NO_MEMORY)));
            }
            // The chain's unlabelled input is fed by "in", its output feeds "out".
            (*outputs).name = ffi::av_strdup(name_in.as_ptr());
            (*outputs).filter_ctx = self.input;
            (*outputs).pad_idx = 0;
            (*outputs).next = ptr::null_mut();
            (*inputs).name = ffi::av_strdup(name_out.as_ptr());
            (*inputs).filter_ctx = self.output;
            (*inputs).pad_idx = 0;
            (*inputs).next = ptr::null_mut();
            let parsed = (api.parse_ptr)(self.graph, chain_c.as_ptr(), &mut inputs, &mut outputs, ptr::null_mut());
            (api.inout_free)(&mut inputs);
            (api.inout_free)(&mut outputs);
            check(parsed).map_err(|e| err("parse", e))?;
            check((api.config)(self.graph, ptr::null_mut())).map_err(|e| err("configure", e))?;
        }
        Ok(())
    }

    /// Feeds one frame; the graph takes new references, `frame` is left as it was.
    pub fn push(&mut self, frame: &ffmpeg_next::frame::Video) -> Result<(), ffmpeg_next::Error> {
        // SAFETY: `self.input` is this graph's buffer source; `frame` is a valid frame that
        // av_buffersrc_write_frame only reads (it references the buffers).
        check(unsafe { (self.api.src_write_frame)(self.input, frame.as_ptr()) }).map(|_| ())
    }

    /// The next filtered frame.
    pub fn pull(&mut self, out: &mut ffmpeg_next::frame::Video) -> Result<(), ffmpeg_next::Error> {
        // SAFETY: `self.output` is this graph's buffer sink; `out` is a valid frame to fill.
        check(unsafe { (self.api.sink_get_frame)(self.output, out.as_mut_ptr()) }).map(|_| ())
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: frees the graph and every filter context in it; `graph` was allocated by
        // `graph_alloc` and is not used after this.
        unsafe { (self.api.graph_free)(&mut self.graph) };
    }
}
