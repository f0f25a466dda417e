//! The webp decoder entry: [`kiln_fuzz::check_image`] on input sniffed as webp.
#![no_main]

use kiln_kernels::image::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kiln_fuzz::check_image(data, Format::Webp));
