//! The video demux/probe entry: `video::open` on an in-memory stream (the path a store
//! source takes), then up to 500 packets demuxed. Never panics; refusals are VideoErrors.
#![no_main]

use kiln_kernels::video::{open, SourceInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reader = std::io::Cursor::new(data.to_vec());
    let Ok(mut src) = open(SourceInput::Reader(Box::new(reader))) else { return };
    let info = &src.info;
    assert!(info.width > 0 && info.height > 0, "opened a video without a size: {info:?}");
    for _ in src.input.packets().take(500) {}
});
