//! Unit tests of the infer job's pure parts: spec validation, preprocessing layout, YOLO
//! decoding and NMS, label parsing. (Sessions, batching across jobs and the cache against real
//! ONNX Runtime are tested end to end in tests/tests/infer.rs.)

use super::batcher::ItemOutput;
use super::config::{ChannelOrder, Layout, ModelConfig, PadAlign, Task};
use super::postprocess::{classify, detect, iou, nms, parse_names};
use super::preprocess::{self, Geometry};
use super::spec::InferSpec;
use crate::context::Limits;
use crate::error::ErrorCode;
use kiln_kernels::image::{Image, PixelKind};
use serde_json::json;

fn model(task: Task) -> ModelConfig {
    serde_json::from_value(json!({"name": "m", "uri": "file:///m.onnx", "task": task, "input_size": [4, 2]})).unwrap()
}

#[test]
fn config_defaults_and_validation() {
    let m = model(Task::Detect);
    assert_eq!((m.scale, m.std, m.max_batch, m.letterbox, m.pad_align), (255.0, [1.0; 3], 16, true, PadAlign::Center));
    m.validate().unwrap();
    let mut bad = m.clone();
    bad.max_batch = 0;
    assert!(bad.validate().unwrap_err().contains("max_batch"));
    assert_eq!(m.instances, None, "chosen from the cores unless configured");
    let mut bad = m.clone();
    bad.instances = Some(0);
    assert!(bad.validate().unwrap_err().contains("instances"));
    let mut bad = m.clone();
    bad.uri = "http://x/m.onnx".into();
    assert!(bad.validate().unwrap_err().contains("scheme"));
    let mut bad = m.clone();
    bad.input_size = None;
    assert!(bad.validate().is_err(), "detect needs an input size");
    let dup = super::config::validate_models(&[m.clone(), m]).unwrap_err();
    assert!(dup.message.contains("twice"));
    assert!(serde_json::from_value::<ModelConfig>(json!({"name": "m", "uri": "file:///m", "colour": 1})).is_err());
}

#[test]
fn cpu_sessions_follow_the_cores_unless_configured() {
    use super::config::cpu_sessions;
    // The measured bests: 2 cores → two single-threaded sessions; 16 → four of four.
    assert_eq!(cpu_sessions(2, None, 0), (2, 1));
    assert_eq!(cpu_sessions(16, None, 0), (4, 4));
    assert_eq!(cpu_sessions(1, None, 0), (1, 1));
    assert_eq!(cpu_sessions(8, None, 0), (3, 2));
    assert_eq!(cpu_sessions(64, None, 0), (4, 16));
    // Configured values win; the other one is derived.
    assert_eq!(cpu_sessions(2, Some(1), 0), (1, 2));
    assert_eq!(cpu_sessions(16, Some(2), 0), (2, 8));
    assert_eq!(cpu_sessions(2, None, 3), (2, 3));
    assert_eq!(cpu_sessions(4, Some(4), 2), (4, 2));
}

#[test]
fn specs_are_checked_against_the_registry() {
    let models = vec![model(Task::Detect)];
    let l = Limits::default();
    let parse = |v: serde_json::Value| InferSpec::parse(&v).and_then(|s| s.resolve(&models, &l));
    assert_eq!(parse(json!({"model": "nope", "images": ["file:///a.jpg"]})).unwrap_err().code, ErrorCode::InvalidSpec);
    assert!(parse(json!({"model": "m", "images": ["file:///a.jpg"]})).is_ok());
    assert!(parse(json!({"model": "m"})).is_err());
    assert!(parse(json!({"model": "m", "images": []})).is_err());
    assert!(parse(json!({"model": "m", "images": ["file:///a"], "tensors": []})).is_err());
    assert!(parse(json!({"model": "m", "tensors": [{"shape": [2, 2], "data": [1, 2, 3]}]})).is_err());
    assert!(parse(json!({"model": "m", "tensors": [{"shape": [0], "data": []}]})).is_err());
    assert!(parse(json!({"model": "m", "tensors": [{"shape": [3], "data": [1, 2, 3]}]})).is_ok());
    assert!(parse(json!({"model": "m", "images": ["file:///a"], "extra": 1})).is_err());
}

/// A 2×1 image: one red pixel, one blue.
fn two_pixels() -> Image {
    Image::new(2, 1, PixelKind::Rgb8, vec![255, 0, 0, 0, 0, 255]).unwrap()
}

#[test]
fn tensors_follow_layout_channel_order_and_normalisation() {
    let mut m = model(Task::Tensor);
    m.mean = [0.5, 0.0, 0.0];
    m.std = [0.5, 1.0, 1.0];
    let nchw = preprocess::tensor(&two_pixels(), &m);
    assert_eq!(nchw.shape, vec![3, 1, 2]);
    // R plane: (1 - 0.5) / 0.5 = 1, (0 - 0.5) / 0.5 = -1; G plane 0, 0; B plane 0, 1.
    assert_eq!(nchw.data, vec![1.0, -1.0, 0.0, 0.0, 0.0, 1.0]);
    m.layout = Layout::Nhwc;
    m.channel_order = ChannelOrder::Bgr;
    m.mean = [0.0; 3];
    m.std = [1.0; 3];
    let nhwc = preprocess::tensor(&two_pixels(), &m);
    assert_eq!(nhwc.shape, vec![1, 2, 3]);
    assert_eq!(nhwc.data, vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
}

#[test]
fn letterbox_geometry_maps_boxes_back_to_source_pixels() {
    // An 8×4 image letterboxed into 4×4, centred: scaled by 0.5, one row of padding above.
    let img = Image::filled(8, 4, PixelKind::Rgb8, [200, 0, 0, 255]).unwrap();
    let png = {
        let mut buf = std::io::Cursor::new(Vec::new());
        image_png(&img, &mut buf);
        buf.into_inner()
    };
    let mut m = model(Task::Detect);
    m.input_size = Some([4, 4]);
    let p = preprocess::image(&png, &m, 1 << 20).unwrap();
    assert_eq!(p.geometry, Geometry { source: (8, 4), scale: (0.5, 0.5), pad: (0.0, 1.0) });
    assert_eq!(p.item.shape, vec![3, 4, 4]);
    // Row 0 is padding (114), rows 1-2 the image, row 3 padding.
    let r = &p.item.data[..16];
    assert!((r[0] - 114.0 / 255.0).abs() < 1e-6 && (r[4] - 200.0 / 255.0).abs() < 0.02, "{r:?}");
    assert_eq!(p.geometry.to_source([0.0, 1.0, 4.0, 3.0]), [0.0, 0.0, 8.0, 4.0]);
    assert_eq!(p.geometry.to_source([-3.0, 0.0, 9.0, 9.0]), [0.0, 0.0, 8.0, 4.0], "clamped to the image");

    m.pad_align = PadAlign::TopLeft;
    let p = preprocess::image(&png, &m, 1 << 20).unwrap();
    assert_eq!(p.geometry.pad, (0.0, 0.0));
    assert_eq!(preprocess::image(&png[..png.len() / 2], &m, 1 << 20).unwrap_err().code, ErrorCode::CorruptInput);
    assert_eq!(preprocess::image(b"plain text", &m, 1 << 20).unwrap_err().code, ErrorCode::Unsupported);
    assert_eq!(preprocess::image(&png, &m, 10).unwrap_err().code, ErrorCode::InputTooLarge);
}

fn image_png(img: &Image, out: &mut std::io::Cursor<Vec<u8>>) {
    let bytes = kiln_kernels::image::encode(img, &kiln_kernels::image::EncodeOptions::new(kiln_kernels::image::OutputFormat::Png)).unwrap();
    out.get_mut().extend_from_slice(&bytes);
}

/// A YOLOv8 head `[4 + 2 classes, 3 anchors]`, channels first.
fn head(anchors: &[([f32; 4], [f32; 2])]) -> ItemOutput {
    let n = anchors.len();
    let mut data = vec![0f32; 6 * n];
    for (i, (b, s)) in anchors.iter().enumerate() {
        for c in 0..4 {
            data[c * n + i] = b[c];
        }
        data[4 * n + i] = s[0];
        data[5 * n + i] = s[1];
    }
    ItemOutput { name: "output0".into(), shape: vec![6, n as i64], data }
}

#[test]
fn yolo_heads_decode_with_threshold_and_per_class_nms() {
    let m = model(Task::Detect);
    let geo = Geometry { source: (200, 100), scale: (0.5, 0.5), pad: (0.0, 0.0) };
    // Real heads have far more anchors than channels; pad to 8 anchors of zero score.
    let mut anchors = vec![
        ([50.0, 20.0, 20.0, 10.0], [0.9, 0.1]), // kept: class 0
        ([51.0, 20.0, 20.0, 10.0], [0.8, 0.1]), // overlaps the first, same class: dropped
        ([51.0, 21.0, 20.0, 10.0], [0.1, 0.7]), // overlaps, other class: kept
        ([10.0, 10.0, 4.0, 4.0], [0.2, 0.1]),   // below the threshold
    ];
    anchors.resize(8, ([0.0; 4], [0.0, 0.0]));
    let out = head(&anchors);
    let labels = vec!["cat".to_string()];
    let d = detect(std::slice::from_ref(&out), &m, &labels, &geo).unwrap();
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!((d[0].label.as_str(), d[0].score), ("cat", 0.9));
    assert_eq!(d[0].bbox, [80.0, 30.0, 120.0, 50.0]);
    assert_eq!(d[1].label, "class_1");
    // The transposed layout [anchors, 4 + classes] gives the same answer (8 anchors > 6
    // channels, so the smaller dimension is the channels either way).
    let mut eight: Vec<([f32; 4], [f32; 2])> = vec![
        ([50.0, 20.0, 20.0, 10.0], [0.9, 0.1]),
        ([51.0, 20.0, 20.0, 10.0], [0.8, 0.1]),
        ([51.0, 21.0, 20.0, 10.0], [0.1, 0.7]),
    ];
    eight.resize(8, ([0.0; 4], [0.0, 0.0]));
    let first = head(&eight);
    let (ch, n) = (6usize, 8usize);
    let mut t = vec![0f32; ch * n];
    for c in 0..ch {
        for i in 0..n {
            t[i * ch + c] = first.data[c * n + i];
        }
    }
    let transposed = ItemOutput { name: "o".into(), shape: vec![8, 6], data: t };
    assert_eq!(detect(&[first], &m, &labels, &geo).unwrap(), d);
    assert_eq!(detect(&[transposed], &m, &labels, &geo).unwrap(), d);
    let bad = ItemOutput { name: "o".into(), shape: vec![2, 3, 4], data: vec![0.0; 24] };
    assert_eq!(detect(&[bad], &m, &labels, &geo).unwrap_err().code, ErrorCode::Internal);
}

#[test]
fn nms_keeps_at_most_max_and_iou_is_symmetric() {
    let a = [0.0, 0.0, 10.0, 10.0];
    let b = [5.0, 0.0, 15.0, 10.0];
    assert!((iou(&a, &b) - 50.0 / 150.0).abs() < 1e-6);
    assert_eq!(iou(&a, &b), iou(&b, &a));
    assert_eq!(iou(&a, &[20.0, 20.0, 30.0, 30.0]), 0.0);
    let cands: Vec<_> = (0..10).map(|i| (0, i as f32 / 10.0, [i as f32 * 20.0, 0.0, i as f32 * 20.0 + 10.0, 10.0])).collect();
    let kept = nms(cands, 0.5, 3);
    assert_eq!(kept.iter().map(|k| k.1).collect::<Vec<_>>(), vec![0.9, 0.8, 0.7]);
}

#[test]
fn classify_takes_top_k_with_optional_softmax() {
    let mut m = model(Task::Classify);
    m.top_k = 2;
    let out = vec![ItemOutput { name: "p".into(), shape: vec![3], data: vec![1.0, 3.0, 2.0] }];
    let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let t = classify(&out, &m, &labels).unwrap();
    assert_eq!((t[0].label.as_str(), t[1].label.as_str(), t.len()), ("b", "c", 2));
    m.softmax = true;
    let t = classify(&out, &m, &labels).unwrap();
    let e: f32 = [1.0f32, 3.0, 2.0].iter().map(|v| v.exp()).sum();
    assert!((t[0].score - 3f32.exp() / e).abs() < 1e-6);
}

#[test]
fn ultralytics_names_metadata_parses() {
    assert_eq!(parse_names("{0: 'FACE_FEMALE', 1: \"it's\", 2: 'X Y'}"), vec!["FACE_FEMALE", "it's", "X Y"]);
    assert!(parse_names("{1: 'a'}").is_empty(), "keys must be 0..n");
    assert!(parse_names("garbage").is_empty());
    assert!(parse_names("").is_empty());
}
