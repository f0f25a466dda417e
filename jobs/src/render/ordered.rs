//! A job's units worked on every idle core, committed in order.
//!
//! [`ordered`] runs `work(i)` for `i` in `0..n` on the job's own thread and on extra threads
//! that borrow idle CPU slots ([`JobContext::borrow_cpus`]), and hands every result to
//! `commit` on the job's thread, strictly in order `0, 1, 2, …` — so outputs, checkpoint
//! records, events and the assembled document are exactly what a one-thread run gives.
//!
//! - Units are claimed in order; nobody claims more than [`AHEAD`] units per thread past
//!   the last committed one, so memory stays bounded whatever the number of units.
//! - The job's thread works too: while the next unit to commit is still in another thread's
//!   hands it claims the next free one (or waits when the window is full).
//! - Extra threads ask for more slots as the job goes (a slot freed by another job is
//!   used), and give their loan back after their current unit as soon as another job waits
//!   for a slot ([`crate::resources::CpuLoan::wanted`]).
//! - The first error (in order) ends the run: the job's thread stops the others, waits for
//!   them (the scope joins them) and returns it; units after it may have been worked on but
//!   are never committed. A panic in `work` becomes an `internal` error of its unit.

use crate::context::JobContext;
use crate::error::JobError;
use crate::resources::CpuLoan;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Units each thread may be ahead of the last committed one.
pub(super) const AHEAD: usize = 4;

struct Pipe<T> {
    /// The next unit nobody has claimed.
    next: usize,
    /// Units committed (all of `0..committed`).
    committed: usize,
    /// Results not committed yet, by unit.
    done: BTreeMap<usize, Result<T, JobError>>,
    /// Extra threads running.
    helpers: usize,
    /// Set when the job's thread leaves: extra threads claim nothing more.
    stop: bool,
}

struct Shared<T> {
    pipe: Mutex<Pipe<T>>,
    changed: Condvar,
    n: usize,
    window: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Pipe<T>> {
        // No update below can panic halfway, so a poisoned lock is still consistent.
        self.pipe.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the next unit when the window has room for it.
    fn claim(&self, p: &mut Pipe<T>) -> Option<usize> {
        (p.next < self.n && p.next - p.committed < self.window).then(|| {
            p.next += 1;
            p.next - 1
        })
    }

    fn put(&self, i: usize, r: Result<T, JobError>) {
        self.lock().done.insert(i, r);
        self.changed.notify_all();
    }
}

/// Stops the extra threads when the job's thread leaves `ordered`, returning or unwinding.
struct StopOnDrop<'a, T>(&'a Shared<T>);

impl<T> Drop for StopOnDrop<'_, T> {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.changed.notify_all();
    }
}

/// Works units `0..n` on up to `1 + most_helpers` threads and commits them in order (see the
/// module doc). `work` gets the unit's index and the context of the thread it runs on.
pub(super) fn ordered<T, W, C>(ctx: &JobContext, n: usize, most_helpers: usize, work: W, mut commit: C) -> Result<(), JobError>
where
    T: Send,
    W: Fn(&JobContext, usize) -> Result<T, JobError> + Sync,
    C: FnMut(usize, T) -> Result<(), JobError>,
{
    let shared = Shared {
        pipe: Mutex::new(Pipe { next: 0, committed: 0, done: BTreeMap::new(), helpers: 0, stop: false }),
        changed: Condvar::new(),
        n,
        window: (most_helpers + 1) * AHEAD,
    };
    let loaned = ctx.on_loan();
    let span = tracing::Span::current();
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&shared);
        for i in 0..n {
            // More threads while there are units nobody has claimed and slots nobody wants.
            let want = {
                let p = shared.lock();
                let unclaimed = n - p.next;
                most_helpers.saturating_sub(p.helpers).min(unclaimed.saturating_sub(1))
            };
            for loan in ctx.borrow_cpus(want) {
                shared.lock().helpers += 1;
                let (shared, work, loaned, span) = (&shared, &work, &loaned, span.clone());
                let spawned = std::thread::Builder::new()
                    .name("kiln-unit".into())
                    .spawn_scoped(scope, move || helper(shared, work, loaned, loan, span));
                if spawned.is_err() {
                    shared.lock().helpers -= 1;
                    break;
                }
            }
            let result = loop {
                let mut p = shared.lock();
                if let Some(r) = p.done.remove(&i) {
                    break r;
                }
                if let Some(j) = shared.claim(&mut p) {
                    drop(p);
                    shared.put(j, guarded(&work, ctx, j));
                    continue;
                }
                drop(shared.changed.wait(p).unwrap_or_else(|e| e.into_inner()));
            };
            commit(i, result?)?;
            shared.lock().committed = i + 1;
            shared.changed.notify_all();
        }
        Ok(())
    })
}

/// `work(ctx, j)`, a panic in it an `internal` error of unit `j`.
fn guarded<T, W>(work: &W, ctx: &JobContext, j: usize) -> Result<T, JobError>
where
    W: Fn(&JobContext, usize) -> Result<T, JobError>,
{
    catch_unwind(AssertUnwindSafe(|| work(ctx, j))).unwrap_or_else(|_| Err(JobError::internal(format!("unit {j}: its thread panicked"))))
}

/// An extra thread: claims and works units until none is left, the job's thread stops, a
/// unit fails, or another job wants the slot back.
fn helper<T, W>(shared: &Shared<T>, work: &W, ctx: &JobContext, loan: Box<dyn CpuLoan>, span: tracing::Span)
where
    W: Fn(&JobContext, usize) -> Result<T, JobError> + Sync,
{
    let _entered = span.enter();
    loop {
        if loan.wanted() {
            tracing::debug!("a job waits for the borrowed slot: giving it back");
            break;
        }
        let claimed = {
            let mut p = shared.lock();
            loop {
                if p.stop || p.next >= shared.n {
                    break None;
                }
                if let Some(j) = shared.claim(&mut p) {
                    break Some(j);
                }
                p = shared.changed.wait(p).unwrap_or_else(|e| e.into_inner());
            }
        };
        let Some(j) = claimed else { break };
        let r = guarded(work, ctx, j);
        let failed = r.is_err();
        shared.put(j, r);
        if failed {
            break;
        }
    }
    drop(loan);
    shared.lock().helpers -= 1;
    shared.changed.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Harness;
    use crate::CancelSignal;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn units_are_committed_in_order_whichever_thread_worked_them() {
        let h = Harness::new();
        let ctx = h.ctx(CancelSignal::new());
        let threads = Mutex::new(std::collections::HashSet::new());
        let mut seen = Vec::new();
        ordered(
            &ctx,
            200,
            3,
            |_, i| {
                threads.lock().unwrap().insert(std::thread::current().id());
                // Uneven work, so units finish out of order.
                let spin = (i * 7919) % 13 * 20_000;
                let x = (0..spin).fold(i as u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
                Ok((i, x))
            },
            |i, (j, _)| {
                assert_eq!(i, j);
                seen.push(i);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if cores > 1 {
            assert!(threads.lock().unwrap().len() > 1, "idle cores were borrowed");
        }
    }

    #[test]
    fn the_first_error_in_order_ends_the_run_and_nothing_after_it_is_committed() {
        let h = Harness::new();
        let ctx = h.ctx(CancelSignal::new());
        let worked = AtomicUsize::new(0);
        let mut committed = Vec::new();
        let e = ordered(
            &ctx,
            1000,
            3,
            |_, i| {
                worked.fetch_add(1, Ordering::SeqCst);
                if i == 37 {
                    return Err(JobError::internal("unit 37 broke"));
                }
                if i == 50 {
                    panic!("a later unit panics");
                }
                Ok(i)
            },
            |i, _| {
                committed.push(i);
                Ok(())
            },
        )
        .unwrap_err();
        assert!(e.message.contains("unit 37"), "{e}");
        assert_eq!(committed, (0..37).collect::<Vec<_>>());
        // The window bounds how far past the failure anyone worked.
        assert!(worked.load(Ordering::SeqCst) <= 37 + 1 + 4 * AHEAD, "worked {}", worked.load(Ordering::SeqCst));
    }

    #[test]
    fn a_commit_error_stops_the_run() {
        let h = Harness::new();
        let ctx = h.ctx(CancelSignal::new());
        let e = ordered(&ctx, 50, 3, |_, i| Ok(i), |i, _| if i == 5 { Err(JobError::internal("store full")) } else { Ok(()) }).unwrap_err();
        assert!(e.message.contains("store full"));
    }
}
