//! Shared helpers of the end-to-end tests.
//!
//! - where things are: [`workspace_root`], [`kiln_bin`], [`data_dir`];
//! - processes: [`proc`] (kill-on-drop guard, `kiln serve` on a free port, readiness);
//! - kiln as a Lambda function under cargo-lambda's emulator: [`lambda`]; a Kafka broker:
//!   [`broker`]; results counted per job id (duplicates fail): [`tally`];
//! - the image corpus (real photos + generated cases), built once per process: [`ensure_corpus`];
//! - driving `kiln run -`: [`run_jobs`], [`run_jobs_full`];
//! - comparing pixels: [`decode_rgb8`], [`psnr`], [`psnr_aligned`], [`image_magic`].

pub mod broker;
pub mod hostile;
pub mod lambda;
pub mod moto;
pub mod proc;
pub mod tally;

use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = here.parent().expect("tests/ has a parent");
    root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
}

/// The `kiln` binary under test: `$KILN_BIN`, else `target/debug/kiln` in the workspace.
pub fn kiln_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_BIN") {
        let p = PathBuf::from(p);
        assert!(p.exists(), "KILN_BIN={} does not exist", p.display());
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { workspace_root().join(t) })
        .unwrap_or_else(|| workspace_root().join("target"));
    let p = target.join("debug").join("kiln");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first (or point KILN_BIN at a kiln binary)",
        p.display()
    );
    p
}

/// `data/` in the workspace (gitignored): photos, corpus, scratch.
pub fn data_dir() -> PathBuf {
    workspace_root().join("data")
}

/// The image corpus: real photos (Debian's mate-backgrounds) and the generated cases of
/// `scripts/make-corpus.sh` (see that script for what each file is).
#[derive(Debug)]
pub struct Corpus {
    /// `data/corpus/`
    pub root: PathBuf,
    /// `data/mate-backgrounds/usr/share/backgrounds/mate/`
    pub photos_dir: PathBuf,
    /// Every photo (JPEG and PNG), sorted.
    pub photos: Vec<PathBuf>,
}

impl Corpus {
    /// A file of the generated corpus, e.g. `corpus.path("orient/orient_6.jpg")`.
    pub fn path(&self, rel: &str) -> PathBuf {
        let p = self.root.join(rel);
        assert!(p.exists(), "corpus file {} is missing (scripts/make-corpus.sh)", p.display());
        p
    }

    /// The photo whose file name is `name` (e.g. "Dune.jpg").
    pub fn photo(&self, name: &str) -> PathBuf {
        self.photos
            .iter()
            .find(|p| p.file_name().is_some_and(|f| f == name))
            .unwrap_or_else(|| panic!("no photo named {name} in {}", self.photos_dir.display()))
            .clone()
    }

    /// vipsthumbnail's `--size 256x256` rendering of a photo (PNG).
    pub fn photo_ref_256(&self, name: &str) -> PathBuf {
        let stem = Path::new(name).file_stem().unwrap().to_string_lossy().into_owned();
        self.path(&format!("ref/photos/{stem}_256.png"))
    }

    pub fn jpeg_photos(&self) -> Vec<PathBuf> {
        self.photos.iter().filter(|p| has_ext(p, &["jpg", "jpeg"])).cloned().collect()
    }

    pub fn png_photos(&self) -> Vec<PathBuf> {
        self.photos.iter().filter(|p| has_ext(p, &["png"])).cloned().collect()
    }
}

fn has_ext(p: &Path, exts: &[&str]) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Fetches the photos and builds the corpus (both idempotent scripts) once per process.
pub fn ensure_corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let root = workspace_root();
        for script in ["scripts/fetch-photos.sh", "scripts/make-corpus.sh"] {
            let out = Command::new("bash")
                .arg(root.join(script))
                .current_dir(&root)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
            assert!(
                out.status.success(),
                "{script} failed ({}); run `make fixtures` (needs scripts/setup.sh's packages)\n--- stdout\n{}\n--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let photos_dir = data_dir().join("mate-backgrounds/usr/share/backgrounds/mate");
        let mut photos = Vec::new();
        collect_photos(&photos_dir, &mut photos);
        photos.sort();
        assert!(!photos.is_empty(), "no photos under {}", photos_dir.display());
        Corpus { root: data_dir().join("corpus"), photos_dir, photos }
    })
}

fn collect_photos(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect_photos(&p, out);
        } else if has_ext(&p, &["jpg", "jpeg", "png"]) {
            out.push(p);
        }
    }
}

/// A fresh, empty directory under `target/kiln-tests/` (kept after the test, for inspection).
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = workspace_root().join("target/kiln-tests").join(format!("{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What one `kiln run -` produced.
#[derive(Debug)]
pub struct RunOutput {
    /// One parsed result per stdout line, in completion order.
    pub results: Vec<Value>,
    /// The exit code (None when killed by a signal).
    pub code: Option<i32>,
    pub stderr: String,
    /// The store it ran against (`KILN_STORE_URL`).
    pub store: PathBuf,
}

impl RunOutput {
    /// The result of job `id` (panics with all results when absent).
    pub fn by_id(&self, id: &str) -> &Value {
        by_id(&self.results, id)
    }
}

/// The result whose `"id"` is `id` (panics with all results when absent).
pub fn by_id<'a>(results: &'a [Value], id: &str) -> &'a Value {
    results.iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("no result for {id}: {results:#?}"))
}

/// Runs `kiln run -` in the workspace root with `jsonl` on stdin and returns its results.
/// See [`run_jobs_full`].
pub fn run_jobs(jsonl: &str, env: &[(&str, &str)]) -> Vec<Value> {
    run_jobs_full(jsonl, env).results
}

/// Runs `kiln run -` in the workspace root (so relative paths in envelopes resolve against
/// it) with `jsonl` on stdin. Unless `env` sets them: a fresh `KILN_STORE_URL` under
/// `target/kiln-tests/`, `KILN_LOG=warn`; `KILN_CONFIG` is removed. Every stdout line must be
/// one JSON result. Panics after 10 minutes.
pub fn run_jobs_full(jsonl: &str, env: &[(&str, &str)]) -> RunOutput {
    let has = |k: &str| env.iter().any(|(n, _)| *n == k);
    let mut cmd = Command::new(kiln_bin());
    cmd.args(["run", "-"])
        .current_dir(workspace_root())
        .env_remove("KILN_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let store = if has("KILN_STORE_URL") {
        let url = env.iter().find(|(n, _)| *n == "KILN_STORE_URL").unwrap().1;
        PathBuf::from(url.strip_prefix("file://").unwrap_or(url))
    } else {
        let s = scratch_dir("store");
        cmd.env("KILN_STORE_URL", format!("file://{}/", s.display()));
        s
    };
    if !has("KILN_LOG") {
        cmd.env("KILN_LOG", "warn");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", kiln_bin().display()));
    let mut stdin = child.stdin.take().unwrap();
    let input = jsonl.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
        let _ = stdin.write_all(b"\n");
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kiln run did not finish in 10 minutes; stderr:\n{}", err_reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    writer.join().unwrap();
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let results = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("kiln run printed a line that is not JSON ({e}): {l}\n--- stderr\n{stderr}")
            })
        })
        .collect();
    RunOutput { results, code: status.code(), stderr, store }
}

/// The local path of a `file://` URI (or a plain path).
pub fn uri_to_path(uri: &str) -> PathBuf {
    PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri))
}

/// An 8-bit RGB image, rows top to bottom, 3 bytes a pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb8 {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Rgb8 {
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// The top-left `w`×`h` part.
    pub fn crop(&self, w: u32, h: u32) -> Rgb8 {
        assert!(w <= self.width && h <= self.height);
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            let i = (y * self.width * 3) as usize;
            data.extend_from_slice(&self.data[i..i + (w * 3) as usize]);
        }
        Rgb8 { width: w, height: h, data }
    }

    /// Mirrored left to right.
    pub fn flip_horizontal(&self) -> Rgb8 {
        let mut data = Vec::with_capacity(self.data.len());
        for y in 0..self.height {
            for x in (0..self.width).rev() {
                data.extend_from_slice(&self.pixel(x, y));
            }
        }
        Rgb8 { width: self.width, height: self.height, data }
    }
}

/// Decodes any image the `image` crate reads (PNG, JPEG, WebP, GIF, TIFF) to RGB8.
/// Alpha is composited over `background` (so images with alpha compare as they look on it).
pub fn decode_rgb8_over(path: &Path, background: [u8; 3]) -> Rgb8 {
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .decode()
        .unwrap_or_else(|e| panic!("cannot decode {}: {e}", path.display()));
    let rgba = img.to_rgba8();
    let (width, height) = rgba.dimensions();
    let mut data = Vec::with_capacity((width * height * 3) as usize);
    for p in rgba.pixels() {
        let a = p[3] as u32;
        for c in 0..3 {
            let v = (p[c] as u32 * a + background[c] as u32 * (255 - a) + 127) / 255;
            data.push(v as u8);
        }
    }
    Rgb8 { width, height, data }
}

/// [`decode_rgb8_over`] on white.
pub fn decode_rgb8(path: &Path) -> Rgb8 {
    decode_rgb8_over(path, [255, 255, 255])
}

/// Peak signal-to-noise ratio in dB over the R, G and B samples (8-bit peak 255);
/// `f64::INFINITY` for identical images. Both must have the same dimensions.
pub fn psnr(a: &Rgb8, b: &Rgb8) -> f64 {
    assert_eq!(
        (a.width, a.height),
        (b.width, b.height),
        "psnr needs equal dimensions ({}x{} vs {}x{})",
        a.width,
        a.height,
        b.width,
        b.height
    );
    assert_eq!(a.data.len(), b.data.len());
    assert!(!a.data.is_empty(), "psnr of empty images");
    let sse: f64 = a.data.iter().zip(&b.data).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    if sse == 0.0 {
        return f64::INFINITY;
    }
    let mse = sse / a.data.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// [`psnr`] of two renderings whose sizes may differ by rounding: dimensions must match within
/// `tolerance` pixels; both are cropped (top-left) to the common size first.
pub fn psnr_aligned(a: &Rgb8, b: &Rgb8, tolerance: u32) -> f64 {
    assert!(
        a.width.abs_diff(b.width) <= tolerance && a.height.abs_diff(b.height) <= tolerance,
        "dimensions differ by more than {tolerance}px: {}x{} vs {}x{}",
        a.width,
        a.height,
        b.width,
        b.height
    );
    let (w, h) = (a.width.min(b.width), a.height.min(b.height));
    psnr(&a.crop(w, h), &b.crop(w, h))
}

/// The image format the bytes start with: "jpeg", "png", "webp", "gif", "tiff", "avif".
pub fn image_magic(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpeg")
    } else if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some("webp")
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some("gif")
    } else if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") {
        Some("tiff")
    } else if b.len() >= 12 && &b[4..8] == b"ftyp" && (&b[8..12] == b"avif" || &b[8..12] == b"avis") {
        Some("avif")
    } else {
        None
    }
}

/// The width and height in an AVIF (HEIF) file's first `ispe` property box.
pub fn avif_dimensions(b: &[u8]) -> Option<(u32, u32)> {
    // ispe: size(4) "ispe" version/flags(4) width(4) height(4)
    let i = b.windows(4).position(|w| w == b"ispe")?;
    let f = b.get(i + 8..i + 16)?;
    Some((u32::from_be_bytes(f[0..4].try_into().ok()?), u32::from_be_bytes(f[4..8].try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, v: u8) -> Rgb8 {
        Rgb8 { width: w, height: h, data: vec![v; (w * h * 3) as usize] }
    }

    #[test]
    fn psnr_of_identical_images_is_infinite() {
        let a = solid(4, 3, 7);
        assert_eq!(psnr(&a, &a.clone()), f64::INFINITY);
    }

    #[test]
    fn psnr_matches_the_definition() {
        // Every sample off by 1: MSE 1 → 20·log10(255) = 48.13 dB.
        let (a, b) = (solid(5, 5, 100), solid(5, 5, 101));
        assert!((psnr(&a, &b) - 48.1308).abs() < 1e-3, "{}", psnr(&a, &b));
        // One sample of 12 off by 255: MSE 255²/12 → 10·log10(12) = 10.79 dB.
        let a = solid(2, 2, 0);
        let mut b = a.clone();
        b.data[5] = 255;
        assert!((psnr(&a, &b) - 10.0 * 12f64.log10()).abs() < 1e-9);
        // Symmetric.
        assert_eq!(psnr(&a, &b), psnr(&b, &a));
    }

    #[test]
    fn psnr_drops_with_larger_errors() {
        let a = solid(8, 8, 128);
        let p1 = psnr(&a, &solid(8, 8, 130));
        let p2 = psnr(&a, &solid(8, 8, 140));
        assert!(p1 > p2 && p2 > 0.0);
    }

    #[test]
    #[should_panic(expected = "equal dimensions")]
    fn psnr_refuses_different_sizes() {
        psnr(&solid(4, 4, 0), &solid(4, 5, 0));
    }

    #[test]
    fn psnr_aligned_crops_to_the_common_size() {
        let a = solid(10, 6, 50);
        let b = solid(10, 7, 50);
        assert_eq!(psnr_aligned(&a, &b, 1), f64::INFINITY);
    }

    #[test]
    #[should_panic(expected = "more than 1px")]
    fn psnr_aligned_refuses_larger_differences() {
        psnr_aligned(&solid(10, 6, 0), &solid(10, 8, 0), 1);
    }

    #[test]
    fn crop_and_flip() {
        let img = Rgb8 { width: 2, height: 2, data: vec![1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4] };
        assert_eq!(img.crop(1, 2).data, vec![1, 1, 1, 3, 3, 3]);
        assert_eq!(img.flip_horizontal().pixel(0, 0), [2, 2, 2]);
    }

    #[test]
    fn magic_bytes() {
        assert_eq!(image_magic(b"\xFF\xD8\xFF\xE0...."), Some("jpeg"));
        assert_eq!(image_magic(b"\x89PNG\r\n\x1a\n...."), Some("png"));
        assert_eq!(image_magic(b"RIFF\0\0\0\0WEBPVP8 "), Some("webp"));
        assert_eq!(image_magic(b"\0\0\0\x1cftypavif\0\0"), Some("avif"));
        assert_eq!(image_magic(b"hello"), None);
    }

    #[test]
    fn avif_ispe() {
        let mut b = b"....ftypavif".to_vec();
        b.extend_from_slice(&[0, 0, 0, 20]);
        b.extend_from_slice(b"ispe");
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 160]);
        assert_eq!(avif_dimensions(&b), Some((256, 160)));
    }

    #[test]
    fn decode_composites_alpha() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        let img = image::RgbaImage::from_raw(1, 1, vec![255, 0, 0, 0]).unwrap();
        img.save(&p).unwrap();
        assert_eq!(decode_rgb8_over(&p, [0, 0, 255]).pixel(0, 0), [0, 0, 255]);
        assert_eq!(decode_rgb8(&p).pixel(0, 0), [255, 255, 255]);
    }
}
