//! Jobs the worker knows right now: queued, running, and the most recently finished, with
//! each job's event log so a late subscriber (GET /v1/jobs/{id}/events) sees every event.

use futures_util::Stream;
use kiln_jobs::{CancelSignal, Event, EventSink, JobResult, JobStatus};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// Events kept per job for late subscribers.
const MAX_HISTORY: usize = 10_000;
/// Events buffered for a live subscriber that has not caught up (a slower one skips
/// progress events; it always gets the result, which is also kept on its own).
const LIVE_BUFFER: usize = 256;

struct EventLog {
    history: Vec<Event>,
    /// Dropped once the result is emitted: a finished job's events are all in `history`,
    /// and the channel's preallocated ring would otherwise stay with every retained job.
    live: Option<broadcast::Sender<Event>>,
}

/// One job's live state.
pub struct JobEntry {
    pub id: String,
    pub kind: String,
    pub cancel: CancelSignal,
    /// The tenant that submitted it (`tenants.rs`), set once at admission.
    tenant: std::sync::OnceLock<String>,
    status: watch::Sender<JobStatus>,
    result: watch::Sender<Option<Arc<JobResult>>>,
    log: Mutex<EventLog>,
}

impl JobEntry {
    pub fn new(id: String, kind: String) -> Arc<Self> {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Arc::new(JobEntry {
            id,
            kind,
            cancel: CancelSignal::new(),
            tenant: std::sync::OnceLock::new(),
            status: watch::Sender::new(JobStatus::Queued),
            result: watch::Sender::new(None),
            log: Mutex::new(EventLog { history: Vec::new(), live: Some(live) }),
        })
    }

    pub fn status(&self) -> JobStatus {
        *self.status.borrow()
    }

    /// The tenant that submitted the job, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.get().map(String::as_str)
    }

    /// Records the job's tenant (the first call counts).
    pub fn set_tenant(&self, tenant: Option<String>) {
        if let Some(t) = tenant {
            let _ = self.tenant.set(t);
        }
    }

    pub fn set_status(&self, s: JobStatus) {
        self.status.send_replace(s);
    }

    pub fn result(&self) -> Option<Arc<JobResult>> {
        self.result.borrow().clone()
    }

    /// Records the final result: the `result` event, then the status. Only the first call counts.
    pub fn finish(&self, result: JobResult) -> Arc<JobResult> {
        if let Some(r) = self.result() {
            return r;
        }
        let result = Arc::new(result);
        self.emit(Event::Result((*result).clone()));
        self.result.send_replace(Some(result.clone()));
        self.status.send_replace(result.status);
        result
    }

    /// Waits for the final result.
    pub async fn wait(&self) -> Arc<JobResult> {
        let mut rx = self.result.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                // The sender lives in self, so this cannot end while we borrow self.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Every event so far, then the live ones, ending after `result`.
    pub fn events(&self) -> impl Stream<Item = Event> + Send + 'static {
        let (history, rx) = {
            let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            (log.history.clone(), log.live.as_ref().map(broadcast::Sender::subscribe))
        };
        let result = self.result.subscribe();
        async_stream(history, move |tx| async move {
            let mut done = false;
            // No live channel: the job had finished, and `history` ends with its result.
            let Some(mut rx) = rx else { return };
            while !done {
                match rx.recv().await {
                    Ok(e) => {
                        done = matches!(e, Event::Result(_));
                        if tx.send(e).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            if !done {
                let last = result.borrow().clone();
                if let Some(r) = last {
                    let _ = tx.send(Event::Result((*r).clone())).await;
                }
            }
        })
    }
}

/// A stream that yields `history` (ending early if it holds the result), then whatever
/// `producer` sends.
fn async_stream<F, Fut>(history: Vec<Event>, producer: F) -> impl Stream<Item = Event> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use futures_util::StreamExt;
    let finished = history.iter().any(|e| matches!(e, Event::Result(_)));
    let head = futures_util::stream::iter(history);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    if !finished {
        tokio::spawn(producer(tx));
    }
    head.chain(tokio_stream::wrappers::ReceiverStream::new(rx))
}

impl EventSink for JobEntry {
    fn emit(&self, event: Event) {
        let last = matches!(event, Event::Result(_));
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.history.len() < MAX_HISTORY || last {
            log.history.push(event.clone());
        }
        if let Some(live) = &log.live {
            let _ = live.send(event);
        }
        if last {
            log.live = None;
            log.history.shrink_to_fit();
        }
    }
}

/// Live jobs by id, plus the last `retain` finished ones.
pub struct JobTable {
    inner: Mutex<TableInner>,
    retain: usize,
}

struct TableInner {
    by_id: HashMap<String, Arc<JobEntry>>,
    finished: VecDeque<String>,
}

impl JobTable {
    pub fn new(retain: usize) -> Self {
        JobTable { inner: Mutex::new(TableInner { by_id: HashMap::new(), finished: VecDeque::new() }), retain }
    }

    pub fn get(&self, id: &str) -> Option<Arc<JobEntry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_id.get(id).cloned()
    }

    /// Inserts `entry` unless a job with its id is already queued or running; returns the
    /// entry that now holds the id and whether it is the one given.
    pub fn insert_or_get(&self, entry: Arc<JobEntry>) -> (Arc<JobEntry>, bool) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = t.by_id.get(&entry.id) {
            if !existing.status().is_terminal() {
                return (existing.clone(), false);
            }
        }
        t.by_id.insert(entry.id.clone(), entry.clone());
        (entry, true)
    }

    /// Removes an entry that was never admitted.
    pub fn remove(&self, entry: &Arc<JobEntry>) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if t.by_id.get(&entry.id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            t.by_id.remove(&entry.id);
        }
    }

    /// Marks an entry finished, forgetting the oldest finished ones past the retention.
    pub fn finished(&self, entry: &Arc<JobEntry>) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.finished.push_back(entry.id.clone());
        while t.finished.len() > self.retain {
            if let Some(old) = t.finished.pop_front() {
                if t.by_id.get(&old).is_some_and(|e| e.status().is_terminal()) {
                    t.by_id.remove(&old);
                }
            }
        }
    }

    /// Entries not yet finished.
    pub fn live(&self) -> Vec<Arc<JobEntry>> {
        let t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.by_id.values().filter(|e| !e.status().is_terminal()).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use kiln_jobs::{ErrorCode, JobError, WorkerInfo};

    fn result(id: &str) -> JobResult {
        let w = WorkerInfo { id: "w".into(), tier: "container".into(), accel: "cpu".into() };
        JobResult::failed(id.into(), "thumbnail".into(), &JobError::new(ErrorCode::Cancelled, "c"), w)
    }

    #[tokio::test]
    async fn late_subscribers_see_history_then_live_events() {
        let e = JobEntry::new("j".into(), "thumbnail".into());
        e.emit(Event::Progress { id: "j".into(), done: 1, total: 2, stage: "a".into() });
        let stream = e.events();
        e.emit(Event::Progress { id: "j".into(), done: 2, total: 2, stage: "b".into() });
        e.finish(result("j"));
        let got: Vec<_> = stream.map(|ev| ev.name()).collect().await;
        assert_eq!(got, ["progress", "progress", "result"]);
        // After the end: the whole history, ending with the result.
        let again: Vec<_> = e.events().map(|ev| ev.name()).collect().await;
        assert_eq!(again, ["progress", "progress", "result"]);
        assert_eq!(e.wait().await.status, JobStatus::Cancelled);
    }

    #[test]
    fn table_dedupes_live_ids_and_forgets_old_finished_ones() {
        let t = JobTable::new(1);
        let a = JobEntry::new("a".into(), "k".into());
        assert!(t.insert_or_get(a.clone()).1);
        let a2 = JobEntry::new("a".into(), "k".into());
        let (held, fresh) = t.insert_or_get(a2);
        assert!(!fresh && Arc::ptr_eq(&held, &a));
        a.finish(result("a"));
        t.finished(&a);
        let b = JobEntry::new("b".into(), "k".into());
        t.insert_or_get(b.clone());
        b.finish(result("b"));
        t.finished(&b);
        assert!(t.get("a").is_none(), "a fell out of the retention window");
        assert!(t.get("b").is_some());
    }
}
