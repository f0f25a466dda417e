//! Memory for large image decodes, shared by every job of the process.
//!
//! A decode's memory is mostly known from the header before it starts: a progressive JPEG
//! keeps every DCT coefficient of the whole image (about 3 bytes a pixel at 4:2:0, whatever
//! the scale it is decoded at), a baseline JPEG only its (shrunk) output, a PNG its output
//! shrunk on load (full size when interlaced), any other format its full-size pixels. Two large decodes at once on a small host are what lifted
//! kiln's peak memory above libvips' (which thumbnails one file at a time): so a decode
//! estimated at [`LARGE`] or more reserves its estimate from a process-wide budget
//! (`limits.decode_memory_mb`, default 32 MiB per core) first, and waits — without its CPU slot, so small jobs go on
//! computing — while the budget is taken. A decode larger than the whole budget runs alone.
//! Small decodes never wait.

use crate::context::JobContext;
use crate::error::JobError;
use kiln_kernels::image::{Format, ImageInfo};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Decodes estimated below this many bytes never wait.
pub const LARGE: u64 = 16 << 20;

/// How often a waiting decode looks at its job's cancel signal.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Bytes reserved by running decodes.
pub struct Budget {
    used: Mutex<u64>,
    freed: Condvar,
}

/// A reservation; dropping it gives the bytes back.
pub struct Reserved<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut used = self.budget.lock();
        *used = used.saturating_sub(self.bytes);
        self.budget.freed.notify_all();
    }
}

impl Budget {
    pub const fn new() -> Self {
        Budget { used: Mutex::new(0), freed: Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        // A counter: never left half-updated.
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `take` more bytes fit: within the budget, or alone.
    fn fits(used: u64, take: u64, budget: u64) -> bool {
        used == 0 || used + take <= budget
    }

    /// Reserves `bytes` (at most `budget`) when they fit now, or when nothing is reserved.
    pub fn try_reserve(&self, bytes: u64, budget: u64) -> Option<Reserved<'_>> {
        let take = bytes.min(budget);
        let mut used = self.lock();
        Self::fits(*used, take, budget).then(|| {
            *used += take;
            Reserved { budget: self, bytes: take }
        })
    }

    /// Like [`Budget::try_reserve`], waiting for room; `stop` is asked between waits and
    /// ends the wait with its error.
    pub fn reserve(&self, bytes: u64, budget: u64, stop: impl Fn() -> Result<(), JobError>) -> Result<Reserved<'_>, JobError> {
        let take = bytes.min(budget);
        let mut used = self.lock();
        while !Self::fits(*used, take, budget) {
            stop()?;
            used = self.freed.wait_timeout(used, CANCEL_POLL).unwrap_or_else(|p| p.into_inner()).0;
        }
        *used += take;
        Ok(Reserved { budget: self, bytes: take })
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's budget.
static DECODES: Budget = Budget::new();

/// The memory a decode of `data` (probed as `info`) at no less than `need` pixels holds.
pub fn estimate(data: &[u8], info: &ImageInfo, need: (u32, u32)) -> u64 {
    let (w, h) = (info.width as u64, info.height as u64);
    match info.format {
        Format::Jpeg if crate::jpeg_frame::progressive(data) => w * h * 3,
        Format::Jpeg => {
            // The output at the smallest of libjpeg's n/8 scales that still covers `need`
            // (its longer side, in either orientation).
            let n = need.0.max(need.1) as u64;
            let eighths = (1..=8u64).find(|e| w * e / 8 >= n.min(w) && h * e / 8 >= n.min(h)).unwrap_or(8);
            (w * eighths).div_ceil(8) * (h * eighths).div_ceil(8) * 3
        }
        Format::Png => {
            // Shrunk on load by a box factor, unless interlaced (`png_shrink`).
            let (dw, dh) = kiln_kernels::image::png_shrink::decoded_dims(data, info, need);
            dw as u64 * dh as u64 * if info.has_alpha { 4 } else { 3 }
        }
        _ => w * h * if info.has_alpha { 4 } else { 3 },
    }
}

/// Reserves a decode's memory from the process's budget (see the module doc): `None` for a
/// small decode; a large one that does not fit waits without its CPU slot.
pub fn reserve(ctx: &JobContext, bytes: u64) -> Result<Option<Reserved<'static>>, JobError> {
    if bytes < LARGE {
        return Ok(None);
    }
    let budget = match ctx.limits.decode_memory_mb {
        0 => 32 * std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1),
        mb => mb,
    }
    .saturating_mul(1 << 20);
    if let Some(r) = DECODES.try_reserve(bytes, budget) {
        return Ok(Some(r));
    }
    tracing::debug!(job = %ctx.job_id, mb = bytes >> 20, "a large decode waits for decode memory");
    ctx.idle(|| DECODES.reserve(bytes, budget, || ctx.check()))?.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_reservations_wait_for_room_and_an_oversized_one_runs_alone() {
        let b = Budget::new();
        let a = b.try_reserve(40, 64).expect("room");
        assert!(b.try_reserve(40, 64).is_none(), "40 + 40 > 64");
        let small = b.try_reserve(20, 64).expect("40 + 20 fits");
        drop(a);
        drop(small);
        let huge = b.try_reserve(500, 64).expect("alone, it takes the whole budget");
        assert!(b.try_reserve(1, 64).is_none());
        // A waiting reservation gets in once the other is dropped.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| b.reserve(40, 64, || Ok(())).map(|r| r.bytes));
            drop(huge);
            assert_eq!(waiter.join().unwrap().unwrap(), 40);
        });
        // A stop ends the wait with its error.
        let _held = b.try_reserve(64, 64).unwrap();
        let e = b.reserve(64, 64, || Err(JobError::cancelled())).err().expect("stopped");
        assert_eq!(e.code, crate::ErrorCode::Cancelled);
    }

    #[test]
    fn estimates_follow_what_the_decoder_holds() {
        use kiln_kernels::image::{jpeg, Image, Orientation, PixelKind};
        let rgb = Image::new(64, 32, PixelKind::Rgb8, vec![100; 64 * 32 * 3]).unwrap();
        let data = jpeg::encode_rgb(&rgb, 80).unwrap();
        assert!(!crate::jpeg_frame::progressive(&data));
        let info = |format, has_alpha| ImageInfo { format, width: 4000, height: 3000, orientation: Orientation::Normal, has_alpha };
        // Baseline JPEG: the output at the 1/8 scale for a small thumbnail, full size for a big one.
        assert_eq!(estimate(&data, &info(Format::Jpeg, false), (256, 256)), 500 * 375 * 3);
        assert_eq!(estimate(&data, &info(Format::Jpeg, false), (4000, 3000)), 4000 * 3000 * 3);
        // Progressive: every coefficient, whatever the scale.
        let mut prog = data.to_vec();
        let sof = prog.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
        prog[sof + 1] = 0xC2;
        assert!(crate::jpeg_frame::progressive(&prog));
        assert_eq!(estimate(&prog, &info(Format::Jpeg, false), (256, 256)), 4000 * 3000 * 3);
        // PNG: shrunk on load to at least twice the need (3000 / 256 / 2 → boxes of 5×5 pixels),
        // whole when interlaced (the IHDR's last byte) or when the header is not there.
        let mut ihdr = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        ihdr.extend_from_slice(&[0, 0, 0x0f, 0xa0, 0, 0, 0x0b, 0xb8, 8, 6, 0, 0, 0]);
        assert_eq!(estimate(&ihdr, &info(Format::Png, true), (256, 256)), 800 * 600 * 4);
        *ihdr.last_mut().unwrap() = 1;
        assert_eq!(estimate(&ihdr, &info(Format::Png, true), (256, 256)), 4000 * 3000 * 4);
        assert_eq!(estimate(b"", &info(Format::Png, true), (256, 256)), 4000 * 3000 * 4);
    }
}
