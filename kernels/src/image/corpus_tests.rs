//! Checks against the generated image corpus (`scripts/make-corpus.sh` → `data/corpus/`):
//! orientation, ICC, every input format and the bad inputs, compared with vipsthumbnail's
//! references. Skipped (with a note) when the corpus has not been generated.

use super::*;
use std::path::{Path, PathBuf};

fn corpus() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/corpus");
    if dir.join("ref").is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: {} not generated (scripts/make-corpus.sh)", dir.display());
        None
    }
}

/// The thumbnail pipeline: probe, plan, shrink-on-load decode, orient, sRGB, resize.
fn thumb(data: &[u8], size: u32) -> Result<Image, ImageError> {
    let info = probe(data, 100_000_000)?;
    let src = info.oriented_dims();
    let p = plan(src, Some(size), Some(size), Fit::Inside);
    let d = decode(data, &DecodeOptions { max_pixels: 100_000_000, min_size: Some(p.min_source(src)) })?;
    let mut image = orient::apply(d.image, info.orientation)?;
    if let Some(t) = d.icc.as_deref().and_then(SrgbTransform::from_icc) {
        t.apply(&mut image);
    }
    let p = p.rescaled(src, (image.width, image.height));
    resize(&image, p.crop, p.resize)
}

fn load_ref(path: &Path) -> Image {
    let data = std::fs::read(path).unwrap();
    decode(&data, &DecodeOptions::default()).unwrap().image
}

/// Mean absolute difference over RGB (alpha-weighted pixels compared on white).
fn mean_diff(a: &Image, b: &Image) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height), "sizes differ");
    let a = flatten(a.clone(), [255; 3]);
    let b = flatten(b.clone(), [255; 3]);
    let sum: u64 = a.data.iter().zip(&b.data).map(|(x, y)| (*x as i32 - *y as i32).unsigned_abs() as u64).sum();
    sum as f64 / a.data.len() as f64
}

#[test]
fn corpus_orientation_icc_and_formats_match_vips() {
    let Some(dir) = corpus() else { return };
    let upright = load_ref(&dir.join("ref/upright_256.png"));
    for n in 1..=8 {
        let data = std::fs::read(dir.join(format!("orient/orient_{n}.jpg"))).unwrap();
        let t = thumb(&data, 256).unwrap();
        let d = mean_diff(&t, &upright);
        assert!(d < 4.0, "orient_{n}: mean diff {d:.2}");
    }
    let data = std::fs::read(dir.join("icc/adobergb.jpg")).unwrap();
    let t = thumb(&data, 256).unwrap();
    let good = mean_diff(&t, &load_ref(&dir.join("ref/icc_srgb_256.png")));
    let raw = mean_diff(&t, &load_ref(&dir.join("ref/icc_raw_256.png")));
    assert!(good < 3.0 && good < raw, "icc: {good:.2} vs unconverted {raw:.2}");
    for (file, reference) in [
        ("progressive.jpg", "formats_progressive_jpg_256.png"),
        ("gray.jpg", "formats_gray_jpg_256.png"),
        ("photo.webp", "formats_photo_webp_256.png"),
        ("photo.gif", "formats_photo_gif_256.png"),
        ("photo.tif", "formats_photo_tif_256.png"),
        ("photo16.png", "formats_photo16_png_256.png"),
        ("alpha.png", "formats_alpha_png_256.png"),
    ] {
        let data = std::fs::read(dir.join("formats").join(file)).unwrap();
        let t = thumb(&data, 256).unwrap_or_else(|e| panic!("{file}: {e}"));
        let d = mean_diff(&t, &load_ref(&dir.join("ref").join(reference)));
        assert!(d < 4.0, "{file}: mean diff {d:.2}");
    }
    // The same picture through vips' CMYK profile (embedded) comes back near the original; the
    // round trip through the CMYK gamut costs vipsthumbnail itself a mean diff of 20.5 here,
    // and we land within 5 of vipsthumbnail's own rendering of cmyk.jpg.
    let cmyk = thumb(&std::fs::read(dir.join("formats/cmyk.jpg")).unwrap(), 256).unwrap();
    let d = mean_diff(&cmyk, &load_ref(&dir.join("ref/formats_photo_tif_256.png")));
    assert!(d < 24.0, "cmyk.jpg: mean diff {d:.2}");
}

#[test]
fn corpus_bad_inputs_fail_with_the_right_kind() {
    let Some(dir) = corpus() else { return };
    let read = |f: &str| std::fs::read(dir.join("bad").join(f)).unwrap();
    let corrupt = |r: Result<Image, ImageError>| matches!(r, Err(ImageError::Corrupt(_)));
    assert!(corrupt(thumb(&read("truncated.jpg"), 256)));
    assert!(corrupt(thumb(&read("zero.jpg"), 256)));
    assert!(corrupt(thumb(&read("garbage.bin"), 256)));
    assert!(matches!(thumb(&read("text.jpg"), 256), Err(ImageError::Unsupported(_))));
    assert!(matches!(thumb(&read("bomb.png"), 256), Err(ImageError::TooManyPixels { .. })));
    assert!(matches!(thumb(&read("bomb.jpg"), 256), Err(ImageError::TooManyPixels { .. })));
}

#[test]
fn corpus_photos_match_vipsthumbnail() {
    let Some(dir) = corpus() else { return };
    let photos = dir.join("../mate-backgrounds/usr/share/backgrounds/mate");
    let mut checked = 0;
    let refs: Vec<_> = std::fs::read_dir(dir.join("ref/photos")).unwrap().flatten().collect();
    for entry in &refs {
        let name = entry.file_name().to_string_lossy().trim_end_matches("_256.png").to_string();
        let src = ["abstract", "nature", "desktop"]
            .iter()
            .flat_map(|d| ["jpg", "png"].map(|e| photos.join(d).join(format!("{name}.{e}"))))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name}: a vipsthumbnail reference without its photo under {}", photos.display()));
        let t = thumb(&std::fs::read(&src).unwrap(), 256).unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = mean_diff(&t, &load_ref(&entry.path()));
        assert!(d < 4.0, "{name}: mean diff {d:.2}");
        checked += 1;
    }
    eprintln!("{checked} photos compared with vipsthumbnail");
    // mate-backgrounds has 30 photos (scripts/make-corpus.sh makes one reference each).
    assert!(checked == refs.len() && checked >= 20, "compared {checked} of {} references", refs.len());
}

/// Timing against vipsthumbnail on the large photos: `cargo test --release -p kiln-kernels
/// perf_ -- --ignored --nocapture`. Needs a release build: in the dev profile the generic
/// resize code is instantiated in this crate, unoptimised.
#[test]
#[ignore]
fn perf_photos_vs_vipsthumbnail() {
    let Some(dir) = corpus() else { return };
    let photos = dir.join("../mate-backgrounds/usr/share/backgrounds/mate");
    for ext in ["jpg", "png"] {
        let mut files = Vec::new();
        for sub in ["abstract", "nature", "desktop"] {
            for e in std::fs::read_dir(photos.join(sub)).unwrap().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == ext) {
                    files.push(p);
                }
            }
        }
        let started = std::time::Instant::now();
        let mut bytes = 0;
        for f in &files {
            let data = std::fs::read(f).unwrap();
            let t0 = std::time::Instant::now();
            let t = thumb(&data, 256).unwrap();
            let t1 = t0.elapsed();
            bytes += encode(&t, &EncodeOptions::new(OutputFormat::Jpeg)).unwrap().len();
            eprintln!(
                "{:>40} {:>9} B thumb {:.1} ms, total {:.1} ms",
                f.file_name().unwrap().to_string_lossy(),
                data.len(),
                t1.as_secs_f64() * 1e3,
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
        let ours = started.elapsed();
        let out = std::env::temp_dir().join("kiln-perf-vips");
        std::fs::create_dir_all(&out).unwrap();
        let started = std::time::Instant::now();
        let status = std::process::Command::new("vipsthumbnail")
            .args(["--size", "256x256", "-o"])
            .arg(format!("{}/%s.jpg[Q=80,strip]", out.display()))
            .args(&files)
            .status();
        let vips = started.elapsed();
        eprintln!(
            "{} {ext}s: kiln pipeline {:.0} ms ({bytes} bytes out, one thread); vipsthumbnail {:.0} ms ({status:?})",
            files.len(),
            ours.as_secs_f64() * 1e3,
            vips.as_secs_f64() * 1e3
        );
    }
}

/// Every progressive photo of mate-backgrounds (the largest files of the set): a 1/8 decode
/// without the dropped AC scans gives exactly the pixels of a full 1/8 decode.
#[test]
fn progressive_photos_decode_the_same_without_their_ac_scans() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mate-backgrounds/usr/share/backgrounds/mate");
    let Ok(groups) = std::fs::read_dir(&dir) else {
        eprintln!("skipping: {} not fetched (scripts/fetch-photos.sh)", dir.display());
        return;
    };
    let mut checked = 0;
    for path in groups.flatten().flat_map(|g| std::fs::read_dir(g.path()).into_iter().flatten().flatten()).map(|e| e.path()) {
        if path.extension().and_then(|e| e.to_str()) != Some("jpg") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let Some(slim) = progressive::strip_for_eighth_scale(&data) else { continue };
        let h = jpeg::read_header(&data).unwrap();
        let eighth = turbojpeg::ScalingFactor::new(1, 8);
        let (a, b) = (jpeg::decode_pixels(&data, &h, eighth).unwrap().0, jpeg::decode_pixels(&slim, &h, eighth).unwrap().0);
        let max_diff = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0);
        assert_eq!(max_diff, 0, "{}: pixels differ", path.display());
        assert!(slim.len() * 2 < data.len(), "{}: {} of {} bytes kept", path.display(), slim.len(), data.len());
        checked += 1;
    }
    assert!(checked >= 5, "mate-backgrounds has 5 progressive JPEGs; checked {checked}");
}
