//! A JPEG's frame header (SOFn), found by walking its markers without decoding: what the
//! PDF writer (components, for a byte-for-byte passthrough) and the decode budget
//! (progressive or not) need to know before any pixel is decoded.

/// The SOFn marker byte and the offset of its `0xFF`; `None` when the markers end, break or
/// reach the first scan before a frame header.
pub fn frame(data: &[u8]) -> Option<(u8, usize)> {
    let mut i = 2;
    while i + 4 <= data.len() {
        if data[i] != 0xFF {
            return None;
        }
        let m = data[i + 1];
        if m == 0xFF {
            i += 1;
            continue;
        }
        if m == 0x01 || (0xD0..=0xD7).contains(&m) {
            i += 2;
            continue;
        }
        if (0xC0..=0xCF).contains(&m) && m != 0xC4 && m != 0xC8 && m != 0xCC {
            return Some((m, i));
        }
        let len = u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize;
        if m == 0xDA || len < 2 {
            return None;
        }
        i += 2 + len;
    }
    None
}

/// Components of a JPEG's frame (1 grey, 3 colour, 4 CMYK), `None` when not found.
pub fn components(data: &[u8]) -> Option<u8> {
    frame(data).and_then(|(_, i)| data.get(i + 9).copied())
}

/// Whether a JPEG is progressive (SOF2, SOF6, SOF10 or SOF14).
pub fn progressive(data: &[u8]) -> bool {
    frame(data).is_some_and(|(m, _)| matches!(m, 0xC2 | 0xC6 | 0xCA | 0xCE))
}
