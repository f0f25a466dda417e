//! What the fuzz targets share: the image decoder check every `image_*` target runs on its
//! own format.

use kiln_kernels::image::{decode, probe, sniff, DecodeOptions, Format};

/// Largest image the image targets let a decoder produce.
pub const MAX_PIXELS: u64 = 4 << 20;

/// `probe` then `decode` (full size, and shrunk to 8×8 where the decoder can shrink on load)
/// under [`MAX_PIXELS`], for input sniffed as `format` only: never panics or aborts, and a
/// decode never exceeds the pixel limit nor the size the header claimed.
pub fn check_image(data: &[u8], format: Format) {
    if sniff(data).ok() != Some(format) {
        return;
    }
    let Ok(info) = probe(data, MAX_PIXELS) else { return };
    for min_size in [None, Some((8, 8))] {
        if let Ok(d) = decode(data, &DecodeOptions { max_pixels: MAX_PIXELS, min_size }) {
            assert!(d.image.width as u64 * d.image.height as u64 <= MAX_PIXELS);
            assert!(d.image.width <= info.width.max(1) && d.image.height <= info.height.max(1), "decoded larger than the header said");
            if let (Format::Png, Some(need)) = (format, min_size) {
                let planned = kiln_kernels::image::png_shrink::decoded_dims(data, &info, need);
                assert_eq!((d.image.width, d.image.height), planned, "PNG shrink-on-load gave another size than planned");
            }
        }
    }
}
