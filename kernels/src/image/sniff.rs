//! Format detection from magic bytes, and header dimensions read straight from the bytes (so a
//! decompression bomb is refused before any decoder allocates anything).

use super::ImageError;

/// Formats we can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Gif,
    Tiff,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Gif => "gif",
            Format::Tiff => "tiff",
        }
    }
}

/// The format of `data` from its first bytes. Known formats we do not read (AVIF, HEIF, SVG,
/// BMP, PDF, JPEG XL, …) and text give [`ImageError::Unsupported`]; empty or unrecognisable
/// binary data gives [`ImageError::Corrupt`].
pub fn sniff(data: &[u8]) -> Result<Format, ImageError> {
    if data.is_empty() {
        return Err(ImageError::Corrupt("empty input (0 bytes)".into()));
    }
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        return Ok(Format::Gif);
    }
    if data.len() >= 12 && &data[0..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        return Ok(Format::Webp);
    }
    if data.starts_with(b"II*\0") || data.starts_with(b"MM\0*") || data.starts_with(b"II+\0") || data.starts_with(b"MM\0+") {
        return Ok(Format::Tiff);
    }
    if let Some(name) = known_unsupported(data) {
        return Err(ImageError::Unsupported(format!("{name} input is not supported (jpeg, png, webp, gif, tiff are)")));
    }
    if looks_like_text(data) {
        return Err(ImageError::Unsupported("input is text, not an image".into()));
    }
    Err(ImageError::Corrupt("not a recognised image format".into()))
}

fn known_unsupported(data: &[u8]) -> Option<&'static str> {
    // ISO-BMFF: size, "ftyp", major brand.
    if data.len() >= 12 && &data[4..8] == b"ftyp" {
        let brand = &data[8..12];
        return Some(match brand {
            b"avif" | b"avis" => "AVIF",
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => "HEIF/HEIC",
            b"crx " => "Canon CR3",
            _ => "an ISO media file (MP4/MOV/HEIF)",
        });
    }
    if data.starts_with(&[0xFF, 0x0A]) || data.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n") {
        return Some("JPEG XL");
    }
    if data.starts_with(b"BM") && data.len() >= 14 {
        return Some("BMP");
    }
    if data.starts_with(b"%PDF") {
        return Some("PDF");
    }
    if data.starts_with(b"8BPS") {
        return Some("PSD");
    }
    if data.starts_with(&[0, 0, 1, 0]) && data.len() >= 6 {
        return Some("ICO");
    }
    if data.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]) || data.starts_with(b"\0\0\0\x0cjP  ") {
        return Some("JPEG 2000");
    }
    if data.starts_with(b"qoif") {
        return Some("QOI");
    }
    let head = &data[..data.len().min(1024)];
    let lower: Vec<u8> = head.iter().map(|b| b.to_ascii_lowercase()).collect();
    if contains(&lower, b"<svg") {
        return Some("SVG");
    }
    None
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn looks_like_text(data: &[u8]) -> bool {
    let head = &data[..data.len().min(512)];
    let text = match std::str::from_utf8(head) {
        Ok(s) => s,
        // A multi-byte character cut at the window's end.
        Err(e) if e.valid_up_to() + 4 > head.len() => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(s) => s,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    !text.is_empty() && text.chars().all(|c| !c.is_control() || c.is_whitespace())
}

/// Width and height from the header of a PNG, GIF or WebP, read from the bytes alone; `None`
/// for other formats (JPEG and TIFF headers are read by their decoders, which allocate no
/// pixels either). Truncated headers give [`ImageError::Corrupt`].
pub fn header_dims(format: Format, data: &[u8]) -> Result<Option<(u32, u32)>, ImageError> {
    let short = || ImageError::Corrupt(format!("{} header is truncated", format.name()));
    match format {
        Format::Png => {
            // Signature (8), IHDR length (4), "IHDR" (4), width (4), height (4).
            if data.len() < 24 || &data[12..16] != b"IHDR" {
                return Err(ImageError::Corrupt("png has no IHDR header".into()));
            }
            Ok(Some((be32(&data[16..20]), be32(&data[20..24]))))
        }
        Format::Gif => {
            if data.len() < 10 {
                return Err(short());
            }
            // Some writers leave the logical screen 0×0: the decoder's frame size decides then.
            let (w, h) = (le16(&data[6..8]) as u32, le16(&data[8..10]) as u32);
            Ok(if w == 0 || h == 0 { None } else { Some((w, h)) })
        }
        Format::Webp => {
            if data.len() < 30 {
                return Err(short());
            }
            let chunk = &data[12..16];
            let body = &data[20..];
            match chunk {
                b"VP8 " => {
                    // Frame tag (3), start code 9d 01 2a (3), 14-bit width and height.
                    if body[3..6] != [0x9d, 0x01, 0x2a] {
                        return Err(ImageError::Corrupt("webp VP8 frame has no start code".into()));
                    }
                    Ok(Some(((le16(&body[6..8]) & 0x3fff) as u32, (le16(&body[8..10]) & 0x3fff) as u32)))
                }
                b"VP8L" => {
                    if body[0] != 0x2f {
                        return Err(ImageError::Corrupt("webp VP8L has a bad signature".into()));
                    }
                    let b = u32::from_le_bytes([body[1], body[2], body[3], body[4]]);
                    Ok(Some(((b & 0x3fff) + 1, ((b >> 14) & 0x3fff) + 1)))
                }
                b"VP8X" => {
                    let w = u32::from_le_bytes([body[4], body[5], body[6], 0]) + 1;
                    let h = u32::from_le_bytes([body[7], body[8], body[9], 0]) + 1;
                    Ok(Some((w, h)))
                }
                _ => Err(ImageError::Corrupt("webp has an unknown first chunk".into())),
            }
        }
        Format::Jpeg | Format::Tiff => Ok(None),
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap(), Format::Jpeg);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n....").unwrap(), Format::Png);
        assert_eq!(sniff(b"GIF89a....").unwrap(), Format::Gif);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ").unwrap(), Format::Webp);
        assert_eq!(sniff(b"II*\0\x08\0\0\0").unwrap(), Format::Tiff);
        assert_eq!(sniff(b"MM\0*\0\0\0\x08").unwrap(), Format::Tiff);
    }

    #[test]
    fn unsupported_and_corrupt() {
        let unsupported = |d: &[u8]| matches!(sniff(d), Err(ImageError::Unsupported(_)));
        let corrupt = |d: &[u8]| matches!(sniff(d), Err(ImageError::Corrupt(_)));
        assert!(unsupported(b"\0\0\0\x1cftypheic\0\0\0\0mif1heic"));
        assert!(unsupported(b"\0\0\0\x1cftypavif\0\0\0\0"));
        assert!(unsupported(b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>"));
        assert!(unsupported(b"hello, this is plain text\n"));
        assert!(unsupported(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3"));
        assert!(corrupt(b""));
        assert!(corrupt(&[0xFF, 0xD8]));
        assert!(corrupt(&[0x00, 0x13, 0x99, 0xfe, 0x01, 0x02, 0x88, 0x00]));
    }

    #[test]
    fn png_header_dims() {
        let mut d = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        d.extend_from_slice(&30000u32.to_be_bytes());
        d.extend_from_slice(&20000u32.to_be_bytes());
        assert_eq!(header_dims(Format::Png, &d).unwrap(), Some((30000, 20000)));
        assert!(header_dims(Format::Png, &d[..20]).is_err());
        assert!(header_dims(Format::Webp, b"RIFF\0\0\0\0WEBPVP8 ").is_err());
    }
}
