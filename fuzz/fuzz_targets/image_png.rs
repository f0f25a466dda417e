//! The png decoder entry: `probe` then `decode` (full size, and shrunk to 8×8 where the
//! decoder can shrink on load) under a 4-megapixel limit. Only png input is kept (the sniffed
//! format); never panics or aborts, and a decode never exceeds the pixel limit.
#![no_main]

use kiln_kernels::image::{decode, probe, sniff, DecodeOptions, Format};
use libfuzzer_sys::fuzz_target;

const MAX_PIXELS: u64 = 4 << 20;

fuzz_target!(|data: &[u8]| {
    if sniff(data).ok() != Some(Format::Png) {
        return;
    }
    let Ok(info) = probe(data, MAX_PIXELS) else { return };
    for min_size in [None, Some((8, 8))] {
        if let Ok(d) = decode(data, &DecodeOptions { max_pixels: MAX_PIXELS, min_size }) {
            assert!(d.image.width as u64 * d.image.height as u64 <= MAX_PIXELS);
            assert!(d.image.width <= info.width.max(1) && d.image.height <= info.height.max(1), "decoded larger than the header said");
        }
    }
});
