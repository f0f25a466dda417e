//! Admission control and slot allocation.
//!
//! Jobs wait in one bounded queue per priority; a job gets a [`Permit`] (one CPU slot) when a
//! slot is free and its kind is under its per-kind cap. Interactive jobs are served before
//! batch jobs; within a priority, first come first served, except that a job whose kind is at
//! its cap lets the next job of another kind go first. A full queue refuses new jobs
//! ([`Rejected::Overloaded`]) instead of growing.
//!
//! Dropping a [`Ticket`] leaves the queue (deadline, cancel); dropping a [`Permit`] frees its
//! slot and wakes the next waiter.

use kiln_jobs::Priority;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{oneshot, Notify};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the queue is full")]
    Overloaded,
    #[error("the worker is draining and takes no new jobs")]
    Draining,
}

struct Waiter {
    seq: u64,
    kind: Arc<str>,
    tx: oneshot::Sender<Permit>,
}

#[derive(Default)]
struct State {
    /// Index 0: interactive, 1: batch.
    queues: [VecDeque<Waiter>; 2],
    running: usize,
    running_by_kind: HashMap<Arc<str>, usize>,
    next_seq: u64,
    closed: bool,
}

struct Inner {
    slots: usize,
    queue_cap: usize,
    per_kind: HashMap<String, usize>,
    state: Mutex<State>,
    /// Woken whenever the queue shrinks.
    room: Notify,
}

/// Counts for metrics and the capacity report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub slots: usize,
    pub running: usize,
    pub queued: usize,
    /// kind → (running, queued, cap)
    pub by_kind: BTreeMap<String, (usize, usize, usize)>,
}

#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

fn qindex(p: Priority) -> usize {
    match p {
        Priority::Interactive => 0,
        Priority::Batch => 1,
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counts half-updated (every
        // update is a single statement), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cap(&self, kind: &str) -> usize {
        self.per_kind.get(kind).copied().unwrap_or(self.slots).min(self.slots)
    }

    /// Hands free slots to waiters, interactive first.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        let mut popped = false;
        while st.running < self.slots {
            let mut pick = None;
            'queues: for (qi, q) in st.queues.iter().enumerate() {
                for (pos, w) in q.iter().enumerate() {
                    if st.running_by_kind.get(&w.kind).copied().unwrap_or(0) < self.cap(&w.kind) {
                        pick = Some((qi, pos));
                        break 'queues;
                    }
                }
            }
            let Some((qi, pos)) = pick else { break };
            let Some(w) = st.queues[qi].remove(pos) else { break };
            popped = true;
            st.running += 1;
            *st.running_by_kind.entry(w.kind.clone()).or_default() += 1;
            let permit = Permit { inner: Some(self.clone()), kind: w.kind.clone() };
            if let Err(mut p) = w.tx.send(permit) {
                // The ticket is gone: undo here (dropping it would re-lock).
                p.inner = None;
                st.running -= 1;
                if let Some(n) = st.running_by_kind.get_mut(&w.kind) {
                    *n -= 1;
                }
            }
        }
        if popped {
            self.room.notify_waiters();
        }
    }
}

impl Scheduler {
    /// `slots` jobs run at once; at most `queue_cap` wait; `per_kind` caps running jobs of a kind.
    pub fn new(slots: usize, queue_cap: usize, per_kind: HashMap<String, usize>) -> Self {
        Scheduler {
            inner: Arc::new(Inner {
                slots: slots.max(1),
                queue_cap: queue_cap.max(1),
                per_kind,
                state: Mutex::new(State::default()),
                room: Notify::new(),
            }),
        }
    }

    pub fn slots(&self) -> usize {
        self.inner.slots
    }

    /// Joins the queue, or is refused at once when it is full or the worker is draining.
    pub fn try_enqueue(&self, kind: &str, priority: Priority) -> Result<Ticket, Rejected> {
        let mut st = self.inner.lock();
        if st.closed {
            return Err(Rejected::Draining);
        }
        let queued: usize = st.queues.iter().map(VecDeque::len).sum();
        if queued >= self.inner.queue_cap {
            return Err(Rejected::Overloaded);
        }
        let (tx, rx) = oneshot::channel();
        let seq = st.next_seq;
        st.next_seq += 1;
        st.queues[qindex(priority)].push_back(Waiter { seq, kind: Arc::from(kind), tx });
        self.inner.dispatch(&mut st);
        Ok(Ticket { seq, priority, inner: self.inner.clone(), rx })
    }

    /// Joins the queue, waiting for room when it is full (`kiln run` reads its input no
    /// faster than the worker drains it).
    pub async fn enqueue(&self, kind: &str, priority: Priority) -> Result<Ticket, Rejected> {
        loop {
            let room = self.inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_enqueue(kind, priority) {
                Err(Rejected::Overloaded) => room.await,
                other => return other,
            }
        }
    }

    /// Whether a job could join the queue now.
    pub fn has_room(&self) -> bool {
        let st = self.inner.lock();
        !st.closed && st.queues.iter().map(VecDeque::len).sum::<usize>() < self.inner.queue_cap
    }

    /// Waits until a job could join the queue.
    pub async fn room(&self) {
        loop {
            let room = self.inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.has_room() {
                return;
            }
            room.await;
        }
    }

    /// Refuses every later enqueue; queued and running jobs carry on.
    pub fn close(&self) {
        self.inner.lock().closed = true;
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    pub fn snapshot(&self) -> Snapshot {
        let st = self.inner.lock();
        let mut by_kind: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
        for (k, n) in &st.running_by_kind {
            by_kind.entry(k.to_string()).or_insert((0, 0, self.inner.cap(k))).0 += n;
        }
        for q in &st.queues {
            for w in q {
                by_kind.entry(w.kind.to_string()).or_insert((0, 0, self.inner.cap(&w.kind))).1 += 1;
            }
        }
        Snapshot { slots: self.inner.slots, running: st.running, queued: st.queues.iter().map(VecDeque::len).sum(), by_kind }
    }

    /// The cap on running jobs of `kind`.
    pub fn cap(&self, kind: &str) -> usize {
        self.inner.cap(kind)
    }
}

/// A place in the queue. Await [`Ticket::granted`] for the permit; drop to leave the queue.
pub struct Ticket {
    seq: u64,
    priority: Priority,
    inner: Arc<Inner>,
    rx: oneshot::Receiver<Permit>,
}

impl Ticket {
    /// Waits for a slot.
    pub async fn granted(&mut self) -> Permit {
        match (&mut self.rx).await {
            Ok(p) => p,
            // The sender lives in the queue until it sends; it cannot be dropped unsent
            // while this ticket exists.
            Err(_) => unreachable!("scheduler dropped a waiter without a permit"),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        let q = &mut st.queues[qindex(self.priority)];
        if let Some(pos) = q.iter().position(|w| w.seq == self.seq) {
            q.remove(pos);
            drop(st);
            self.inner.room.notify_waiters();
        }
        // A permit already sent but not received is dropped with `rx`, freeing its slot.
    }
}

/// One running slot. Dropping it frees the slot.
pub struct Permit {
    inner: Option<Arc<Inner>>,
    kind: Arc<str>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let mut st = inner.lock();
            st.running = st.running.saturating_sub(1);
            if let Some(n) = st.running_by_kind.get_mut(&self.kind) {
                *n = n.saturating_sub(1);
            }
            inner.dispatch(&mut st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Polls once: whether the ticket has its permit now.
    fn ready(t: &mut Ticket) -> Option<Permit> {
        let mut cx = Context::from_waker(Waker::noop());
        let fut = pin!(t.granted());
        match fut.poll(&mut cx) {
            Poll::Ready(p) => Some(p),
            Poll::Pending => None,
        }
    }

    #[test]
    fn bounded_queue_refuses_when_full() {
        let s = Scheduler::new(1, 2, HashMap::new());
        let mut a = s.try_enqueue("t", Priority::Batch).unwrap();
        let _pa = ready(&mut a).expect("free slot");
        let _b = s.try_enqueue("t", Priority::Batch).unwrap();
        let _c = s.try_enqueue("t", Priority::Batch).unwrap();
        assert_eq!(s.try_enqueue("t", Priority::Batch).err(), Some(Rejected::Overloaded));
        let snap = s.snapshot();
        assert_eq!((snap.running, snap.queued), (1, 2));
    }

    #[test]
    fn interactive_goes_before_batch() {
        let s = Scheduler::new(1, 10, HashMap::new());
        let mut first = s.try_enqueue("t", Priority::Batch).unwrap();
        let p = ready(&mut first).unwrap();
        let mut batch = s.try_enqueue("t", Priority::Batch).unwrap();
        let mut inter = s.try_enqueue("t", Priority::Interactive).unwrap();
        assert!(ready(&mut batch).is_none() && ready(&mut inter).is_none());
        drop(p);
        assert!(ready(&mut batch).is_none(), "batch must wait behind interactive");
        let pi = ready(&mut inter).expect("interactive first");
        drop(pi);
        assert!(ready(&mut batch).is_some());
    }

    #[test]
    fn per_kind_cap_lets_other_kinds_pass() {
        let s = Scheduler::new(2, 10, HashMap::from([("slow".to_string(), 1)]));
        let mut s1 = s.try_enqueue("slow", Priority::Batch).unwrap();
        let _p1 = ready(&mut s1).unwrap();
        let mut s2 = s.try_enqueue("slow", Priority::Batch).unwrap();
        let mut f1 = s.try_enqueue("fast", Priority::Batch).unwrap();
        assert!(ready(&mut s2).is_none(), "slow is at its cap");
        assert!(ready(&mut f1).is_some(), "fast takes the free slot");
        assert_eq!(s.snapshot().by_kind["slow"], (1, 1, 1));
    }

    #[test]
    fn dropped_tickets_leave_the_queue_and_free_slots() {
        let s = Scheduler::new(1, 1, HashMap::new());
        let mut a = s.try_enqueue("t", Priority::Batch).unwrap();
        let pa = ready(&mut a).unwrap();
        let b = s.try_enqueue("t", Priority::Batch).unwrap();
        drop(b);
        assert_eq!(s.snapshot().queued, 0);
        let mut c = s.try_enqueue("t", Priority::Batch).unwrap();
        drop(pa);
        // c got the slot; dropping c un-received must free it again.
        drop(c.rx.try_recv().ok());
        let snap = s.snapshot();
        assert_eq!((snap.running, snap.queued), (0, 0));
    }

    #[test]
    fn closed_scheduler_refuses() {
        let s = Scheduler::new(1, 1, HashMap::new());
        s.close();
        assert_eq!(s.try_enqueue("t", Priority::Batch).err(), Some(Rejected::Draining));
    }

    #[tokio::test]
    async fn enqueue_waits_for_room() {
        let s = Scheduler::new(1, 1, HashMap::new());
        let mut a = s.try_enqueue("t", Priority::Batch).unwrap();
        let pa = a.granted().await;
        let mut b = s.try_enqueue("t", Priority::Batch).unwrap();
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { s2.enqueue("t", Priority::Batch).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(pa); // b runs, the queue empties, the waiter gets in
        let _pb = b.granted().await;
        waiter.await.unwrap().unwrap();
    }
}
