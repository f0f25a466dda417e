//! Units recorded behind the job: a unit's intermediates stored and its checkpoint record
//! written while the job's thread goes on to the next units.
//!
//! [`JobContext::complete_unit`] blocks the job's thread until the unit's record has landed:
//! on a local disk that is a `fdatasync` and a rename per unit, and for a render job's 100
//! pages it was a third of the job (benches/RESULTS.md, "Render: PDF output"). A
//! [`Recorder`] hands each unit's writes to the runtime instead — first the objects the
//! record names, then the record — and lets the job's thread go on; records in flight
//! together share one write of the checkpoint (its group commit). What a resumed job relies
//! on still holds: a record is written only after the objects it names are stored, so a
//! crash loses at most the units whose records had not landed, which the next attempt
//! redoes.
//!
//! Events keep the order a blocking run gives: a unit's outputs and its `checkpoint` event
//! are announced once its record has landed, in unit order, and progress reported through
//! the recorder waits behind the units before it. At most [`MOST_PENDING`] units are in
//! flight (the job's thread waits for the oldest beyond that), so memory stays bounded; the
//! first failure is returned by the next call, and [`Recorder::finish`] waits for every
//! unit before the job may answer.

use crate::context::JobContext;
use crate::envelope::OutputInfo;
use crate::error::JobError;
use crate::checkpoint::UnitRecord;
use bytes::Bytes;
use std::collections::VecDeque;
use tokio::task::JoinHandle;

/// Units whose writes may be in flight at once.
pub const MOST_PENDING: usize = 8;

/// An object a unit's record names, stored before the record (a render page's PDF part).
pub struct Intermediate {
    pub name: String,
    pub data: Bytes,
    pub content_type: &'static str,
}

enum Pending {
    Unit { outputs: Vec<OutputInfo>, writes: JoinHandle<Result<Option<u64>, JobError>> },
    Progress { done: u64, total: u64, stage: String },
}

/// A job's units completed behind it (module doc). Call [`Recorder::finish`] before the job
/// returns; units still in flight when a recorder is dropped finish their writes unseen.
pub struct Recorder<'a> {
    ctx: &'a JobContext,
    pending: VecDeque<Pending>,
    units: usize,
}

impl<'a> Recorder<'a> {
    pub fn new(ctx: &'a JobContext) -> Recorder<'a> {
        Recorder { ctx, pending: VecDeque::new(), units: 0 }
    }

    /// Completes unit `key`: stores `intermediates`, then records the unit (its `outputs`,
    /// already stored, and `data`) in the job's checkpoint, behind the job. Returns at once
    /// unless [`MOST_PENDING`] units are in flight; fails with the first unit that failed.
    pub fn complete(
        &mut self,
        key: &str,
        intermediates: Vec<Intermediate>,
        outputs: Vec<OutputInfo>,
        data: serde_json::Value,
    ) -> Result<(), JobError> {
        self.ctx.check()?;
        let mut uris = Vec::with_capacity(intermediates.len());
        for i in intermediates {
            uris.push((self.ctx.output_uri(&i.name)?, i));
        }
        let (store, checkpoint) = (self.ctx.store().clone(), self.ctx.checkpointer().cloned());
        let unit = UnitRecord { outputs: outputs.clone(), data };
        let key = key.to_owned();
        let writes = self.ctx.runtime().spawn(async move {
            for (uri, i) in uris {
                store.put(&uri, i.data, i.content_type).await.map_err(crate::convert::WritingOutput)?;
            }
            match checkpoint {
                Some(c) => c.record(&key, unit).await.map(Some),
                None => Ok(None),
            }
        });
        self.pending.push_back(Pending::Unit { outputs, writes });
        self.units += 1;
        self.settle(false)?;
        while self.units > MOST_PENDING {
            self.settle(true)?;
        }
        Ok(())
    }

    /// Reports progress once every unit completed before it is recorded.
    pub fn progress(&mut self, done: u64, total: u64, stage: &str) {
        if self.pending.is_empty() {
            self.ctx.progress(done, total, stage);
        } else {
            self.pending.push_back(Pending::Progress { done, total, stage: stage.to_owned() });
        }
    }

    /// Waits for every unit in flight; the first failure among them is returned.
    pub fn finish(mut self) -> Result<(), JobError> {
        let mut first = None;
        while !self.pending.is_empty() {
            if let Err(e) = self.settle(true) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Announces the front items whose writes are done, in order; with `wait_oldest`, first
    /// waits for the oldest unit in flight.
    fn settle(&mut self, wait_oldest: bool) -> Result<(), JobError> {
        let mut wait = wait_oldest;
        while let Some(front) = self.pending.front() {
            if let Pending::Unit { writes, .. } = front {
                if !(wait || writes.is_finished()) {
                    return Ok(());
                }
                wait = false;
            }
            match self.pending.pop_front() {
                Some(Pending::Progress { done, total, stage }) => self.ctx.progress(done, total, &stage),
                Some(Pending::Unit { outputs, writes }) => {
                    self.units -= 1;
                    let seq = self
                        .ctx
                        .wait(writes)?
                        .map_err(|e| JobError::internal(format!("a unit's writes stopped: {e}")))??;
                    self.ctx.announce_unit(&outputs, seq);
                }
                None => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpointer;
    use crate::context::CancelSignal;
    use crate::store::ObjectStore;
    use crate::testutil::{Harness, MemStore, OUT};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use url::Url;

    /// Records units once the test opens its gate (or after 10 s, so a recorder that waited
    /// for its records fails the test instead of hanging it); fails the units named in `fail`.
    struct Gated {
        gate: tokio::sync::Semaphore,
        store: Arc<MemStore>,
        fail: Vec<&'static str>,
        /// Each recorded key, and whether its intermediate was stored by then.
        seen: Mutex<Vec<(String, bool)>>,
    }

    #[async_trait::async_trait]
    impl Checkpointer for Gated {
        fn restored(&self, _key: &str) -> Option<UnitRecord> {
            None
        }
        async fn record(&self, key: &str, _unit: UnitRecord) -> Result<u64, JobError> {
            if let Ok(Ok(permit)) = tokio::time::timeout(Duration::from_secs(10), self.gate.acquire()).await {
                permit.forget();
            }
            let stored = self.store.head(&Url::parse(&format!("{OUT}{key}.part")).unwrap()).await.unwrap().is_some();
            let mut seen = self.seen.lock().unwrap();
            seen.push((key.to_owned(), stored));
            if self.fail.contains(&key) {
                return Err(JobError::internal(format!("{key}: lease lost")));
            }
            Ok(seen.len() as u64)
        }
    }

    fn gated(h: &Harness, fail: Vec<&'static str>) -> Arc<Gated> {
        Arc::new(Gated { gate: tokio::sync::Semaphore::new(0), store: h.store.clone(), fail, seen: Mutex::default() })
    }

    fn unit(ctx: &JobContext, key: &str) -> (Vec<Intermediate>, Vec<OutputInfo>) {
        let part = Intermediate { name: format!("{key}.part"), data: Bytes::from_static(b"part"), content_type: "application/pdf" };
        let uri = ctx.output_uri(&format!("{key}.png")).unwrap();
        let png = OutputInfo { name: format!("{key}.png"), uri: uri.to_string(), content_type: "image/png".into(), bytes: 1, width: None, height: None };
        (vec![part], vec![png])
    }

    fn names(h: &Harness) -> Vec<&'static str> {
        h.events.0.lock().unwrap().iter().map(|e| e.name()).collect()
    }

    #[test]
    fn a_unit_is_recorded_behind_the_job_and_its_events_keep_their_order() {
        let h = Harness::new();
        let cp = gated(&h, vec![]);
        let ctx = h.ctx(CancelSignal::new()).with_checkpoint(cp.clone());
        let mut rec = Recorder::new(&ctx);
        for key in ["u1", "u2"] {
            let (parts, outputs) = unit(&ctx, key);
            rec.complete(key, parts, outputs, serde_json::Value::Null).unwrap();
            rec.progress(1, 2, key);
        }
        assert!(cp.seen.lock().unwrap().is_empty(), "complete returned before the records landed");
        assert!(names(&h).is_empty(), "nothing announced before its record: {:?}", names(&h));
        cp.gate.add_permits(2);
        rec.finish().unwrap();
        assert_eq!(names(&h), ["output", "checkpoint", "progress", "output", "checkpoint", "progress"]);
        let seen = cp.seen.lock().unwrap().clone();
        assert_eq!(seen, [("u1".to_owned(), true), ("u2".to_owned(), true)], "each part stored before its record");
    }

    #[test]
    fn a_failed_record_is_returned_and_later_units_are_not_announced() {
        let h = Harness::new();
        let cp = gated(&h, vec!["u2"]);
        cp.gate.add_permits(MOST_PENDING * 4);
        let ctx = h.ctx(CancelSignal::new()).with_checkpoint(cp.clone());
        let mut rec = Recorder::new(&ctx);
        let mut failed = None;
        for i in 1..=MOST_PENDING * 2 {
            let key = format!("u{i}");
            let (parts, outputs) = unit(&ctx, &key);
            if let Err(e) = rec.complete(&key, parts, outputs, serde_json::Value::Null) {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => rec.finish().expect_err("u2's record failed"),
        };
        assert_eq!(e.message, "u2: lease lost");
        let events = names(&h);
        assert_eq!(&events[..2], ["output", "checkpoint"], "u1 was announced");
        assert_eq!(events.len(), 2, "nothing after the failed unit: {events:?}");
    }

    #[test]
    fn at_most_most_pending_units_are_in_flight() {
        let h = Harness::new();
        let cp = gated(&h, vec![]);
        let ctx = h.ctx(CancelSignal::new()).with_checkpoint(cp.clone());
        let mut rec = Recorder::new(&ctx);
        for i in 1..=MOST_PENDING {
            let (parts, outputs) = unit(&ctx, &format!("u{i}"));
            rec.complete(&format!("u{i}"), parts, outputs, serde_json::Value::Null).unwrap();
        }
        assert!(cp.seen.lock().unwrap().is_empty());
        // One more waits for the oldest record: here until the gate's 10 s run out.
        cp.gate.add_permits(1);
        let (parts, outputs) = unit(&ctx, "last");
        rec.complete("last", parts, outputs, serde_json::Value::Null).unwrap();
        assert_eq!(rec.units, MOST_PENDING, "the oldest unit settled before another went in flight");
        assert_eq!(names(&h), ["output", "checkpoint"], "and was announced");
        cp.gate.add_permits(MOST_PENDING);
        rec.finish().unwrap();
        assert_eq!(cp.seen.lock().unwrap().len(), MOST_PENDING + 1);
    }
}
