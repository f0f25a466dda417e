//! `kiln run`'s sink: one JSON result per line on stdout, in completion order, with a progress
//! bar on stderr when stderr is a terminal.

use kiln_jobs::{JobResult, JobStatus};
use std::io::{IsTerminal, Write};

pub struct JsonlSink<W: Write> {
    out: W,
    bar: Option<indicatif::ProgressBar>,
    all_ok: bool,
}

impl JsonlSink<std::io::StdoutLock<'static>> {
    /// Results to this process's stdout; a progress bar when stderr is a terminal.
    pub fn stdout() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} jobs [{elapsed}] {wide_bar} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        JsonlSink { out: std::io::stdout().lock(), bar, all_ok: true }
    }
}

impl<W: Write> JsonlSink<W> {
    /// Results to any writer, without a progress bar.
    pub fn new(out: W) -> Self {
        JsonlSink { out, bar: None, all_ok: true }
    }

    /// One more job was submitted (the bar's length).
    pub fn submitted(&self) -> impl Fn() + Send + 'static {
        let bar = self.bar.clone();
        move || {
            if let Some(b) = &bar {
                b.inc_length(1);
            }
        }
    }

    /// Writes one result line and flushes it.
    pub fn write(&mut self, result: &JobResult) -> std::io::Result<()> {
        self.all_ok &= result.status == JobStatus::Succeeded;
        serde_json::to_writer(&mut self.out, result)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(result.id.clone());
        }
        Ok(())
    }

    /// Ends the bar; whether every result written was a success.
    pub fn finish(self) -> bool {
        if let Some(b) = &self.bar {
            b.finish();
        }
        self.all_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_jobs::{ErrorCode, JobError, WorkerInfo};

    #[test]
    fn one_line_per_result_and_the_overall_outcome() {
        let w = WorkerInfo { id: "w".into(), tier: "container".into(), accel: "cpu".into() };
        let failed = JobResult::failed("b".into(), "thumbnail".into(), &JobError::new(ErrorCode::Unsupported, "x"), w);
        let mut ok = failed.clone();
        ok.id = "a".into();
        ok.status = JobStatus::Succeeded;
        ok.error = None;
        let mut buf = Vec::new();
        let mut sink = JsonlSink::new(&mut buf);
        sink.write(&ok).unwrap();
        assert!(JsonlSink::new(Vec::new()).finish(), "no results: nothing failed");
        sink.write(&failed).unwrap();
        assert!(!sink.finish());
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("\"id\":\"a\"") && lines[1].contains("\"unsupported\""), "{text}");
    }
}
