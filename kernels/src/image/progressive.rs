//! Progressive JPEGs at 1/8 scale without their unneeded AC scans.
//!
//! A JPEG decoded at 1/8 scale turns every 8x8 block of a full-resolution component into one
//! pixel, from the block's DC coefficient alone (libjpeg-turbo's 1x1 IDCT). In a progressive
//! JPEG the AC coefficients live in scans of their own, and those scans are most of the file
//! and most of the decode time (libjpeg must Huffman-decode every one of them, into a
//! whole-image coefficient buffer). [`strip_for_eighth_scale`] writes a copy of the file
//! without the AC scans of the full-resolution components, so a 1/8 decode of the copy gives
//! the same pixels in a fraction of the time. Subsampled (chroma) components keep their AC
//! scans: libjpeg-turbo decodes them with a larger IDCT to avoid upsampling, which reads low
//! AC coefficients.
//!
//! One more edit keeps the pixels the same: libjpeg's block smoothing, which estimates missing
//! coefficients (the DC included, in libjpeg-turbo 2.1+) when a progressive file lacks some,
//! would otherwise blur the DC-only components. Smoothing is off when a component's quant
//! table has a zero among its first coefficients, so the copy zeroes the first AC entry of the
//! dropped components' tables; it multiplies only AC coefficients those components no longer
//! have. A table shared with a component that keeps its AC scans is left alone, and then
//! nothing is dropped. Turning smoothing off only keeps the pixels when the original does not
//! smooth either: libjpeg smooths when some component's low AC coefficients (1 to 9) are
//! missing or short of their last refinement, and then estimates a component's DC too when it
//! has no AC at all. So the copy is made only when the original's scans complete
//! coefficients 1 to 9 of every component (any real encoder's progression does;
//! fuzz/regressions/progressive-1a9cbf35.jpg does not).
//!
//! Anything unexpected (not progressive Huffman, a truncated file, a missing EOI, odd marker
//! structure) gives `None` and the caller decodes the original, which judges the file.

/// Most scans walked; libjpeg's own scan limit (500) is lower, this only bounds the walk.
const MAX_SCANS: usize = 1000;

struct Frame {
    /// Every component's id, and the point transform (`Al`) its AC coefficients 1 to 9 were
    /// last sent with (`None` until a scan sends them; `Some(0)` is complete).
    coverage: Vec<(u8, [Option<u8>; 9])>,
    /// Component ids at full resolution (sampling factors equal to the maximum).
    full_res: Vec<u8>,
    /// Quant tables of full-resolution components, and of the others.
    full_res_tables: Vec<u8>,
    other_tables: Vec<u8>,
}

/// The copy without unneeded AC scans, or `None` when there is nothing to gain or the file is
/// not one this rewrite understands.
pub fn strip_for_eighth_scale(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 4 || data[0] != 0xFF || data[1] != 0xD8 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() / 4);
    out.extend_from_slice(&data[..2]);
    let mut frame: Option<Frame> = None;
    // Where each DQT segment's body starts in `out`, and its length.
    let mut dqts: Vec<(usize, usize)> = Vec::new();
    let mut dropped = 0usize;
    let mut scans = 0usize;
    let mut i = 2;
    loop {
        // Fill bytes (0xFF runs) before a marker.
        while i + 1 < data.len() && data[i] == 0xFF && data[i + 1] == 0xFF {
            i += 1;
        }
        if i + 1 >= data.len() || data[i] != 0xFF {
            return None;
        }
        let marker = data[i + 1];
        match marker {
            0xD9 => {
                // EOI: the whole file was walked.
                let f = frame.as_ref()?;
                if !f.coverage.iter().all(|(_, bits)| bits.iter().all(|b| *b == Some(0))) {
                    return None;
                }
                if dropped == 0 || f.full_res_tables.iter().any(|t| f.other_tables.contains(t)) {
                    return None;
                }
                for (at, len) in dqts {
                    disable_smoothing(&mut out[at..at + len], &f.full_res_tables)?;
                }
                out.extend_from_slice(&[0xFF, 0xD9]);
                return Some(out);
            }
            0x01 | 0xD0..=0xD8 => return None, // stray TEM / RST / SOI
            _ => {}
        }
        let len = u16::from_be_bytes([*data.get(i + 2)?, *data.get(i + 3)?]) as usize;
        let seg_end = i + 2 + len;
        if len < 2 || seg_end > data.len() {
            return None;
        }
        let body = &data[i + 4..seg_end];
        match marker {
            0xC2 => frame = Some(parse_sof(body)?),
            // Tables must be fixed before the first scan (they are latched there).
            0xDB if scans > 0 => return None,
            0xDB => dqts.push((out.len() + 4, len - 2)),
            // Any other frame type (baseline, lossless, arithmetic, hierarchical) and DNL.
            0xC0 | 0xC1 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xDC => return None,
            0xDA => {
                scans += 1;
                if scans > MAX_SCANS {
                    return None;
                }
                let f = frame.as_mut()?;
                cover(body, f)?;
                let scan_end = entropy_end(data, seg_end)?;
                if needed(body, f)? {
                    out.extend_from_slice(&data[i..scan_end]);
                } else {
                    dropped += 1;
                }
                i = scan_end;
                continue;
            }
            _ => {}
        }
        // Tables, restart interval, APPn, COM: kept as they are.
        out.extend_from_slice(&data[i..seg_end]);
        i = seg_end;
    }
}

fn parse_sof(body: &[u8]) -> Option<Frame> {
    let n = *body.get(5)? as usize;
    let comps = body.get(6..6 + 3 * n)?;
    let samp = |c: &[u8]| (c[1] >> 4, c[1] & 0x0F);
    let max_h = comps.chunks_exact(3).map(|c| samp(c).0).max()?;
    let max_v = comps.chunks_exact(3).map(|c| samp(c).1).max()?;
    let (full, other): (Vec<&[u8]>, Vec<&[u8]>) = comps.chunks_exact(3).partition(|c| samp(c) == (max_h, max_v));
    Some(Frame {
        coverage: comps.chunks_exact(3).map(|c| (c[0], [None; 9])).collect(),
        full_res: full.iter().map(|c| c[0]).collect(),
        full_res_tables: full.iter().map(|c| c[2]).collect(),
        other_tables: other.iter().map(|c| c[2]).collect(),
    })
}

/// Zeroes the first AC entry (zig-zag 1) of the listed tables in one DQT segment's body.
fn disable_smoothing(dqt: &mut [u8], tables: &[u8]) -> Option<()> {
    let mut i = 0;
    while i < dqt.len() {
        let (precision, id) = (dqt[i] >> 4, dqt[i] & 0x0F);
        let width = if precision == 0 { 1 } else { 2 };
        let values = dqt.get_mut(i + 1..i + 1 + 64 * width)?;
        if tables.contains(&id) {
            values[width..2 * width].fill(0);
        }
        i += 1 + 64 * width;
    }
    Some(())
}

/// Notes which of coefficients 1 to 9 an AC scan sends, and with which point transform.
/// A scan that names no component of the frame or runs past coefficient 63 gives `None`.
fn cover(sos: &[u8], frame: &mut Frame) -> Option<()> {
    let ns = *sos.first()? as usize;
    let comps = sos.get(1..1 + 2 * ns)?;
    let (ss, se, approx) = (*sos.get(1 + 2 * ns)?, *sos.get(2 + 2 * ns)?, *sos.get(3 + 2 * ns)?);
    if ss == 0 {
        return Some(());
    }
    if se < ss || se > 63 {
        return None;
    }
    for c in comps.chunks_exact(2) {
        let (_, bits) = frame.coverage.iter_mut().find(|(id, _)| *id == c[0])?;
        for k in ss.max(1)..=se.min(9) {
            bits[usize::from(k) - 1] = Some(approx & 0x0F);
        }
    }
    Some(())
}

/// Whether a scan is needed at 1/8 scale: DC scans always; AC scans only of subsampled
/// components.
fn needed(sos: &[u8], frame: &Frame) -> Option<bool> {
    let ns = *sos.first()? as usize;
    let comps = sos.get(1..1 + 2 * ns)?;
    let ss = *sos.get(1 + 2 * ns)?;
    if ss == 0 {
        return Some(true);
    }
    Some(comps.chunks_exact(2).any(|c| !frame.full_res.contains(&c[0])))
}

/// The end of a scan's entropy-coded data: the first marker that is neither a stuffed zero
/// nor a restart marker. `None` if the data runs out first (a truncated file).
fn entropy_end(data: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let ff = i + data.get(i..)?.iter().position(|&b| b == 0xFF)?;
        let next = *data.get(ff + 1)?;
        match next {
            0x00 | 0xD0..=0xD7 => i = ff + 2,
            0xFF => i = ff + 1, // fill byte before a marker
            _ => return Some(ff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::jpeg::{self, read_header};
    use super::super::testutil::{jpeg_bytes, jpeg_progressive_bytes};
    use super::*;
    use turbojpeg::ScalingFactor;

    fn decode_eighth(data: &[u8]) -> Vec<u8> {
        let h = read_header(data).unwrap();
        jpeg::decode_pixels(data, &h, ScalingFactor::new(1, 8)).unwrap().0
    }

    #[test]
    fn an_eighth_scale_decode_is_unchanged_without_the_ac_scans() {
        let full = jpeg_progressive_bytes(640, 480);
        let slim = strip_for_eighth_scale(&full).expect("a progressive JPEG has AC scans to drop");
        assert!(slim.len() < full.len(), "{} vs {}", slim.len(), full.len());
        let (a, b) = (decode_eighth(&full), decode_eighth(&slim));
        assert_eq!(a.len(), 80 * 60 * 3);
        let max_diff = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
        assert_eq!(max_diff, 0, "the pixels are the same");
    }

    /// The fuzz finding of 2026-12-03 (`fuzz/regressions/progressive-2b0d82e9.jpg`): a
    /// progressive JPEG with garbage inside an AC scan, which libjpeg-turbo decodes with a
    /// "Corrupt JPEG data" warning (the thumbnailer accepts it). The rewrite used to drop that
    /// scan and decode to other pixels; the file also never sends its third component's AC
    /// coefficients, so the original is smoothed, and it is now left alone.
    #[test]
    fn a_corrupt_file_that_leaves_a_component_without_ac_is_left_alone() {
        use turbojpeg::{Decompressor, PixelFormat};
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions/progressive-2b0d82e9.jpg");
        let data = std::fs::read(p).unwrap();
        let h = read_header(&data).unwrap();
        let eighth = ScalingFactor::new(1, 8);
        let mut d = Decompressor::new().unwrap();
        d.set_scaling_factor(eighth).unwrap();
        let (w, hh) = (eighth.scale(h.width as usize), eighth.scale(h.height as usize));
        let mut buf = vec![0u8; w * hh * 3];
        let image = turbojpeg::Image { pixels: buf.as_mut_slice(), width: w, pitch: w * 3, height: hh, format: PixelFormat::RGB };
        let warning = d.decompress(&data, image).map_err(|e| e.to_string()).expect_err("the original carries a warning");
        assert!(warning.contains("Corrupt JPEG data"), "{warning}");
        assert_eq!(strip_for_eighth_scale(&data), None);
        // It still decodes through kiln's path (the warning is a benign one there).
        assert_eq!(decode_eighth(&data).len(), w * hh * 3);
    }

    /// The fuzz finding of 2026-12-04 (`fuzz/regressions/progressive-1a9cbf35.jpg`): a clean
    /// progressive JPEG whose only AC scan sends the first component's coefficients 1 to 5
    /// short of their last bit, and the others' none. libjpeg smooths that file (estimating
    /// the DC of the components without AC), which the rewrite's smoothing switch would have
    /// turned off: it is left alone, and real encoders' progressions still are rewritten.
    #[test]
    fn a_progression_that_leaves_low_coefficients_incomplete_is_left_alone() {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions/progressive-1a9cbf35.jpg");
        let data = std::fs::read(p).unwrap();
        assert_eq!(decode_eighth(&data).len(), 80 * 50 * 3, "the original decodes");
        assert_eq!(strip_for_eighth_scale(&data), None);
        assert!(strip_for_eighth_scale(&jpeg_progressive_bytes(256, 256)).is_some());
    }

    #[test]
    fn baseline_truncated_and_garbage_inputs_are_left_alone() {
        assert_eq!(strip_for_eighth_scale(&jpeg_bytes(64, 64, 80)), None, "baseline has no AC scans");
        let full = jpeg_progressive_bytes(256, 256);
        for cut in [full.len() - 2, full.len() / 2, full.len() / 3, 10, 3] {
            assert_eq!(strip_for_eighth_scale(&full[..cut]), None, "truncated at {cut}");
        }
        assert_eq!(strip_for_eighth_scale(b"not a jpeg at all"), None);
        assert_eq!(strip_for_eighth_scale(&[]), None);
    }
}

