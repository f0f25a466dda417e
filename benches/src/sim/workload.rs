//! The six workloads of the seed's Table 1 (p95 budget, duration range, state, acceleration)
//! and their service-time models: thumbnail, transcode, infer and render from kiln's own
//! measurements (benches/sim/samples.json), metadata and auth from the Table 1 ranges.
//!
//! samples.json holds two kinds of measurement: summaries copied from benches/RESULTS.md
//! (percentiles, per-round rates) and raw samples the benches wrote (`--samples FILE`, merged
//! by benches/sim/merge_samples.py into the `raw_*` lists). Where a raw list is present the
//! model draws from it (the empirical distribution: each sample equally likely, from the
//! seeded stream, so a seed gives the same draws); where it is empty it falls back to the
//! parametric fit through the summary. [`ServiceModel::sources`] says which was used.

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
    /// kiln's own share of a Lambda cold start, should this request meet one (drawn with
    /// the request, so every strategy sees the same value; the platform's share is drawn
    /// at the cold start).
    pub kiln_cold_ms: f64,
}

#[derive(Debug, Deserialize)]
struct P50P99 {
    p50_ms: f64,
    p99_ms: f64,
    /// Raw per-job samples (`thumbnail.sh --samples`, merged by merge_samples.py), drawn
    /// from directly when present.
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
    /// Cores the measured job rendered pages on (1 for the summary: the build before main's
    /// 8eeeacc rendered on the job's thread only), so one slot's page time is threads / rate.
    threads: f64,
    /// Raw per-slot page times, ms (`render.sh --samples`, one per round: threads × job run_ms
    /// / pages, see merge_samples.py).
    #[serde(default)]
    raw_page_ms: Vec<f64>,
}

#[derive(Debug, Deserialize)]
struct ColdSamples {
    cold_p50_ms: f64,
    warm_p50_ms: f64,
    /// Raw cold starts, spawn -> first result, ms (`lambda_bench.py --samples`).
    #[serde(default)]
    raw_cold_ms: Vec<f64>,
    /// Raw warm invocations, ms (same run).
    #[serde(default)]
    raw_warm_ms: Vec<f64>,
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
    /// kiln's cold-start share from the raw samples: each cold start minus the warm median
    /// (at least 0). Empty: the lognormal through constants.rs's KILN_COLD_P50/P99_MS.
    kiln_cold_raw_ms: Vec<f64>,
}

/// Removes every `raw_*` list from a samples.json value.
pub fn strip_raw(v: &mut serde_json::Value) {
    for path in ["/thumbnail/jpeg", "/thumbnail/png", "/render", "/lambda_cold_start"] {
        if let Some(serde_json::Value::Object(o)) = v.pointer_mut(path) {
            o.retain(|k, _| !k.starts_with("raw_"));
        }
    }
}

/// One of `xs`, each equally likely (the empirical distribution). `xs` is not empty.
fn empirical(xs: &[f64], rng: &mut SimRng) -> f64 {
    let i = ((rng.uniform() * xs.len() as f64) as usize).min(xs.len() - 1);
    xs[i]
}

fn median(xs: &[f64]) -> f64 {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

impl ServiceModel {
    pub fn load() -> Result<Self, String> {
        Self::parse(SAMPLES_JSON)
    }

    /// samples.json without its raw lists: every service time from the fits through the
    /// summaries (`hybrid-sim --fit-only`, to see what the raw samples change).
    pub fn load_fit_only() -> Result<Self, String> {
        let mut v: serde_json::Value = serde_json::from_str(SAMPLES_JSON).map_err(|e| format!("samples.json: {e}"))?;
        strip_raw(&mut v);
        Self::parse(&v.to_string())
    }

    pub fn parse(json: &str) -> Result<Self, String> {
        let f: SamplesFile = serde_json::from_str(json).map_err(|e| format!("samples.json: {e}"))?;
        let walls = &f.transcode.round_wall_s;
        let lo = walls.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = walls.iter().copied().fold(0.0, f64::max);
        if walls.is_empty() || f.transcode.clip_s <= 0.0 || f.render.pages_per_s_min <= 0.0 || f.render.threads < 1.0 {
            return Err("samples.json: empty transcode rounds, zero rates or render threads below 1".into());
        }
        let transcode_rate = (lo / f.transcode.clip_s, hi / f.transcode.clip_s);
        let render_page_s = (f.render.threads / f.render.pages_per_s_max, f.render.threads / f.render.pages_per_s_min);
        let raws = [
            ("thumbnail.jpeg.raw_ms", &f.thumbnail.jpeg.raw_ms),
            ("thumbnail.png.raw_ms", &f.thumbnail.png.raw_ms),
            ("render.raw_page_ms", &f.render.raw_page_ms),
            ("lambda_cold_start.raw_cold_ms", &f.lambda_cold_start.raw_cold_ms),
            ("lambda_cold_start.raw_warm_ms", &f.lambda_cold_start.raw_warm_ms),
        ];
        for (name, xs) in raws {
            if xs.iter().any(|x| !x.is_finite() || *x < 0.0) {
                return Err(format!("samples.json: {name} has a negative or non-finite sample"));
            }
        }
        let lc = &f.lambda_cold_start;
        let kiln_cold_raw_ms = match (lc.raw_cold_ms.is_empty(), lc.raw_warm_ms.is_empty()) {
            (false, false) => {
                let warm = median(&lc.raw_warm_ms);
                lc.raw_cold_ms.iter().map(|c| (c - warm).max(0.0)).collect()
            }
            (true, true) => Vec::new(),
            _ => return Err("samples.json: lambda_cold_start needs both raw_cold_ms and raw_warm_ms, or neither".into()),
        };
        Ok(ServiceModel { thumb: f, jpeg_share: 16.0 / 30.0, transcode_rate, render_page_s, kiln_cold_raw_ms })
    }

    /// Where each service time comes from: `raw (n samples)` or the fallback fit.
    pub fn sources(&self) -> serde_json::Value {
        let raw = |xs: &[f64], fallback: &str| {
            if xs.is_empty() {
                fallback.to_owned()
            } else {
                format!("raw ({} samples)", xs.len())
            }
        };
        let t = &self.thumb;
        serde_json::json!({
            "thumbnail_jpeg": raw(&t.thumbnail.jpeg.raw_ms, "lognormal through p50/p99"),
            "thumbnail_png": raw(&t.thumbnail.png.raw_ms, "lognormal through p50/p99"),
            "render_page": raw(&t.render.raw_page_ms, "uniform between the measured pages/s"),
            "kiln_cold_start": raw(&self.kiln_cold_raw_ms, "lognormal through KILN_COLD_P50/P99_MS"),
            "transcode_segment": format!("uniform between {} measured per-round rates (GPU host)", t.transcode.round_wall_s.len()),
            "infer": "lognormal through p50/p95 (GPU host summary)",
            "metadata_auth": "log-uniform over the Table 1 range",
        })
    }

    /// kiln's share of one Lambda cold start, ms: a raw sample when present, else the
    /// lognormal through constants.rs's p50/p99.
    pub fn draw_kiln_cold(&self, rng: &mut SimRng) -> f64 {
        if self.kiln_cold_raw_ms.is_empty() {
            rng.lognormal(c::KILN_COLD_P50_MS, c::KILN_COLD_P99_MS, Z99, 2.0)
        } else {
            empirical(&self.kiln_cold_raw_ms, rng)
        }
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
                let ms = if p.raw_ms.is_empty() { rng.lognormal(p.p50_ms, p.p99_ms, Z99, 2.0) } else { empirical(&p.raw_ms, rng) };
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
                let raw = &self.thumb.render.raw_page_ms;
                let mean_page = if raw.is_empty() {
                    0.5 * (self.render_page_s.0 + self.render_page_s.1)
                } else {
                    raw.iter().sum::<f64>() / raw.len() as f64 / 1000.0
                };
                let pages = (target_ms / 1000.0 / mean_page).ceil().max(1.0);
                let page_ms =
                    if raw.is_empty() { rng.between(self.render_page_s.0, self.render_page_s.1) * 1000.0 } else { empirical(raw, rng) };
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

    /// samples.json as a JSON value, with `edit` applied.
    fn samples_with(edit: impl FnOnce(&mut serde_json::Value)) -> ServiceModel {
        let mut v: serde_json::Value = serde_json::from_str(SAMPLES_JSON).expect("samples.json parses");
        edit(&mut v);
        ServiceModel::parse(&v.to_string()).expect("edited samples parse")
    }

    /// Distinctive raw samples no fit would produce.
    fn distinctive(v: &mut serde_json::Value) {
        v["thumbnail"]["jpeg"]["raw_ms"] = serde_json::json!([4242.0]);
        v["thumbnail"]["png"]["raw_ms"] = serde_json::json!([4343.0]);
        v["render"]["raw_page_ms"] = serde_json::json!([777.0]);
        v["lambda_cold_start"]["raw_cold_ms"] = serde_json::json!([5000.0, 5000.0]);
        v["lambda_cold_start"]["raw_warm_ms"] = serde_json::json!([10.0, 10.0, 30.0]);
    }

    #[test]
    fn raw_samples_are_drawn_when_present_and_the_fit_when_not() {
        let raw = samples_with(distinctive);
        let mut rng = SimRng::new(5, 2);
        let (mut jpeg, mut png) = (0, 0);
        for _ in 0..200 {
            let (ms, first) = raw.draw(Kind::Thumbnail, &mut rng);
            assert_eq!(ms, first);
            match ms {
                4242.0 => jpeg += 1,
                4343.0 => png += 1,
                other => panic!("thumbnail {other} ms is not a raw sample"),
            }
            let (_, page) = raw.draw(Kind::Render, &mut rng);
            assert_eq!(page, 777.0);
            // kiln's share: each cold start minus the warm median (10 ms).
            assert_eq!(raw.draw_kiln_cold(&mut rng), 4990.0);
        }
        assert!(jpeg > 60 && png > 60, "both sets drawn: {jpeg} / {png}");
        assert_eq!(raw.sources()["thumbnail_jpeg"], "raw (1 samples)");

        let fit = ServiceModel::load_fit_only().expect("fit-only model");
        for _ in 0..200 {
            let (ms, _) = fit.draw(Kind::Thumbnail, &mut rng);
            assert!(ms > 0.0 && ms < 600.0, "fit thumbnail {ms}");
            let (_, page) = fit.draw(Kind::Render, &mut rng);
            // One thread at 14.36-14.58 pages/s: 68.6-69.6 ms a page.
            assert!(page > 68.5 && page < 69.7, "fit page {page}");
            let k = fit.draw_kiln_cold(&mut rng);
            assert!(k > 0.0 && k <= 2.0 * c::KILN_COLD_P99_MS, "fit kiln cold {k}");
        }
        assert_eq!(fit.sources()["kiln_cold_start"], "lognormal through KILN_COLD_P50/P99_MS");
    }

    #[test]
    fn the_simulation_runs_on_the_raw_samples() {
        use super::super::arrivals::steady;
        use super::super::run::{simulate, Served};
        use super::super::strategy::Strategy;
        let model = samples_with(distinctive);
        let reqs = steady(Kind::Thumbnail, 2.0, 120.0).generate(&model, 9);
        assert!(reqs.len() > 150 && reqs.iter().all(|r| r.kiln_cold_ms == 4990.0));
        let cfg = super::super::Config::default();
        let cont = simulate(&reqs, 120.0, Strategy::Container, &cfg, 9).expect("container run");
        let lam = simulate(&reqs, 120.0, Strategy::Serverless, &cfg, 9).expect("serverless run");
        let mut colds = 0;
        for (r, (oc, ol)) in reqs.iter().zip(cont.outcomes.iter().zip(&lam.outcomes)) {
            assert!(r.service_ms == 4242.0 || r.service_ms == 4343.0, "service {}", r.service_ms);
            assert_eq!(oc.served, Served::Container);
            // A container answer takes at least the raw service time.
            assert!(oc.done_ms >= r.service_ms - 1e-3, "container {} < {}", oc.done_ms, r.service_ms);
            assert_eq!(ol.served, Served::Serverless);
            if ol.cold {
                colds += 1;
                // Platform start (> 0) + kiln's raw share + the raw service time.
                assert!(ol.done_ms > 4990.0 + r.service_ms, "cold {} ms", ol.done_ms);
            } else {
                assert!(ol.done_ms >= r.service_ms - 1e-3 && ol.done_ms < r.service_ms + 1.0, "warm {} ms", ol.done_ms);
            }
        }
        assert!(colds > 0 && colds == lam.cold_starts as usize);
    }

    #[test]
    fn bad_raw_samples_are_an_error() {
        let mut v: serde_json::Value = serde_json::from_str(SAMPLES_JSON).expect("parses");
        v["thumbnail"]["png"]["raw_ms"] = serde_json::json!([12.0, -1.0]);
        assert!(ServiceModel::parse(&v.to_string()).is_err());
        let mut v: serde_json::Value = serde_json::from_str(SAMPLES_JSON).expect("parses");
        strip_raw(&mut v);
        v["lambda_cold_start"]["raw_cold_ms"] = serde_json::json!([100.0]);
        assert!(ServiceModel::parse(&v.to_string()).is_err(), "cold samples without warm ones");
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
            // Per-slot page time: a raw sample (2-core host, 2026-12-03 14:54: 125-136 ms) or
            // the fit (one thread, 2026-11-23: 68.6-69.6 ms).
            assert!(page > 60.0 && page < 400.0, "page {page}");
        }
    }

    #[test]
    fn bad_samples_are_an_error_not_a_panic() {
        assert!(ServiceModel::parse("{}").is_err());
        assert!(ServiceModel::parse("not json").is_err());
    }
}
