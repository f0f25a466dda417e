//! The serverless tier's answer as it comes: what an SSE request through the router gets when
//! its job runs on the function. The router invokes with `InvokeWithResponseStream`
//! ([`invoke`]); the function's response arrives as event-stream chunks. With
//! `route.lambda_streaming = emulator` it is the Invoke answer of cargo-lambda's emulator
//! instead, read as its body arrives (the emulator streams that one live; its
//! `InvokeWithResponseStream` lives under another path, sends frames the SDK refuses and waits
//! for the function to finish: cargo-lambda issue #898). A function that streams (`lambda.response = stream`,
//! [`crate::sinks::lambda::stream`]) writes an HTTP metadata prelude (JSON, then eight NUL
//! bytes; it names the instance in `x-kiln-instance`), then one JSON line per event with the
//! result last; a buffered function's answer arrives whole and is read at the end. [`Lines`]
//! turns the bytes into [`Piece`]s however they are cut; [`Streamed`] reads the chunks.

use super::serverless::{classify, parse_answer, InvokeFailure, Invoked, Invoker};
use aws_sdk_lambda::operation::invoke_with_response_stream::InvokeWithResponseStreamOutput;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{InvokeWithResponseStreamResponseEvent as Chunk, ResponseStreamingInvocationType};
use kiln_jobs::Event;
use serde_json::Value;
use axum::body::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::time::Duration;

/// A line (or a buffered answer) longer than this is refused: Lambda's own response limits
/// are 6 MB buffered and 20 MB streamed, and no kiln event or result comes near either.
const MAX_LINE: usize = 16 << 20;

/// One item of the function's answer.
#[derive(Debug)]
pub enum Piece {
    /// An event of the running job (progress, an output, a checkpoint).
    Event(Event),
    /// The result (the `lambda` facts included); nothing follows it.
    Done(Invoked),
}

/// The function's answer, split into pieces as its bytes arrive.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline (a long line arriving in many chunks is
    /// scanned once, not once per chunk).
    scanned: usize,
    /// The metadata prelude, once seen.
    prelude: Option<Value>,
    done: bool,
}

impl Lines {
    /// Takes the next bytes; answers the pieces they complete. Bytes after the result are
    /// ignored.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Piece>, InvokeFailure> {
        let mut out = Vec::new();
        if self.done {
            return Ok(out);
        }
        self.buf.extend_from_slice(chunk);
        while let Some(nl) = self.buf[self.scanned..].iter().position(|b| *b == b'\n').map(|at| self.scanned + at) {
            self.scanned = 0;
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = self.after_prelude(&line[..nl]);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let piece = piece(line)?;
            let done = matches!(piece, Piece::Done(_));
            out.push(piece);
            if done {
                self.done = true;
                self.buf = Vec::new();
                break;
            }
        }
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_LINE {
            return Err(InvokeFailure::Function(format!("the answer has a line over {MAX_LINE} bytes")));
        }
        Ok(out)
    }

    /// The answer ended: its result, when no line carried one (a buffered function answers
    /// whole, without a newline); `None` when the result came already.
    pub fn finish(mut self) -> Result<Option<Invoked>, InvokeFailure> {
        if self.done {
            return Ok(None);
        }
        let rest = std::mem::take(&mut self.buf);
        let rest = self.after_prelude(&rest);
        if rest.iter().all(u8::is_ascii_whitespace) {
            return Err(InvokeFailure::Function("the answer ended without a result".into()));
        }
        parse_answer(rest).map(Some)
    }

    /// The instance named in the prelude (`x-kiln-instance`), once it has come.
    pub fn instance(&self) -> Option<&str> {
        self.prelude.as_ref()?.pointer("/headers/x-kiln-instance")?.as_str()
    }

    /// `line` without a metadata prelude in front of it (recorded). JSON never holds a raw
    /// NUL byte and a prelude never a newline, so the last NUL of a line ends its prelude.
    fn after_prelude<'a>(&mut self, line: &'a [u8]) -> &'a [u8] {
        match line.iter().rposition(|b| *b == 0) {
            Some(end) => {
                let head = &line[..end];
                let json_end = head.iter().position(|b| *b == 0).unwrap_or(head.len());
                self.prelude = serde_json::from_slice(&head[..json_end]).ok();
                &line[end + 1..]
            }
            None => line,
        }
    }
}

/// One complete line: an event, or the result (a line whose `event` is `result`, or has none).
fn piece(line: &[u8]) -> Result<Piece, InvokeFailure> {
    let v: Value = serde_json::from_slice(line).map_err(|e| InvokeFailure::Function(format!("a line of the answer is not JSON: {e}")))?;
    match v.get("event").and_then(Value::as_str).map(str::to_owned) {
        Some(name) if name != "result" => serde_json::from_value(v)
            .map(Piece::Event)
            .map_err(|e| InvokeFailure::Function(format!("the answer has an event kiln does not know ({name}): {e}"))),
        _ => {
            let mut invoked = parse_answer(line)?;
            if let Some(o) = invoked.body.as_object_mut() {
                o.remove("event");
            }
            Ok(Piece::Done(invoked))
        }
    }
}

/// Invokes `function` with `payload` through `InvokeWithResponseStream` (or the emulator's
/// Invoke endpoint): the answer is read as it comes, all of it within `timeout`. One attempt,
/// as [`Invoker::invoke`].
pub async fn invoke(invoker: &Invoker, function: &str, payload: &[u8], timeout: Duration) -> Result<Streamed, InvokeFailure> {
    let timeout_ms = timeout.as_millis() as u64;
    let deadline = tokio::time::Instant::now() + timeout;
    let source = match invoker.emulator() {
        Some((endpoint, http)) => {
            let call = http.post(format!("{endpoint}/2015-03-31/functions/{function}/invocations")).body(payload.to_vec()).send();
            let resp = match tokio::time::timeout_at(deadline, call).await {
                Err(_) => return Err(InvokeFailure::Timeout(timeout_ms)),
                Ok(Err(e)) => return Err(InvokeFailure::Unreachable(e.to_string())),
                Ok(Ok(r)) => r,
            };
            let status = resp.status();
            if status.as_u16() == 429 {
                return Err(InvokeFailure::Throttled(status.to_string()));
            }
            if !status.is_success() {
                return Err(InvokeFailure::Unreachable(format!("the emulator answered {status}")));
            }
            if let Some(kind) = resp.headers().get("x-amz-function-error") {
                return Err(InvokeFailure::Function(String::from_utf8_lossy(kind.as_bytes()).into_owned()));
            }
            // The emulator turns a streaming function's prelude into the answer's headers.
            let named = resp.headers().get("x-kiln-instance").and_then(|v| v.to_str().ok()).map(str::to_owned);
            (Source::Body(resp.bytes_stream().boxed()), named)
        }
        None => {
            let call = invoker
                .client()
                .invoke_with_response_stream()
                .function_name(function)
                .invocation_type(ResponseStreamingInvocationType::RequestResponse)
                .payload(Blob::new(payload))
                .send();
            match tokio::time::timeout_at(deadline, call).await {
                Err(_) => return Err(InvokeFailure::Timeout(timeout_ms)),
                Ok(Err(e)) => return Err(classify(e)),
                Ok(Ok(out)) => (Source::Aws(Box::new(out)), None),
            }
        }
    };
    Ok(Streamed { source: source.0, named: source.1, lines: Lines::default(), ready: VecDeque::new(), deadline, timeout_ms, ended: false })
}

/// Where the answer's bytes come from.
enum Source {
    /// `InvokeWithResponseStream`'s event stream.
    Aws(Box<InvokeWithResponseStreamOutput>),
    /// The emulator's Invoke answer, as its body arrives.
    Body(BoxStream<'static, reqwest::Result<Bytes>>),
}

/// What the source gave next.
enum Next {
    Bytes(Vec<u8>),
    /// The answer is complete.
    End,
    Failed(InvokeFailure),
    /// Nothing for the answer (a chunk type this SDK does not know).
    Skip,
}

impl Source {
    async fn next(&mut self) -> Next {
        match self {
            Source::Aws(out) => match out.event_stream.recv().await {
                Err(e) => Next::Failed(InvokeFailure::Unreachable(aws_sdk_lambda::error::DisplayErrorContext(&e).to_string())),
                Ok(Some(Chunk::PayloadChunk(update))) => Next::Bytes(update.payload().map(|b| b.as_ref().to_vec()).unwrap_or_default()),
                Ok(Some(Chunk::InvokeComplete(done))) => match done.error_code() {
                    Some(code) => Next::Failed(InvokeFailure::Function(format!("{code}: {}", done.error_details().unwrap_or_default()))),
                    None => Next::End,
                },
                Ok(None) => Next::End,
                Ok(Some(_)) => Next::Skip,
            },
            Source::Body(body) => match body.next().await {
                Some(Ok(bytes)) => Next::Bytes(bytes.to_vec()),
                Some(Err(e)) => Next::Failed(InvokeFailure::Unreachable(e.to_string())),
                None => Next::End,
            },
        }
    }
}

/// A streamed invocation being read, bounded by one deadline for the whole answer.
pub struct Streamed {
    source: Source,
    /// The instance the answer's headers named (the emulator's way of passing the prelude).
    named: Option<String>,
    lines: Lines,
    ready: VecDeque<Piece>,
    deadline: tokio::time::Instant,
    timeout_ms: u64,
    ended: bool,
}

impl Streamed {
    /// The instance serving it, when its prelude named one.
    pub fn instance(&self) -> Option<&str> {
        self.lines.instance().or(self.named.as_deref())
    }

    /// The next piece; `None` once the answer is over. A failure ends it.
    pub async fn next(&mut self) -> Option<Result<Piece, InvokeFailure>> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                return Some(Ok(p));
            }
            if self.ended {
                return None;
            }
            let next = match tokio::time::timeout_at(self.deadline, self.source.next()).await {
                Err(_) => Next::Failed(InvokeFailure::Timeout(self.timeout_ms)),
                Ok(n) => n,
            };
            match next {
                Next::Bytes(bytes) => match self.lines.push(&bytes) {
                    Ok(pieces) => self.ready.extend(pieces),
                    Err(e) => return self.fail(e),
                },
                Next::Failed(e) => return self.fail(e),
                Next::End => {
                    self.ended = true;
                    match std::mem::take(&mut self.lines).finish() {
                        Ok(Some(invoked)) => self.ready.push_back(Piece::Done(invoked)),
                        Ok(None) => {}
                        Err(e) => return Some(Err(e)),
                    }
                }
                Next::Skip => {}
            }
        }
    }

    fn fail(&mut self, e: InvokeFailure) -> Option<Result<Piece, InvokeFailure>> {
        self.ended = true;
        Some(Err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESULT: &str = r#"{"id":"j","kind":"debug","status":"succeeded","outputs":[],"error":null,"attempt":1,"resumed":false,"timings":{"queued_ms":0.1,"run_ms":1.0},"worker":{"id":"w-1","tier":"serverless","accel":"cpu"},"lambda":{"cold_start":false,"init_ms":3.0,"invocation":2,"instance_id":"i-7"},"event":"result"}"#;

    fn streamed_answer() -> Vec<u8> {
        let mut bytes = br#"{"statusCode":200,"headers":{"content-type":"application/x-ndjson","x-kiln-instance":"i-7"},"cookies":[]}"#.to_vec();
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(b"{\"event\":\"progress\",\"id\":\"j\",\"done\":1,\"total\":2,\"stage\":\"hold\"}\n");
        bytes.extend_from_slice(b"{\"event\":\"checkpoint\",\"id\":\"j\",\"seq\":1}\n");
        bytes.extend_from_slice(RESULT.as_bytes());
        bytes.push(b'\n');
        bytes
    }

    fn names(pieces: &[Piece]) -> Vec<&'static str> {
        pieces.iter().map(|p| if let Piece::Event(e) = p { e.name() } else { "done" }).collect()
    }

    #[test]
    fn a_streamed_answer_splits_into_events_and_the_result_however_it_is_cut() {
        let bytes = streamed_answer();
        for cut in [1, 2, 7, 13, 64, 111, 112, 113, 120, bytes.len()] {
            let mut lines = Lines::default();
            let mut pieces = Vec::new();
            for chunk in bytes.chunks(cut) {
                pieces.extend(lines.push(chunk).unwrap());
            }
            assert_eq!(names(&pieces), ["progress", "checkpoint", "done"], "cut {cut}");
            assert_eq!(lines.instance(), Some("i-7"), "cut {cut}");
            let Some(Piece::Done(inv)) = pieces.pop() else { unreachable!() };
            assert_eq!((inv.result.id.as_str(), inv.instance_id(), inv.cold_start()), ("j", "i-7".to_owned(), false));
            assert!(inv.body.get("event").is_none(), "{}", inv.body);
            assert!(lines.finish().unwrap().is_none(), "the result came already");
        }
        // Anything after the result is ignored.
        let mut lines = Lines::default();
        let mut after = bytes.clone();
        after.extend_from_slice(b"garbage\n");
        assert_eq!(names(&lines.push(&after).unwrap()), ["progress", "checkpoint", "done"]);
    }

    #[test]
    fn a_buffered_answer_is_read_at_the_end() {
        let http = serde_json::json!({"statusCode": 200, "headers": {}, "body": RESULT.replace(",\"event\":\"result\"", "")}).to_string();
        let mut lines = Lines::default();
        for chunk in http.as_bytes().chunks(50) {
            assert!(lines.push(chunk).unwrap().is_empty());
        }
        let inv = lines.finish().unwrap().expect("the result");
        assert_eq!((inv.result.id.as_str(), inv.instance_id()), ("j", "i-7".to_owned()));
    }

    #[test]
    fn broken_answers_are_function_errors() {
        // Cut off after an event: no result.
        let bytes = streamed_answer();
        let end = bytes.windows(10).position(|w| w == b"checkpoint").unwrap();
        let mut lines = Lines::default();
        assert_eq!(names(&lines.push(&bytes[..end]).unwrap()), ["progress"]);
        assert!(matches!(lines.finish(), Err(InvokeFailure::Function(_))));
        // Nothing at all.
        assert!(matches!(Lines::default().finish(), Err(InvokeFailure::Function(_))));
        // A line that is not JSON, an event kiln does not know.
        assert!(matches!(Lines::default().push(b"not json\n"), Err(InvokeFailure::Function(_))));
        assert!(matches!(Lines::default().push(b"{\"event\":\"teleport\",\"id\":\"j\"}\n"), Err(InvokeFailure::Function(_))));
        // A line without end, past the bound.
        let mut lines = Lines::default();
        let big = vec![b'x'; MAX_LINE + 1];
        assert!(matches!(lines.push(&big), Err(InvokeFailure::Function(_))));
    }
}
