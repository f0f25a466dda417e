//! The job-kind trait and the registry of kinds. The registry is filled by the binary's
//! composition root (kiln-worker's `modes::registry`), so this module knows no kind: adding a
//! kind touches its own module and one registration line there.

use crate::context::{JobContext, Limits};
use crate::envelope::OutputInfo;
use crate::error::JobError;
use kiln_kernels::Accel;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a finished job hands back besides its status.
#[derive(Debug, Default)]
pub struct JobOutput {
    pub outputs: Vec<OutputInfo>,
    /// Kind-specific result fields, merged into the result's top level.
    pub extra: serde_json::Map<String, Value>,
    /// Whether the job continued from a checkpoint.
    pub resumed: bool,
}

/// A job kind: parses and validates specs, and warms itself up.
pub trait JobKind: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Parses and validates a spec against the limits. Cheap and free of I/O: it runs at
    /// admission, so a bad spec is refused before it takes a queue slot.
    fn prepare(&self, input: &Value, limits: &Limits) -> Result<Box<dyn PreparedJob>, JobError>;

    /// Run once at start, before the worker reports ready: load codecs, prime caches.
    fn warm_up(&self) -> Result<(), JobError> {
        Ok(())
    }

    /// Models this kind holds loaded now (the capacity report's `warm.models`).
    fn warm_models(&self) -> Vec<String> {
        Vec::new()
    }

    /// Appends the kind's own metrics, in Prometheus' text format, to `out` (/metrics).
    fn render_metrics(&self, _out: &mut String) {}

    /// The worker's GPU ledger, given once at start (before warm-up), for GPU memory the kind
    /// holds outside any one job (warm models). Kinds without such memory ignore it.
    fn attach_gpus(&self, _ledger: Arc<dyn crate::resources::GpuLedger>) {}
}

/// What a validated job asks of the worker that would run it, so that a tier can refuse what
/// it cannot finish (the Lambda fit check) without reading the raw spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// The acceleration the spec asks for (`auto` when it does not say).
    pub accel: Accel,
    /// The one input the job is built around (thumbnail's and transcode's `source`): its size
    /// bounds the job's scratch space. `None` for kinds without one (render, infer, …).
    pub source: Option<String>,
    /// Every URI named in the spec that the job will read, in spec order (`source` included;
    /// models, which come from the worker's configuration, are not).
    pub reads: Vec<String>,
}

/// A validated job, ready to run on a blocking thread.
pub trait PreparedJob: Send + 'static {
    fn run(self: Box<Self>, ctx: &JobContext) -> Result<JobOutput, JobError>;

    /// What the job needs from the worker (acceleration, inputs), read from its spec.
    fn needs(&self) -> Needs;

    /// Whether the job is made of resumable units. The worker then takes the job's lease and
    /// keeps its `state.json` (see [`crate::checkpoint`]) before and while it runs; units
    /// are recorded with [`JobContext::complete_unit`].
    fn checkpointed(&self) -> bool {
        false
    }
}

/// The job kinds this build knows, by name.
#[derive(Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn JobKind>>,
}

impl Registry {
    pub fn empty() -> Self {
        Registry { kinds: BTreeMap::new() }
    }

    pub fn register(&mut self, kind: Arc<dyn JobKind>) {
        self.kinds.insert(kind.name(), kind);
    }

    pub fn get(&self, name: &str) -> Result<&Arc<dyn JobKind>, JobError> {
        self.kinds.get(name).ok_or_else(|| {
            let known: Vec<_> = self.kinds.keys().copied().collect();
            JobError::unsupported(format!("unknown job kind {name:?}; this worker runs {}", known.join(", ")))
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn JobKind>> + '_ {
        self.kinds.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    struct Stub(&'static str);

    impl JobKind for Stub {
        fn name(&self) -> &'static str {
            self.0
        }
        fn prepare(&self, _input: &Value, _limits: &Limits) -> Result<Box<dyn PreparedJob>, JobError> {
            Err(JobError::internal("stub"))
        }
    }

    #[test]
    fn unknown_kinds_are_unsupported() {
        let mut r = Registry::empty();
        r.register(Arc::new(Stub("thumbnail")));
        r.register(Arc::new(Stub("render")));
        assert_eq!(r.get("thumbnail").map(|k| k.name()).ok(), Some("thumbnail"));
        assert_eq!(r.names().collect::<Vec<_>>(), ["render", "thumbnail"]);
        let e = r.get("teleport").err().unwrap();
        assert_eq!(e.code, ErrorCode::Unsupported);
        assert!(e.message.contains("render, thumbnail"), "{}", e.message);
    }
}
