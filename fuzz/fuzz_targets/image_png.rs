//! The png decoder entry: [`kiln_fuzz::check_image`] on input sniffed as png.
#![no_main]

use kiln_kernels::image::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kiln_fuzz::check_image(data, Format::Png));
