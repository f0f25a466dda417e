//! The scheduler's state as Prometheus gauges, rendered from a [`Snapshot`] at scrape time:
//! CPU slots held, started jobs waiting for a slot again, job threads, and per GPU device its
//! slots and memory (held by jobs, held by warm models). The router reads the same numbers
//! from the capacity report; these are for dashboards and alerts.

use super::Snapshot;
use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// Appends the gauges of `snap` to `out` in the Prometheus text format.
pub fn render(snap: &Snapshot, out: &mut String) {
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, v: usize| {
        let g = IntGauge::new(name, help).expect("static metric");
        g.set(v as i64);
        registry.register(Box::new(g)).expect("metric names are unique");
    };
    gauge("kiln_cpu_slots", "CPU slots: jobs computing at once", snap.slots);
    gauge("kiln_cpu_slots_busy", "CPU slots held by computing jobs", snap.cpu_busy);
    gauge("kiln_job_threads", "Job threads: jobs started at once (computing or waiting)", snap.threads);
    gauge("kiln_jobs_started", "Jobs started and not finished, computing or waiting", snap.running);
    gauge("kiln_jobs_returning", "Started jobs whose wait ended, queued for a CPU slot again", snap.returning);
    // A started job holding no CPU slot and not queued for one is waiting (batch, store,
    // lease, GPU slot).
    let waiting = snap.running.saturating_sub(snap.cpu_busy + snap.returning);
    gauge("kiln_jobs_waiting", "Started jobs waiting without a CPU slot (batch, store, lease, GPU)", waiting);

    let by_kind = IntGaugeVec::new(Opts::new("kiln_cpu_slots_busy_by_kind", "CPU slots held, by kind"), &["kind"])
        .expect("static metric");
    for (kind, n) in &snap.cpu_by_kind {
        by_kind.with_label_values(&[kind]).set(*n as i64);
    }
    registry.register(Box::new(by_kind)).expect("metric names are unique");

    let vec = |name: &str, help: &str, labels: &[&str]| {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric");
        registry.register(Box::new(g.clone())).expect("metric names are unique");
        g
    };
    let slots = vec("kiln_gpu_slots", "GPU slots per device", &["device"]);
    let busy = vec("kiln_gpu_slots_busy", "GPU slots held by jobs, per device", &["device"]);
    let budget = vec("kiln_gpu_memory_budget_bytes", "GPU memory kiln may use, per device", &["device"]);
    let used = vec("kiln_gpu_memory_held_bytes", "GPU memory held, per device, by jobs' grants or warm models", &["device", "holder"]);
    for d in &snap.gpus {
        let dev = d.index.to_string();
        slots.with_label_values(&[&dev]).set(d.slots as i64);
        busy.with_label_values(&[&dev]).set(d.busy as i64);
        budget.with_label_values(&[&dev]).set(d.mem_budget as i64);
        used.with_label_values(&[&dev, "jobs"]).set(d.mem_in_use as i64);
        used.with_label_values(&[&dev, "models"]).set(d.mem_reserved as i64);
    }

    let mut buf = Vec::new();
    if TextEncoder::new().encode(&registry.gather(), &mut buf).is_ok() {
        out.push_str(&String::from_utf8_lossy(&buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::gpu::DeviceSnapshot;

    #[test]
    fn waiting_jobs_are_the_started_ones_without_a_slot_or_a_place_in_line() {
        let snap = Snapshot {
            slots: 2,
            cpu_busy: 1,
            threads: 8,
            running: 5,
            returning: 1,
            gpus: vec![DeviceSnapshot { index: 0, slots: 4, busy: 1, mem_budget: 1 << 30, mem_in_use: 1 << 20, mem_reserved: 1 << 28 }],
            ..Snapshot::default()
        };
        let mut text = String::new();
        render(&snap, &mut text);
        for line in [
            "kiln_cpu_slots 2",
            "kiln_cpu_slots_busy 1",
            "kiln_jobs_waiting 3",
            "kiln_jobs_returning 1",
            "kiln_gpu_slots_busy{device=\"0\"} 1",
            "kiln_gpu_memory_held_bytes{device=\"0\",holder=\"models\"} 268435456",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }
}
