//! GPU throughput of the kernels against the device's measured copy bandwidth, for
//! benches/gpu/run.sh (`kiln_kernels-… cuda::bench --ignored --nocapture`). Ignored in CI, and
//! on a machine without a GPU it prints why it skipped. Prints Markdown rows for
//! benches/RESULTS.md.

use super::letterbox::Params;
use super::resize::Filter;
use super::{Gpu, GpuOptions};
use crate::image::fit::CropRect;
use crate::image::{Image, PixelKind};
use std::time::Instant;

fn noise(w: u32, h: u32, seed: u64) -> Image {
    let mut s = seed;
    let data = (0..w as usize * h as usize * 3)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect();
    Image::new(w, h, PixelKind::Rgb8, data).unwrap()
}

fn secs(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

#[test]
#[ignore]
fn gpu_throughput() {
    let g = match Gpu::open(&GpuOptions::default()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            return;
        }
    };
    println!("device: {} sm{}{}, warm-up: {} compiled, {} from the PTX cache", g.name, g.cc.0, g.cc.1, g.warmup.compiled, g.warmup.cached);
    let st = g.stream();
    // Copy bandwidth, pageable and pinned, 256 MiB.
    let n = 256usize << 20;
    let host = vec![7u8; n];
    let mut dev = st.alloc_zeros::<u8>(n).unwrap();
    st.memcpy_htod(&host, &mut dev).unwrap();
    st.synchronize().unwrap();
    let h2d = n as f64 / secs(|| {
        st.memcpy_htod(&host, &mut dev).unwrap();
        st.synchronize().unwrap();
    });
    let d2h = n as f64 / secs(|| drop(st.clone_dtoh(&dev).unwrap()));
    // SAFETY: a fresh pinned host buffer, written by the copy before it is read.
    let mut pinned = unsafe { g.ctx.alloc_pinned::<u8>(n) }.unwrap();
    let h2d_pinned = n as f64 / secs(|| {
        st.memcpy_htod(&pinned, &mut dev).unwrap();
        st.synchronize().unwrap();
    });
    let d2h_pinned = n as f64 / secs(|| {
        st.memcpy_dtoh(&dev, &mut pinned).unwrap();
        st.synchronize().unwrap();
    });
    println!("| copy | H2D pageable {:.1} GB/s | D2H pageable {:.1} GB/s | H2D pinned {:.1} GB/s | D2H pinned {:.1} GB/s |", h2d / 1e9, d2h / 1e9, h2d_pinned / 1e9, d2h_pinned / 1e9);

    // Resize, kernel only: a 4K RGB source already on the device → 256×144, 3 filters.
    let src = noise(3840, 2160, 1);
    let whole = CropRect { left: 0.0, top: 0.0, width: 3840.0, height: 2160.0 };
    let d = g.upload(&src).unwrap();
    for f in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos3] {
        for dst in [(256u32, 144u32), (1920, 1080)] {
            let _ = g.resize(&d, whole, dst, f).map(|o| g.recycle(o));
            d.stream().synchronize().unwrap();
            let reps = 50;
            let t = secs(|| {
                for _ in 0..reps {
                    let o = g.resize(&d, whole, dst, f).unwrap();
                    g.recycle(o);
                }
                d.stream().synchronize().unwrap();
            });
            let per = t / reps as f64;
            let bytes = src.data.len() as f64;
            println!(
                "| resize {f:?} 3840x2160→{}x{} | {:.2} ms | {:.0} images/s | source read {:.1} GB/s = {:.1}x H2D pinned |",
                dst.0,
                dst.1,
                per * 1e3,
                1.0 / per,
                bytes / per / 1e9,
                bytes / per / h2d_pinned
            );
        }
    }
    // A CPU reference point: kiln's CPU resize (one core) of the same image.
    let cpu = secs(|| drop(crate::image::resize(&src, whole, (256, 144)).unwrap()));
    println!("| resize Lanczos3 3840x2160→256x144 on one CPU core (fast_image_resize) | {:.2} ms |", cpu * 1e3);

    // End to end from host memory: 64 images 1920×1080 → 256×144 over the streams.
    let imgs: Vec<Image> = (0..8).map(|i| noise(1920, 1080, i + 2)).collect();
    let crop = CropRect { left: 0.0, top: 0.0, width: 1920.0, height: 1080.0 };
    let items: Vec<(&Image, CropRect, (u32, u32))> = (0..64).map(|i| (&imgs[i % 8], crop, (256, 144))).collect();
    let _ = g.resize_batch(&items[..4], Filter::Lanczos3).unwrap();
    let t = secs(|| drop(g.resize_batch(&items, Filter::Lanczos3).unwrap()));
    println!("| resize_batch 64 × 1920x1080 host→device→host | {:.1} ms | {:.0} images/s |", t * 1e3, 64.0 / t);

    // Inference preprocessing: 64 × 1920×1080 → 640×360 letterboxed to 640×640 NCHW f32.
    let p = Params { target: (640, 640), pad: (0, 140), pad_color: [114; 3], order: [0, 1, 2], a: [1.0 / 255.0; 3], b: [0.0; 3], nhwc: false };
    let batch: Vec<(&Image, (u32, u32))> = (0..64).map(|i| (&imgs[i % 8], (640, 360))).collect();
    let params = vec![p; 64];
    let _ = g.preprocess_batch(&batch[..2], &params[..2]).unwrap();
    let t = secs(|| drop(g.preprocess_batch(&batch, &params).unwrap()));
    println!("| preprocess_batch 64 × 1920x1080 → 640x640 NCHW f32, host→device→host | {:.1} ms | {:.0} images/s |", t * 1e3, 64.0 / t);

    // YUV: one 4K NV12 frame → RGB (host in, device out), then back.
    let k = super::color::coeffs(super::color::Matrix::Bt709, super::color::Range::Limited);
    let frame = super::color::reference_from_rgb(&src.data, 3840, 2160, 3, &k, super::color::Layout::Nv12);
    let rgb = g.yuv_to_rgb(&frame, &k).unwrap();
    rgb.stream().synchronize().unwrap();
    let t = secs(|| {
        for _ in 0..20 {
            let o = g.yuv_to_rgb(&frame, &k).unwrap();
            o.stream().synchronize().unwrap();
            g.recycle(o);
        }
    }) / 20.0;
    println!("| NV12→RGB 3840x2160 incl. upload | {:.2} ms | {:.0} frames/s |", t * 1e3, 1.0 / t);
    let t = secs(|| {
        for _ in 0..20 {
            drop(g.rgb_to_yuv(&rgb, &k, super::color::Layout::Nv12).unwrap());
        }
    }) / 20.0;
    println!("| RGB→NV12 3840x2160 incl. download | {:.2} ms | {:.0} frames/s |", t * 1e3, 1.0 / t);
    println!("device bytes pooled by kiln's kernels: {} MiB", g.device_bytes() >> 20);
}
