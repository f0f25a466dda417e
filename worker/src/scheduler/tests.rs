//! The scheduler's accounting: queues, CPU slots given back and taken again around waits,
//! threads, cancellation (a dropped permit or wait), and GPU slots and memory per device.

use super::gpu::{Device, GpuPool};
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

/// Polls a wait once: whether it has resolved.
fn done<F: Future + Unpin>(f: &mut F) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(f).poll(&mut cx).is_ready()
}

fn sizes(cpu: usize, threads: usize, queue: usize) -> Sizes {
    Sizes { cpu_slots: cpu, job_threads: threads, queue_depth: queue, per_kind: HashMap::new(), gpus: Vec::new() }
}

/// (cpu busy, started, queued, returning)
fn counts(s: &Scheduler) -> (usize, usize, usize, usize) {
    let n = s.snapshot();
    (n.cpu_busy, n.running, n.queued, n.returning)
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
    assert_eq!((snap.running, snap.queued, snap.cpu_busy), (0, 0, 0));
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

#[test]
fn a_waiting_job_gives_its_cpu_slot_to_the_next_job_and_gets_one_back() {
    let s = Scheduler::with_sizes(sizes(1, 4, 10));
    let mut a = s.try_enqueue("infer", Priority::Batch).unwrap();
    let pa = ready(&mut a).unwrap();
    let ra = pa.resources(s.gpus());
    let mut b = s.try_enqueue("infer", Priority::Batch).unwrap();
    assert!(ready(&mut b).is_none(), "one CPU slot, held by a");
    assert_eq!(counts(&s), (1, 1, 1, 0));

    // a waits (its batch, the store, …): b starts on the slot a gave back.
    ra.release_cpu();
    assert!(!ra.holds_cpu());
    let pb = ready(&mut b).expect("b takes the released slot");
    assert_eq!(counts(&s), (1, 2, 0, 0));

    // a's wait ends: it queues for a slot while b computes.
    let mut back = ra.reacquire();
    assert!(!done(&mut back));
    assert_eq!(counts(&s), (1, 2, 0, 1));
    // b waits in turn: a gets the slot.
    let rb = pb.resources(s.gpus());
    rb.release_cpu();
    assert!(done(&mut back) && ra.holds_cpu());
    assert_eq!(counts(&s), (1, 2, 0, 0));
    // Releasing twice, or taking a slot already held, changes nothing.
    rb.release_cpu();
    let mut again = ra.reacquire();
    assert!(done(&mut again));
    assert_eq!(s.snapshot().cpu_by_kind["infer"], 1);
    drop(pa);
    drop(pb);
    assert_eq!(counts(&s), (0, 0, 0, 0));
}

#[test]
fn returning_jobs_go_before_new_ones_of_their_priority_but_after_interactive() {
    let s = Scheduler::with_sizes(sizes(1, 4, 10));
    let mut a = s.try_enqueue("t", Priority::Batch).unwrap();
    let pa = ready(&mut a).unwrap();
    let ra = pa.resources(s.gpus());
    ra.release_cpu();
    let mut b = s.try_enqueue("t", Priority::Batch).unwrap();
    let pb = ready(&mut b).unwrap();
    // While b computes: a comes back from its wait, a new batch job c and a new interactive
    // job i arrive.
    let mut back = ra.reacquire();
    let mut c = s.try_enqueue("t", Priority::Batch).unwrap();
    let mut i = s.try_enqueue("t", Priority::Interactive).unwrap();
    drop(pb);
    let pi = ready(&mut i).expect("interactive first");
    assert!(!done(&mut back) && ready(&mut c).is_none());
    // The interactive job ends: a (returning) before c (new), both batch.
    drop(pi);
    assert!(done(&mut back), "the returning job before the new one");
    assert!(ready(&mut c).is_none());
    drop(pa);
    assert!(ready(&mut c).is_some());
}

#[test]
fn job_threads_bound_the_jobs_started_even_with_cpu_free() {
    let s = Scheduler::with_sizes(sizes(1, 2, 10));
    let mut a = s.try_enqueue("t", Priority::Batch).unwrap();
    let pa = ready(&mut a).unwrap();
    pa.resources(s.gpus()).release_cpu();
    let mut b = s.try_enqueue("t", Priority::Batch).unwrap();
    let pb = ready(&mut b).unwrap();
    pb.resources(s.gpus()).release_cpu();
    let mut c = s.try_enqueue("t", Priority::Batch).unwrap();
    assert!(ready(&mut c).is_none(), "two threads, both taken by waiting jobs");
    assert_eq!(counts(&s), (0, 2, 1, 0));
    drop(pa);
    let pc = ready(&mut c).expect("a's thread is free");
    assert_eq!(counts(&s), (1, 2, 0, 0));
    drop((pb, pc));
}

#[test]
fn cancelling_a_job_waiting_for_its_slot_frees_everything() {
    let s = Scheduler::with_sizes(sizes(1, 4, 10));
    let mut a = s.try_enqueue("t", Priority::Batch).unwrap();
    let pa = ready(&mut a).unwrap();
    let ra = pa.resources(s.gpus());
    ra.release_cpu();
    let mut b = s.try_enqueue("t", Priority::Batch).unwrap();
    let pb = ready(&mut b).unwrap();
    let mut back = ra.reacquire();
    assert_eq!(counts(&s), (1, 2, 0, 1));
    // Cancel (or deadline) while a waits for its slot: the wait is dropped first, then the
    // permit when the job's thread returns. Either order frees a's place and thread.
    drop(pa);
    assert_eq!(counts(&s), (1, 1, 0, 0), "a left the returning queue and its thread");
    assert!(done(&mut back), "a wait whose job ended resolves");
    drop(back);
    drop(pb);
    assert_eq!(counts(&s), (0, 0, 0, 0));
}

#[test]
fn a_dropped_wait_leaves_the_returning_queue_and_a_grant_nobody_saw_is_given_back() {
    let s = Scheduler::with_sizes(sizes(1, 4, 10));
    let mut a = s.try_enqueue("t", Priority::Batch).unwrap();
    let pa = ready(&mut a).unwrap();
    let ra = pa.resources(s.gpus());
    ra.release_cpu();
    let mut b = s.try_enqueue("t", Priority::Batch).unwrap();
    let pb = ready(&mut b).unwrap();
    let back = ra.reacquire();
    drop(back);
    assert_eq!(counts(&s), (1, 2, 0, 0));
    // Granted while nobody polled, then dropped: the slot goes back at once.
    let back = ra.reacquire();
    drop(pb);
    assert!(ra.holds_cpu());
    drop(back);
    assert!(!ra.holds_cpu());
    assert_eq!(counts(&s), (0, 1, 0, 0));
    drop(pa);
    assert_eq!(counts(&s), (0, 0, 0, 0));
}

#[test]
fn resources_of_an_ended_job_hold_and_wait_for_nothing() {
    let s = Scheduler::with_sizes(sizes(1, 2, 10));
    let mut a = s.try_enqueue("t", Priority::Batch).unwrap();
    let pa = ready(&mut a).unwrap();
    let ra = pa.resources(s.gpus());
    drop(pa);
    ra.release_cpu();
    let mut back = ra.reacquire();
    assert!(done(&mut back));
    assert_eq!(counts(&s), (0, 0, 0, 0));
}

#[test]
fn idle_slots_are_lent_and_wanted_back_when_a_job_waits() {
    let s = Scheduler::with_sizes(sizes(3, 3, 10));
    let mut a = s.try_enqueue("render", Priority::Batch).unwrap();
    let pa = ready(&mut a).unwrap();
    let ra = pa.resources(s.gpus());
    // Two idle slots: both lent, no third; loans count as busy slots of the job's kind.
    let l1 = ra.borrow_cpu().expect("an idle slot");
    let l2 = ra.borrow_cpu().expect("a second idle slot");
    assert!(ra.borrow_cpu().is_none(), "every slot is busy");
    assert_eq!(counts(&s), (3, 1, 0, 0));
    assert_eq!(s.snapshot().cpu_by_kind["render"], 3);
    assert!(!l1.wanted() && !l2.wanted());
    // A new job queues behind the loans, and the loans say so.
    let mut b = s.try_enqueue("thumbnail", Priority::Interactive).unwrap();
    assert!(ready(&mut b).is_none());
    assert!(l1.wanted() && l2.wanted());
    // Giving one back starts the waiting job at once.
    drop(l1);
    let pb = ready(&mut b).expect("the loan's slot");
    assert_eq!(counts(&s), (3, 2, 0, 0));
    assert!(!l2.wanted(), "nobody waits any more");
    // A job that gave its own slot back borrows nothing; the other job's loan is refused
    // while a slot is wanted by a returning job.
    ra.release_cpu();
    assert!(ra.borrow_cpu().is_none(), "a job that does not compute borrows nothing");
    let rb = pb.resources(s.gpus());
    let mut back = ra.reacquire();
    assert!(done(&mut back), "a free slot: the job computes again at once");
    drop(l2);
    drop(pa);
    assert_eq!(counts(&s), (1, 1, 0, 0));
    let l3 = rb.borrow_cpu().expect("idle again");
    drop(pb);
    drop(l3);
    assert_eq!(counts(&s), (0, 0, 0, 0));
}

#[test]
fn no_loan_while_a_queued_job_could_start() {
    // One slot held, one free, but its kind's cap keeps the queued job out: lending is fine.
    let s = Scheduler::new(2, 10, HashMap::from([("render".to_string(), 1)]));
    let mut a = s.try_enqueue("render", Priority::Batch).unwrap();
    let pa = ready(&mut a).unwrap();
    let ra = pa.resources(s.gpus());
    let _b = s.try_enqueue("render", Priority::Batch).unwrap();
    let loan = ra.borrow_cpu().expect("the queued job may not start yet");
    assert!(!loan.wanted());
    drop(loan);
    // With a thread for it, the queued job starts at once and nothing is left to lend.
    let s = Scheduler::with_sizes(sizes(2, 2, 10));
    let mut a = s.try_enqueue("render", Priority::Batch).unwrap();
    let pa = ready(&mut a).unwrap();
    let ra = pa.resources(s.gpus());
    let mut b = s.try_enqueue("render", Priority::Batch).unwrap();
    let _pb = ready(&mut b).expect("a free slot and thread");
    assert!(ra.borrow_cpu().is_none());
}

// ---- GPU ----

const MIB: u64 = 1 << 20;

fn two_devices() -> Arc<GpuPool> {
    Arc::new(GpuPool::new(vec![
        Device { index: 0, slots: 2, mem_bytes: 1000 * MIB },
        Device { index: 1, slots: 1, mem_bytes: 600 * MIB },
    ]))
}

fn grant(w: &mut gpu::GpuWait) -> Option<Result<gpu::Grant, JobError>> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(w).poll(&mut cx) {
        Poll::Ready(g) => Some(g),
        Poll::Pending => None,
    }
}

#[test]
fn gpu_grants_take_slots_and_memory_per_device() {
    let pool = two_devices();
    let g1 = grant(&mut pool.acquire(Priority::Batch, 700 * MIB)).unwrap().unwrap();
    assert_eq!(g1.device(), 0, "the device with the most memory free");
    let g2 = grant(&mut pool.acquire(Priority::Batch, 500 * MIB)).unwrap().unwrap();
    assert_eq!(g2.device(), 1, "device 0 has 300 MiB left");
    let g3 = grant(&mut pool.acquire(Priority::Batch, 200 * MIB)).unwrap().unwrap();
    assert_eq!(g3.device(), 0);
    let snap = pool.snapshot();
    assert_eq!((snap[0].busy, snap[0].mem_free() / MIB, snap[0].slots_free()), (2, 100, 0));
    assert_eq!((snap[1].busy, snap[1].mem_free() / MIB), (1, 100));
    // No slot left anywhere: wait; a freed grant hands it on.
    let mut w = pool.acquire(Priority::Batch, 50 * MIB);
    assert!(grant(&mut w).is_none());
    drop(g2);
    assert_eq!(grant(&mut w).unwrap().unwrap().device(), 1);
    drop((g1, g3));
    assert_eq!(pool.snapshot()[0].mem_free(), 1000 * MIB);
}

#[test]
fn warm_models_hold_gpu_memory_until_unloaded() {
    let pool = two_devices();
    let warm = pool.reserve(0, 900 * MIB).unwrap();
    assert!(pool.reserve(7, 1).is_none(), "no device 7");
    let g = grant(&mut pool.acquire(Priority::Batch, 500 * MIB)).unwrap().unwrap();
    assert_eq!(g.device(), 1, "device 0 has only 100 MiB beside its warm model");
    let mut w = pool.acquire(Priority::Batch, 400 * MIB);
    assert!(grant(&mut w).is_none(), "device 1's slot is taken, device 0 lacks memory");
    drop(warm);
    assert_eq!(grant(&mut w).unwrap().unwrap().device(), 0, "the unloaded model's memory");
    assert_eq!(pool.snapshot()[0].mem_reserved, 0);
}

#[test]
fn gpu_waiters_interactive_first_and_dropped_waits_leave() {
    let pool = Arc::new(GpuPool::new(vec![Device { index: 0, slots: 1, mem_bytes: 100 }]));
    let g = grant(&mut pool.acquire(Priority::Batch, 10)).unwrap().unwrap();
    let mut batch = pool.acquire(Priority::Batch, 10);
    let gone = pool.acquire(Priority::Interactive, 10);
    let mut inter = pool.acquire(Priority::Interactive, 10);
    assert!(grant(&mut batch).is_none() && grant(&mut inter).is_none());
    drop(gone);
    drop(g);
    let gi = grant(&mut inter).expect("interactive first").unwrap();
    assert!(grant(&mut batch).is_none());
    drop(gi);
    assert!(grant(&mut batch).is_some());
}

#[test]
fn gpu_requests_that_can_never_fit_are_refused_at_once() {
    let none = Arc::new(GpuPool::new(Vec::new()));
    let e = grant(&mut none.acquire(Priority::Batch, 1)).unwrap().err().unwrap();
    assert_eq!(e.code, kiln_jobs::ErrorCode::Unsupported);
    let pool = two_devices();
    let e = grant(&mut pool.acquire(Priority::Batch, 2000 * MIB)).unwrap().err().unwrap();
    assert!(e.message.contains("1000 MiB"), "{}", e.message);
}

#[tokio::test]
async fn a_job_asks_the_scheduler_for_a_gpu_through_its_resources() {
    let s = Scheduler::with_sizes(Sizes { gpus: vec![Device { index: 3, slots: 1, mem_bytes: 64 * MIB }], ..sizes(1, 2, 4) });
    let mut a = s.try_enqueue("t", Priority::Interactive).unwrap();
    let pa = a.granted().await;
    let ra = pa.resources(s.gpus());
    let g = Resources::acquire_gpu(ra.as_ref(), None, 16 * MIB).await.unwrap();
    assert_eq!((g.device(), g.mem_bytes()), (3, 16 * MIB));
    let snap = s.snapshot();
    assert_eq!((snap.gpus[0].busy, snap.gpus[0].mem_in_use), (1, 16 * MIB));
    drop(g);
    assert_eq!(s.snapshot().gpus[0].busy, 0);
}
