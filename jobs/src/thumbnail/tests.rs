//! Thumbnail tests: spec validation, and whole runs against an in-memory object store.

use super::*;
use crate::context::CancelSignal;
use crate::envelope::Event;
use crate::error::ErrorCode;
use crate::testutil::{Harness, OUT};
use kiln_kernels::image::{self as img, EncodeOptions, Image, OutputFormat, PixelKind};
use serde_json::json;

/// The thumbnail job run on the shared harness.
trait ThumbnailHarness {
    fn run(&self, spec: serde_json::Value) -> Result<JobOutput, JobError>;
    fn output_image(&self, name: &str) -> (img::ImageInfo, String);
}

impl ThumbnailHarness for Harness {
    /// Prepares and runs a spec from this (non-runtime) thread, as the worker's blocking pool does.
    fn run(&self, spec: serde_json::Value) -> Result<JobOutput, JobError> {
        let prepared = Thumbnail.prepare(&spec, &self.limits)?;
        prepared.run(&self.ctx(CancelSignal::new()))
    }

    fn output_image(&self, name: &str) -> (img::ImageInfo, String) {
        let (data, ct) = self.store.object(&format!("{OUT}{name}")).expect("output stored");
        (img::probe(&data, u64::MAX).expect("output decodes"), ct)
    }
}

fn photo(w: u32, h: u32) -> Image {
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, ((x ^ y) & 0xff) as u8]);
        }
    }
    Image::new(w, h, PixelKind::Rgb8, data).unwrap()
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    img::encode(&photo(w, h), &EncodeOptions::new(OutputFormat::Jpeg)).unwrap()
}

/// The JPEG with an EXIF APP1 segment saying orientation `v`.
fn with_orientation(jpeg: &[u8], v: u16) -> Vec<u8> {
    let mut tiff = b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    tiff.extend_from_slice(&v.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut body = b"Exif\0\0".to_vec();
    body.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn code_of(r: Result<JobOutput, JobError>) -> ErrorCode {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.code,
    }
}

// ---- spec validation ----

fn prepare(spec: serde_json::Value) -> Result<Box<dyn PreparedJob>, JobError> {
    Thumbnail.prepare(&spec, &Limits::default())
}

#[test]
fn a_valid_spec_gets_its_defaults() {
    let spec = json!({"source": "file:///in/a.jpg", "outputs": [
        {"name": "256.webp", "width": 256, "height": 256},
        {"name": "t/small.JPG", "width": 64, "fit": "cover", "quality": 60, "background": "#102030"},
        {"name": "raw", "height": 10, "format": "png", "lossless": true}
    ], "watermark": {"source": "/wm.png", "gravity": "north-west", "opacity": 0.5}});
    let r = ThumbnailSpec::parse(&spec).unwrap().resolve(&Limits::default()).unwrap();
    let o = &r.outputs;
    assert_eq!((o[0].format, o[0].fit, o[0].quality), (OutputFormat::Webp, img::Fit::Inside, 80));
    assert_eq!((o[1].format, o[1].fit, o[1].quality, o[1].height), (OutputFormat::Jpeg, img::Fit::Cover, 60, None));
    assert_eq!(o[1].background, Some([0x10, 0x20, 0x30, 255]));
    assert_eq!(o[1].flatten_color(), [0x10, 0x20, 0x30]);
    assert_eq!(o[2].format, OutputFormat::Png);
    assert_eq!(o[2].pad_color(), [0, 0, 0, 0]);
    let w = r.watermark.unwrap();
    assert_eq!((w.gravity, w.opacity), (img::Gravity::NorthWest, 0.5));
    assert!(prepare(spec).is_ok());
}

#[test]
fn bad_specs_are_refused_with_clear_messages() {
    let out = |o: serde_json::Value| json!({"source": "/in.jpg", "outputs": [o]});
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (json!({"source": "/in.jpg", "outputs": []}), "at least one output"),
        (json!({"outputs": [{"name": "a.jpg", "width": 1}]}), "source"),
        (json!({"source": "/in.jpg", "outputs": [{"name": "a.jpg", "width": 1}], "extra": 1}), "unknown field"),
        (out(json!({"name": "a.jpg", "width": 1, "colour": "red"})), "unknown field"),
        (out(json!({"name": "a.jpg"})), "width, a height"),
        (out(json!({"name": "a.jpg", "width": 0})), "width 0 is outside"),
        (out(json!({"name": "a.jpg", "height": 9000})), "height 9000 is outside 1..=8192"),
        (out(json!({"name": "a.jpg", "width": -5})), "invalid value"),
        (out(json!({"name": "a.gif", "width": 10})), "no format given"),
        (out(json!({"name": "a", "width": 10})), "no format given"),
        (out(json!({"name": "a.jpg", "width": 10, "format": "bmp"})), "unknown variant"),
        (out(json!({"name": "a.jpg", "width": 10, "fit": "stretch"})), "unknown variant"),
        (out(json!({"name": "a.jpg", "width": 10, "quality": 0})), "quality 0 is outside 1..=100"),
        (out(json!({"name": "a.jpg", "width": 10, "quality": 101})), "quality 101"),
        (out(json!({"name": "../a.jpg", "width": 10})), "not a relative file name"),
        (out(json!({"name": "/a.jpg", "width": 10})), "not a relative file name"),
        (out(json!({"name": "a.jpg", "width": 10, "background": "red"})), "background"),
        (json!({"source": "/in.jpg", "outputs": [{"name": "a.jpg", "width": 1}, {"name": "a.jpg", "width": 2}]}), "unique"),
        (json!({"source": "/in.jpg", "outputs": [{"name": "a.jpg", "width": 1}], "watermark": {"source": "/w.png", "opacity": 1.5}}), "opacity 1.5"),
        (json!({"source": "/in.jpg", "outputs": [{"name": "a.jpg", "width": 1}], "watermark": {"source": "/w.png", "gravity": "up"}}), "unknown variant"),
        (json!("not an object"), "thumbnail spec"),
    ];
    for (spec, want) in cases {
        let e = prepare(spec.clone()).err().unwrap_or_else(|| panic!("accepted: {spec}"));
        assert_eq!(e.code, ErrorCode::InvalidSpec, "{spec}: {e}");
        assert!(e.message.contains(want), "{spec}: message {:?} lacks {want:?}", e.message);
    }
    let many: Vec<_> = (0..17).map(|i| json!({"name": format!("{i}.jpg"), "width": 8})).collect();
    let e = prepare(json!({"source": "/in.jpg", "outputs": many})).err().unwrap();
    assert!(e.message.contains("at most 16"), "{}", e.message);
    let e = prepare(json!({"source": "ftp://x/in.jpg", "outputs": [{"name": "a.jpg", "width": 1}]})).err().unwrap();
    assert_eq!(e.code, ErrorCode::Unsupported);
    // http(s) sources pass the spec check; the worker's store decides whether they may be fetched.
    assert!(prepare(json!({"source": "https://x/in.jpg", "outputs": [{"name": "a.jpg", "width": 1}]})).is_ok());
}

// ---- whole runs ----

#[test]
fn one_decode_serves_every_output_with_the_right_sizes_and_types() {
    let h = Harness::new();
    h.store.insert("file:///in/photo.jpg", jpeg(1200, 800));
    let spec = json!({"source": "file:///in/photo.jpg", "outputs": [
        {"name": "256.webp", "width": 256, "height": 256},
        {"name": "sq.jpg", "width": 100, "height": 100, "fit": "cover"},
        {"name": "box.png", "width": 200, "height": 200, "fit": "contain"},
        {"name": "fill.avif", "width": 64, "height": 32, "fit": "fill", "quality": 50},
        {"name": "lossless.webp", "width": 90, "lossless": true},
        {"name": "big.jpg", "width": 2000, "height": 2000}
    ]});
    let out = h.run(spec).unwrap();
    let dims: Vec<_> = out.outputs.iter().map(|o| (o.name.as_str(), o.width.unwrap(), o.height.unwrap())).collect();
    assert_eq!(
        dims,
        vec![("256.webp", 256, 171), ("sq.jpg", 100, 100), ("box.png", 200, 200), ("fill.avif", 64, 32), ("lossless.webp", 90, 60), ("big.jpg", 1200, 800)]
    );
    for (name, fmt, w, h_) in [("256.webp", img::Format::Webp, 256, 171), ("sq.jpg", img::Format::Jpeg, 100, 100), ("box.png", img::Format::Png, 200, 200)] {
        let (info, ct) = h.output_image(name);
        assert_eq!((info.format, info.width, info.height), (fmt, w, h_), "{name}");
        assert_eq!(ct, OutputFormat::from_name(name).unwrap().content_type());
    }
    // contain pads a PNG with transparency above and below the picture.
    let (png, _) = h.store.object(&format!("{OUT}box.png")).unwrap();
    let d = img::decode(&png, &img::DecodeOptions::default()).unwrap().image;
    assert_eq!(d.rgba_at(100, 2)[3], 0);
    assert_eq!(d.rgba_at(100, 100)[3], 255);
    let (avif, ct) = h.store.object(&format!("{OUT}fill.avif")).unwrap();
    assert_eq!((&avif[4..12], ct.as_str()), (&b"ftypavif"[..], "image/avif"));
    assert_eq!(out.outputs[0].uri, format!("{OUT}256.webp"));

    let events = h.events.0.lock().unwrap();
    let progress: Vec<_> = events.iter().filter_map(|e| match e {
        Event::Progress { done, total, stage, .. } => Some((*done, *total, stage.clone())),
        _ => None,
    }).collect();
    assert_eq!(progress.len(), 6);
    assert_eq!(progress[5], (6, 6, "big.jpg".to_string()));
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Output { .. })).count(), 6);
}

#[test]
fn exif_rotation_is_applied_before_fitting() {
    let h = Harness::new();
    h.store.insert("file:///in/r.jpg", with_orientation(&jpeg(400, 200), 6));
    let out = h.run(json!({"source": "file:///in/r.jpg", "outputs": [{"name": "t.jpg", "width": 100, "height": 100}]})).unwrap();
    assert_eq!((out.outputs[0].width, out.outputs[0].height), (Some(50), Some(100)));
    let (info, _) = h.output_image("t.jpg");
    assert_eq!((info.width, info.height, info.orientation), (50, 100, img::Orientation::Normal));
}

#[test]
fn png_with_alpha_to_jpeg_with_a_watermark() {
    let h = Harness::new();
    let clear = Image::filled(300, 200, PixelKind::Rgba8, [0, 0, 0, 0]).unwrap();
    h.store.insert("file:///in/clear.png", img::encode(&clear, &EncodeOptions::new(OutputFormat::Png)).unwrap());
    let mark = Image::filled(40, 40, PixelKind::Rgba8, [255, 0, 0, 255]).unwrap();
    h.store.insert("file:///in/mark.png", img::encode(&mark, &EncodeOptions::new(OutputFormat::Png)).unwrap());
    let spec = json!({"source": "file:///in/clear.png", "outputs": [{"name": "w.jpg", "width": 150}],
        "watermark": {"source": "file:///in/mark.png", "gravity": "south-east", "opacity": 1.0, "margin": 0}});
    h.run(spec).unwrap();
    let (jpg, _) = h.store.object(&format!("{OUT}w.jpg")).unwrap();
    let d = img::decode(&jpg, &img::DecodeOptions::default()).unwrap().image;
    assert_eq!((d.width, d.height), (150, 100));
    let white = d.rgba_at(10, 10);
    assert!(white.iter().all(|&c| c > 245), "transparent flattened to white: {white:?}");
    let red = d.rgba_at(140, 90);
    assert!(red[0] > 200 && red[1] < 60, "watermark in the corner: {red:?}");
}

#[test]
fn bad_inputs_map_to_their_error_codes() {
    let mut h = Harness::new();
    let one = |src: &str| json!({"source": src, "outputs": [{"name": "a.jpg", "width": 64}]});
    let j = jpeg(320, 240);
    let inputs: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        ("empty", vec![], ErrorCode::CorruptInput),
        ("garbage", (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect(), ErrorCode::CorruptInput),
        ("truncated", j[..j.len() / 2].to_vec(), ErrorCode::CorruptInput),
        ("header-only", j[..40].to_vec(), ErrorCode::CorruptInput),
        ("text", b"hello, I am not a picture\n".to_vec(), ErrorCode::Unsupported),
        ("svg", b"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>".to_vec(), ErrorCode::Unsupported),
        ("heic", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic\0\0\0\0".to_vec(), ErrorCode::Unsupported),
        ("bomb", png_bomb(30000, 30000), ErrorCode::InputTooLarge),
    ];
    for (name, data, code) in inputs {
        let uri = format!("file:///in/{name}");
        h.store.insert(&uri, data);
        let e = h.run(one(&uri)).err().unwrap_or_else(|| panic!("{name} succeeded"));
        assert_eq!(e.code, code, "{name}: {e}");
    }
    assert_eq!(code_of(h.run(one("file:///in/missing.jpg"))), ErrorCode::InputNotFound);
    // The byte limit is the store's; the pixel limit is checked from the header.
    h.limits.max_pixels = 320 * 240 - 1;
    h.store.insert("file:///in/ok.jpg", j.clone());
    assert_eq!(code_of(h.run(one("file:///in/ok.jpg"))), ErrorCode::InputTooLarge);
    h.limits.max_pixels = 320 * 240;
    assert!(h.run(one("file:///in/ok.jpg")).is_ok());
    h.limits.max_input_bytes = 100;
    assert_eq!(code_of(h.run(one("file:///in/ok.jpg"))), ErrorCode::InputTooLarge);
}

#[test]
fn a_cancelled_job_stops_and_stores_nothing() {
    let h = Harness::new();
    h.store.insert("file:///in/a.jpg", jpeg(64, 64));
    let prepared = Thumbnail.prepare(&json!({"source": "file:///in/a.jpg", "outputs": [{"name": "a.jpg", "width": 8}]}), &h.limits).unwrap();
    let cancel = CancelSignal::new();
    cancel.cancel();
    let e = prepared.run(&h.ctx(cancel)).err().unwrap();
    assert_eq!(e.code, ErrorCode::Cancelled);
    assert!(h.store.object(&format!("{OUT}a.jpg")).is_none());
}

#[test]
fn warm_up_runs_every_codec() {
    Thumbnail.warm_up().unwrap();
}

/// A PNG whose header claims `w`×`h` pixels with almost no data behind it.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], body: &[u8]| {
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend_from_slice(body);
        out.extend_from_slice(&c);
        out.extend_from_slice(&crc32(&c).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    out
}

/// `accel`: `cpu` and `auto` (on a worker that resolved the job to the CPU) give the CPU
/// result; `gpu` where no GPU is scheduled (the harness has none) fails `unsupported` and
/// stores nothing; an unknown word is an invalid spec. The GPU path itself runs in
/// benches/gpu/run.sh.
#[test]
fn accel_gpu_without_a_gpu_is_unsupported_and_auto_falls_back_to_the_cpu() {
    let h = Harness::new();
    h.store.insert("file:///in/photo.jpg", jpeg(640, 480));
    let spec = |accel: &str, name: &str| json!({"source": "file:///in/photo.jpg", "accel": accel, "outputs": [{"name": name, "width": 100}]});
    let e = h.run(spec("gpu", "g.png")).unwrap_err();
    assert_eq!(e.code, ErrorCode::Unsupported, "{e:?}");
    assert!(e.message.contains("accel gpu"), "{}", e.message);
    assert!(h.store.object(&format!("{OUT}g.png")).is_none());
    h.run(spec("auto", "a.png")).unwrap();
    h.run(spec("cpu", "c.png")).unwrap();
    assert_eq!(h.store.object(&format!("{OUT}a.png")).unwrap().0, h.store.object(&format!("{OUT}c.png")).unwrap().0);
    assert_eq!(prepare(spec("gpu", "g.png")).unwrap().needs().accel, kiln_kernels::Accel::Gpu);
    let e = prepare(spec("tpu", "t.png")).err().expect("refused");
    assert!(e.message.contains("unknown variant"), "{}", e.message);
}
