//! The six workloads of the seed's Table 1 (p95 budget, duration range, state, acceleration)
//! and their service-time models: thumbnail, transcode, infer and render from kiln's own
//! measurements (benches/sim/samples.json, copied from benches/RESULTS.md), metadata and auth
//! from the Table 1 ranges.

use super::constants as c;
use super::engine::{SimRng, Z95, Z99};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Thumbnail,
    Metadata,
    Auth,
    Transcode,
    Infer,
    Render,
}

impl Kind {
    pub const ALL: [Kind; 6] = [Kind::Thumbnail, Kind::Metadata, Kind::Auth, Kind::Transcode, Kind::Infer, Kind::Render];

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn spec(self) -> &'static Spec {
        &SPECS[self as usize]
    }
}

/// One row of the seed's Table 1, plus what the simulator needs to route it.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    /// p95 budget, ms (transcode: job init, i.e. first segment; render: none, "job latency").
    pub budget_ms: Option<f64>,
    /// Table 1 duration range, ms, as printed.
    pub duration_ms: (f64, f64),
    pub state: &'static str,
    pub accel: &'static str,
    /// Needs an accelerator: Table 1 says GPU for transcode and GPU/NPU for infer. Render
    /// ("CPU + GPU") runs on kiln's CPU compositor (RESULTS.md: faster than lavapipe).
    pub needs_gpu: bool,
    /// Latency-sensitive (a user waits): the router gets its budget as a deadline.
    pub interactive: bool,
    /// Rides the bursts (seed Fig 7: bursty short traffic); long jobs keep the baseline.
    pub bursty: bool,
    /// Share of the baseline request mix.
    pub mix: f64,
    /// Short workloads (seed §3: about three quarters of requests).
    pub short: bool,
}

pub static SPECS: [Spec; 6] = [
    Spec { name: "thumbnail", budget_ms: Some(150.0), duration_ms: (20.0, 200.0), state: "stateless", accel: "CPU", needs_gpu: false, interactive: true, bursty: true, mix: c::MIX_THUMBNAIL, short: true },
    Spec { name: "metadata", budget_ms: Some(80.0), duration_ms: (5.0, 60.0), state: "read-only cache", accel: "CPU", needs_gpu: false, interactive: true, bursty: true, mix: c::MIX_METADATA, short: true },
    Spec { name: "auth", budget_ms: Some(60.0), duration_ms: (5.0, 40.0), state: "stateless", accel: "CPU", needs_gpu: false, interactive: true, bursty: true, mix: c::MIX_AUTH, short: true },
    Spec { name: "transcode", budget_ms: Some(5000.0), duration_ms: (30_000.0, 1_800_000.0), state: "bulk I/O", accel: "GPU", needs_gpu: true, interactive: false, bursty: false, mix: c::MIX_TRANSCODE, short: false },
    Spec { name: "infer", budget_ms: Some(250.0), duration_ms: (60.0, 400.0), state: "warm model cache", accel: "GPU / NPU", needs_gpu: true, interactive: true, bursty: true, mix: c::MIX_INFER, short: false },
    Spec { name: "render", budget_ms: None, duration_ms: (60_000.0, 3_600_000.0), state: "working set", accel: "CPU + GPU", needs_gpu: false, interactive: false, bursty: false, mix: c::MIX_RENDER, short: false },
];

/// One request: what arrives and how long it runs on one slot (all strategies see the same
/// requests and the same service times: common random numbers).
#[derive(Debug, Clone)]
pub struct Request {
    pub id: u32,
    pub kind: Kind,
    pub arrival_s: f64,
    /// Total run time on one slot, ms.
    pub service_ms: f64,
    /// Run time of the first unit (segment, page; the whole job for short kinds), ms: first
    /// byte comes after it.
    pub first_unit_ms: f64,
    /// Arrived inside a burst window.
    pub in_burst: bool,
}

#[derive(Debug, Deserialize)]
struct P50P99 {
    p50_ms: f64,
    p99_ms: f64,
    /// Raw per-job samples (`thumbnail_bench.py --samples`), drawn from directly when present.
    #[serde(default)]
    raw_ms: Vec<f64>,
}

#[derive(Debug, Deserialize)]
struct ThumbSamples {
    jpeg: P50P99,
    png: P50P99,
}

#[derive(Debug, Deserialize)]
struct InferSamples {
    p50_ms: f64,
    p95_ms: f64,
}

#[derive(Debug, Deserialize)]
struct TranscodeSamples {
    clip_s: f64,
    round_wall_s: Vec<f64>,
    segment_s: f64,
}

#[derive(Debug, Deserialize)]
struct RenderSamples {
    pages_per_s_min: f64,
    pages_per_s_max: f64,
    cores: f64,
}

#[derive(Debug, Deserialize)]
struct ColdSamples {
    cold_p50_ms: f64,
    warm_p50_ms: f64,
}

#[derive(Debug, Deserialize)]
struct SamplesFile {
    thumbnail: ThumbSamples,
    infer: InferSamples,
    transcode: TranscodeSamples,
    render: RenderSamples,
    lambda_cold_start: ColdSamples,
}

/// The checked-in measurement file.
pub const SAMPLES_JSON: &str = include_str!("../../sim/samples.json");

/// Service-time models, built from samples.json.
#[derive(Debug)]
pub struct ServiceModel {
    thumb: SamplesFile,
    /// Photos in the thumbnail set: 16 JPEG, 14 PNG (RESULTS.md "Inputs").
    jpeg_share: f64,
    transcode_rate: (f64, f64),
    render_page_s: (f64, f64),
}

impl ServiceModel {
    pub fn load() -> Result<Self, String> {
        Self::parse(SAMPLES_JSON)
    }

    pub fn parse(json: &str) -> Result<Self, String> {
        let f: SamplesFile = serde_json::from_str(json).map_err(|e| format!("samples.json: {e}"))?;
        let walls = &f.transcode.round_wall_s;
        let lo = walls.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = walls.iter().copied().fold(0.0, f64::max);
        if walls.is_empty() || f.transcode.clip_s <= 0.0 || f.render.pages_per_s_min <= 0.0 {
            return Err("samples.json: empty transcode rounds or zero rates".into());
        }
        let transcode_rate = (lo / f.transcode.clip_s, hi / f.transcode.clip_s);
        let render_page_s = (f.render.cores / f.render.pages_per_s_max, f.render.cores / f.render.pages_per_s_min);
        Ok(ServiceModel { thumb: f, jpeg_share: 16.0 / 30.0, transcode_rate, render_page_s })
    }

    /// kiln's cold-start share as measured (cold p50 - warm p50), for the report.
    pub fn kiln_cold_p50_ms(&self) -> f64 {
        self.thumb.lambda_cold_start.cold_p50_ms - self.thumb.lambda_cold_start.warm_p50_ms
    }

    /// Draws (total service ms, first unit ms) for one request of `kind`.
    pub fn draw(&self, kind: Kind, rng: &mut SimRng) -> (f64, f64) {
        match kind {
            Kind::Thumbnail => {
                let t = &self.thumb.thumbnail;
                let p = if rng.chance(self.jpeg_share) { &t.jpeg } else { &t.png };
                let ms = if p.raw_ms.is_empty() {
                    rng.lognormal(p.p50_ms, p.p99_ms, Z99, 2.0)
                } else {
                    let i = ((rng.uniform() * p.raw_ms.len() as f64) as usize).min(p.raw_ms.len() - 1);
                    p.raw_ms[i]
                };
                (ms, ms)
            }
            Kind::Metadata | Kind::Auth => {
                let (lo, hi) = kind.spec().duration_ms;
                let ms = rng.log_between(lo, hi);
                (ms, ms)
            }
            Kind::Infer => {
                let i = &self.thumb.infer;
                let ms = rng.lognormal(i.p50_ms, i.p95_ms, Z95, 3.0);
                (ms, ms)
            }
            Kind::Transcode => {
                // Job length from Table 1 (log-uniform), cut into kiln's 4 s segments at the
                // measured rate; each job runs at one of the measured per-round rates.
                let (lo, hi) = kind.spec().duration_ms;
                let target_ms = rng.log_between(lo, hi);
                let mean_rate = 0.5 * (self.transcode_rate.0 + self.transcode_rate.1);
                let seg_s = self.thumb.transcode.segment_s;
                let segments = (target_ms / 1000.0 / mean_rate / seg_s).ceil().max(1.0);
                let rate = rng.between(self.transcode_rate.0, self.transcode_rate.1);
                let seg_ms = seg_s * rate * 1000.0;
                (segments * seg_ms, seg_ms)
            }
            Kind::Render => {
                let (lo, hi) = kind.spec().duration_ms;
                let target_ms = rng.log_between(lo, hi);
                let mean_page = 0.5 * (self.render_page_s.0 + self.render_page_s.1);
                let pages = (target_ms / 1000.0 / mean_page).ceil().max(1.0);
                let page_ms = rng.between(self.render_page_s.0, self.render_page_s.1) * 1000.0;
                (pages * page_ms, page_ms)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_file_parses_and_short_kinds_are_three_quarters() {
        let m = ServiceModel::load().expect("samples.json parses");
        assert!((m.kiln_cold_p50_ms() - 9.4).abs() < 1e-9);
        let short: f64 = SPECS.iter().filter(|s| s.short).map(|s| s.mix).sum();
        let all: f64 = SPECS.iter().map(|s| s.mix).sum();
        assert!((all - 1.0).abs() < 1e-9, "mix sums to {all}");
        assert!((short - 0.75).abs() < 1e-9);
    }

    #[test]
    fn long_jobs_land_in_their_table1_ranges() {
        let m = ServiceModel::load().expect("samples.json parses");
        let mut rng = SimRng::new(3, 3);
        for _ in 0..200 {
            let (t, seg) = m.draw(Kind::Transcode, &mut rng);
            assert!((25_000.0..=1_900_000.0).contains(&t), "transcode {t}");
            assert!(seg > 700.0 && seg < 900.0, "segment {seg}");
            let (r, page) = m.draw(Kind::Render, &mut rng);
            assert!((55_000.0..=3_700_000.0).contains(&r), "render {r}");
            assert!(page > 130.0 && page < 145.0);
        }
    }

    #[test]
    fn bad_samples_are_an_error_not_a_panic() {
        assert!(ServiceModel::parse("{}").is_err());
        assert!(ServiceModel::parse("not json").is_err());
    }
}
