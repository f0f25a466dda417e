//! CPU-side tests of the CUDA kernels: NVRTC compiles every source (needs only libnvrtc), the
//! CPU references agree with kiln's CPU paths (fast_image_resize, compositing) on random
//! images, odd and 1-pixel sizes and real photos, and without CUDA everything is a clean error.
//! The device comparisons run only where a GPU opens; elsewhere they print why they skipped.

use super::color::{self, Layout, Matrix, Range};
use super::composite;
use super::letterbox::{self, Params};
use super::resize::{self, Filter};
use super::*;
use crate::image::fit::CropRect;
use crate::image::{self as img, DecodeOptions, Image, PixelKind};
use std::path::PathBuf;

/// Loads NVRTC from `KILN_CUDA_LIB_DIR` or the project's `.tools/cuda/lib` (scripts/fetch-tools.sh).
fn find_nvrtc() -> bool {
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/cuda/lib");
    if tools.is_dir() {
        libs::preload_dir(&tools);
    }
    libs::nvrtc_present()
}

/// A GPU, or the printed reason there is none.
fn gpu() -> Option<Gpu> {
    find_nvrtc();
    let dir = std::env::var_os("KILN_CUDA_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kiln-ptx-test-{}", std::process::id())));
    match Gpu::open(&GpuOptions { cache_dir: Some(dir), ..Default::default() }) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            None
        }
    }
}

/// Deterministic noise (xorshift).
fn noise(w: u32, h: u32, kind: PixelKind, seed: u64) -> Image {
    let mut s = seed.max(1);
    let data = (0..w as usize * h as usize * kind.channels())
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect();
    Image::new(w, h, kind, data).unwrap()
}

/// Noise in 64..=191: Lanczos ringing then stays inside 0..255, so neither resizer clamps an
/// intermediate and only their rounding differs.
fn mid_noise(w: u32, h: u32, kind: PixelKind, seed: u64) -> Image {
    let mut n = noise(w, h, kind, seed);
    n.data.iter_mut().for_each(|v| *v = 64 + (*v & 127));
    n
}

/// A smooth picture with smooth alpha (no edges).
fn smooth(w: u32, h: u32, kind: PixelKind) -> Image {
    let mut data = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let px = [(40 + x * 170 / w.max(1)) as u8, (40 + y * 170 / h.max(1)) as u8, 128, (128 + (x + y) * 100 / (w + h)) as u8];
            data.extend_from_slice(&px[..kind.channels()]);
        }
    }
    Image::new(w, h, kind, data).unwrap()
}

fn whole(i: &Image) -> CropRect {
    CropRect { left: 0.0, top: 0.0, width: i.width as f64, height: i.height as f64 }
}

/// Absolute differences of two images: max, mean and the 99.9th percentile. RGBA is compared
/// premultiplied (what both resizers filter).
#[derive(Debug, Clone, Copy)]
struct Diff {
    max: u8,
    mean: f64,
    p999: u8,
}

fn diff(a: &Image, b: &Image) -> Diff {
    assert_eq!((a.width, a.height, a.pixels), (b.width, b.height, b.pixels));
    let ch = a.channels();
    let mut hist = [0u64; 256];
    for (p, q) in a.data.chunks_exact(ch).zip(b.data.chunks_exact(ch)) {
        for c in 0..ch {
            let (x, y) = if ch == 4 && c < 3 {
                ((p[c] as u32 * p[3] as u32 / 255) as u8, (q[c] as u32 * q[3] as u32 / 255) as u8)
            } else {
                (p[c], q[c])
            };
            hist[x.abs_diff(y) as usize] += 1;
        }
    }
    let n: u64 = hist.iter().sum();
    let sum: u64 = hist.iter().enumerate().map(|(d, c)| d as u64 * c).sum();
    let max = hist.iter().rposition(|&c| c > 0).unwrap_or(0) as u8;
    let (mut acc, mut p999) = (0u64, 0u8);
    for (d, c) in hist.iter().enumerate() {
        acc += c;
        if acc * 1000 >= n * 999 {
            p999 = d as u8;
            break;
        }
    }
    Diff { max, mean: sum as f64 / n.max(1) as f64, p999 }
}

#[test]
fn nvrtc_compiles_every_source() {
    if !find_nvrtc() {
        eprintln!("skipped: libnvrtc not found (scripts/fetch-tools.sh puts it in .tools/cuda/lib; or set KILN_CUDA_LIB_DIR)");
        return;
    }
    for arch in [None, Some((8, 0)), Some((9, 0))] {
        for src in SOURCES.iter() {
            let ptx = compile(src, arch).unwrap_or_else(|e| panic!("{} for {arch:?}: {e}", src.name));
            for f in src.functions {
                assert!(ptx.contains(&format!(".entry {f}(")), "{}: no entry {f}", src.name);
            }
        }
    }
    // A syntax error is a clean error with NVRTC's log, not a panic.
    let bad = Source { name: "bad", text: "extern \"C\" __global__ void k(int* x) { x[0] = ; }", functions: &["k"] };
    match compile(&bad, None) {
        Err(CudaError::Compile { log, .. }) => assert!(log.contains("error"), "{log}"),
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
fn without_a_device_opening_is_a_clean_error() {
    if libs::driver_present() {
        eprintln!("skipped: a CUDA driver is present, the no-device path is not exercised here");
        return;
    }
    match Gpu::open(&GpuOptions::default()) {
        Err(CudaError::Unavailable(m)) => assert!(m.contains("libcuda"), "{m}"),
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("a GPU opened without a driver library"),
    }
}

#[test]
fn weight_tables_are_normalised_and_stay_inside_the_source() {
    for (n_in, n_out) in [(1, 1), (1, 7), (7, 1), (5, 3), (3000, 17), (17, 3000), (2, 1)] {
        for f in [Filter::Box, Filter::Bilinear, Filter::Bicubic, Filter::Lanczos3] {
            let t = resize::table(n_in, 0.0, n_in as f64, n_out, f);
            for i in 0..n_out as usize {
                let (s, l) = (t.starts[i], t.lens[i]);
                assert!(s >= 0 && l >= 1 && s + l <= n_in as i32, "{f:?} {n_in}->{n_out} [{i}] {s}+{l}");
                let sum: f32 = t.weights[i * t.win..][..l as usize].iter().sum();
                assert!((sum - 1.0).abs() < 1e-4, "{f:?} {n_in}->{n_out} [{i}] sums to {sum}");
            }
        }
    }
}

/// The thumbnailer's resize (fast_image_resize: fixed-point u8, vertical pass first into a
/// clamped u8 intermediate) and the kernel's reference (same weight tables, horizontal pass
/// first into an unclamped f32 intermediate) agree within 2 levels where nothing clamps
/// (mid-range noise, smooth images). On full-range white noise Lanczos ringing overshoots
/// 0..255 and the two clamp different intermediates: there only the mean is bounded, and the
/// max and 99.9th percentile are printed.
#[test]
fn reference_resize_matches_the_thumbnailer_on_random_odd_and_tiny_images() {
    let mut bad = Vec::new();
    let sizes = [((1, 1), (1, 1)), ((1, 1), (5, 3)), ((7, 1), (1, 1)), ((1, 9), (1, 2)), ((33, 17), (7, 5)), ((64, 48), (97, 71)), ((301, 199), (37, 23)), ((640, 480), (100, 75))];
    for (i, ((sw, sh), dst)) in sizes.into_iter().enumerate() {
        for kind in [PixelKind::Rgb8, PixelKind::Rgba8] {
            let both = |src: &Image| diff(&img::resize(src, whole(src), dst).unwrap(), &resize::reference(src, whole(src), dst, Filter::Lanczos3).unwrap());
            for (name, src) in [("mid-range noise", mid_noise(sw, sh, kind, 7 + i as u64)), ("smooth", smooth(sw, sh, kind))] {
                let d = both(&src);
                eprintln!("{name} {kind:?} {sw}x{sh}->{dst:?}: {d:?}");
                // Rounding: fixed-point (fast_image_resize, with RGBA premultiplied in u8)
                // against f32 rounded once. Measured: max 1 (RGB) / 2 (RGBA), mean up to 0.28
                // (RGB) / 0.46 (RGBA) on outputs of 16 pixels or more; on smaller ones the mean
                // is a handful of samples (RGBA 7x1->1x1: 3 channels of 4 one level off).
                let pixels = dst.0 * dst.1;
                if d.max > 2 || (pixels >= 16 && d.mean > 0.5) {
                    bad.push(format!("{name} {kind:?} {sw}x{sh}->{dst:?}: {d:?}"));
                }
            }
            let d = both(&noise(sw, sh, kind, 7 + i as u64));
            eprintln!("full-range noise {kind:?} {sw}x{sh}->{dst:?}: {d:?}");
            assert!(d.mean <= 4.0, "full-range noise {kind:?} {sw}x{sh}->{dst:?}: {d:?}");
        }
    }
    // A crop too.
    let src = mid_noise(300, 200, PixelKind::Rgb8, 3);
    let c = CropRect { left: 50.5, top: 20.0, width: 180.0, height: 150.25 };
    let d = diff(&img::resize(&src, c, (41, 33)).unwrap(), &resize::reference(&src, c, (41, 33), Filter::Lanczos3).unwrap());
    // Measured: max 2, mean 0.32.
    assert!(d.max <= 2 && d.mean <= 0.5, "crop: {d:?}");
    assert!(bad.is_empty(), "over max 2 / mean 0.5: {bad:#?}");
}

fn photos() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/mate-backgrounds/usr/share/backgrounds/mate");
    let mut v: Vec<PathBuf> = ["nature", "abstract"]
        .iter()
        .filter_map(|d| std::fs::read_dir(dir.join(d)).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    v.sort();
    v.truncate(3);
    v
}

#[test]
fn reference_resize_matches_the_thumbnailer_on_photos() {
    let ps = photos();
    if ps.is_empty() {
        eprintln!("skipped: data/mate-backgrounds not present (scripts/fetch-photos.sh)");
        return;
    }
    for p in ps {
        let data = std::fs::read(&p).unwrap();
        let d = img::decode(&data, &DecodeOptions { max_pixels: 100_000_000, min_size: Some((640, 400)) }).unwrap();
        let src = d.image;
        let dst = (256, (256.0 * src.height as f64 / src.width as f64).round() as u32);
        let cpu = img::resize(&src, whole(&src), dst).unwrap();
        let d = diff(&cpu, &resize::reference(&src, whole(&src), dst, Filter::Lanczos3).unwrap());
        eprintln!("{} Lanczos3 -> {dst:?}: {d:?}", p.display());
        // Measured on the three photos: mean 0.13-0.33, p99.9 1, max 2-5 (fixed-point vs
        // f32 rounding of the same weights).
        assert!(d.mean <= 0.5 && d.p999 <= 3, "{}: {d:?}", p.display());
        // Bilinear and bicubic: the same tables as fast_image_resize's filters of those names.
        for (f, ft) in [(Filter::Bilinear, fast_image_resize::FilterType::Bilinear), (Filter::Bicubic, fast_image_resize::FilterType::CatmullRom)] {
            let r = resize::reference(&src, whole(&src), (300, 200), f).unwrap();
            let fir = fir_resize(&src, (300, 200), ft);
            let d = diff(&fir, &r);
            eprintln!("{} {f:?} -> 300x200: {d:?}", p.display());
            assert!(d.mean <= 0.25 && d.p999 <= 3, "{} {f:?}: {d:?}", p.display());
        }
    }
}

fn fir_resize(src: &Image, dst: (u32, u32), ft: fast_image_resize::FilterType) -> Image {
    use fast_image_resize::{images::Image as Fi, images::ImageRef, PixelType, ResizeAlg, ResizeOptions, Resizer};
    let view = ImageRef::new(src.width, src.height, &src.data, PixelType::U8x3).unwrap();
    let mut out = Fi::new(dst.0, dst.1, PixelType::U8x3);
    Resizer::new().resize(&view, &mut out, &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(ft))).unwrap();
    Image::new(dst.0, dst.1, PixelKind::Rgb8, out.into_vec()).unwrap()
}

#[test]
fn reference_compositing_equals_the_cpu_watermark_and_flatten() {
    for (bk, mk, (bw, bh), (mw, mh)) in [
        (PixelKind::Rgb8, PixelKind::Rgba8, (64, 48), (13, 7)),
        (PixelKind::Rgba8, PixelKind::Rgba8, (33, 17), (33, 17)),
        (PixelKind::Rgba8, PixelKind::Rgb8, (5, 5), (1, 1)),
        (PixelKind::Rgb8, PixelKind::Rgb8, (1, 1), (1, 1)),
    ] {
        for opacity in [0.0, 0.37, 1.0] {
            let base = noise(bw, bh, bk, 11);
            let mark = noise(mw, mh, mk, 12);
            let mut cpu = base.clone();
            img::watermark(&mut cpu, &mark, img::Gravity::SouthEast, opacity, 0).unwrap();
            let at = img::Gravity::SouthEast.place((bw, bh), (mw, mh), 0);
            let mut r = base.clone();
            composite::reference_over(&mut r, &mark, at, composite::opacity_factor(opacity));
            assert_eq!(cpu, r, "{bk:?} {mk:?} {bw}x{bh} {mw}x{mh} {opacity}");
        }
    }
    let rgba = noise(31, 9, PixelKind::Rgba8, 5);
    assert_eq!(img::flatten(rgba.clone(), [10, 200, 30]).data, composite::reference_flatten(&rgba, [10, 200, 30]));
}

#[test]
fn colour_matrices_hit_the_standard_points_and_round_trip() {
    let f = |m, r, y: u8, u: u8, v: u8| {
        let k = color::coeffs(m, r);
        let frame = color::Yuv420 { width: 1, height: 1, layout: Layout::I420, y: vec![y], c: vec![u, v] };
        color::reference_to_rgb(&frame, &k, 3)
    };
    assert_eq!(f(Matrix::Bt709, Range::Limited, 16, 128, 128), vec![0, 0, 0]);
    assert_eq!(f(Matrix::Bt709, Range::Limited, 235, 128, 128), vec![255, 255, 255]);
    assert_eq!(f(Matrix::Bt601, Range::Full, 0, 128, 128), vec![0, 0, 0]);
    // JFIF: R = Y + 1.402 (Cr − 128) → 100 + 1.402 × 50 = 170.1.
    assert_eq!(f(Matrix::Bt601, Range::Full, 100, 128, 178)[0], 170);
    // BT.709 limited red (R'G'B' 255,0,0) is Y 63, Cb 102, Cr 240.
    let k = color::coeffs(Matrix::Bt709, Range::Limited);
    let red = color::reference_from_rgb(&[255, 0, 0], 1, 1, 3, &k, Layout::Nv12);
    assert_eq!((red.y[0], red.c[0], red.c[1]), (63, 102, 240));
    // Round trip on 2×2-flat colour blocks (chroma subsampling loses nothing): within 2 levels.
    for m in [Matrix::Bt601, Matrix::Bt709] {
        for r in [Range::Full, Range::Limited] {
            for layout in [Layout::Nv12, Layout::I420] {
                let (w, h) = (9u32, 7u32);
                let blocks = noise(w.div_ceil(2), h.div_ceil(2), PixelKind::Rgb8, 9);
                let mut rgb = Vec::new();
                for y in 0..h {
                    for x in 0..w {
                        rgb.extend_from_slice(&blocks.rgba_at(x / 2, y / 2)[..3]);
                    }
                }
                let k = color::coeffs(m, r);
                let yuv = color::reference_from_rgb(&rgb, w, h, 3, &k, layout);
                let back = color::reference_to_rgb(&yuv, &k, 3);
                let max = rgb.iter().zip(&back).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
                assert!(max <= 2, "{m:?} {r:?} {layout:?}: round trip off by {max}");
            }
        }
    }
}

#[test]
fn letterbox_reference_pads_places_and_normalises() {
    let im = noise(3, 2, PixelKind::Rgb8, 4);
    let p = Params { target: (5, 4), pad: (1, 1), pad_color: [114, 114, 114], order: [2, 1, 0], a: [1.0 / 255.0; 3], b: [0.0; 3], nhwc: false };
    let t = letterbox::reference(&im, &p);
    assert_eq!(t.len(), 60);
    let plane = 20;
    // Corner: pad colour; (1,1): the image's (0,0) in BGR.
    let a = p.a[0];
    assert_eq!(t[0], 114.0 * a);
    let px = im.rgba_at(0, 0);
    assert_eq!([t[6], t[plane + 6], t[2 * plane + 6]], [px[2] as f32 * a, px[1] as f32 * a, px[0] as f32 * a]);
    let nhwc = letterbox::reference(&im, &Params { nhwc: true, ..p });
    assert_eq!(&nhwc[18..21], &[t[6], t[plane + 6], t[2 * plane + 6]]);
}

/// On a GPU host: every kernel against its CPU reference (benches/gpu/run.sh runs this).
#[test]
fn gpu_kernels_agree_with_their_references() {
    let Some(g) = gpu() else { return };
    eprintln!("GPU {} sm{}{}: warm-up compiled {} cached {}", g.name, g.cc.0, g.cc.1, g.warmup.compiled, g.warmup.cached);
    let mut cases: Vec<Image> = [(1, 1), (7, 1), (1, 9), (33, 17), (640, 480), (1999, 1001)]
        .iter()
        .flat_map(|&(w, h)| [noise(w, h, PixelKind::Rgb8, w as u64), noise(w, h, PixelKind::Rgba8, h as u64)])
        .collect();
    for p in photos() {
        let d = img::decode(&std::fs::read(&p).unwrap(), &DecodeOptions::default()).unwrap();
        cases.push(d.image);
    }
    for src in &cases {
        for f in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos3] {
            for dst in [(1, 1), (5, 3), (256, 171), (src.width * 2 + 1, src.height + 3)] {
                let r = resize::reference(src, whole(src), dst, f).unwrap();
                let d = g.upload(src).unwrap();
                let out = g.resize(&d, whole(src), dst, f).unwrap();
                let got = g.download(&out).unwrap();
                let dd = diff(&r, &got);
                assert!(dd.max <= 1 && dd.mean <= 0.01, "{f:?} {}x{}->{dst:?}: {dd:?}", src.width, src.height);
                g.recycle(d);
                g.recycle(out);
            }
        }
        // Colour both ways.
        if src.pixels == PixelKind::Rgb8 {
            for m in [Matrix::Bt601, Matrix::Bt709] {
                for r in [Range::Full, Range::Limited] {
                    for layout in [Layout::Nv12, Layout::I420] {
                        let k = color::coeffs(m, r);
                        let want = color::reference_from_rgb(&src.data, src.width, src.height, 3, &k, layout);
                        let d = g.upload(src).unwrap();
                        let got = g.rgb_to_yuv(&d, &k, layout).unwrap();
                        assert_eq!(want, got, "rgb_to_yuv {m:?} {r:?} {layout:?} {}x{}", src.width, src.height);
                        let back = g.download(&g.yuv_to_rgb(&want, &k).unwrap()).unwrap();
                        assert_eq!(back.data, color::reference_to_rgb(&want, &k, 3), "yuv_to_rgb {m:?} {r:?} {layout:?}");
                    }
                }
            }
        }
    }
    // Compositing: exact.
    let base = noise(301, 203, PixelKind::Rgba8, 1);
    let mark = noise(41, 29, PixelKind::Rgba8, 2);
    let mut want = base.clone();
    composite::reference_over(&mut want, &mark, (280, 190), 200);
    let mut db = g.upload(&base).unwrap();
    g.over(&mut db, &g.upload(&mark).unwrap(), (280, 190), 200).unwrap();
    assert_eq!(g.download(&db).unwrap(), want);
    let flat = g.download(&g.flatten(&db, [1, 2, 3]).unwrap()).unwrap();
    assert_eq!(flat.data, composite::reference_flatten(&want, [1, 2, 3]));
    // Letterbox batch: exact against the reference pipeline.
    let p = Params { target: (320, 320), pad: (0, 40), pad_color: [114; 3], order: [0, 1, 2], a: [1.0 / 255.0; 3], b: [0.0; 3], nhwc: false };
    let a = noise(640, 400, PixelKind::Rgb8, 3);
    let b = noise(97, 61, PixelKind::Rgb8, 4);
    let got = g.preprocess_batch(&[(&a, (320, 200)), (&b, (320, 201))], &[p, Params { pad: (0, 59), ..p }]).unwrap();
    let mut want = letterbox::reference_pipeline(&a, (320, 200), &p).unwrap();
    want.extend(letterbox::reference_pipeline(&b, (320, 201), &Params { pad: (0, 59), ..p }).unwrap());
    let max = want.iter().zip(&got).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(max <= 1.0 / 255.0 + 1e-6, "letterbox batch off by {max}");
    // nvJPEG where the library is: same pixels as the CPU decoder within JPEG IDCT tolerance.
    match nvjpeg::Nvjpeg::open(&g) {
        Ok(mut nj) => {
            let jpeg = crate::image::testutil::jpeg_bytes(333, 217, 90);
            let cpu = img::decode(&jpeg, &DecodeOptions::default()).unwrap().image;
            let got = g.download(&nj.decode(&g, &jpeg).unwrap()).unwrap();
            let d = diff(&cpu, &got);
            eprintln!("nvJPEG (hardware: {}) vs libjpeg-turbo: {d:?}", nj.hardware);
            assert!(d.mean < 1.0, "nvJPEG: {d:?}");
        }
        Err(e) => eprintln!("nvJPEG skipped: {e}"),
    }
}
