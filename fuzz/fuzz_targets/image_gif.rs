//! The gif decoder entry: [`kiln_fuzz::check_image`] on input sniffed as gif.
#![no_main]

use kiln_kernels::image::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kiln_fuzz::check_image(data, Format::Gif));
