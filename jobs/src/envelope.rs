//! The wire formats of DESIGN.md: the job envelope, the result, and the events streamed while
//! a job runs. The same JSON travels over HTTP, Kafka, Lambda and `kiln run`.

use crate::error::{ErrorCode, JobError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest job id accepted; ids name folders in the store.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served before any batch job that is still queued.
    Interactive,
    #[default]
    Batch,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
        }
    }
}

/// A job as submitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Idempotency key; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub kind: String,
    pub input: Value,
    /// URI prefix for the outputs; the configured default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Relative to receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(default)]
    pub priority: Priority,
}

impl Envelope {
    /// Parses an envelope from JSON bytes. On failure the error says what is wrong, and the
    /// job id is recovered when the bytes are an object with a string `id`, so the failed
    /// result can still name the job.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, (Option<String>, JobError)> {
        match serde_json::from_slice::<Envelope>(bytes) {
            Ok(env) => Ok(env),
            Err(e) => {
                let id = serde_json::from_slice::<Value>(bytes)
                    .ok()
                    .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
                    .filter(|id| validate_id(id).is_ok());
                let kind = if e.is_syntax() || e.is_eof() { "not valid JSON" } else { "not a valid job envelope" };
                Err((id, JobError::invalid_spec(format!("{kind}: {e}"))))
            }
        }
    }
}

/// Job ids name objects in the store: letters, digits, `.`, `_`, `-`, at most 128, not
/// starting with a dot.
pub fn validate_id(id: &str) -> Result<(), JobError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(JobError::invalid_spec(format!(
            "job id {id:?} must be 1-{MAX_ID_LEN} characters of letters, digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// One stored output of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputInfo {
    pub name: String,
    pub uri: String,
    pub content_type: String,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// Present (true) when the same job may succeed if tried again (a store outage, say).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
}

impl From<&JobError> for ErrorBody {
    fn from(e: &JobError) -> Self {
        ErrorBody { code: e.code, message: e.message.clone(), retryable: e.retryable }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub queued_ms: f64,
    pub run_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    pub tier: String,
    pub accel: String,
}

/// The final word on a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub id: String,
    pub kind: String,
    pub status: JobStatus,
    pub outputs: Vec<OutputInfo>,
    pub error: Option<ErrorBody>,
    pub attempt: u32,
    pub resumed: bool,
    pub timings: Timings,
    pub worker: WorkerInfo,
    /// Kind-specific result data (for example `inference`), merged into the top level.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, Value>,
}

impl JobResult {
    /// A failed (or cancelled) result that ran nothing.
    pub fn failed(id: String, kind: String, err: &JobError, worker: WorkerInfo) -> JobResult {
        let status = if err.code == ErrorCode::Cancelled { JobStatus::Cancelled } else { JobStatus::Failed };
        JobResult {
            id,
            kind,
            status,
            outputs: Vec::new(),
            error: Some(err.into()),
            attempt: 1,
            resumed: false,
            timings: Timings::default(),
            worker,
            extra: Default::default(),
        }
    }

    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|e| e.code)
    }
}

/// Events streamed while a job runs; the last one is always `result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Progress { id: String, done: u64, total: u64, stage: String },
    Output {
        id: String,
        #[serde(flatten)]
        output: OutputInfo,
    },
    Checkpoint { id: String, seq: u64 },
    Result(JobResult),
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Progress { .. } => "progress",
            Event::Output { .. } => "output",
            Event::Checkpoint { .. } => "checkpoint",
            Event::Result(_) => "result",
        }
    }
    pub fn job_id(&self) -> &str {
        match self {
            Event::Progress { id, .. } | Event::Output { id, .. } | Event::Checkpoint { id, .. } => id,
            Event::Result(r) => &r.id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_defaults_priority() {
        let env = Envelope::parse(br#"{"id":"a","kind":"thumbnail","input":{"source":"x"}}"#).unwrap();
        assert_eq!(env.priority, Priority::Batch);
        assert_eq!(env.id.as_deref(), Some("a"));
        assert!(env.deadline_ms.is_none());
    }

    #[test]
    fn bad_envelopes_keep_their_id_when_they_can() {
        let (id, err) = Envelope::parse(br#"{"id":"j-1","kind":3,"input":{}}"#).unwrap_err();
        assert_eq!(id.as_deref(), Some("j-1"));
        assert_eq!(err.code, ErrorCode::InvalidSpec);
        let (id, err) = Envelope::parse(b"\xff\x00garbage").unwrap_err();
        assert!(id.is_none());
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
        let (_, err) = Envelope::parse(br#"{"kind":"thumbnail","input":{},"bogus":1}"#).unwrap_err();
        assert!(err.message.contains("bogus"), "{}", err.message);
    }

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("thumb-0001.a_b").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "sp ace", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn events_serialise_as_designed() {
        let e = Event::Progress { id: "j".into(), done: 3, total: 10, stage: "720p".into() };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v, serde_json::json!({"id":"j","event":"progress","done":3,"total":10,"stage":"720p"}));
        let out = OutputInfo {
            name: "a.jpg".into(),
            uri: "file:///a.jpg".into(),
            content_type: "image/jpeg".into(),
            bytes: 5,
            width: Some(2),
            height: None,
        };
        let v = serde_json::to_value(Event::Output { id: "j".into(), output: out.clone() }).unwrap();
        assert_eq!(v["event"], "output");
        assert_eq!(v["name"], "a.jpg");
        assert!(v.get("height").is_none());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, Event::Output { id: "j".into(), output: out });
    }

    #[test]
    fn results_carry_codes_and_extra_fields() {
        let w = WorkerInfo { id: "w".into(), tier: "container".into(), accel: "cpu".into() };
        let mut r = JobResult::failed("j".into(), "thumbnail".into(), &JobError::corrupt("bad"), w);
        r.extra.insert("inference".into(), serde_json::json!([1]));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["error"]["code"], "corrupt_input");
        assert_eq!(v["inference"], serde_json::json!([1]));
        let e = serde_json::to_value(Event::Result(r.clone())).unwrap();
        assert_eq!(e["event"], "result");
        assert_eq!(e["id"], "j");
        let back: JobResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
