//! The cost model: Lambda per request and per GB-second (on demand and provisioned), pods per
//! pod-hour. Prices come from constants.rs; `Prices::scaled` is the price-ratio knob of the
//! sensitivity sweep.

use super::constants as c;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Prices {
    pub lambda_per_request: f64,
    pub lambda_per_gb_s: f64,
    pub pc_per_gb_s: f64,
    pub pc_duration_per_gb_s: f64,
    pub lambda_memory_gb: f64,
    pub cpu_pod_per_h: f64,
    pub gpu_pod_per_h: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            lambda_per_request: c::LAMBDA_PRICE_PER_REQUEST,
            lambda_per_gb_s: c::LAMBDA_PRICE_PER_GB_S,
            pc_per_gb_s: c::LAMBDA_PC_PRICE_PER_GB_S,
            pc_duration_per_gb_s: c::LAMBDA_PC_DURATION_PRICE_PER_GB_S,
            lambda_memory_gb: c::LAMBDA_MEMORY_GB,
            cpu_pod_per_h: c::CPU_POD_PRICE_PER_H,
            gpu_pod_per_h: c::GPU_POD_PRICE_PER_H,
        }
    }
}

impl Prices {
    /// Every serverless price multiplied by `f` (f > 1: serverless dearer than pods).
    pub fn scaled(self, f: f64) -> Self {
        Prices {
            lambda_per_request: self.lambda_per_request * f,
            lambda_per_gb_s: self.lambda_per_gb_s * f,
            pc_per_gb_s: self.pc_per_gb_s * f,
            pc_duration_per_gb_s: self.pc_duration_per_gb_s * f,
            ..self
        }
    }

    /// One invocation billed for `billed_ms` (run time, plus the init phase on a cold start:
    /// AWS bills INIT for every function since 2025-08-01), rounded up to 1 ms.
    pub fn invocation(&self, billed_ms: f64, provisioned: bool) -> f64 {
        let gb_s = billed_ms.max(0.0).ceil() / 1000.0 * self.lambda_memory_gb;
        let rate = if provisioned { self.pc_duration_per_gb_s } else { self.lambda_per_gb_s };
        self.lambda_per_request + gb_s * rate
    }

    /// Keeping `instances` provisioned for `seconds`.
    pub fn provisioned(&self, instances: usize, seconds: f64) -> f64 {
        instances as f64 * self.lambda_memory_gb * seconds.max(0.0) * self.pc_per_gb_s
    }

    pub fn pod(&self, gpu: bool, seconds: f64) -> f64 {
        let h = if gpu { self.gpu_pod_per_h } else { self.cpu_pod_per_h };
        h * seconds.max(0.0) / 3600.0
    }
}

/// What one run spent, USD, over the measured window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Bill {
    pub lambda_usd: f64,
    pub provisioned_usd: f64,
    pub cpu_pods_usd: f64,
    pub gpu_pods_usd: f64,
}

impl Bill {
    /// The work all three strategies can do (everything but GPU work): Lambda + CPU pods.
    pub fn like_for_like(&self) -> f64 {
        self.lambda_usd + self.provisioned_usd + self.cpu_pods_usd
    }

    pub fn total(&self) -> f64 {
        self.like_for_like() + self.gpu_pods_usd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12_f64.max(b.abs() * 1e-9)
    }

    #[test]
    fn lambda_invocation_by_hand() {
        let p = Prices::default();
        // 100 ms at 2 GB: 0.2 GB-s * $0.0000166667 + $0.0000002 = $0.00000353334.
        assert!(close(p.invocation(100.0, false), 0.2 * 0.000_016_666_7 + 0.000_000_2));
        // Rounded up to the next ms: 99.2 ms bills as 100 ms.
        assert!(close(p.invocation(99.2, false), p.invocation(100.0, false)));
        // One million 1 s invocations: 2e6 GB-s * 0.0000166667 + $0.20 = $33.5334.
        assert!(close(p.invocation(1000.0, false) * 1e6, 33.5334));
        // Provisioned: duration at $0.0000097222 per GB-s.
        assert!(close(p.invocation(1000.0, true), 2.0 * 0.000_009_722_2 + 0.000_000_2));
        // 5 instances provisioned for an hour: 5 * 2 GB * 3600 s * $0.0000041667 = $0.1500012.
        assert!(close(p.provisioned(5, 3600.0), 0.150_001_2));
    }

    #[test]
    fn pods_and_ratio_by_hand() {
        let p = Prices::default();
        assert!(close(p.pod(false, 3600.0), 0.08925));
        assert!(close(p.pod(false, 1800.0) * 2.0, 0.08925));
        assert!(close(p.pod(true, 3600.0), 6.88));
        let d = p.scaled(2.0);
        assert!(close(d.invocation(100.0, false), 2.0 * p.invocation(100.0, false)));
        assert!(close(d.pod(false, 3600.0), 0.08925));
        let b = Bill { lambda_usd: 1.0, provisioned_usd: 0.5, cpu_pods_usd: 2.0, gpu_pods_usd: 10.0 };
        assert!(close(b.like_for_like(), 3.5) && close(b.total(), 13.5));
    }
}
