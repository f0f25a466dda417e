//! Durable checkpoints of long jobs: `{store}/jobs/{id}/state.json` holds the lease (owner and
//! expiry), the spec hash and the completed units with their outputs (DESIGN.md, "Object store
//! and checkpoints").
//!
//! Every write of `state.json` is a compare-and-swap on the object's version
//! ([`ObjectStore::put_if_version`]: S3 `If-Match`/`If-None-Match`, or `flock` + digest on the
//! filesystem), so only the worker whose write created the current version can write the next
//! one. A worker that finds a live lease held by another does not run the job
//! ([`Acquired::Held`]); an expired or released lease is taken over, and the units it records
//! are skipped by the new attempt. A different spec under the same id is refused.
//!
//! Units are recorded by group commit: a unit completed while a write of the state is in
//! flight waits for the next write, which carries every unit waiting by then, so concurrent
//! pages share one conditional write (and one `fdatasync` on the filesystem) instead of one
//! each. A unit's `record` still returns only once a write carrying it landed.
//!
//! Leases are wall-clock times (epoch ms): workers' clocks must agree to well within the
//! lease length (NTP does this; the default lease is 30 s).

use bytes::Bytes;
use kiln_jobs::{Checkpointer, ErrorCode, JobError, ObjectStore, StoreError, UnitRecord, Version};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use crate::store::patient::Backoff;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;
use tracing::{info, warn};
use url::Url;

/// Largest `state.json` read back (a 10 000-segment job stays far below it).
const STATE_LIMIT: u64 = 64 << 20;

/// The content of `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub job_id: String,
    pub kind: String,
    /// SHA-256 of the job's kind, input and output prefix (see [`spec_hash`]).
    pub spec_hash: String,
    /// The lease holder: `{worker id}/{attempt ulid}`.
    pub owner: String,
    /// The lease ends at this epoch millisecond; 0 when released.
    pub lease_expires_ms: u64,
    /// How many attempts have held the lease, this one included.
    pub attempt: u32,
    /// Bumped by every recorded unit.
    pub seq: u64,
    pub units: BTreeMap<String, UnitRecord>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The hash that ties a checkpoint to one spec: kind, input (keys sorted, so the same JSON
/// in another key order is the same spec) and output prefix.
pub fn spec_hash(kind: &str, input: &Value, output: &Url) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(canonical(input).as_bytes());
    h.update([0]);
    h.update(output.as_str().as_bytes());
    hex::encode(h.finalize())
}

fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            let body: Vec<String> =
                keys.into_iter().map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k]))).collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// What acquiring a job's lease found.
pub enum Acquired {
    /// This worker holds the lease and runs the job.
    Mine(Arc<Lease>),
    /// Another worker holds a live lease: this one must not run the job.
    Held { owner: String, expires_ms: u64 },
}

/// Where and how a job's checkpoint is kept.
pub struct CheckpointSpec {
    pub store: Arc<dyn ObjectStore>,
    pub uri: Url,
    pub job_id: String,
    pub kind: String,
    pub spec_hash: String,
    /// This attempt's owner name.
    pub owner: String,
    pub lease_ms: u64,
    /// How long a write waits for an unavailable store before failing.
    pub store_wait: Duration,
}

fn store_error(context: &str, e: StoreError) -> JobError {
    let retryable = e.is_retryable();
    JobError::internal(format!("{context}: {e}")).retryable(retryable)
}

/// Reads the job's `state.json`; `None` when there is none yet.
pub async fn read_state(store: &dyn ObjectStore, uri: &Url) -> Result<Option<(State, Version)>, JobError> {
    match store.get_versioned(uri, STATE_LIMIT).await {
        Ok((bytes, version)) => {
            let state: State = serde_json::from_slice(&bytes)
                .map_err(|e| JobError::internal(format!("checkpoint {uri} is unreadable: {e}")))?;
            Ok(Some((state, version)))
        }
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(store_error("reading the checkpoint", e)),
    }
}

/// Takes the job's lease: creates `state.json`, or takes over an expired or released lease
/// (keeping its completed units), or reports the live lease of another worker.
pub async fn acquire(spec: CheckpointSpec) -> Result<Acquired, JobError> {
    let store = spec.store.as_ref();
    // A lost race (another worker wrote between our read and our write) is read again.
    for _ in 0..8 {
        let found = read_state(store, &spec.uri).await?;
        let now = now_ms();
        let (state, expected) = match found {
            None => {
                let fresh = State {
                    job_id: spec.job_id.clone(),
                    kind: spec.kind.clone(),
                    spec_hash: spec.spec_hash.clone(),
                    owner: spec.owner.clone(),
                    lease_expires_ms: now + spec.lease_ms,
                    attempt: 1,
                    seq: 0,
                    units: BTreeMap::new(),
                };
                (fresh, None)
            }
            Some((old, version)) => {
                if old.spec_hash != spec.spec_hash {
                    return Err(JobError::new(
                        ErrorCode::InvalidSpec,
                        format!(
                            "spec hash mismatch: job {} already has a checkpoint for a different spec; \
                             submit a changed spec under a new id",
                            spec.job_id
                        ),
                    ));
                }
                if old.owner != spec.owner && old.lease_expires_ms > now {
                    return Ok(Acquired::Held { owner: old.owner, expires_ms: old.lease_expires_ms });
                }
                let taken = State {
                    owner: spec.owner.clone(),
                    lease_expires_ms: now + spec.lease_ms,
                    attempt: old.attempt + 1,
                    ..old
                };
                (taken, Some(version))
            }
        };
        let body = Bytes::from(serde_json::to_vec(&state).map_err(|e| JobError::internal(e.to_string()))?);
        match store.put_if_version(&spec.uri, body, "application/json", expected.as_ref()).await {
            Ok(version) => {
                if !state.units.is_empty() {
                    info!(job_id = %spec.job_id, units = state.units.len(), attempt = state.attempt, "resuming from checkpoint");
                }
                return Ok(Acquired::Mine(Arc::new(Lease::new(spec, state, version))));
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(store_error("writing the checkpoint", e)),
        }
    }
    Err(JobError::internal(format!("checkpoint {} keeps changing under this worker", spec.uri)).retryable(true))
}

/// A held lease: the job's checkpoint as this attempt keeps it.
pub struct Lease {
    spec: CheckpointSpec,
    /// The units earlier attempts completed, as found when the lease was taken.
    restored: BTreeMap<String, UnitRecord>,
    attempt: u32,
    current: Mutex<(State, Version)>,
    /// Another worker took the lease (a conditional write was refused).
    lost: AtomicBool,
    /// Released: no more writes from this attempt.
    closed: AtomicBool,
    recorded: AtomicU64,
    /// Units waiting for a write of the state (group commit).
    queue: std::sync::Mutex<Queue>,
}

/// The group commit's queue: tickets in arrival order.
#[derive(Default)]
struct Queue {
    next: u64,
    waiting: Vec<(u64, String, UnitRecord)>,
    /// The seq each unit written by another caller's write got, until its caller takes it.
    written: HashMap<u64, u64>,
}

impl Lease {
    fn new(spec: CheckpointSpec, state: State, version: Version) -> Lease {
        Lease {
            restored: state.units.clone(),
            attempt: state.attempt,
            spec,
            current: Mutex::new((state, version)),
            lost: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            recorded: AtomicU64::new(0),
            queue: std::sync::Mutex::default(),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether earlier attempts completed units this one skips.
    pub fn resumed(&self) -> bool {
        !self.restored.is_empty()
    }
    pub fn restored_count(&self) -> usize {
        self.restored.len()
    }
    /// Units this attempt recorded.
    pub fn recorded_count(&self) -> u64 {
        self.recorded.load(Ordering::SeqCst)
    }
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
    pub fn lease_ms(&self) -> u64 {
        self.spec.lease_ms
    }

    /// The error an attempt that lost its lease ends with.
    pub fn lost_error(&self) -> JobError {
        JobError::internal(format!(
            "job {} lost its checkpoint lease to another worker; that worker continues it",
            self.spec.job_id
        ))
        .retryable(true)
    }

    /// Applies `change` to the state and writes it conditionally, extending the lease. While
    /// the store is unavailable the write is retried with backoff for up to `store_wait`.
    async fn write(&self, change: impl Fn(&mut State)) -> Result<u64, JobError> {
        let mut cur = self.current.lock().await;
        self.write_locked(&mut cur, change).await
    }

    /// [`Lease::write`] with the state's lock held by the caller.
    async fn write_locked(&self, cur: &mut (State, Version), change: impl Fn(&mut State)) -> Result<u64, JobError> {
        let mut backoff = Backoff::new(self.spec.store_wait);
        loop {
            if self.is_lost() {
                return Err(self.lost_error());
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(JobError::internal("the job's checkpoint lease was released").retryable(true));
            }
            let mut next = cur.0.clone();
            change(&mut next);
            next.lease_expires_ms = if next.lease_expires_ms == 0 { 0 } else { now_ms() + self.spec.lease_ms };
            let body = Bytes::from(serde_json::to_vec(&next).map_err(|e| JobError::internal(e.to_string()))?);
            let err = match self.spec.store.put_if_version(&self.spec.uri, body, "application/json", Some(&cur.1)).await {
                Ok(version) => {
                    let seq = next.seq;
                    *cur = (next, version);
                    return Ok(seq);
                }
                // Either another worker took the lease, or an earlier try of ours was applied
                // but its answer lost (a dropped connection, an SDK retry): the owner field
                // tells which. Ours: adopt the stored state itself, not only its version, so
                // a later write (a renewal, the release) never drops a unit whose record was
                // applied but answered with an error.
                Err(StoreError::Conflict(_)) => match read_state(self.spec.store.as_ref(), &self.spec.uri).await {
                    Ok(Some((found, version))) if found.owner == self.spec.owner => {
                        *cur = (found, version);
                        continue;
                    }
                    Ok(_) => {
                        self.lost.store(true, Ordering::SeqCst);
                        warn!(job_id = %self.spec.job_id, "checkpoint lease lost to another worker");
                        return Err(self.lost_error());
                    }
                    Err(e) => e,
                },
                Err(e) => store_error("writing the checkpoint", e),
            };
            if !err.retryable {
                return Err(err);
            }
            warn!(job_id = %self.spec.job_id, error = %err, retry_in_ms = backoff.next_ms(),
                "checkpoint store unavailable; waiting for it to return");
            if !backoff.wait().await {
                return Err(err);
            }
        }
    }

    /// Extends the lease. Fails when the lease was lost or the store is unavailable.
    pub async fn renew(&self) -> Result<(), JobError> {
        self.write(|_| {}).await.map(|_| ())
    }

    /// Gives the lease up (expiry 0) so another worker may take the job over at once, and
    /// ends this attempt's writes. Best effort: an unreleased lease simply expires.
    pub async fn release(&self) {
        if self.is_lost() || self.closed.load(Ordering::SeqCst) {
            return;
        }
        let released = self.write(|s| s.lease_expires_ms = 0).await;
        self.closed.store(true, Ordering::SeqCst);
        if let Err(e) = released {
            warn!(job_id = %self.spec.job_id, error = %e, "releasing the checkpoint lease failed; it will expire");
        }
    }
}

#[async_trait::async_trait]
impl Checkpointer for Lease {
    fn restored(&self, key: &str) -> Option<UnitRecord> {
        self.restored.get(key).cloned()
    }

    /// Group commit: the unit joins the queue; the first caller to hold the state's lock
    /// writes every unit waiting then, each with its own seq. A caller whose unit another's
    /// write carried takes its seq and returns. On a failed write the others' units go back
    /// to the queue for their own callers to write.
    async fn record(&self, key: &str, unit: UnitRecord) -> Result<u64, JobError> {
        let ticket = {
            let mut q = self.queue();
            let t = q.next;
            q.next += 1;
            q.waiting.push((t, key.to_owned(), unit));
            t
        };
        let mut cur = self.current.lock().await;
        if let Some(seq) = self.queue().written.remove(&ticket) {
            self.recorded.fetch_add(1, Ordering::SeqCst);
            return Ok(seq);
        }
        let batch = std::mem::take(&mut self.queue().waiting);
        let written = self
            .write_locked(&mut cur, |s| {
                for (_, key, unit) in &batch {
                    s.units.insert(key.clone(), unit.clone());
                    s.seq += 1;
                }
            })
            .await;
        let mut q = self.queue();
        match written {
            Ok(last) => {
                let first = last + 1 - batch.len() as u64;
                let mut mine = last;
                for (i, (t, _, _)) in batch.iter().enumerate() {
                    if *t == ticket {
                        mine = first + i as u64;
                    } else {
                        q.written.insert(*t, first + i as u64);
                    }
                }
                self.recorded.fetch_add(1, Ordering::SeqCst);
                Ok(mine)
            }
            Err(e) => {
                let others: Vec<_> = batch.into_iter().filter(|(t, _, _)| *t != ticket).collect();
                q.waiting.splice(0..0, others);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fs::FsStore;
    use kiln_jobs::OutputInfo;

    fn spec(dir: &std::path::Path, owner: &str, hash: &str, lease_ms: u64) -> CheckpointSpec {
        CheckpointSpec {
            store: Arc::new(FsStore),
            uri: Url::from_file_path(dir.join(kiln_jobs::layout::state_key("j1"))).unwrap(),
            job_id: "j1".into(),
            kind: "render".into(),
            spec_hash: hash.into(),
            owner: owner.into(),
            lease_ms,
            store_wait: Duration::from_millis(0),
        }
    }

    fn unit(name: &str) -> UnitRecord {
        UnitRecord {
            outputs: vec![OutputInfo {
                name: name.into(),
                uri: format!("file:///o/{name}"),
                content_type: "text/plain".into(),
                bytes: 1,
                width: None,
                height: None,
            }],
            data: Value::Null,
        }
    }

    fn mine(a: Acquired) -> Arc<Lease> {
        match a {
            Acquired::Mine(l) => l,
            Acquired::Held { owner, .. } => panic!("held by {owner}"),
        }
    }

    /// The filesystem store, except that one armed conditional write is applied and then
    /// answered with an error (the connection dropped after the store took it).
    struct LostAnswer {
        fs: FsStore,
        armed: std::sync::atomic::AtomicBool,
        /// Conditional writes made.
        writes: AtomicU64,
    }

    impl LostAnswer {
        fn new() -> Arc<LostAnswer> {
            Arc::new(LostAnswer { fs: FsStore, armed: false.into(), writes: AtomicU64::new(0) })
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for LostAnswer {
        async fn get(&self, uri: &Url, limit: u64) -> Result<Bytes, StoreError> {
            self.fs.get(uri, limit).await
        }
        async fn open(&self, uri: &Url) -> Result<kiln_jobs::store::ByteStream, StoreError> {
            self.fs.open(uri).await
        }
        async fn head(&self, uri: &Url) -> Result<Option<kiln_jobs::ObjectMeta>, StoreError> {
            self.fs.head(uri).await
        }
        async fn put(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<(), StoreError> {
            self.fs.put(uri, data, content_type).await
        }
        async fn put_file(&self, uri: &Url, path: &std::path::Path, content_type: &str) -> Result<(), StoreError> {
            self.fs.put_file(uri, path, content_type).await
        }
        async fn put_if_absent(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<bool, StoreError> {
            self.fs.put_if_absent(uri, data, content_type).await
        }
        async fn delete(&self, uri: &Url) -> Result<(), StoreError> {
            self.fs.delete(uri).await
        }
        async fn get_versioned(&self, uri: &Url, limit: u64) -> Result<(Bytes, Version), StoreError> {
            self.fs.get_versioned(uri, limit).await
        }
        async fn put_if_version(&self, uri: &Url, data: Bytes, content_type: &str, expected: Option<&Version>) -> Result<Version, StoreError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            let v = self.fs.put_if_version(uri, data, content_type, expected).await?;
            if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Unavailable("the answer was lost".into()));
            }
            Ok(v)
        }
        async fn list(&self, prefix: &Url) -> Result<Vec<kiln_jobs::ObjectMeta>, StoreError> {
            self.fs.list(prefix).await
        }
    }

    #[tokio::test]
    async fn a_unit_whose_record_was_applied_but_answered_with_an_error_survives_the_release() {
        let d = tempfile::tempdir().unwrap();
        let store = LostAnswer::new();
        let mut s = spec(d.path(), "w1/a", "h", 60_000);
        s.store = store.clone();
        let a = mine(acquire(s).await.unwrap());
        a.record("page-0001", unit("p1")).await.unwrap();
        store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        // Stored, but the attempt sees an error (and, with no store wait, fails).
        assert!(a.record("page-0002", unit("p2")).await.is_err());
        // The release meets our own newer write: it must keep page 2.
        a.release().await;
        let b = mine(acquire(spec(d.path(), "w2/b", "h", 60_000)).await.unwrap());
        assert_eq!(b.restored_count(), 2, "the release rewrote the older state");
        assert_eq!(b.restored("page-0002"), Some(unit("p2")));
    }

    #[tokio::test]
    async fn concurrent_units_share_writes_and_each_gets_its_own_seq() {
        let d = tempfile::tempdir().unwrap();
        let store = LostAnswer::new();
        let mut s = spec(d.path(), "w1/a", "h", 60_000);
        s.store = store.clone();
        let a = mine(acquire(s).await.unwrap());
        let before = store.writes.load(Ordering::SeqCst);
        let names: Vec<String> = (1..=8).map(|i| format!("page-{i:04}")).collect();
        let seqs = futures_util::future::join_all(names.iter().map(|n| a.record(n, unit(n)))).await;
        let mut seqs: Vec<u64> = seqs.into_iter().map(Result::unwrap).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=8).collect::<Vec<u64>>(), "one seq per unit");
        let writes = store.writes.load(Ordering::SeqCst) - before;
        assert!(writes < 8, "units waiting on a write share the next one: {writes} writes");
        assert_eq!(a.recorded_count(), 8);
        // A failed write leaves the others' units for their own callers.
        store.armed.store(true, Ordering::SeqCst);
        let (x, y) = tokio::join!(a.record("page-0009", unit("p9")), a.record("page-0010", unit("p10")));
        assert!(x.is_err(), "the failed write's caller sees the error");
        assert!(y.is_ok(), "the other unit was written by its own caller: {y:?}");
        a.release().await;
        let b = mine(acquire(spec(d.path(), "w2/b", "h", 60_000)).await.unwrap());
        assert_eq!(b.restored_count(), 10, "every unit is in the state (page 9's write was applied, its answer lost)");
        assert_eq!(b.restored("page-0010"), Some(unit("p10")));
    }

    #[test]
    fn spec_hash_ignores_key_order_but_not_values() {
        let out = Url::parse("file:///o/").unwrap();
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"c":[1,2],"d":"x"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":{"d":"x","c":[1,2]},"a":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"b":{"d":"x","c":[2,1]},"a":1}"#).unwrap();
        assert_eq!(spec_hash("k", &a, &out), spec_hash("k", &b, &out));
        assert_ne!(spec_hash("k", &a, &out), spec_hash("k", &c, &out));
        assert_ne!(spec_hash("k", &a, &out), spec_hash("other", &a, &out));
    }

    #[tokio::test]
    async fn a_live_lease_is_respected_and_an_expired_one_taken_over_with_its_units() {
        let d = tempfile::tempdir().unwrap();
        let a = mine(acquire(spec(d.path(), "w1/a", "h", 60_000)).await.unwrap());
        assert!(!a.resumed());
        a.record("page-0001", unit("p1")).await.unwrap();
        a.record("page-0002", unit("p2")).await.unwrap();
        match acquire(spec(d.path(), "w2/b", "h", 60_000)).await.unwrap() {
            Acquired::Held { owner, .. } => assert_eq!(owner, "w1/a"),
            Acquired::Mine(_) => panic!("a live lease was taken"),
        }
        // A released lease is free at once; the new holder sees the completed units.
        a.release().await;
        let b = mine(acquire(spec(d.path(), "w2/b", "h", 60_000)).await.unwrap());
        assert!(b.resumed());
        assert_eq!(b.restored_count(), 2);
        assert_eq!(b.restored("page-0002"), Some(unit("p2")));
        assert_eq!(b.attempt(), 2);
        // The old holder can no longer write.
        assert!(a.record("page-0003", unit("p3")).await.is_err());
    }

    #[tokio::test]
    async fn a_lease_taken_over_makes_the_old_holder_stop() {
        let d = tempfile::tempdir().unwrap();
        // A zero-length lease has expired by the time anyone else looks.
        let a = mine(acquire(spec(d.path(), "w1/a", "h", 0)).await.unwrap());
        a.record("u1", unit("u1")).await.unwrap();
        let b = mine(acquire(spec(d.path(), "w2/b", "h", 60_000)).await.unwrap());
        let err = a.record("u2", unit("u2")).await.unwrap_err();
        assert!(err.retryable && err.message.contains("lost"), "{err:?}");
        assert!(a.is_lost());
        b.record("u2", unit("u2")).await.unwrap();
        let (state, _) = read_state(&FsStore, &spec(d.path(), "x", "h", 1).uri).await.unwrap().unwrap();
        assert_eq!(state.units.len(), 2);
        assert_eq!(state.owner, "w2/b");
    }

    #[tokio::test]
    async fn a_changed_spec_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = mine(acquire(spec(d.path(), "w1/a", "h1", 60_000)).await.unwrap());
        a.release().await;
        let err = acquire(spec(d.path(), "w2/b", "h2", 60_000)).await.err().unwrap();
        assert_eq!(err.code, ErrorCode::InvalidSpec);
        assert!(err.message.contains("spec hash mismatch"));
    }
}
