//! Render tests: spec validation, whole runs against an in-memory store (PNG and PDF
//! outputs, merged pages, error codes), and resume: a 200-page job interrupted by a failing
//! checkpoint and rerun renders only the missing pages and assembles a byte-identical PDF.

use super::*;
use crate::checkpoint::{Checkpointer, UnitRecord};
use crate::context::CancelSignal;
use crate::envelope::Event;
use crate::error::ErrorCode;
use async_trait::async_trait;
use bytes::Bytes;
use kiln_kernels::image::{self as img, EncodeOptions, Image, OutputFormat, PixelKind};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::testutil::{Harness, OUT};

#[derive(Default)]
struct MemCheckpoint {
    records: Mutex<BTreeMap<String, UnitRecord>>,
    fail_at: Option<usize>,
    calls: AtomicUsize,
}

#[async_trait]
impl Checkpointer for MemCheckpoint {
    fn restored(&self, key: &str) -> Option<UnitRecord> {
        self.records.lock().unwrap().get(key).cloned()
    }
    async fn record(&self, key: &str, unit: UnitRecord) -> Result<u64, JobError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        // A lost lease stays lost: every record from `fail_at` on fails.
        if self.fail_at.is_some_and(|f| n >= f) {
            return Err(JobError::internal("lease lost"));
        }
        let mut r = self.records.lock().unwrap();
        r.insert(key.to_owned(), unit);
        Ok(r.len() as u64)
    }
}

/// The render job run on the shared harness.
trait RenderHarness {
    fn run(&self, spec: serde_json::Value) -> Result<JobOutput, JobError>;
    fn run_with(&self, spec: &serde_json::Value, cp: Arc<MemCheckpoint>) -> Result<JobOutput, JobError>;
    fn output(&self, name: &str) -> Bytes;
}

impl RenderHarness for Harness {
    fn run(&self, spec: serde_json::Value) -> Result<JobOutput, JobError> {
        Render.prepare(&spec, &self.limits)?.run(&self.ctx(CancelSignal::new()))
    }
    fn run_with(&self, spec: &serde_json::Value, cp: Arc<MemCheckpoint>) -> Result<JobOutput, JobError> {
        Render.prepare(spec, &self.limits)?.run(&self.ctx(CancelSignal::new()).with_checkpoint(cp))
    }
    fn output(&self, name: &str) -> Bytes {
        self.store.object(&format!("{OUT}{name}")).map(|(data, _)| data).unwrap_or_else(|| panic!("{name} stored"))
    }
}

fn photo_jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut data = Vec::new();
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 90]);
        }
    }
    img::encode(&Image::new(w, h, PixelKind::Rgb8, data).unwrap(), &EncodeOptions::new(OutputFormat::Jpeg)).unwrap()
}

/// A hand-written two-page PDF whose pages inherit MediaBox and Resources from the page tree.
fn source_pdf() -> Vec<u8> {
    let content = b"q 0 0 1 rg 10 10 80 40 re f Q";
    let objs = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 /MediaBox [0 0 200 100] /Resources << /ProcSet [/PDF] >> >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /Contents 5 0 R >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 150] /Contents 5 0 R >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{}\nendstream", content.len(), std::str::from_utf8(content).unwrap()),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).as_bytes());
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objs.len() + 1).as_bytes());
    out
}

fn page(layers: serde_json::Value) -> serde_json::Value {
    json!({"width": 200, "height": 100, "dpi": 72, "background": "#ffffff", "layers": layers})
}

fn code_of(r: Result<JobOutput, JobError>) -> ErrorCode {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.code,
    }
}

fn media_boxes(pdf: &[u8]) -> Vec<Vec<f32>> {
    let doc = lopdf::Document::load_mem(pdf).expect("document.pdf parses");
    doc.get_pages()
        .values()
        .map(|id| {
            let p = doc.get_dictionary(*id).unwrap();
            p.get(b"MediaBox").unwrap().as_array().unwrap().iter().map(|o| o.as_float().unwrap()).collect()
        })
        .collect()
}

#[test]
fn specs_are_validated_with_clear_messages() {
    let ok = json!({"pages": [page(json!([
        {"type": "rect", "x": 1, "y": 2, "width": 3, "height": 4, "fill": "#ff000080"},
        {"type": "text", "x": 1, "y": 2, "text": "hi"},
        {"type": "image", "source": "file:///a.jpg", "width": 10, "rotate": 15, "blend": "multiply"}
    ])), {"pdf_page": {"source": "file:///a.pdf", "page": 2}}]});
    let r = RenderSpec::parse(&ok).unwrap().resolve(&Limits::default()).unwrap();
    assert!(r.pdf && !r.png);
    let Page::Drawn(d) = &r.pages[0] else { panic!() };
    assert_eq!(d.layers.len(), 3);
    assert_eq!(d.size_pt(), (200.0, 100.0));
    assert_eq!(r.pages[1], Page::Merge { source: "file:///a.pdf".into(), page: 2 });

    let limits = Limits { max_render_pages: 2, max_page_pixels: 30_000, max_layers_per_page: 2, ..Limits::default() };
    let rect = json!({"type": "rect", "x": 0, "y": 0, "width": 1, "height": 1, "fill": "#000"});
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (json!({"pages": []}), "at least one page"),
        (json!({"pages": [page(json!([])), page(json!([])), page(json!([]))]}), "at most 2"),
        (json!({"pages": [{"width": 1000, "height": 1000}]}), "at most 30000"),
        (json!({"pages": [page(json!([rect, rect, rect]))]}), "at most 2 are allowed per page"),
        (json!({"pages": [page(json!([]))], "format": "tiff"}), "format"),
        (json!({"pages": [{"pdf_page": {"source": "/a.pdf"}}], "format": "png"}), "needs PDF output"),
        (json!({"pages": [page(json!([{"type": "rect", "x": 0, "y": 0, "width": 1, "height": 1, "fill": "red"}]))]}), "not #rrggbb"),
        (json!({"pages": [page(json!([{"type": "circle"}]))]}), "unknown variant"),
        (json!({"pages": [page(json!([{"type": "text", "x": 0, "y": 0, "text": "a", "font": "comic"}]))]}), "unknown font"),
        (json!({"pages": [page(json!([{"type": "image", "source": "/a.jpg", "opacity": 2}]))]}), "opacity 2"),
        (json!({"pages": [page(json!([{"type": "image", "source": "/a.jpg", "zoom": 2}]))]}), "unknown field"),
        (json!({"pages": [page(json!([]))], "accel": "tpu"}), "unknown variant"),
        (json!({"pages": [{"width": 10, "height": 10, "dpi": 0}]}), "dpi 0"),
    ];
    for (spec, want) in cases {
        let e = RenderSpec::parse(&spec).and_then(|s| s.resolve(&limits)).err().unwrap_or_else(|| panic!("{spec} accepted"));
        assert_eq!(e.code, ErrorCode::InvalidSpec, "{spec}");
        assert!(e.message.contains(want), "{spec}: {:?} lacks {want:?}", e.message);
    }
}

#[test]
fn pages_render_to_pngs_and_one_pdf_with_merged_pages() {
    let h = Harness::new();
    h.store.insert("file:///in/photo.jpg", photo_jpeg(300, 200));
    h.store.insert("file:///in/src.pdf", source_pdf());
    let spec = json!({"format": "pdf+png", "accel": "cpu", "pages": [
        page(json!([
            {"type": "image", "source": "file:///in/photo.jpg", "x": 10, "y": 10, "width": 120, "height": 80},
            {"type": "rect", "x": 100, "y": 50, "width": 60, "height": 30, "fill": "#ff0000", "opacity": 0.5},
            {"type": "text", "x": 5, "y": 60, "text": "Hello", "size": 24, "color": "#000000"}
        ])),
        {"pdf_page": {"source": "file:///in/src.pdf", "page": 1}},
        {"width": 100, "height": 150, "dpi": 144, "background": "#00000000", "layers": [
            {"type": "rect", "x": 10, "y": 10, "width": 50, "height": 50, "fill": "#00ff00"}]},
        {"pdf_page": {"source": "file:///in/src.pdf", "page": 2}},
    ]});
    let out = h.run(spec).unwrap();
    let names: Vec<_> = out.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["page-0001.png", "page-0003.png", "document.pdf"]);
    assert_eq!(out.extra["pages_rendered"], 4);
    assert_eq!(out.extra["compositor"], "cpu");
    assert!(!out.resumed);

    let p1 = img::decode(&h.output("page-0001.png"), &Default::default()).unwrap().image;
    assert_eq!((p1.width, p1.height, p1.pixels), (200, 100, PixelKind::Rgb8));
    // The half-transparent red rect over white (outside the photo): (255, 127, 127).
    let px = p1.rgba_at(150, 75);
    assert!(px[0] == 255 && px[1].abs_diff(127) <= 1 && px[2].abs_diff(127) <= 1, "{px:?}");
    let p3 = img::decode(&h.output("page-0003.png"), &Default::default()).unwrap().image;
    assert_eq!((p3.width, p3.height, p3.pixels), (100, 150, PixelKind::Rgba8), "transparent background keeps alpha");

    let pdf = h.output("document.pdf");
    assert_eq!(media_boxes(&pdf), vec![vec![0.0, 0.0, 200.0, 100.0], vec![0.0, 0.0, 200.0, 100.0], vec![0.0, 0.0, 50.0, 75.0], vec![0.0, 0.0, 300.0, 150.0]]);
    // The merged pages carry the source's content stream, unchanged.
    let doc = lopdf::Document::load_mem(&pdf).unwrap();
    let merged = doc.get_pages()[&2];
    assert_eq!(doc.get_page_content(merged).trim_ascii_end(), b"q 0 0 1 rg 10 10 80 40 re f Q");
    assert!(doc.get_dictionary(merged).unwrap().get(b"Resources").is_ok(), "inherited resources made explicit");
    // Page 1's photo is a JPEG image XObject at its box's size (the source is larger); page 3
    // (vector only) has no image at all.
    let xobjects = |n: u32| {
        let id = doc.get_pages()[&n];
        let res = doc.get_dictionary(id).unwrap().get(b"Resources").unwrap().as_dict().unwrap().clone();
        res.get(b"XObject").ok().and_then(|x| x.as_dict().ok()).cloned().unwrap_or_default()
    };
    let im = xobjects(1).get(b"Im0").unwrap().as_reference().unwrap();
    let im = &doc.get_object(im).unwrap().as_stream().unwrap().dict;
    assert_eq!(im.get(b"Filter").unwrap().as_name().unwrap(), b"DCTDecode");
    assert_eq!((im.get(b"Width").unwrap().as_i64().unwrap(), im.get(b"Height").unwrap().as_i64().unwrap()), (120, 80));
    assert!(xobjects(3).is_empty());
    // Text is text: the content stream shows glyphs with the embedded subset font.
    let content = String::from_utf8_lossy(&doc.get_page_content(doc.get_pages()[&1])).into_owned();
    assert!(content.contains(" TJ") && content.contains(" re f"), "{content}");
    let fonts = doc.get_page_fonts(doc.get_pages()[&1]).unwrap();
    let font = fonts.values().next().unwrap();
    assert_eq!(font.get(b"Subtype").unwrap().as_name().unwrap(), b"Type0");
    let base = font.get(b"BaseFont").unwrap().as_name().unwrap();
    assert!(base.ends_with(b"+DejaVuSans") && base.len() == 7 + 10, "{}", String::from_utf8_lossy(base));
    assert!(font.get(b"ToUnicode").is_ok() && font.get(b"KilnFont").is_err());

    let events = h.events.0.lock().unwrap();
    let progress: Vec<_> = events.iter().filter_map(|e| match e {
        Event::Progress { done, stage, .. } => Some((*done, stage.clone())),
        _ => None,
    }).collect();
    assert_eq!(&progress[..4], &[(1, "page-0001".into()), (2, "page-0002".into()), (3, "page-0003".into()), (4, "page-0004".into())]);
    let outputs: Vec<_> = events.iter().filter_map(|e| match e {
        Event::Output { output, .. } => Some(output.name.clone()),
        _ => None,
    }).collect();
    assert_eq!(outputs, ["page-0001.png", "page-0003.png", "document.pdf"]);
}

#[test]
fn bad_inputs_get_their_error_codes() {
    let h = Harness::new();
    h.store.insert("file:///in/bad.pdf", b"%PDF-1.4\nthis is not a pdf".to_vec());
    h.store.insert("file:///in/src.pdf", source_pdf());
    h.store.insert("file:///in/bad.jpg", b"\xff\xd8\xff\xe0 truncated".to_vec());
    let image = |src: &str| json!({"pages": [page(json!([{"type": "image", "source": src}]))], "accel": "cpu"});
    let merge = |src: &str, n: u32| json!({"pages": [{"pdf_page": {"source": src, "page": n}}]});
    assert_eq!(code_of(h.run(image("file:///in/missing.jpg"))), ErrorCode::InputNotFound);
    assert_eq!(code_of(h.run(image("file:///in/bad.jpg"))), ErrorCode::CorruptInput);
    assert_eq!(code_of(h.run(merge("file:///in/missing.pdf", 1))), ErrorCode::InputNotFound);
    assert_eq!(code_of(h.run(merge("file:///in/bad.pdf", 1))), ErrorCode::CorruptInput);
    let e = h.run(merge("file:///in/src.pdf", 3)).err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidSpec);
    assert!(e.message.contains("the PDF has 2 pages"), "{}", e.message);
}

#[test]
fn gpu_accel_uses_wgpu_or_fails_as_unsupported() {
    let h = Harness::new();
    let spec = json!({"format": "png", "accel": "gpu", "pages": [page(json!([
        {"type": "rect", "x": 0, "y": 0, "width": 50, "height": 50, "fill": "#336699"},
        {"type": "text", "x": 5, "y": 5, "text": "gpu", "size": 30}
    ]))]});
    match h.run(spec.clone()) {
        Ok(out) => {
            assert_eq!(out.extra["compositor"], "gpu");
            let gpu_png = h.output("page-0001.png");
            let mut cpu_spec = spec;
            cpu_spec["accel"] = json!("cpu");
            h.run(cpu_spec).unwrap();
            assert_eq!(gpu_png, h.output("page-0001.png"), "identical pixels from both backends");
        }
        Err(e) => assert_eq!(e.code, ErrorCode::Unsupported, "{e}"),
    }
}

/// 200 small pages, each different, with images every tenth page.
fn long_spec() -> serde_json::Value {
    let pages: Vec<_> = (0..200)
        .map(|i| {
            let mut layers = vec![
                json!({"type": "rect", "x": i % 40, "y": 3, "width": 20, "height": 10, "fill": format!("#{:02x}3060", i)}),
                json!({"type": "text", "x": 2, "y": 14, "text": format!("p{i}"), "size": 12}),
            ];
            if i % 10 == 0 {
                layers.push(json!({"type": "image", "source": "file:///in/photo.jpg", "x": 30, "y": 5, "width": 30, "height": 20, "opacity": 0.7}));
            }
            json!({"width": 64, "height": 32, "dpi": 96, "layers": layers})
        })
        .collect();
    json!({"pages": pages, "format": "pdf+png", "accel": "auto"})
}

#[test]
fn an_interrupted_200_page_job_resumes_and_assembles_the_same_pdf() {
    let spec = long_spec();
    // Uninterrupted reference.
    let whole = Harness::new();
    whole.store.insert("file:///in/photo.jpg", photo_jpeg(120, 80));
    let out = whole.run_with(&spec, Arc::new(MemCheckpoint::default())).unwrap();
    assert_eq!(out.extra["pages_rendered"], 200);
    let reference = whole.output("document.pdf");
    assert_eq!(media_boxes(&reference).len(), 200);

    // Interrupted: the 121st record fails (the lease is lost), so 120 pages are recorded.
    let h = Harness::new();
    h.store.insert("file:///in/photo.jpg", photo_jpeg(120, 80));
    let first = Arc::new(MemCheckpoint { fail_at: Some(121), ..Default::default() });
    let e = h.run_with(&spec, first.clone()).expect_err("interrupted");
    assert_eq!(e.message, "lease lost");
    assert!(h.store.object(&format!("{OUT}document.pdf")).is_none());
    let records = first.records.lock().unwrap().clone();
    assert_eq!(records.len(), 120);
    // The photo (on every tenth page) is stored once beside the parts; the parts only name it.
    let blobs = h.store.uris_under(&format!("{OUT}.parts/image-"));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let part = h.output(".parts/page-0001.pdf");
    assert!(part.len() < 4096 && part.windows(9).any(|w| w == b"KilnImage"), "page 1's part names its image ({} bytes)", part.len());

    // Resumed by another attempt with the stored records: only the 80 missing pages render.
    let second = Arc::new(MemCheckpoint { records: Mutex::new(records), ..Default::default() });
    let out = h.run_with(&spec, second.clone()).unwrap();
    assert!(out.resumed);
    assert_eq!((out.extra["pages_rendered"].as_u64(), out.extra["pages_restored"].as_u64()), (Some(80), Some(120)));
    assert_eq!(second.calls.load(Ordering::SeqCst), 80);
    let resumed = h.output("document.pdf");
    assert!(resumed == reference, "resumed document.pdf differs from the uninterrupted one");
    assert_eq!(images_of(&resumed).len(), 1, "the photo written once");
    assert_eq!(out.outputs.len(), 201, "200 PNGs (restored ones included) and the PDF");
    for i in [0usize, 119, 120, 199] {
        let name = format!("page-{:04}.png", i + 1);
        assert_eq!(h.output(&name), whole.output(&name), "{name}");
    }
}

/// An image XObject: (object id, width, height, filter, data).
type PdfImage = (lopdf::ObjectId, i64, i64, Vec<u8>, Vec<u8>);

/// Every image XObject of a document.
fn images_of(pdf: &[u8]) -> Vec<PdfImage> {
    let doc = lopdf::Document::load_mem(pdf).unwrap();
    let mut out: Vec<_> = doc
        .objects
        .iter()
        .filter_map(|(id, o)| {
            let s = o.as_stream().ok()?;
            (s.dict.get(b"Subtype").ok()?.as_name().ok()? == b"Image").then(|| {
                let g = |k: &[u8]| s.dict.get(k).unwrap().as_i64().unwrap();
                (*id, g(b"Width"), g(b"Height"), s.dict.get(b"Filter").unwrap().as_name().unwrap().to_vec(), s.content.clone())
            })
        })
        .collect();
    out.sort_by_key(|i| i.0);
    out
}

#[test]
fn photos_are_stored_once_at_their_box_size_and_small_jpegs_pass_through() {
    let h = Harness::new();
    let big = photo_jpeg(400, 300);
    let small = photo_jpeg(40, 30);
    h.store.insert("file:///in/big.jpg", big);
    h.store.insert("file:///in/small.jpg", small.clone());
    let pages: Vec<_> = (0..5)
        .map(|i| {
            page(json!([
                {"type": "image", "source": "file:///in/big.jpg", "x": 0, "y": 0, "width": 100, "height": 75},
                {"type": "image", "source": "file:///in/small.jpg", "x": 110, "y": 10, "width": 80, "height": 60, "blend": "multiply"},
                {"type": "text", "x": 5, "y": 80, "text": format!("page {i}"), "size": 12}
            ]))
        })
        .collect();
    let out = h.run(json!({"pages": pages, "format": "pdf", "accel": "cpu"})).unwrap();
    assert!(out.extra.get("compositor").is_none(), "a pdf job composites nothing");
    let pdf = h.output("document.pdf");
    let images = images_of(&pdf);
    assert_eq!(images.len(), 2, "one object per photo for five pages: {:?}", images.iter().map(|i| (i.1, i.2)).collect::<Vec<_>>());
    let (_, w, hh, filter, _) = &images[0];
    assert_eq!((*w, *hh, filter.as_slice()), (100, 75, &b"DCTDecode"[..]), "resampled to the box");
    let (_, w, hh, filter, data) = &images[1];
    assert_eq!((*w, *hh, filter.as_slice()), (40, 30, &b"DCTDecode"[..]), "never upsampled");
    assert!(data[..] == small[..], "a JPEG that needs no change is passed through");
    // One font for the document, its glyphs from every page.
    let doc = lopdf::Document::load_mem(&pdf).unwrap();
    let fonts: std::collections::BTreeSet<_> = doc.get_pages().values().map(|p| doc.get_page_fonts(*p).unwrap().values().next().map(|f| f.get(b"BaseFont").unwrap().as_name().unwrap().to_vec())).collect();
    assert_eq!(fonts.len(), 1, "{fonts:?}");
}

#[test]
fn blend_modes_and_opacity_are_graphics_states_not_pixels() {
    let h = Harness::new();
    let spec = json!({"format": "pdf", "pages": [page(json!([
        {"type": "rect", "x": 10, "y": 10, "width": 50, "height": 40, "fill": "#ff000080", "blend": "screen"},
        {"type": "rect", "x": 30, "y": 20, "width": 50, "height": 40, "fill": "#00ff00", "stroke": "#000000", "stroke_width": 4, "opacity": 0.5, "blend": "multiply"},
        {"type": "text", "x": 5, "y": 60, "text": "ﬁne", "size": 20, "opacity": 0.25}
    ]))]});
    h.run(spec).unwrap();
    let doc = lopdf::Document::load_mem(&h.output("document.pdf")).unwrap();
    let page = doc.get_pages()[&1];
    let res = doc.get_dictionary(page).unwrap().get(b"Resources").unwrap().as_dict().unwrap();
    let gs = res.get(b"ExtGState").unwrap().as_dict().unwrap();
    let states: Vec<(f32, Vec<u8>)> = gs.iter().map(|(_, g)| {
        let g = g.as_dict().unwrap();
        (g.get(b"ca").unwrap().as_float().unwrap(), g.get(b"BM").unwrap().as_name().unwrap().to_vec())
    }).collect();
    assert!(states.contains(&(0.502, b"Screen".to_vec())), "{states:?}");
    assert!(states.contains(&(0.502, b"Multiply".to_vec())), "the fill+stroke group at half opacity: {states:?}");
    assert!(states.contains(&(0.251, b"Normal".to_vec())), "{states:?}");
    // The stroked, filled rect under opacity is one transparency group.
    let xo = res.get(b"XObject").unwrap().as_dict().unwrap();
    let fm = doc.get_object(xo.get(b"Fm0").unwrap().as_reference().unwrap()).unwrap().as_stream().unwrap();
    assert_eq!(fm.dict.get(b"Group").unwrap().as_dict().unwrap().get(b"S").unwrap().as_name().unwrap(), b"Transparency");
    assert!(xo.iter().all(|(k, _)| !k.starts_with(b"Im")), "no raster fallback");
}
