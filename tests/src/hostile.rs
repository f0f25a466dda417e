//! Hostile inputs made on the spot (tests/tests/hostile.rs and the fuzz corpus seeds):
//! decompression bombs in every image format the thumbnailer reads (a small real file whose
//! header is patched to claim a huge canvas), and PDFs that nest deeply, loop or claim huge
//! page trees. Everything is built from bytes here, no external tool.

use std::io::Cursor;

/// A small real image of `format` (64×48, a gradient), as the `image` crate writes it.
pub fn small(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 128]));
    let mut c = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut c, format).unwrap();
    c.into_inner()
}

/// CRC-32 (IEEE), as PNG chunks carry it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG claiming `w`×`h` pixels (IHDR patched, CRC fixed) over a 64×48 image's data.
pub fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut b = small(image::ImageFormat::Png);
    // Signature (8), IHDR length (4), "IHDR" (4), width (4), height (4), …, CRC after 13 bytes.
    b[16..20].copy_from_slice(&w.to_be_bytes());
    b[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&b[12..29]);
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A baseline JPEG whose SOF claims `w`×`h` (16-bit each) over a 64×48 image's scans.
pub fn jpeg_bomb(w: u16, h: u16) -> Vec<u8> {
    let mut b = small(image::ImageFormat::Jpeg);
    let mut i = 2;
    while i + 9 < b.len() {
        assert_eq!(b[i], 0xFF, "marker expected at {i}");
        let marker = b[i + 1];
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if (0xC0..=0xC2).contains(&marker) {
            // FF Cn len(2) precision(1) height(2) width(2)
            b[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
            b[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
            return b;
        }
        i += 2 + len;
    }
    panic!("no SOF in the JPEG");
}

/// A lossless WebP (VP8L) whose header claims 16384×16384 (the format's largest).
pub fn webp_bomb() -> Vec<u8> {
    let mut b = small(image::ImageFormat::WebP);
    let at = b.windows(4).position(|w| w == b"VP8L").expect("the image crate writes lossless WebP");
    // "VP8L" size(4) 0x2f, then 14 bits width-1, 14 bits height-1, 1 bit alpha, 3 bits version.
    let p = at + 9;
    let bits = u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
    let bits = (bits & !0x0FFF_FFFF) | 0x3FFF | (0x3FFF << 14);
    b[p..p + 4].copy_from_slice(&bits.to_le_bytes());
    // A VP8X header, if any, states the canvas too.
    if let Some(x) = b.windows(4).position(|w| w == b"VP8X") {
        let v = 16383u32.to_le_bytes();
        b[x + 12..x + 15].copy_from_slice(&v[..3]);
        b[x + 15..x + 18].copy_from_slice(&v[..3]);
    }
    b
}

/// A GIF whose logical screen and first image both claim 65535×65535.
pub fn gif_bomb() -> Vec<u8> {
    let mut b = small(image::ImageFormat::Gif);
    b[6..10].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    let flags = b[10];
    let mut i = 13 + if flags & 0x80 != 0 { 3 << ((flags & 7) + 1) } else { 0 };
    while i < b.len() {
        match b[i] {
            0x21 => {
                // Extension: label, then sub-blocks until a zero length.
                i += 2;
                while b[i] != 0 {
                    i += b[i] as usize + 1;
                }
                i += 1;
            }
            0x2C => {
                // Image descriptor: left(2) top(2) width(2) height(2).
                b[i + 5..i + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
                return b;
            }
            other => panic!("unexpected GIF block {other:#x} at {i}"),
        }
    }
    panic!("no image descriptor in the GIF");
}

/// A little-endian TIFF whose first IFD claims `w`×`h` (ImageWidth/ImageLength patched) over
/// a 64×48 image's strips: sizes that disagree with the strips (a decoder may call it corrupt
/// before it looks at the pixel count).
pub fn tiff_patched(w: u32, h: u32) -> Vec<u8> {
    let mut b = small(image::ImageFormat::Tiff);
    assert_eq!(&b[0..4], b"II*\0", "the image crate writes little-endian TIFF");
    let ifd = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
    let n = u16::from_le_bytes([b[ifd], b[ifd + 1]]) as usize;
    for e in 0..n {
        let at = ifd + 2 + e * 12;
        let tag = u16::from_le_bytes([b[at], b[at + 1]]);
        let typ = u16::from_le_bytes([b[at + 2], b[at + 3]]);
        let v = if tag == 256 { w } else if tag == 257 { h } else { continue };
        if typ == 3 {
            b[at + 8..at + 10].copy_from_slice(&(v.min(65535) as u16).to_le_bytes());
        } else {
            b[at + 8..at + 12].copy_from_slice(&v.to_le_bytes());
        }
    }
    b
}

/// A consistent grey TIFF of `w`×`h` in one Deflate strip of 64 KiB of zeros: every tag
/// agrees, so only the pixel count gives it away.
pub fn tiff_bomb(w: u32, h: u32) -> Vec<u8> {
    let data = deflate_zeros(64 << 10);
    let entries: [(u16, u16, u32); 10] = [
        (256, 4, w),                 // ImageWidth, LONG
        (257, 4, h),                 // ImageLength
        (258, 3, 8),                 // BitsPerSample
        (259, 3, 8),                 // Compression: Deflate
        (262, 3, 1),                 // Photometric: BlackIsZero
        (273, 4, 8),                 // StripOffsets: right after the header
        (277, 3, 1),                 // SamplesPerPixel
        (278, 4, h),                 // RowsPerStrip: one strip
        (279, 4, data.len() as u32), // StripByteCounts
        (284, 3, 1),                 // PlanarConfiguration: chunky
    ];
    let mut b = b"II*\0".to_vec();
    let ifd = 8 + data.len() as u32 + (data.len() as u32 & 1);
    b.extend_from_slice(&ifd.to_le_bytes());
    b.extend_from_slice(&data);
    if data.len() & 1 == 1 {
        b.push(0);
    }
    b.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, typ, v) in entries {
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&typ.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        if typ == 3 {
            b.extend_from_slice(&(v as u16).to_le_bytes());
            b.extend_from_slice(&[0, 0]);
        } else {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    b.extend_from_slice(&0u32.to_le_bytes());
    b
}

/// A PDF from numbered object bodies (object i+1 is `objects[i]`), with a correct xref table
/// and trailer; object 1 is the catalog.
pub fn pdf(objects: &[String]) -> Vec<u8> {
    let mut out = b"%PDF-1.7\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes());
    out
}

/// A one-page PDF whose page carries `extra` in its dictionary.
pub fn pdf_page_with(extra: &str) -> Vec<u8> {
    pdf(&[
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".into(),
        format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] {extra} >>"),
    ])
}

/// The hostile PDFs: (name, bytes). See each comment.
pub fn hostile_pdfs() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = Vec::new();
    // Arrays nested 5000 deep in the page's resources.
    v.push(("deep-array", pdf_page_with(&format!("/Resources << /X {}1{} >>", "[".repeat(5000), "]".repeat(5000)))));
    // Dictionaries nested 5000 deep.
    v.push(("deep-dict", pdf_page_with(&format!("/Resources {}{}", "<< /A ".repeat(5000), ">> ".repeat(5000)))));
    // A page whose parent is itself, and a page tree that is its own kid.
    v.push((
        "parent-loop",
        pdf(&[
            "<< /Type /Catalog /Pages 2 0 R >>".into(),
            "<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 /Parent 2 0 R >>".into(),
            "<< /Type /Page /Parent 3 0 R /MediaBox [0 0 200 200] >>".into(),
        ]),
    ));
    // Resources that reference themselves, and a chain of 20000 references.
    let mut objs: Vec<String> = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".into(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Resources 4 0 R /Chain 5 0 R >>".into(),
        "<< /Self 4 0 R /Again [4 0 R 4 0 R] >>".into(),
    ];
    for i in 5..20_005 {
        objs.push(format!("<< /Next {} 0 R >>", i + 1));
    }
    objs.push("null".into());
    v.push(("ref-loop", pdf(&objs)));
    // A page tree of 24 levels, each node listing the next twice: 2^24 pages by count
    // (a DAG, so the file is tiny), with /Count claiming 2^31-1.
    let mut objs: Vec<String> = vec!["<< /Type /Catalog /Pages 2 0 R >>".into()];
    for level in 0..24 {
        let kid = level + 3;
        objs.push(format!("<< /Type /Pages /Kids [{kid} 0 R {kid} 0 R] /Count 2147483647 >>"));
    }
    objs.push("<< /Type /Page /MediaBox [0 0 200 200] >>".into());
    v.push(("huge-tree", pdf(&objs)));
    // A MediaBox of absurd numbers, and one that is not an array.
    v.push(("huge-mediabox", pdf_page_with("/MediaBox [0 0 1e300 -1e300]")));
    v.push(("mediabox-ref-loop", pdf(&[
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 /MediaBox 4 0 R >>".into(),
        "<< /Type /Page /Parent 2 0 R >>".into(),
        "4 0 R".into(),
    ])));
    // A stream whose /Length claims 2^62 bytes.
    let mut objs: Vec<String> = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".into(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R >>".into(),
        "<< /Length 4611686018427387904 >>\nstream\nq Q\nendstream".into(),
    ];
    v.push(("stream-length", pdf(&objs)));
    // A content stream that inflates 64 KiB to 256 MiB (level-9 deflate of zeros).
    let bomb = deflate_zeros(256 << 20);
    objs[3] = format!("<< /Length {} /Filter /FlateDecode >>\nstream\n", bomb.len());
    let mut b = pdf(&objs[..3]);
    // Append object 4 by hand (binary stream data), then a fresh xref.
    let at = b.windows(4).rposition(|w| w == b"xref").unwrap();
    b.truncate(at);
    let obj4 = b.len();
    b.extend_from_slice(format!("4 0 obj\n{}", objs[3]).as_bytes());
    b.extend_from_slice(&bomb);
    b.extend_from_slice(b"\nendstream\nendobj\n");
    let xref = b.len();
    let offsets: Vec<usize> = (1..=3).map(|n| find_obj(&b, n)).chain([obj4]).collect();
    b.extend_from_slice(b"xref\n0 5\n0000000000 65535 f \n");
    for o in offsets {
        b.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    b.extend_from_slice(format!("trailer\n<< /Size 5 /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n").as_bytes());
    v.push(("flate-bomb", b));
    // Truncated in the middle of the body, and an xref pointing past the end.
    let good = pdf_page_with("");
    v.push(("truncated", good[..good.len() / 2].to_vec()));
    let mut lying = good.clone();
    let sx = lying.windows(9).rposition(|w| w == b"startxref").unwrap();
    lying.truncate(sx);
    lying.extend_from_slice(b"startxref\n999999999\n%%EOF\n");
    v.push(("xref-past-end", lying));
    v
}

fn find_obj(b: &[u8], n: usize) -> usize {
    let needle = format!("{n} 0 obj");
    b.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap()
}

/// zlib data inflating to `n` zero bytes.
pub fn deflate_zeros(n: usize) -> Vec<u8> {
    use flate2::write::ZlibEncoder;
    use std::io::Write;
    let mut e = ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        e.write_all(&chunk[..k]).unwrap();
        left -= k;
    }
    e.finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claimed sizes, read back from the bytes (tests/tests/hostile.rs checks that kiln
    /// refuses each of them from its header).
    #[test]
    fn the_bombs_claim_what_they_should() {
        let png = png_bomb(100_000, 100_000);
        assert_eq!(&png[16..24], &[0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0]);
        assert_eq!(u32::from_be_bytes(png[29..33].try_into().unwrap()), crc32(&png[12..29]), "IHDR CRC");
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        let jpeg = jpeg_bomb(65000, 65000);
        assert!(jpeg.windows(4).any(|w| w == [0xFD, 0xE8, 0xFD, 0xE8]), "SOF height and width");
        let webp = webp_bomb();
        let at = webp.windows(4).position(|w| w == b"VP8L").unwrap() + 9;
        assert_eq!(u32::from_le_bytes(webp[at..at + 4].try_into().unwrap()) & 0x0FFF_FFFF, 0x0FFF_FFFF);
        assert_eq!(&gif_bomb()[6..10], &[0xFF; 4]);
        let tiff = tiff_bomb(65535, 65535);
        assert!(tiff.starts_with(b"II*\0"));
        assert!(tiff.windows(8).any(|w| w == [0, 1, 4, 0, 1, 0, 0, 0]), "ImageWidth, LONG, count 1");
    }

    #[test]
    fn the_pdfs_are_what_they_say() {
        let pdfs = hostile_pdfs();
        assert!(pdfs.len() >= 10);
        assert!(pdfs.iter().all(|(_, b)| b.starts_with(b"%PDF-")));
        let names: Vec<&str> = pdfs.iter().map(|p| p.0).collect();
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "{names:?}");
    }
}
