//! Arrival processes: the seed's Figure 7 profile (a slowly varying baseline with three large
//! bursts) and the steady single-endpoint load of the cost sweep (Figure 6). Non-homogeneous
//! Poisson arrivals by thinning; every request gets its service time here, so all strategies
//! replay exactly the same requests.

use super::engine::SimRng;
use super::workload::{Kind, Request, ServiceModel};

/// The offered-load profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub horizon_s: f64,
    pub baseline_rps: f64,
    pub amplitude: f64,
    pub period_s: f64,
    pub burst_onsets_s: Vec<f64>,
    pub burst_duration_s: f64,
    pub burst_ramp_s: f64,
    pub burst_multiplier: f64,
    /// Request mix, per kind (Kind::index); need not sum to 1 (normalised).
    pub mix: [f64; 6],
}

impl Profile {
    /// Burst factor at `t`: 1 outside bursts, ramps linearly to the multiplier and back.
    pub fn burst_factor(&self, t: f64) -> f64 {
        for &on in &self.burst_onsets_s {
            let off = on + self.burst_duration_s;
            if t >= on && t < off {
                let ramp = self.burst_ramp_s.max(1e-9);
                let up = ((t - on) / ramp).min(1.0);
                let down = ((off - t) / ramp).min(1.0);
                return 1.0 + (self.burst_multiplier - 1.0) * up.min(down);
            }
        }
        1.0
    }

    pub fn in_burst(&self, t: f64) -> bool {
        self.burst_onsets_s.iter().any(|&on| t >= on && t < on + self.burst_duration_s)
    }

    fn baseline(&self, t: f64) -> f64 {
        self.baseline_rps * (1.0 + self.amplitude * (2.0 * std::f64::consts::PI * t / self.period_s.max(1.0)).sin())
    }

    /// Offered rate of `kind` at `t`, requests/s.
    pub fn rate(&self, kind: Kind, t: f64) -> f64 {
        let total: f64 = self.mix.iter().sum();
        if total <= 0.0 {
            return 0.0;
        }
        let share = self.mix[kind.index()] / total;
        let burst = if kind.spec().bursty { self.burst_factor(t) } else { 1.0 };
        self.baseline(t) * share * burst
    }

    pub fn total_rate(&self, t: f64) -> f64 {
        Kind::ALL.iter().map(|&k| self.rate(k, t)).sum()
    }

    fn max_rate(&self) -> f64 {
        let burst = self.burst_multiplier.max(1.0);
        self.baseline_rps * (1.0 + self.amplitude.abs()) * burst
    }

    /// All arrivals of one run, in time order, service times drawn.
    pub fn generate(&self, model: &ServiceModel, seed: u64) -> Vec<Request> {
        let mut arr = SimRng::new(seed, 1);
        let mut svc = SimRng::new(seed, 2);
        // Its own stream, so the service times do not depend on whether cold starts are raw.
        let mut cold = SimRng::new(seed, 3);
        let lambda_max = self.max_rate();
        let mut out = Vec::new();
        if lambda_max <= 0.0 {
            return out;
        }
        let mut t = 0.0;
        loop {
            t += arr.exp(1.0 / lambda_max);
            if t >= self.horizon_s {
                break;
            }
            let rate = self.total_rate(t);
            if arr.uniform() * lambda_max >= rate {
                continue;
            }
            // Which kind: proportional to the kinds' rates at t.
            let mut pick = arr.uniform() * rate;
            let mut kind = Kind::Thumbnail;
            for &k in &Kind::ALL {
                let r = self.rate(k, t);
                if r <= 0.0 {
                    continue;
                }
                kind = k;
                if pick < r {
                    break;
                }
                pick -= r;
            }
            let (service_ms, first_unit_ms) = model.draw(kind, &mut svc);
            let kiln_cold_ms = model.draw_kiln_cold(&mut cold);
            out.push(Request { id: out.len() as u32, kind, arrival_s: t, service_ms, first_unit_ms, in_burst: self.in_burst(t), kiln_cold_ms });
        }
        out
    }
}

/// A steady load of one kind (cost sweep).
pub fn steady(kind: Kind, rps: f64, horizon_s: f64) -> Profile {
    let mut mix = [0.0; 6];
    mix[kind.index()] = 1.0;
    Profile {
        horizon_s,
        baseline_rps: rps,
        amplitude: 0.0,
        period_s: 1.0,
        burst_onsets_s: vec![],
        burst_duration_s: 0.0,
        burst_ramp_s: 1.0,
        burst_multiplier: 1.0,
        mix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_ramp_and_mix_is_respected() {
        let mut p = steady(Kind::Thumbnail, 10.0, 100.0);
        p.burst_onsets_s = vec![10.0];
        p.burst_duration_s = 20.0;
        p.burst_ramp_s = 2.0;
        p.burst_multiplier = 5.0;
        assert_eq!(p.burst_factor(5.0), 1.0);
        assert!((p.burst_factor(11.0) - 3.0).abs() < 1e-9);
        assert!((p.burst_factor(20.0) - 5.0).abs() < 1e-9);
        let m = ServiceModel::load().expect("samples");
        let reqs = p.generate(&m, 1);
        let n = reqs.len() as f64;
        // 90 s at 10/s + 20 s at ~5x: about 900 + 960.
        assert!(n > 1500.0 && n < 2300.0, "{n}");
        assert!(reqs.iter().all(|r| r.kind == Kind::Thumbnail));
        assert!(reqs.windows(2).all(|w| w[0].arrival_s <= w[1].arrival_s));
    }
}
