//! The video demux/probe entry: `video::open` on an in-memory stream (the path a store
//! source takes), then up to 500 packets demuxed, as the transcoder reads them. Never panics; refusals are VideoErrors.
#![no_main]

use kiln_kernels::video::{open, SourceInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reader = std::io::Cursor::new(data.to_vec());
    let Ok(mut src) = open(SourceInput::Reader(Box::new(reader))) else { return };
    let info = &src.info;
    assert!(info.width > 0 && info.height > 0, "opened a video without a size: {info:?}");
    // The transcoder's own read loop's rule (ladder.rs): ffmpeg-next's `packets()` retries
    // `InvalidData` forever, which a container pointing past its end answers on every read.
    let (mut packet, mut read, mut unreadable) = (ffmpeg_next::Packet::empty(), 0, 0);
    while read < 500 {
        match packet.read(&mut src.input) {
            Ok(()) => (read, unreadable) = (read + 1, 0),
            Err(ffmpeg_next::Error::InvalidData) if unreadable + 1 < kiln_kernels::video::MOST_UNREADABLE_IN_A_ROW => unreadable += 1,
            Err(_) => break,
        }
    }
});
