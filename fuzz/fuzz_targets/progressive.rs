//! The progressive-JPEG rewriter: `strip_for_eighth_scale` on arbitrary bytes never panics,
//! and when it returns a rewrite of a JPEG that decodes at 1/8 scale, the rewrite decodes to
//! the same pixels (the property the thumbnailer relies on).
#![no_main]

use kiln_kernels::image::{jpeg, progressive};
use libfuzzer_sys::fuzz_target;

fn decodes_cleanly(data: &[u8], h: &jpeg::JpegHeader, scale: turbojpeg::ScalingFactor) -> bool {
    let Ok(mut d) = turbojpeg::Decompressor::new() else { return false };
    if d.set_scaling_factor(scale).is_err() || d.set_scan_limit(500).is_err() || h.cmyk {
        return false;
    }
    let (w, hh) = (scale.scale(h.width as usize), scale.scale(h.height as usize));
    let mut buf = vec![0u8; w * hh * 3];
    let image = turbojpeg::Image { pixels: buf.as_mut_slice(), width: w, pitch: w * 3, height: hh, format: turbojpeg::PixelFormat::RGB };
    d.decompress(data, image).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(slim) = progressive::strip_for_eighth_scale(data) else { return };
    assert!(slim.len() <= data.len() + 64, "the rewrite grew: {} -> {}", data.len(), slim.len());
    let Ok(h) = jpeg::read_header(data) else { return };
    if h.width as u64 * h.height as u64 > 16 << 20 {
        return;
    }
    let eighth = turbojpeg::ScalingFactor::new(1, 8);
    // Only a clean decode of the original is a reference: with garbage in an AC scan
    // libjpeg-turbo warns ("Corrupt JPEG data") and the garbage moves pixels that the
    // rewrite, without that scan, does not have (fuzz/regressions/progressive-2b0d82e9.jpg).
    if !decodes_cleanly(data, &h, eighth) {
        return;
    }
    if let Ok((a, _, _)) = jpeg::decode_pixels(data, &h, eighth) {
        let (b, _, _) = jpeg::decode_pixels(&slim, &h, eighth).expect("the original decodes at 1/8 but the rewrite does not");
        assert!(a == b, "the rewrite decodes to other pixels");
    }
});
