//! Compositor tests: the wgpu backend against the CPU reference on every test page
//! (tolerance: at most 1 per channel; the integer arithmetic is identical, so 0 is expected),
//! rectangles' analytic coverage, image rotation, and text landing where it should.

use super::*;
use crate::image::{Image, PixelKind};

fn photo(w: u32, h: u32, alpha: bool) -> Image {
    let kind = if alpha { PixelKind::Rgba8 } else { PixelKind::Rgb8 };
    let mut data = Vec::new();
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, ((x ^ y) & 0xff) as u8]);
            if alpha {
                data.push(((x + y) * 255 / (w + h)) as u8);
            }
        }
    }
    Image::new(w, h, kind, data).unwrap()
}

fn font() -> std::sync::Arc<Vec<u8>> {
    text::load_font("sans").expect("DejaVu Sans installed (fonts-dejavu-core)")
}

/// The test pages: every layer kind, blend mode, opacity, rotation, overhang and clipping.
fn test_pages() -> Vec<PageLayers> {
    let f = font();
    let style = |size: f32, color: [u8; 4], blend| text::TextStyle { size, color, opacity: 255, blend };
    let mut pages = Vec::new();
    let dims = (320, 240);
    let mut s = vec![
        raster::rect(dims, (10.5, 10.25, 100.0, 60.7), Some([200, 30, 30, 255]), Some(([0, 0, 0, 255], 3.0)), 255, BlendMode::Normal).unwrap(),
        raster::image(&photo(120, 80, false), 60, 40, 0.0, 200, BlendMode::Multiply),
        raster::image(&photo(90, 70, true), 150, 100, 30.0, 255, BlendMode::Screen),
        raster::rect(dims, (-20.0, 200.0, 400.0, 80.0), Some([20, 200, 120, 128]), None, 180, BlendMode::Normal).unwrap(),
    ];
    s.extend(text::text(&f, dims, 12.0, 150.0, "Kiln → PDF, ﬁne ÅVA", &style(28.0, [10, 10, 80, 255], BlendMode::Normal)).unwrap());
    s.extend(text::text(&f, dims, 200.0, 5.0, "multiply\nscreen", &style(20.0, [255, 200, 0, 200], BlendMode::Multiply)).unwrap());
    pages.push(PageLayers { width: dims.0, height: dims.1, background: [255, 255, 255, 255], sources: s });

    // Transparent background, overhanging and rotated tiles, every blend mode stacked.
    let dims = (200, 150);
    let mut s = Vec::new();
    for (i, m) in [BlendMode::Normal, BlendMode::Multiply, BlendMode::Screen].into_iter().enumerate() {
        s.push(raster::image(&photo(80, 60, i == 1), -30 + 60 * i as i64, -10 + 40 * i as i64, 90.0 * i as f64, 150 + 50 * i as u8, m));
        s.push(raster::rect(dims, (150.0, 120.0 - 30.0 * i as f64, 80.0, 40.0), Some([0, 90, 255, 160]), None, 255, m).unwrap());
    }
    pages.push(PageLayers { width: dims.0, height: dims.1, background: [40, 40, 40, 0], sources: s });

    // Odd sizes (not multiples of the 16×16 workgroup), a 1-pixel page, an empty page.
    let dims = (37, 19);
    let s = vec![raster::image(&photo(50, 50, true), -5, -20, 45.0, 255, BlendMode::Normal)];
    pages.push(PageLayers { width: dims.0, height: dims.1, background: [0, 0, 0, 255], sources: s });
    pages.push(PageLayers { width: 1, height: 1, background: [1, 2, 3, 4], sources: vec![raster::rect((1, 1), (0.0, 0.0, 1.0, 1.0), Some([9, 9, 9, 9]), None, 255, BlendMode::Screen).unwrap()] });
    pages.push(PageLayers { width: 64, height: 64, background: [255, 255, 255, 255], sources: vec![] });
    pages
}

fn max_diff(a: &[u32], b: &[u32]) -> u32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| (0..4).map(move |k| ((x >> (8 * k)) & 255).abs_diff((y >> (8 * k)) & 255)))
        .max()
        .unwrap_or(0)
}

/// The stated tolerance between the backends, per channel.
const TOLERANCE: u32 = 1;

#[test]
fn wgpu_and_cpu_backends_agree_on_every_test_page() {
    let gpu = match gpu::shared() {
        Ok(g) => g,
        Err(e) if std::env::var_os("KILN_ALLOW_NO_WGPU").is_some() => {
            eprintln!("skipping: {e}");
            return;
        }
        Err(e) => panic!("no wgpu adapter ({e}); install libvulkan1 mesa-vulkan-drivers (scripts/setup.sh) or set KILN_ALLOW_NO_WGPU=1"),
    };
    eprintln!("wgpu adapter: {}", gpu.adapter);
    for (i, page) in test_pages().iter().enumerate() {
        let c = cpu::CpuCompositor.composite(page).unwrap();
        let g = gpu.composite(page).unwrap();
        let d = max_diff(&c, &g);
        assert!(d <= TOLERANCE, "page {i}: backends differ by {d}");
        // The pages are not trivially blank: layers changed pixels.
        if !page.sources.is_empty() {
            let bg = premultiply(page.background);
            assert!(c.iter().filter(|p| **p != bg).count() > 0, "page {i} drew nothing");
        }
    }
    // Twice on the same device (pipeline reused, buffers fresh).
    let p = &test_pages()[0];
    assert_eq!(gpu.composite(p).unwrap(), gpu.composite(p).unwrap());
}

#[test]
fn auto_and_cpu_choices() {
    assert_eq!(compositor(Accel::Cpu).unwrap().backend(), Backend::Cpu);
    let auto = compositor(Accel::Auto).unwrap().backend();
    match compositor(Accel::Gpu) {
        Ok(g) => assert_eq!((g.backend(), auto), (Backend::Gpu, Backend::Gpu)),
        Err(RenderError::NoAdapter(_)) => assert_eq!(auto, Backend::Cpu),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn rect_coverage_is_the_covered_area() {
    // A black square from (2.5, 2.5) to (6.5, 6.5) on white.
    let s = raster::rect((10, 10), (2.5, 2.5, 4.0, 4.0), Some([0, 0, 0, 255]), None, 255, BlendMode::Normal).unwrap();
    let page = PageLayers { width: 10, height: 10, background: [255, 255, 255, 255], sources: vec![s] };
    let img = to_image(10, 10, &cpu::CpuCompositor.composite(&page).unwrap()).unwrap();
    assert_eq!(img.rgba_at(4, 4), [0, 0, 0, 255], "inside");
    assert_eq!(img.rgba_at(2, 2)[0], 191, "corner: a quarter covered → 255·(1−0.25)");
    assert_eq!(img.rgba_at(2, 4)[0], 127, "edge: half covered → 255 − round(127.5)");
    assert_eq!(img.rgba_at(6, 4)[0], 127, "far edge: half covered");
    assert_eq!(img.rgba_at(8, 8), [255, 255, 255, 255], "outside");
    // A stroke-only rectangle leaves its inside untouched and draws its edge.
    let s = raster::rect((20, 20), (5.0, 5.0, 10.0, 10.0), None, Some(([255, 0, 0, 255], 2.0)), 255, BlendMode::Normal).unwrap();
    let page = PageLayers { width: 20, height: 20, background: [255, 255, 255, 255], sources: vec![s] };
    let img = to_image(20, 20, &cpu::CpuCompositor.composite(&page).unwrap()).unwrap();
    assert_eq!(img.rgba_at(10, 10), [255, 255, 255, 255]);
    assert_eq!(img.rgba_at(4, 10), [255, 0, 0, 255]);
    assert_eq!(img.rgba_at(5, 10), [255, 0, 0, 255]);
    assert_eq!(img.rgba_at(6, 10), [255, 255, 255, 255]);
}

#[test]
fn quarter_rotations_are_exact() {
    let p = photo(6, 4, false);
    let s = raster::image(&p, 0, 0, 90.0, 255, BlendMode::Normal);
    assert_eq!((s.width, s.height), (4, 6));
    // Clockwise: the source's bottom-left corner becomes the top-left.
    assert_eq!(s.pixels[0], premultiply(p.rgba_at(0, 3)));
    assert_eq!(s.pixels[3], premultiply(p.rgba_at(0, 0)));
    let s = raster::image(&p, 0, 0, 180.0, 255, BlendMode::Normal);
    assert_eq!(s.pixels[0], premultiply(p.rgba_at(5, 3)));
    let s = raster::image(&p, 0, 0, -90.0, 255, BlendMode::Normal);
    assert_eq!(s.pixels[0], premultiply(p.rgba_at(5, 0)));
}

#[test]
fn text_draws_where_it_is_placed() {
    let f = font();
    let style = text::TextStyle { size: 40.0, color: [0, 0, 0, 255], opacity: 255, blend: BlendMode::Normal };
    let s = text::text(&f, (200, 100), 20.0, 30.0, "HH", &style).unwrap().expect("pixels drawn");
    // DejaVu Sans: ascender ≈ 0.928 em, cap height ≈ 0.729 em → baseline ≈ 30 + 37 = 67,
    // caps from ≈ 38 to 67; 'H' starts ≈ 0.1 em right of the pen.
    assert!((20..=26).contains(&s.x), "left edge {}", s.x);
    assert!((36..=40).contains(&s.y), "cap top {}", s.y);
    assert!((65..=69).contains(&(s.y + s.height as i64)), "baseline {}", s.y + s.height as i64);
    assert!(s.width > 40 && s.width < 70, "two H's wide: {}", s.width);
    let page = PageLayers { width: 200, height: 100, background: [255, 255, 255, 255], sources: vec![s] };
    let img = to_image(200, 100, &cpu::CpuCompositor.composite(&page).unwrap()).unwrap();
    let dark = |x0: u32, y0: u32, x1: u32, y1: u32| {
        let mut n = 0;
        for y in y0..y1 {
            for x in x0..x1 {
                n += (img.rgba_at(x, y)[0] < 128) as u32;
            }
        }
        n
    };
    assert!(dark(20, 36, 90, 70) > 300, "the glyphs are inked");
    assert_eq!(dark(0, 0, 200, 34) + dark(0, 72, 200, 100) + dark(100, 0, 200, 100), 0, "nothing outside");
    // Anti-aliased: some pixels are neither paper nor ink.
    let grey = img.data.chunks(3).filter(|p| p[0] > 20 && p[0] < 235).count();
    assert!(grey > 10, "{grey} grey pixels");
    // Blank text draws nothing; unknown fonts are refused.
    assert!(text::text(&f, (200, 100), 0.0, 0.0, "  ", &style).unwrap().is_none());
    assert!(matches!(text::load_font("comic"), Err(RenderError::Font(_))));
}

#[test]
fn to_image_unpremultiplies_and_drops_opaque_alpha() {
    let img = to_image(2, 1, &[premultiply([10, 20, 30, 255]), premultiply([10, 20, 30, 255])]).unwrap();
    assert_eq!(img.pixels, PixelKind::Rgb8);
    let img = to_image(2, 1, &[premultiply([200, 100, 50, 128]), 0]).unwrap();
    assert_eq!(img.pixels, PixelKind::Rgba8);
    let p = img.rgba_at(0, 0);
    assert!(p[0].abs_diff(200) <= 1 && p[1].abs_diff(100) <= 1 && p[2].abs_diff(50) <= 1 && p[3] == 128, "{p:?}");
    assert_eq!(img.rgba_at(1, 0), [0, 0, 0, 0]);
}
