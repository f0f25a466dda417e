//! W3C trace context (`traceparent`) for jobs: parse what a producer sent, and give the job
//! its own span id inside the caller's trace, so the job's span joins that trace and whatever
//! kiln publishes downstream (results, events) is a child of the job.
//!
//! Only the `traceparent` header is handled (version `00`); a malformed value is ignored, as
//! the W3C recommendation says, and the job then starts no trace of its own.

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
