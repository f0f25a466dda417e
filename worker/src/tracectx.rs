//! W3C trace context (`traceparent`) for jobs: parse what a producer sent, and give the job
//! its own span id inside the caller's trace, so the job's span joins that trace and whatever
//! kiln publishes downstream (results, events) is a child of the job.
//!
//! Only the `traceparent` header is handled (version `00`); a malformed value is ignored, as
//! the W3C recommendation says, and the job then starts no trace of its own. Lambda's
//! `Lambda-Runtime-Trace-Id` (X-Ray) is read as the same thing ([`TraceContext::from_xray`]).
//!
//! [`Caller`]: what a transport knows of the request besides its trace (the routing decision
//! the caller sent, a cold start), carried to the job's span as a task-local ([`with_caller`]).

use std::fmt;

/// The trace context of one job: the caller's trace, the caller's span, and the job's span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits, not all zero.
    pub trace_id: String,
    /// The caller's span (16 hex digits): the parent of the job's span.
    pub parent_id: String,
    /// The job's own span (16 hex digits).
    pub span_id: String,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// Parses the caller's `traceparent` and opens a child span for the job.
    pub fn child_of(traceparent: &str) -> Option<Self> {
        let (trace_id, parent_id, flags) = parse(traceparent.trim())?;
        Some(TraceContext { trace_id, parent_id, span_id: new_span_id(), flags })
    }

    /// Lambda's trace header (`Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`),
    /// whose X-Ray ids are W3C ids written differently; a job span opens under it.
    pub fn from_xray(header: &str) -> Option<Self> {
        let mut root = None;
        let mut parent = None;
        let mut sampled = "0";
        for part in header.split(';') {
            match part.trim().split_once('=') {
                Some(("Root", v)) => root = Some(v),
                Some(("Parent", v)) => parent = Some(v),
                Some(("Sampled", v)) => sampled = v,
                _ => {}
            }
        }
        let mut root = root?.split('-');
        let (version, time, rest) = (root.next()?, root.next()?, root.next()?);
        if version != "1" || root.next().is_some() {
            return None;
        }
        let flags = if sampled == "1" { "01" } else { "00" };
        Self::child_of(&format!("00-{time}{rest}-{}-{flags}", parent?))
    }

    /// The `traceparent` to send downstream: the job's span as parent.
    pub fn header(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header())
    }
}

/// What a transport knows of the request besides its trace, recorded on the job's span.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Caller {
    /// The routing decision the caller sent (`x-kiln-route`, as `kiln route` writes it).
    pub route: Option<String>,
    /// The cold start this request waited for (Lambda's first invocation: the init time).
    pub cold_start_ms: Option<f64>,
}

tokio::task_local! {
    static CALLER: Caller;
}

/// The caller of the submission being handled ([`with_caller`]); empty outside one.
pub fn current_caller() -> Caller {
    CALLER.try_with(Clone::clone).unwrap_or_default()
}

/// Runs `fut` (a submission) on behalf of `caller`.
pub async fn with_caller<F: std::future::Future>(caller: Caller, fut: F) -> F::Output {
    CALLER.scope(caller, fut).await
}

/// A routing-decision header value worth recording: printable ASCII, at most 256 bytes.
pub fn route_value(v: &[u8]) -> Option<String> {
    let ok = !v.is_empty() && v.len() <= 256 && v.iter().all(|b| (0x20..0x7f).contains(b));
    ok.then(|| String::from_utf8_lossy(v).into_owned())
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse(v: &str) -> Option<(String, String, u8)> {
    let mut parts = v.split('-');
    let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four fields; a later version may append more, which we ignore.
    if !is_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !is_hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
        return None;
    }
    if !is_hex(parent_id, 16) || parent_id.bytes().all(|b| b == b'0') {
        return None;
    }
    if !is_hex(flags, 2) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id.to_owned(), parent_id.to_owned(), flags))
}

/// A random, non-zero 64-bit span id (from a ULID's random part).
fn new_span_id() -> String {
    loop {
        let id = ulid::Ulid::new().random() as u64;
        if id != 0 {
            return format!("{id:016x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_job_is_a_child_span_in_the_callers_trace() {
        let c = TraceContext::child_of(TP).expect("valid");
        assert_eq!(c.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.parent_id, "00f067aa0ba902b7");
        assert_ne!(c.span_id, c.parent_id);
        assert!(is_hex(&c.span_id, 16));
        let h = c.header();
        assert!(h.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{h}");
        assert!(h.ends_with("-01"), "{h}");
        assert_ne!(h, TP, "downstream sees the job's span as parent");
        assert_ne!(TraceContext::child_of(TP).unwrap().span_id, c.span_id, "span ids are fresh");
    }

    #[test]
    fn lambda_xray_headers_are_w3c_contexts() {
        let c = TraceContext::from_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1").unwrap();
        assert_eq!(c.trace_id, "5759e988bd862e3fe1be46a994272793");
        assert_eq!(c.parent_id, "53995c3f42cd8ad8");
        assert_eq!(c.flags, 1);
        let c = TraceContext::from_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8").unwrap();
        assert_eq!(c.flags, 0);
        for bad in ["", "Root=1-5759e988-bd862e3fe1be46a994272793", "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"] {
            assert_eq!(TraceContext::from_xray(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn route_values_are_printable_and_short() {
        assert_eq!(route_value(b"tier=container; rule=r1").as_deref(), Some("tier=container; rule=r1"));
        assert_eq!(route_value(b"a\nb"), None);
        assert_eq!(route_value(&[b'x'; 300]), None);
        assert_eq!(route_value(b""), None);
    }

    #[test]
    fn malformed_values_are_ignored() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::child_of(bad), None, "{bad:?}");
        }
        // A future version may carry more fields.
        assert!(TraceContext::child_of("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some());
    }
}
