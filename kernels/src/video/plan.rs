//! How a ladder's work is laid over threads: which frames each rung scales from, and how many
//! encoder threads each rung's libx264 gets.
//!
//! - **Cascade.** A rung at most 2× smaller than a larger *scaled* rung is scaled from that
//!   rung's frames instead of the decoded source: 720p → 480p reads 0.9 Mpixel a frame
//!   instead of 2 Mpixel and uses a 1.5× bicubic kernel instead of a 2.25× one (measured on
//!   this project's 2-core host: 1080p → 480p 2.8 ms/frame, 720p → 480p under 1 ms). A rung
//!   the source's own size is never a feeder: it passes the decoded frame through unscaled.
//! - **Encoder threads.** libx264's automatic count is 1.5× the cores *per encoder*, so a
//!   3-rung ladder would run 3 × 1.5 × cores frame threads. Here the same 1.5× cores is
//!   shared out by each rung's share of the pixels (at least one each), so the big rung keeps
//!   most of its parallelism and the small ones stop competing for the cores with threads
//!   that mostly wait.

use super::types::RungConfig;

/// For each rung, the rung whose scaled frames it scales from (`None`: the decoded source).
pub fn feeders(rungs: &[RungConfig], src_width: u32, src_height: u32) -> Vec<Option<usize>> {
    let area = |r: &RungConfig| u64::from(r.width) * u64::from(r.height);
    rungs
        .iter()
        .map(|r| {
            rungs
                .iter()
                .enumerate()
                .filter(|(_, f)| {
                    let scaled = (f.width, f.height) != (src_width, src_height);
                    let larger = f.width > r.width && f.height > r.height;
                    scaled && larger && f.width <= 2 * r.width && f.height <= 2 * r.height
                })
                // The smallest qualifying feeder: the least work, the nearest kernel.
                .min_by_key(|(_, f)| area(f))
                .map(|(i, _)| i)
        })
        .collect()
}

/// libx264 frame threads for each rung: `ceil(1.5 × cores)` shared by pixel count, at least 1.
pub fn encoder_threads(rungs: &[RungConfig], cores: usize) -> Vec<usize> {
    let budget = (cores.max(1) * 3).div_ceil(2) as f64;
    let total: f64 = rungs.iter().map(|r| f64::from(r.width) * f64::from(r.height)).sum();
    rungs
        .iter()
        .map(|r| {
            let share = if total > 0.0 { f64::from(r.width) * f64::from(r.height) / total } else { 1.0 };
            ((budget * share).round() as usize).max(1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(width: u32, height: u32) -> RungConfig {
        RungConfig { width, height, bitrate_kbps: 1000 }
    }

    #[test]
    fn small_rungs_scale_from_the_nearest_scaled_rung() {
        let ladder = [rung(1920, 1080), rung(1280, 720), rung(854, 480), rung(640, 360), rung(426, 240)];
        // 1080p is the source size (passed through), so 720p reads the source; 480p reads
        // 720p, 360p reads 480p (the smallest within 2×), 240p reads 360p (480p is > 2×).
        assert_eq!(feeders(&ladder, 1920, 1080), [None, None, Some(1), Some(2), Some(3)]);
        // From a 4K source every rung is scaled: 1080p feeds 720p, and the chain goes on.
        assert_eq!(feeders(&ladder, 3840, 2160), [None, Some(0), Some(1), Some(2), Some(3)]);
        // Nothing within 2×: every rung reads the source.
        assert_eq!(feeders(&[rung(1920, 1080), rung(640, 360)], 3840, 2160), [None, None]);
        assert_eq!(feeders(&[], 1920, 1080), Vec::<Option<usize>>::new());
    }

    #[test]
    fn encoder_threads_follow_the_pixels() {
        let ladder = [rung(1920, 1080), rung(1280, 720), rung(854, 480)];
        assert_eq!(encoder_threads(&ladder, 2), [2, 1, 1]);
        assert_eq!(encoder_threads(&ladder, 16), [15, 6, 3]);
        assert_eq!(encoder_threads(&ladder[..1], 2), [3]);
        assert_eq!(encoder_threads(&ladder, 0), [1, 1, 1]);
    }
}
