//! End-to-end render jobs through `kiln run`: a multi-page document from real photos,
//! rectangles, text and a merged page of a PDF made here, checked with poppler: `pdfinfo`
//! (page count and sizes) and `pdftoppm` (each PDF page rasterised and compared with the
//! job's PNG of that page by PSNR). Bad inputs give their error codes.
//!
//! Thresholds. poppler's Cairo backend (`pdftocairo`) draws a page image 1:1, so it measures
//! the PDF itself: JPEG (photo) pages ≥ 33 dB against the PNG (measured 36 dB at q90), lossless
//! Flate pages ≥ 60 dB (measured: identical). poppler's Splash backend (`pdftoppm`) smooths the
//! edges between image samples even at 1:1 (flat areas match exactly; a sharp edge pixel moves
//! by up to ~100 levels), which caps it near 25 dB on these pages: ≥ 22 dB there. The merged
//! page rasterises identically to the source page (≥ 60 dB).

use kiln_tests::{data_dir, decode_rgb8, psnr, run_jobs_full, scratch_dir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const PHOTOS: &str = "mate-backgrounds/usr/share/backgrounds/mate/nature";

fn photo(name: &str) -> String {
    let p = data_dir().join(PHOTOS).join(name);
    assert!(p.exists(), "{} is missing (scripts/fetch-photos.sh)", p.display());
    format!("file://{}", p.display())
}

fn tool(name: &str) -> Command {
    let ok = Command::new(name).arg("-v").output().is_ok();
    assert!(ok, "{name} is missing: install poppler-utils (scripts/setup.sh)");
    Command::new(name)
}

/// A two-page PDF written by hand: page 2 has text in a standard font and a blue rectangle,
/// and inherits its MediaBox and Resources from the page tree.
fn source_pdf(path: &Path) {
    let content = b"q 0.1 0.3 0.9 rg 20 20 200 60 re f Q BT /F1 28 Tf 30 100 Td (Merged page) Tj ET";
    let objs = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 /MediaBox [0 0 300 200] /Resources << /Font << /F1 6 0 R >> >> >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /Contents 5 0 R >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{}\nendstream", content.len(), std::str::from_utf8(content).unwrap()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
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
    std::fs::write(path, out).unwrap();
}

/// Rasterises page `n` of `pdf` at exactly `w`×`h` pixels with pdftoppm (or another poppler
/// rasteriser taking the same options, e.g. pdftocairo); returns the PNG.
fn pdftoppm(pdf: &Path, n: u32, size: Option<(u32, u32)>, out_stem: &Path) -> PathBuf {
    rasterise("pdftoppm", pdf, n, size, out_stem)
}

fn rasterise(rasteriser: &str, pdf: &Path, n: u32, size: Option<(u32, u32)>, out_stem: &Path) -> PathBuf {
    let mut cmd = tool(rasteriser);
    cmd.args(["-png", "-singlefile", "-f", &n.to_string(), "-l", &n.to_string()]);
    if let Some((w, h)) = size {
        cmd.args(["-scale-to-x", &w.to_string(), "-scale-to-y", &h.to_string()]);
    }
    let st = cmd.arg(pdf).arg(out_stem).status().unwrap();
    assert!(st.success(), "{rasteriser} failed on page {n}");
    out_stem.with_extension("png")
}

/// `Page    N size: W x H pts` lines and the page count from pdfinfo.
fn pdfinfo(pdf: &Path, pages: u32) -> (u32, Vec<(f64, f64)>) {
    let out = tool("pdfinfo").args(["-f", "1", "-l", &pages.to_string()]).arg(pdf).output().unwrap();
    assert!(out.status.success(), "pdfinfo: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut count = 0;
    let mut sizes = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Pages:") {
            count = v.trim().parse().unwrap();
        }
        if line.starts_with("Page ") && line.contains(" size: ") {
            let dims = line.split(" size: ").nth(1).unwrap();
            let mut it = dims.split_whitespace();
            let w: f64 = it.next().unwrap().parse().unwrap();
            it.next();
            let h: f64 = it.next().unwrap().parse().unwrap();
            sizes.push((w, h));
        }
    }
    (count, sizes)
}

fn envelope(id: &str, dir: &Path, input: Value) -> String {
    json!({"id": id, "kind": "render", "input": input, "output": format!("file://{}/{id}/", dir.display())}).to_string()
}

#[test]
fn a_multi_page_document_matches_its_png_pages_under_poppler() {
    let dir = scratch_dir("render");
    let src = dir.join("source.pdf");
    source_pdf(&src);
    let src_uri = format!("file://{}", src.display());
    let pages = json!([
        {"width": 620, "height": 877, "dpi": 75, "background": "#fdfdf8", "layers": [
            {"type": "image", "source": photo("Dune.jpg"), "x": 40, "y": 60, "width": 540, "height": 360},
            {"type": "image", "source": photo("Garden.jpg"), "x": 300, "y": 420, "width": 260, "height": 180,
             "rotate": 12, "opacity": 0.85, "blend": "multiply"},
            {"type": "rect", "x": 30, "y": 640, "width": 560, "height": 200, "fill": "#ffcc0060",
             "stroke": "#203040", "stroke_width": 3},
            {"type": "text", "x": 50, "y": 660, "text": "kiln render: page one", "size": 36, "font": "serif"},
            {"type": "text", "x": 50, "y": 720, "text": "Multiply / screen, ﬁ ligature, Ünïcødé", "size": 22,
             "color": "#aa2222", "font": "sans"}
        ]},
        {"width": 400, "height": 300, "dpi": 96, "layers": [
            {"type": "rect", "x": 20, "y": 20, "width": 200, "height": 120, "fill": "#3366cc"},
            {"type": "rect", "x": 120, "y": 80, "width": 200, "height": 120, "fill": "#cc3333", "blend": "screen"},
            {"type": "text", "x": 30, "y": 220, "text": "vector only", "size": 40, "font": "mono-bold"}
        ]},
        {"pdf_page": {"source": src_uri, "page": 2}},
        {"width": 300, "height": 500, "dpi": 150, "background": "#202020", "layers": [
            {"type": "image", "source": photo("LadyBird.jpg"), "x": 0, "y": 0, "width": 300, "crop":
             {"x": 100, "y": 100, "width": 600, "height": 800}},
            {"type": "text", "x": 10, "y": 440, "text": "cropped", "size": 30, "color": "#ffffff", "blend": "screen"}
        ]}
    ]);
    let job = envelope("doc", &dir, json!({"pages": pages, "format": "pdf+png", "accel": "auto"}));
    let run = run_jobs_full(&job, &[]);
    let r = run.by_id("doc");
    assert_eq!(r["status"], "succeeded", "{r:#}\n{}", run.stderr);
    let names: Vec<_> = r["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["page-0001.png", "page-0002.png", "page-0004.png", "document.pdf"]);
    assert_eq!(r["pages"], 4);

    let out = dir.join("doc");
    let pdf = out.join("document.pdf");
    let (count, sizes) = pdfinfo(&pdf, 4);
    assert_eq!(count, 4);
    // Points = pixels × 72 / dpi; the merged page keeps its inherited 300×200 MediaBox.
    let want = [(595.2, 841.92), (300.0, 225.0), (300.0, 200.0), (144.0, 240.0)];
    for (i, (got, want)) in sizes.iter().zip(want).enumerate() {
        assert!((got.0 - want.0).abs() < 0.01 && (got.1 - want.1).abs() < 0.01, "page {}: {got:?} vs {want:?}", i + 1);
    }

    for (page, png, dims, min_db) in [(1, "page-0001.png", (620, 877), 33.0), (2, "page-0002.png", (400, 300), 60.0), (4, "page-0004.png", (300, 500), 33.0)] {
        let b = decode_rgb8(&out.join(png));
        assert_eq!((b.width, b.height), dims);
        let cairo = decode_rgb8(&rasterise("pdftocairo", &pdf, page, Some(dims), &dir.join(format!("cairo-{page}"))));
        let splash = decode_rgb8(&pdftoppm(&pdf, page, Some(dims), &dir.join(format!("ppm-{page}"))));
        let (db_cairo, db_splash) = (psnr(&cairo, &b), psnr(&splash, &b));
        eprintln!("page {page}: PDF vs PNG {db_cairo:.1} dB (pdftocairo), {db_splash:.1} dB (pdftoppm)");
        assert!(db_cairo >= min_db, "page {page}: pdftocairo {db_cairo:.1} dB < {min_db} dB");
        assert!(db_splash >= 22.0, "page {page}: pdftoppm {db_splash:.1} dB < 22 dB");
    }
    // The merged page survives intact: it rasterises as the source page does.
    let merged = decode_rgb8(&pdftoppm(&pdf, 3, None, &dir.join("merged")));
    let original = decode_rgb8(&pdftoppm(&src, 2, None, &dir.join("original")));
    let db = psnr(&merged, &original);
    assert!(db >= 60.0, "merged page differs from the source: {db:.1} dB");
    // …and is not blank: the blue rectangle is there.
    let blue = merged.data.chunks(3).filter(|p| p[2] > 180 && p[0] < 60).count();
    assert!(blue > 1000, "{blue} blue pixels on the merged page");
}

#[test]
fn bad_inputs_give_their_error_codes() {
    let dir = scratch_dir("render-bad");
    std::fs::write(dir.join("bad.pdf"), b"%PDF-1.4\n1 0 obj << /Type /Catalog").unwrap();
    let src = dir.join("source.pdf");
    source_pdf(&src);
    let f = |p: &Path| format!("file://{}", p.display());
    let jobs = [
        ("missing-image", json!({"pages": [{"width": 10, "height": 10, "layers": [
            {"type": "image", "source": f(&dir.join("nope.jpg"))}]}]})),
        ("missing-pdf", json!({"pages": [{"pdf_page": {"source": f(&dir.join("nope.pdf"))}}]})),
        ("malformed-pdf", json!({"pages": [{"pdf_page": {"source": f(&dir.join("bad.pdf"))}}]})),
        ("page-out-of-range", json!({"pages": [{"pdf_page": {"source": f(&src), "page": 9}}]})),
        ("too-many-pixels", json!({"pages": [{"width": 100000, "height": 100000}]})),
        ("bad-font", json!({"pages": [{"width": 10, "height": 10, "layers": [
            {"type": "text", "x": 0, "y": 0, "text": "x", "font": "wingdings"}]}]})),
    ];
    let jsonl: Vec<_> = jobs.iter().map(|(id, input)| envelope(id, &dir, input.clone())).collect();
    let run = run_jobs_full(&jsonl.join("\n"), &[]);
    let code = |id: &str| run.by_id(id)["error"]["code"].as_str().unwrap_or("none").to_owned();
    assert_eq!(code("missing-image"), "input_not_found");
    assert_eq!(code("missing-pdf"), "input_not_found");
    assert_eq!(code("malformed-pdf"), "corrupt_input");
    assert_eq!(code("page-out-of-range"), "invalid_spec");
    assert_eq!(code("too-many-pixels"), "invalid_spec");
    assert_eq!(code("bad-font"), "invalid_spec");
}
