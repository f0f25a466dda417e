//! Jobs from a file or stdin (`kiln run`): JSONL, one envelope per line, or JSON (one
//! envelope, or an array of them, possibly spread over several lines). A line that is not a
//! valid envelope becomes a failed result; the rest still run.

use crate::jobtable::JobEntry;
use crate::runtime::{Admission, Runtime};
use std::sync::Arc;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Reads envelopes from `input`, submits each (waiting for queue room), and calls
/// `on_submit` with every entry in input order.
pub async fn submit_all<R, F>(rt: &Arc<Runtime>, input: R, mut on_submit: F) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    F: FnMut(Arc<JobEntry>),
{
    let mut lines = input.lines();
    let mut pending = String::new();
    while let Some(line) = lines.next_line().await? {
        if pending.is_empty() && line.trim().is_empty() {
            continue;
        }
        pending.push_str(&line);
        pending.push('\n');
        match serde_json::from_str::<serde_json::Value>(&pending) {
            Ok(serde_json::Value::Array(items)) => {
                for item in items {
                    let bytes = serde_json::to_vec(&item).unwrap_or_default();
                    on_submit(rt.submit(&bytes[..], Admission::Wait, None).await);
                }
            }
            Ok(_) => on_submit(rt.submit(pending.as_bytes(), Admission::Wait, None).await),
            // An object spread over lines: read on.
            Err(e) if e.is_eof() => continue,
            Err(_) => on_submit(rt.submit(pending.as_bytes(), Admission::Wait, None).await),
        }
        pending.clear();
    }
    if !pending.trim().is_empty() {
        on_submit(rt.submit(pending.as_bytes(), Admission::Wait, None).await);
    }
    Ok(())
}
