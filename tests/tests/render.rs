//! End-to-end render jobs through `kiln run`: a multi-page document from real photos,
//! rectangles, text and a merged page of a PDF made here, checked with poppler: `pdfinfo`
//! (page count and sizes), `pdftoppm` / `pdftocairo` (each PDF page rasterised and compared
//! with the job's PNG of that page by PSNR), `pdftotext` (every text layer comes back as
//! text), `pdffonts` (the fonts are embedded subsets) and `pdfimages` (photos are image
//! XObjects at the resolution their box needs, stored once, JPEGs passed through when they
//! need no change). Bad inputs give their error codes.
//!
//! Thresholds: a drawn page is vectors, so poppler draws the text, rectangles and images
//! itself; its raster of each page (at the page's pixel size) is compared with kiln's own PNG
//! of the page. Photo pages: ≥ 30 dB under both of poppler's rasterisers, Cairo
//! (`pdftocairo`) and Splash (`pdftoppm`) — measured 32.4 / 30.2 dB (page 1) and 35.5 / 30.1
//! (page 4). The vector page (rectangles identical, 40 px bold text) is 33.9 dB under Cairo
//! and 29.5 under Splash at its pixel size, below issue 20's 35: both rasterisers put every
//! glyph's origin on a whole device row (Cairo rounds it, Splash floors it; x in quarter
//! pixels) while kiln's PNG draws the glyph at its exact baseline (257.129 here). The glyph
//! shapes are the same: poppler's raster at 4× the page's pixels, box-filtered down to them,
//! is 40.9 dB (Cairo) / 37.8 (Splash) from kiln's PNG, and 46.4 / 43.6 at 8×. So the vector
//! page is held to ≥ 35 dB at 4× and to what the 1× rasters measure (≥ 33 Cairo, ≥ 28
//! Splash). The merged page rasterises identically to the source page (≥ 60 dB).

use kiln_tests::{data_dir, decode_rgb8, psnr, run_jobs_full, scratch_dir, Rgb8};
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

    for (page, png, dims) in [(1, "page-0001.png", (620, 877)), (2, "page-0002.png", (400, 300)), (4, "page-0004.png", (300, 500))] {
        let b = decode_rgb8(&out.join(png));
        assert_eq!((b.width, b.height), dims);
        for (rasteriser, min_1x) in [("pdftocairo", if page == 2 { 33.0 } else { 30.0 }), ("pdftoppm", if page == 2 { 28.0 } else { 30.0 })] {
            let stem = dir.join(format!("{rasteriser}-{page}"));
            let db = psnr(&decode_rgb8(&rasterise(rasteriser, &pdf, page, Some(dims), &stem)), &b);
            let big = decode_rgb8(&rasterise(rasteriser, &pdf, page, Some((dims.0 * 4, dims.1 * 4)), &dir.join(format!("{rasteriser}-{page}-4x"))));
            let db4 = psnr(&box_down(&big, 4), &b);
            eprintln!("page {page}: PDF vs PNG under {rasteriser}: {db:.1} dB at 1×, {db4:.1} dB at 4× box-filtered");
            assert!(db >= min_1x, "page {page}: {rasteriser} {db:.1} dB < {min_1x} dB");
            assert!(db4 >= 35.0, "page {page}: {rasteriser} at 4×: {db4:.1} dB < 35 dB");
        }
    }

    // Every text layer is text: pdftotext finds it on its page.
    let texts: [(u32, &[&str]); 3] = [
        (1, &["kiln render: page one", "Multiply / screen, ﬁ ligature, Ünïcødé"]),
        (2, &["vector only"]),
        (4, &["cropped"]),
    ];
    for (page, want) in texts {
        let got = pdftotext(&pdf, page);
        for w in want {
            assert!(squash(&got).contains(&squash(w)), "page {page}: {w:?} not in pdftotext's {got:?}");
        }
    }
    // The DejaVu fonts are embedded as subsets, once each, with a ToUnicode map.
    let fonts = pdffonts(&pdf);
    for name in ["DejaVuSerif", "DejaVuSans", "DejaVuSansMono-Bold"] {
        let lines: Vec<_> = fonts.iter().filter(|l| l.split_whitespace().next().is_some_and(|n| n.ends_with(&format!("+{name}")))).collect();
        assert_eq!(lines.len(), 1, "{name}: {fonts:#?}");
        let cols: Vec<_> = lines[0].split_whitespace().collect();
        assert_eq!(&cols[1..], &["CID", "TrueType", "Identity-H", "yes", "yes", "yes", cols[7], "0"], "{name} (emb, sub, uni): {}", lines[0]);
    }
    // Photos are images at the resolution their box needs (the page's dpi).
    let images = pdfimages(&pdf);
    let on = |page: u32| images.iter().filter(|i| i.page == page).collect::<Vec<_>>();
    let p1 = on(1);
    assert_eq!(p1.iter().map(|i| (i.width, i.height)).collect::<Vec<_>>(), [(540, 360), (260, 180)], "{images:#?}");
    assert!((p1[0].x_ppi - 75.0).abs() <= 1.0, "{:?}", p1[0]);
    assert_eq!(on(2).len(), 0, "a vector page has no image");
    assert_eq!(on(4).iter().map(|i| (i.width, i.height, i.x_ppi.round())).collect::<Vec<_>>(), [(300, 400, 150.0)]);
    // The merged page survives intact: it rasterises as the source page does.
    let merged = decode_rgb8(&pdftoppm(&pdf, 3, None, &dir.join("merged")));
    let original = decode_rgb8(&pdftoppm(&src, 2, None, &dir.join("original")));
    let db = psnr(&merged, &original);
    assert!(db >= 60.0, "merged page differs from the source: {db:.1} dB");
    // …and is not blank: the blue rectangle is there.
    let blue = merged.data.chunks(3).filter(|p| p[2] > 180 && p[0] < 60).count();
    assert!(blue > 1000, "{blue} blue pixels on the merged page");
}

/// `img` shrunk `k` times, each pixel the mean of its k×k block (rounded).
fn box_down(img: &Rgb8, k: u32) -> Rgb8 {
    let (w, h) = (img.width / k, img.height / k);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let mut sum = [0u32; 3];
            for dy in 0..k {
                for dx in 0..k {
                    let p = img.pixel(x * k + dx, y * k + dy);
                    for c in 0..3 {
                        sum[c] += p[c] as u32;
                    }
                }
            }
            let n = k * k;
            data.extend(sum.map(|s| ((s + n / 2) / n) as u8));
        }
    }
    Rgb8 { width: w, height: h, data }
}

/// `pdftotext` of one page.
fn pdftotext(pdf: &Path, page: u32) -> String {
    let out = tool("pdftotext").args(["-f", &page.to_string(), "-l", &page.to_string(), "-enc", "UTF-8"]).arg(pdf).arg("-").output().unwrap();
    assert!(out.status.success(), "pdftotext: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Text without whitespace, the ﬁ ligature spelt out (pdftotext may give either).
fn squash(s: &str) -> String {
    s.replace('ﬁ', "fi").split_whitespace().collect()
}

/// `pdffonts`' table rows.
fn pdffonts(pdf: &Path) -> Vec<String> {
    let out = tool("pdffonts").arg(pdf).output().unwrap();
    assert!(out.status.success(), "pdffonts: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().skip(2).map(str::to_owned).collect()
}

/// One row of `pdfimages -list`.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    page: u32,
    kind: String,
    width: u32,
    height: u32,
    enc: String,
    object: u32,
    x_ppi: f64,
}

fn pdfimages(pdf: &Path) -> Vec<Listed> {
    let out = tool("pdfimages").arg("-list").arg(pdf).output().unwrap();
    assert!(out.status.success(), "pdfimages: {}", String::from_utf8_lossy(&out.stderr));
    // page num type width height color comp bpc enc interp object ID x-ppi y-ppi size ratio
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(2)
        .map(|l| {
            let c: Vec<_> = l.split_whitespace().collect();
            Listed {
                page: c[0].parse().unwrap(),
                kind: c[2].to_owned(),
                width: c[3].parse().unwrap(),
                height: c[4].parse().unwrap(),
                enc: c[8].to_owned(),
                object: c[10].parse().unwrap(),
                x_ppi: c[12].parse().unwrap(),
            }
        })
        .filter(|i| i.kind == "image")
        .collect()
}

#[test]
fn a_photo_on_many_pages_is_stored_once_and_small_jpegs_pass_through() {
    let dir = scratch_dir("render-shared");
    let src = dir.join("source.pdf");
    source_pdf(&src);
    // A small JPEG (150x100) made by poppler from the source PDF's second page.
    let st = tool("pdftoppm").args(["-jpeg", "-singlefile", "-f", "2", "-l", "2", "-scale-to-x", "150", "-scale-to-y", "100"]).arg(&src).arg(dir.join("small")).status().unwrap();
    assert!(st.success());
    let small = dir.join("small.jpg");
    let small_uri = format!("file://{}", small.display());
    let pages: Vec<Value> = (0..6)
        .map(|i| {
            json!({"width": 400, "height": 300, "dpi": 72, "layers": [
                {"type": "image", "source": photo("Dune.jpg"), "x": 10, "y": 10, "width": 240, "height": 160},
                {"type": "image", "source": small_uri, "x": 100, "y": 180, "width": 300, "height": 200, "opacity": 0.9},
                {"type": "text", "x": 10, "y": 270, "text": format!("page {}", i + 1), "size": 20}
            ]})
        })
        .collect();
    let job = envelope("shared", &dir, json!({"pages": pages, "format": "pdf", "accel": "cpu"}));
    let run = run_jobs_full(&job, &[]);
    let r = run.by_id("shared");
    assert_eq!(r["status"], "succeeded", "{r:#}\n{}", run.stderr);
    let pdf = dir.join("shared/document.pdf");
    let images = pdfimages(&pdf);
    assert_eq!(images.len(), 12, "{images:#?}");
    let objects = |w: u32| images.iter().filter(|i| i.width == w).map(|i| i.object).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(objects(240).len(), 1, "the photo is one object on every page: {images:#?}");
    assert_eq!(objects(150).len(), 1, "{images:#?}");
    let passed = images.iter().find(|i| i.width == 150).unwrap();
    assert_eq!((passed.height, passed.enc.as_str()), (100, "jpeg"));
    // Passed through byte for byte: pdfimages -all writes the DCT stream as it is.
    let st = tool("pdfimages").args(["-all", "-f", "1", "-l", "1"]).arg(&pdf).arg(dir.join("x")).status().unwrap();
    assert!(st.success());
    let wanted = std::fs::read(&small).unwrap();
    let found = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).any(|e| {
        e.file_name().to_string_lossy().starts_with("x-") && std::fs::read(e.path()).is_ok_and(|b| b == wanted)
    });
    assert!(found, "the small JPEG is not in the PDF byte for byte");
    // Six pages with a photo each, yet smaller than six copies of it.
    let size = std::fs::metadata(&pdf).unwrap().len();
    assert!(size < 2 * 240 * 160 * 3 / 4, "{size} bytes");
    for i in 1..=6 {
        assert!(pdftotext(&pdf, i).contains(&format!("page {i}")));
    }
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
