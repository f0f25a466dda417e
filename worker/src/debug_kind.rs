//! The `debug` job kind, compiled only with the `debug-kind` feature (never in a release
//! build) and registered only when `KILN_DEBUG_KINDS=1`: a job that holds its slot
//! for a while or until a gate file appears, waits without its slot (as a batch or a store
//! call waits), holds a GPU grant, panics, or writes a small output. End-to-end
//! tests use it to exercise the scheduler (overload, priority, deadlines, cancellation,
//! drain, panic isolation) with exact control over when a job ends, and, with `units`, the
//! checkpoint machinery (lease, resume, takeover) without a media job's cost.

use kiln_jobs::context::ensure;
use kiln_jobs::{Accel, JobContext, JobError, JobKind, JobOutput, Limits, Needs, PreparedJob};
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Longest a debug job may hold its slot.
const MAX_HOLD: Duration = Duration::from_secs(60);

pub struct DebugKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    /// Hold the slot this long (cooperatively: cancel and deadline end it early).
    #[serde(default)]
    hold_ms: u64,
    /// Hold the slot until this file exists (at most 60 s).
    #[serde(default)]
    hold_until: Option<PathBuf>,
    /// Panic instead of finishing.
    #[serde(default)]
    panic: bool,
    /// Write an output of this name with the job id as content.
    #[serde(default)]
    output: Option<String>,
    /// Append the job id to this file when the run starts (tests count reruns with it).
    #[serde(default)]
    log: Option<PathBuf>,
    /// Run as this many checkpointed units (`unit-0001` …), each holding its slot for
    /// `unit_ms` and storing `unit-NNNN.txt`; restored units are skipped.
    #[serde(default)]
    units: u32,
    #[serde(default)]
    unit_ms: u64,
    /// Append `{job id} {unit key}` to this file for every unit this attempt computes.
    #[serde(default)]
    unit_log: Option<PathBuf>,
    /// Before holding: wait until this file exists without the CPU slot, as an infer job waits
    /// for its batch ([`JobContext::idle`]).
    #[serde(default)]
    idle_until: Option<PathBuf>,
    /// Before holding: wait until this file exists through [`JobContext::wait_or_stop`], the
    /// path store reads take (the CPU slot goes back once the wait outlasts its grace).
    #[serde(default)]
    wait_until: Option<PathBuf>,
    /// First of all, take a GPU slot and this many MiB (waiting without the CPU slot), held
    /// until the job ends.
    #[serde(default)]
    gpu_mb: Option<u64>,
    /// Before holding: read this file with a plain blocking read on one of the runtime's
    /// blocking threads, awaited through [`JobContext::wait_or_stop`] as store reads are: for a
    /// FIFO nobody writes to, a store call that never returns (cancel answers the job; the read
    /// stays stuck).
    #[serde(default)]
    stuck_read: Option<PathBuf>,
    /// Before holding: read this file with a plain blocking read on the job's own thread: for
    /// a FIFO nobody writes to, a hung decoder that not even cancel reaches.
    #[serde(default)]
    stuck_read_here: Option<PathBuf>,
    /// The acceleration the job says it needs (only fit checks read it: `gpu` is refused by
    /// the serverless tier).
    #[serde(default)]
    accel: Accel,
}

fn append_line(path: &std::path::Path, line: &str) -> Result<(), JobError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
        .map_err(|e| JobError::internal(format!("debug log {}: {e}", path.display())))
}

/// Holds the slot for `ms`, cooperatively.
fn hold(ctx: &JobContext, ms: u64) -> Result<(), JobError> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(ms) {
        ctx.check()?;
        std::thread::sleep(Duration::from_millis(2));
    }
    ctx.check()
}

impl Spec {
    fn run_units(&self, ctx: &JobContext) -> Result<JobOutput, JobError> {
        let mut out = JobOutput::default();
        for i in 1..=self.units {
            let key = format!("unit-{i:04}");
            if let Some(done) = ctx.restored_unit(&key) {
                out.resumed = true;
                out.outputs.extend(done.outputs);
                continue;
            }
            hold(ctx, self.unit_ms)?;
            let body = bytes::Bytes::from(format!("{} {key}", ctx.job_id));
            let stored = ctx.store_output(&format!("{key}.txt"), body, "text/plain", None)?;
            if let Some(log) = &self.unit_log {
                append_line(log, &format!("{} {key}", ctx.job_id))?;
            }
            ctx.complete_unit(&key, std::slice::from_ref(&stored), Value::Null)?;
            ctx.progress(u64::from(i), u64::from(self.units), "units");
            out.outputs.push(stored);
        }
        Ok(out)
    }
}

impl JobKind for DebugKind {
    fn name(&self) -> &'static str {
        "debug"
    }

    fn prepare(&self, input: &Value, _limits: &Limits) -> Result<Box<dyn PreparedJob>, JobError> {
        let spec: Spec = serde_json::from_value(input.clone()).map_err(|e| JobError::invalid_spec(format!("debug spec: {e}")))?;
        ensure(spec.hold_ms <= MAX_HOLD.as_millis() as u64, || "hold_ms is at most 60000".into())?;
        ensure(spec.units <= 10_000 && spec.unit_ms <= 10_000, || "units at most 10000, unit_ms at most 10000".into())?;
        Ok(Box::new(spec))
    }
}

impl PreparedJob for Spec {
    fn checkpointed(&self) -> bool {
        self.units > 0
    }

    fn needs(&self) -> Needs {
        Needs { accel: self.accel, ..Needs::default() }
    }

    fn run(self: Box<Self>, ctx: &JobContext) -> Result<JobOutput, JobError> {
        if let Some(log) = &self.log {
            append_line(log, &ctx.job_id)?;
        }
        if self.units > 0 {
            return self.run_units(ctx);
        }
        let _gpu = match self.gpu_mb {
            Some(mb) => Some(ctx.gpu(mb << 20)?),
            None => None,
        };
        if let Some(p) = &self.idle_until {
            ctx.progress(0, 1, "idle");
            ctx.idle(|| {
                let start = Instant::now();
                while !p.exists() && start.elapsed() < MAX_HOLD {
                    ctx.check()?;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok::<_, JobError>(())
            })??;
        }
        if let Some(p) = &self.wait_until {
            ctx.progress(0, 1, "wait");
            ctx.wait_or_stop(async {
                let start = Instant::now();
                while !p.exists() && start.elapsed() < MAX_HOLD {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })?;
        }
        if let Some(p) = self.stuck_read.clone() {
            ctx.progress(0, 1, "stuck_read");
            // Spawned when first polled, inside the runtime the wait runs on.
            let read = ctx.wait_or_stop(async move { tokio::task::spawn_blocking(move || std::fs::read(p)).await })?;
            read.map_err(|e| JobError::internal(format!("stuck_read task: {e}")))?
                .map_err(|e| JobError::internal(format!("stuck_read: {e}")))?;
        }
        if let Some(p) = &self.stuck_read_here {
            ctx.progress(0, 1, "stuck_read_here");
            std::fs::read(p).map_err(|e| JobError::internal(format!("stuck_read_here: {e}")))?;
        }
        let start = Instant::now();
        let hold = Duration::from_millis(self.hold_ms);
        ctx.progress(0, 1, "hold");
        loop {
            ctx.check()?;
            let gate_open = self.hold_until.as_ref().is_none_or(|p| p.exists());
            if (start.elapsed() >= hold && gate_open) || start.elapsed() >= MAX_HOLD {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if self.panic {
            panic!("debug job {} panicked on purpose", ctx.job_id);
        }
        let mut out = JobOutput::default();
        if let Some(name) = &self.output {
            out.outputs.push(ctx.write_output(name, bytes::Bytes::from(ctx.job_id.clone()), "text/plain", None)?);
        }
        ctx.progress(1, 1, "hold");
        Ok(out)
    }
}
