//! SVG plots (plotters, SVG backend only): the first-byte CDF under bursts (seed Fig 5), cost vs
//! sustained throughput with the crossing point (Fig 6), offered load and workers per tier over
//! the burst profile (Fig 7), and the closed-loop experiment.

use super::experiments::{ClosedLoop, Main, Sweep};
use super::report::burst_first_bytes;
use plotters::prelude::*;
use std::error::Error;
use std::path::Path;

type R = Result<(), Box<dyn Error>>;

const COLORS: [RGBColor; 6] = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];

/// Fig 5: CDF of first-byte latency of the short requests that arrived inside bursts.
pub fn first_byte_cdf(main: &Main, path: &Path) -> R {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("First-byte latency under bursts (thumbnail, metadata, auth)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1f64..10_000f64).log_scale(), 0f64..1.0)?;
    chart.configure_mesh().x_desc("first byte (ms, log)").y_desc("CDF").draw()?;
    for (i, (name, run)) in main.runs.iter().enumerate() {
        let v = burst_first_bytes(&main.reqs, run, main.warmup_s, main.profile.horizon_s);
        if v.is_empty() {
            continue;
        }
        let n = v.len() as f64;
        let step = (v.len() / 2000).max(1);
        let pts: Vec<(f64, f64)> = v.iter().enumerate().filter(|(j, _)| j % step == 0 || *j == v.len() - 1).map(|(j, &x)| (x.max(1.0), (j + 1) as f64 / n)).collect();
        let col = COLORS[i % COLORS.len()];
        chart.draw_series(LineSeries::new(pts, col.stroke_width(2)))?.label(*name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col));
    }
    chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).border_style(BLACK).background_style(WHITE.mix(0.9)).draw()?;
    root.present()?;
    Ok(())
}

/// Fig 6: cost per hour vs steady throughput of one thumbnail endpoint, log-log.
pub fn cost_curves(sweep: &Sweep, path: &Path) -> R {
    if sweep.points.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let xs: Vec<f64> = sweep.points.iter().map(|p| p.rps).collect();
    let ys: Vec<f64> = sweep.points.iter().flat_map(|p| [p.serverless_usd_per_h, p.container_usd_per_h, p.hybrid_usd_per_h]).filter(|&y| y > 0.0).collect();
    let (x0, x1) = (xs.iter().copied().fold(f64::INFINITY, f64::min), xs.iter().copied().fold(0.0, f64::max));
    let (y0, y1) = (ys.iter().copied().fold(f64::INFINITY, f64::min) * 0.7, ys.iter().copied().fold(0.0, f64::max) * 1.4);
    let mut chart = ChartBuilder::on(&root)
        .caption("Cost to serve vs sustained throughput (thumbnail endpoint)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), (y0.max(1e-4)..y1.max(1e-3)).log_scale())?;
    chart.configure_mesh().x_desc("requests/s (log)").y_desc("USD per hour (log)").draw()?;
    type Getter = fn(&super::experiments::SweepPoint) -> f64;
    let series: [(&str, Getter); 3] =
        [("serverless-only", |p| p.serverless_usd_per_h), ("container-only", |p| p.container_usd_per_h), ("hybrid", |p| p.hybrid_usd_per_h)];
    for (i, (name, f)) in series.iter().enumerate() {
        let col = COLORS[i];
        let pts: Vec<(f64, f64)> = sweep.points.iter().map(|p| (p.rps, f(p).max(1e-4))).collect();
        chart.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))?.label(*name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled())))?;
    }
    if let Some(x) = sweep.crossing_rps {
        chart
            .draw_series(LineSeries::new(vec![(x, y0.max(1e-4)), (x, y1.max(1e-3))], BLACK.stroke_width(1)))?
            .label(format!("crossing ≈ {x:.0} req/s"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).background_style(WHITE.mix(0.9)).draw()?;
    root.present()?;
    Ok(())
}

/// Fig 7: offered load (upper) and workers per tier (lower) over the burst profile.
pub fn workers(main: &Main, path: &Path) -> R {
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((2, 1));
    let t1 = main.profile.horizon_s;
    let Some(hybrid) = main.runs.get("hybrid") else { return Ok(()) };
    let load: Vec<(f64, f64)> = hybrid.series.iter().filter(|s| s.t_s <= t1).map(|s| (s.t_s, s.offered_rps)).collect();
    let ymax = load.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut up = ChartBuilder::on(&areas[0])
        .caption("Offered load and workers per tier (bursts at 900, 1800, 2700 s)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t1, 0f64..ymax)?;
    up.configure_mesh().y_desc("offered req/s").draw()?;
    up.draw_series(LineSeries::new(load, BLACK))?;
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (name, run) in &main.runs {
        if matches!(*name, "serverless" | "hybrid" | "hybrid_static_place") {
            lines.push((format!("{name}: Lambda concurrency"), run.series.iter().filter(|s| s.t_s <= t1).map(|s| (s.t_s, s.lambda_busy as f64)).collect()));
        }
        if matches!(*name, "container" | "hybrid" | "hybrid_static_place") {
            lines.push((format!("{name}: CPU pods x slots"), run.series.iter().filter(|s| s.t_s <= t1).map(|s| (s.t_s, (s.pods[0] * super::constants::CPU_POD_SLOTS) as f64)).collect()));
        }
    }
    let wmax = lines.iter().flat_map(|(_, v)| v.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.1;
    let mut low = ChartBuilder::on(&areas[1]).margin(10).x_label_area_size(35).y_label_area_size(60).build_cartesian_2d(0f64..t1, 0f64..wmax)?;
    low.configure_mesh().x_desc("time (s)").y_desc("concurrent workers / slots").draw()?;
    for (i, (name, pts)) in lines.into_iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        low.draw_series(LineSeries::new(pts, col.stroke_width(1)))?.label(name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col));
    }
    low.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).background_style(WHITE.mix(0.9)).draw()?;
    root.present()?;
    Ok(())
}

/// The closed loop: short-request p95 and the share placed on serverless per window, one
/// line per policy (adaptive Router, static Router, old place).
pub fn closed_loop(cl: &ClosedLoop, path: &Path) -> R {
    let root = SVGBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((2, 1));
    let t1 = cl.lines.iter().filter_map(|l| l.windows.last()).map(|w| w.t_s).fold(1.0, f64::max);
    let ymax = cl.lines.iter().flat_map(|l| l.windows.iter().filter_map(|w| w.short_p95_ms)).fold(1.0, f64::max) * 1.2;
    let mut up = ChartBuilder::on(&areas[0])
        .caption(format!("Closed loop: container service time x{} at {} s", cl.factor, cl.slowdown_at_s), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t1, 0f64..ymax)?;
    up.configure_mesh().y_desc("short p95 (ms)").draw()?;
    let mut low = ChartBuilder::on(&areas[1]).margin(10).x_label_area_size(35).y_label_area_size(60).build_cartesian_2d(0f64..t1, 0f64..1.0)?;
    low.configure_mesh().x_desc("time (s)").y_desc("short share on serverless").draw()?;
    for (i, line) in cl.lines.iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        let p95: Vec<(f64, f64)> = line.windows.iter().filter_map(|w| w.short_p95_ms.map(|p| (w.t_s, p))).collect();
        up.draw_series(LineSeries::new(p95, col.stroke_width(2)))?.label(line.name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col));
        low.draw_series(LineSeries::new(line.windows.iter().map(|w| (w.t_s, w.serverless_share)), col.stroke_width(2)))?
            .label(line.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col));
    }
    up.draw_series(LineSeries::new(vec![(cl.slowdown_at_s, 0.0), (cl.slowdown_at_s, ymax)], BLACK))?;
    low.draw_series(LineSeries::new(vec![(cl.slowdown_at_s, 0.0), (cl.slowdown_at_s, 1.0)], BLACK))?;
    up.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).background_style(WHITE.mix(0.9)).draw()?;
    low.configure_series_labels().position(SeriesLabelPosition::LowerLeft).border_style(BLACK).background_style(WHITE.mix(0.9)).draw()?;
    root.present()?;
    Ok(())
}

/// Writes every plot into `dir`; returns the files written.
pub fn all(main: &Main, sweep: Option<&Sweep>, cl: Option<&ClosedLoop>, dir: &Path) -> Result<Vec<String>, Box<dyn Error>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let p = dir.join("fig5_first_byte_cdf.svg");
    first_byte_cdf(main, &p)?;
    out.push(p.display().to_string());
    if let Some(s) = sweep {
        let p = dir.join("fig6_cost_vs_throughput.svg");
        cost_curves(s, &p)?;
        out.push(p.display().to_string());
    }
    let p = dir.join("fig7_workers.svg");
    workers(main, &p)?;
    out.push(p.display().to_string());
    if let Some(c) = cl {
        let p = dir.join("closed_loop.svg");
        closed_loop(c, &p)?;
        out.push(p.display().to_string());
    }
    Ok(out)
}
