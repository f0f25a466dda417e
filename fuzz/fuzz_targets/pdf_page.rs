//! The render kind's PDF page import: `pdf::load` then `pdf::extract_part` for pages 1 and 2,
//! and the part it writes parses again. Never panics, loops or overflows the stack.
#![no_main]

use kiln_jobs::render::pdf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = pdf::load(data, "fuzz") else { return };
    for page in [1, 2] {
        if let Ok((part, (w, h))) = pdf::extract_part(&doc, page, "fuzz") {
            assert!(w > 0.0 && h > 0.0);
            pdf::load(&part, "part").expect("an extracted part parses");
        }
    }
});
