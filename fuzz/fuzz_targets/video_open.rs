//! The video demux/probe entry: `video::open` on an in-memory stream (the path a store
//! source takes), then up to 500 packets demuxed, as the transcoder reads them. Never panics; refusals are VideoErrors.
#![no_main]

use kiln_kernels::video::{open, read_packet, SourceInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reader = std::io::Cursor::new(data.to_vec());
    // The worker's default picture limit (limits.max_video_pixels).
    let Ok(mut src) = open(SourceInput::Reader(Box::new(reader)), 3840 * 2160) else { return };
    let info = &src.info;
    assert!(info.width > 0 && info.height > 0, "opened a video without a size: {info:?}");
    // The transcoder's own read loop (ladder.rs): a demuxer stuck on InvalidData ends it.
    let (mut packet, mut corrupt) = (ffmpeg_next::Packet::empty(), 0);
    for _ in 0..500 {
        if !matches!(read_packet(&mut src.input, &mut packet, &mut corrupt), Ok(true)) {
            break;
        }
    }
});
