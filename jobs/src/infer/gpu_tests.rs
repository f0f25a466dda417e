//! The device preprocessing's CPU reference (kiln_kernels::cuda::letterbox, resize, with this
//! model's [`preprocess::device_params`]) against the CPU preprocessing the infer job runs, on
//! real photos and odd-sized random images, for both layouts, channel orders and pad
//! alignments. The tensors agree to a mean under 0.25 pixel levels and within 2 levels for all
//! but 0.1% of elements (fast_image_resize's fixed-point, vertical-first u8 resize vs the
//! kernels' f32 one; the letterbox/normalise arithmetic itself is identical). On
//! a GPU host the same reference is checked against the device (kernels' cuda tests).

use super::config::{ModelConfig, Task};
use super::preprocess;
use kiln_kernels::cuda::letterbox;
use kiln_kernels::image::{self as img, EncodeOptions, Image, OutputFormat, PixelKind};
use serde_json::json;

fn model(size: [u32; 2], extra: serde_json::Value) -> ModelConfig {
    let mut v = json!({"name": "m", "uri": "file:///m.onnx", "task": Task::Detect, "input_size": size});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    serde_json::from_value(v).unwrap()
}

/// A smooth synthetic picture (no ringing past 0..255 to clamp).
fn smooth_png(w: u32, h: u32, seed: u64) -> Vec<u8> {
    let f = seed as f32 * 0.01 + 0.03;
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f32, y as f32);
            data.push((128.0 + 100.0 * (xf * f).sin() * (yf * 0.07).cos()) as u8);
            data.push((128.0 + 100.0 * (yf * f).sin()) as u8);
            data.push((128.0 + 100.0 * ((xf + yf) * 0.02).cos()) as u8);
        }
    }
    let im = Image::new(w, h, PixelKind::Rgb8, data).unwrap();
    img::encode(&im, &EncodeOptions::new(OutputFormat::Png)).unwrap()
}

fn check(data: &[u8], m: &ModelConfig, what: &str) {
    let cpu = preprocess::image(data, m, u64::MAX).unwrap();
    let src = preprocess::source(data, m, u64::MAX).unwrap();
    let [tw, th] = m.input_size.unwrap();
    let p = preprocess::device_params(m, (tw, th), src.pad);
    let gpu_ref = letterbox::reference_pipeline(&src.rgb, src.resized, &p).unwrap();
    assert_eq!(cpu.item.data.len(), gpu_ref.len(), "{what}");
    assert_eq!(cpu.geometry, src.geometry, "{what}");
    // Differences in pixel levels: one level is `a` = 1 / (scale × std) of the tensor.
    let level = m.std.iter().map(|s| 1.0 / (m.scale * s)).fold(0f32, f32::max);
    let levels: Vec<f32> = cpu.item.data.iter().zip(&gpu_ref).map(|(a, b)| (a - b).abs() / level).collect();
    let mean = levels.iter().sum::<f32>() / levels.len() as f32;
    let over = levels.iter().filter(|&&d| d > 2.0 + 1e-3).count();
    let max = levels.iter().cloned().fold(0f32, f32::max);
    assert!(mean <= 0.25 && over * 1000 <= levels.len(), "{what}: mean {mean:.3} levels, {over} of {} over 2, max {max:.1}", levels.len());
}

#[test]
fn device_preprocessing_reference_matches_the_cpu_tensor() {
    let variants = [
        json!({}),
        json!({"layout": "nhwc", "channel_order": "bgr"}),
        json!({"pad_align": "top_left", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}),
        json!({"letterbox": false}),
    ];
    let mut inputs: Vec<(String, Vec<u8>)> = [(1, 1), (3, 7), (641, 479), (97, 1)].iter().map(|&(w, h)| (format!("smooth {w}x{h}"), smooth_png(w, h, (w * 31 + h) as u64))).collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mate-backgrounds/usr/share/backgrounds/mate/nature");
    if let Some(p) = std::fs::read_dir(&dir).ok().and_then(|rd| rd.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "jpg"))) {
        inputs.push((p.display().to_string(), std::fs::read(&p).unwrap()));
    } else {
        eprintln!("no photo under {} (scripts/fetch-photos.sh): random images only", dir.display());
    }
    for v in &variants {
        for size in [[320, 320], [224, 160]] {
            let m = model(size, v.clone());
            for (name, data) in &inputs {
                check(data, &m, &format!("{name} {size:?} {v}"));
            }
        }
    }
}
