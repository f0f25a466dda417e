//! The wgpu compute compositor: one device per process (created lazily on first use and
//! shared by every job), one compiled pipeline; per page, the canvas is a storage buffer
//! initialised to the background, each source tile is uploaded and blended by one dispatch
//! of `gpu.wgsl` (a compute pass per layer, so layers apply in order), then the canvas is
//! read back. On a CPU-only machine wgpu finds Mesa's lavapipe ("llvmpipe", Vulkan).
//!
//! A page larger than the device's storage-buffer limit is composited on the CPU reference
//! instead (same pixels), with a debug log.

use super::cpu::CpuCompositor;
use super::{premultiply, Backend, Compositor, PageLayers, RenderError};
use std::sync::{Arc, OnceLock};
use wgpu::util::DeviceExt;

const WORKGROUP: u32 = 16;

pub struct GpuCompositor {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    /// The adapter's name and backend, for logs and the benchmark ("llvmpipe (Vulkan)").
    pub adapter: String,
    max_binding: u64,
}

static SHARED: OnceLock<Result<Arc<GpuCompositor>, RenderError>> = OnceLock::new();

/// The process-wide GPU compositor, created on first call; the error when wgpu found no
/// adapter (then every later call gives the same error at no cost).
pub fn shared() -> Result<Arc<GpuCompositor>, RenderError> {
    SHARED.get_or_init(|| GpuCompositor::new().map(Arc::new)).clone()
}

/// Whether a wgpu adapter exists (creates the shared compositor).
pub fn available() -> bool {
    shared().is_ok()
}

impl GpuCompositor {
    fn new() -> Result<GpuCompositor, RenderError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let opts = wgpu::RequestAdapterOptions { power_preference: wgpu::PowerPreference::HighPerformance, ..Default::default() };
        let adapter = pollster::block_on(instance.request_adapter(&opts)).map_err(|e| RenderError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let name = format!("{} ({:?})", info.name, info.backend);
        let limits = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("kiln-render"),
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&desc)).map_err(|e| RenderError::NoAdapter(format!("{name}: {e}")))?;
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| tracing::error!(error = %e, "wgpu error outside a scope")));
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("kiln-render-blend"),
            source: wgpu::ShaderSource::Wgsl(include_str!("gpu.wgsl").into()),
        });
        let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("kiln-render-blend"),
            entries: &[
                storage(0, false),
                storage(1, true),
                wgpu::BindGroupLayoutEntry {
                    binding: 2,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
            ],
        });
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("kiln-render-blend"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("kiln-render-blend"),
            layout: Some(&pl),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let max_binding = (limits.max_storage_buffer_binding_size as u64).min(limits.max_buffer_size);
        tracing::info!(adapter = %name, max_binding, "wgpu render compositor ready");
        Ok(GpuCompositor { device, queue, pipeline, layout, adapter: name, max_binding })
    }

    fn run(&self, page: &PageLayers) -> Result<Vec<u32>, RenderError> {
        let n = page.width as usize * page.height as usize;
        let bytes = (n * 4) as u64;
        let canvas_init = vec![premultiply(page.background); n];
        let canvas = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("canvas"),
            contents: bytemuck::cast_slice(&canvas_init),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
        drop(canvas_init);
        let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("page") });
        for s in &page.sources {
            let Some((px, py, tx, ty, cw, ch)) = s.clip((page.width, page.height)) else { continue };
            let tile = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("tile"),
                contents: bytemuck::cast_slice(&s.pixels),
                usage: wgpu::BufferUsages::STORAGE,
            });
            let params: [u32; 12] =
                [page.width, px, py, s.width, tx, ty, cw, ch, s.opacity as u32, s.blend.code(), 0, 0];
            let uniform = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::cast_slice(&params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("layer"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: canvas.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: tile.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 2, resource: uniform.as_entire_binding() },
                ],
            });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("layer"), timestamp_writes: None });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(cw.div_ceil(WORKGROUP), ch.div_ceil(WORKGROUP), 1);
        }
        encoder.copy_buffer_to_buffer(&canvas, 0, &readback, 0, bytes);
        self.queue.submit([encoder.finish()]);

        let slice = readback.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| RenderError::Internal(format!("wgpu poll: {e}")))?;
        rx.recv()
            .map_err(|e| RenderError::Internal(format!("readback: {e}")))?
            .map_err(|e| RenderError::Internal(format!("readback map: {e}")))?;
        let view = slice.get_mapped_range().map_err(|e| RenderError::Internal(format!("readback range: {e}")))?;
        let out: Vec<u32> = view.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        drop(view);
        readback.unmap();
        Ok(out)
    }
}

impl Compositor for GpuCompositor {
    fn backend(&self) -> Backend {
        Backend::Gpu
    }

    fn composite(&self, page: &PageLayers) -> Result<Vec<u32>, RenderError> {
        let bytes = page.width as u64 * page.height as u64 * 4;
        let largest_tile = page.sources.iter().map(|s| s.pixels.len() as u64 * 4).max().unwrap_or(0);
        if bytes > self.max_binding || largest_tile > self.max_binding || page.width == 0 || page.height == 0 {
            tracing::debug!(bytes, largest_tile, max = self.max_binding, "page over the GPU's buffer limit; compositing on the CPU");
            return CpuCompositor.composite(page);
        }
        for s in &page.sources {
            if s.pixels.len() != s.width as usize * s.height as usize {
                return Err(RenderError::Internal(format!("{s:?} has {} pixels", s.pixels.len())));
            }
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let out = self.run(page);
        let oom_err = pollster::block_on(oom.pop());
        let val_err = pollster::block_on(scope.pop());
        if let Some(e) = oom_err.or(val_err) {
            return Err(RenderError::Internal(format!("wgpu: {e}")));
        }
        out
    }
}
