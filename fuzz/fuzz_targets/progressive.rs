//! The progressive-JPEG rewriter: `strip_for_eighth_scale` on arbitrary bytes never panics,
//! and when it returns a rewrite of a JPEG that decodes at 1/8 scale, the rewrite decodes to
//! the same pixels (the property the thumbnailer relies on).
#![no_main]

use kiln_kernels::image::{jpeg, progressive};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(slim) = progressive::strip_for_eighth_scale(data) else { return };
    assert!(slim.len() <= data.len() + 64, "the rewrite grew: {} -> {}", data.len(), slim.len());
    let Ok(h) = jpeg::read_header(data) else { return };
    if h.width as u64 * h.height as u64 > 16 << 20 {
        return;
    }
    let eighth = turbojpeg::ScalingFactor::new(1, 8);
    if let Ok((a, _, _)) = jpeg::decode_pixels(data, &h, eighth) {
        let (b, _, _) = jpeg::decode_pixels(&slim, &h, eighth).expect("the original decodes at 1/8 but the rewrite does not");
        assert!(a == b, "the rewrite decodes to other pixels");
    }
});
