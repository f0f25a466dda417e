//! The job threads: one OS thread per job the scheduler may start (`scheduler.job_threads`),
//! named `kiln-job-N`, that run jobs and nothing else.
//!
//! Jobs always run on these few threads (not on whichever tokio blocking thread is free), so
//! the allocator's per-thread caches are reused from job to job instead of piling up freed
//! pixel buffers in many threads' heaps: this is what keeps RSS flat under sustained load.
//! The next job goes to the thread that went idle last (a stack of idle threads): with more
//! threads than CPU slots (jobs that wait give their slot away), the threads beyond what the
//! load keeps busy stay cold instead of each warming a heap of its own.
//! The scheduler never starts more jobs than there are threads (a job waiting without its CPU
//! slot still holds its thread), so a job granted a slot never waits here.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tokio::sync::oneshot;

type Task = Box<dyn FnOnce() + Send + 'static>;

/// One thread's mailbox: the task handed to it while it was idle.
#[derive(Default)]
struct Mailbox {
    task: Mutex<Option<Task>>,
    ready: Condvar,
}

#[derive(Default)]
struct State {
    /// Tasks no idle thread was there for (first in, first out).
    queue: VecDeque<Task>,
    /// Idle threads, the most recently idle last.
    idle: Vec<Arc<Mailbox>>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct JobPool {
    shared: Arc<Shared>,
}

impl JobPool {
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        for n in 0..threads.max(1) {
            let shared = shared.clone();
            std::thread::Builder::new().name(format!("kiln-job-{n}")).spawn(move || worker(&shared))?;
        }
        Ok(JobPool { shared })
    }

    /// Runs `f` on a job thread; the receiver yields its value (or an error if `f` panicked,
    /// which the caller should have caught).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let task: Task = Box::new(move || {
            let _ = tx.send(f());
        });
        let mut st = lock(&self.shared.state);
        match st.idle.pop() {
            Some(mailbox) => {
                drop(st);
                *lock(&mailbox.task) = Some(task);
                mailbox.ready.notify_one();
            }
            None => st.queue.push_back(task),
        }
        rx
    }
}

impl Drop for JobPool {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        st.closed = true;
        for mailbox in st.idle.drain(..) {
            mailbox.ready.notify_one();
        }
    }
}

/// A job thread: queued tasks first, else waits on its own mailbox at the top of the idle
/// stack; ends when the pool is dropped and nothing is queued.
fn worker(shared: &Shared) {
    let mailbox = Arc::new(Mailbox::default());
    loop {
        {
            let mut st = lock(&shared.state);
            if let Some(task) = st.queue.pop_front() {
                drop(st);
                task();
                continue;
            }
            if st.closed {
                return;
            }
            st.idle.push(mailbox.clone());
        }
        let task = {
            let mut slot = lock(&mailbox.task);
            loop {
                if let Some(task) = slot.take() {
                    break Some(task);
                }
                if lock(&shared.state).closed {
                    break None;
                }
                slot = mailbox.ready.wait(slot).unwrap_or_else(|p| p.into_inner());
            }
        };
        match task {
            Some(task) => task(),
            None => return,
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_pool_threads() {
        let pool = JobPool::new(2).unwrap();
        let names: Vec<String> = futures_util::future::join_all(
            (0..8).map(|_| pool.run(|| std::thread::current().name().unwrap_or_default().to_owned())),
        )
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
        assert!(names.iter().all(|n| n == "kiln-job-0" || n == "kiln-job-1"), "{names:?}");
    }

    #[tokio::test]
    async fn one_job_at_a_time_stays_on_one_thread() {
        let pool = JobPool::new(8).unwrap();
        // Let every thread park first, so the stack holds all eight.
        let start = std::time::Instant::now();
        while lock(&pool.shared.state).idle.len() < 8 {
            assert!(start.elapsed() < std::time::Duration::from_secs(10), "threads never parked");
            std::thread::yield_now();
        }
        let mut names = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let name = pool.run(|| std::thread::current().name().unwrap_or_default().to_owned()).await.unwrap();
            names.insert(name);
            // The thread is back on the stack before the next job is handed out.
            let start = std::time::Instant::now();
            while lock(&pool.shared.state).idle.len() < 8 {
                assert!(start.elapsed() < std::time::Duration::from_secs(10), "the thread never went idle");
                std::thread::yield_now();
            }
        }
        assert_eq!(names.len(), 1, "sequential jobs should reuse the last idle thread: {names:?}");
    }

    #[tokio::test]
    async fn a_dropped_pool_still_runs_what_was_queued_and_its_threads_end() {
        let pool = JobPool::new(1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let blocker = pool.run(move || rx.recv().ok());
        let queued = pool.run(|| 7);
        drop(pool);
        tx.send(()).unwrap();
        assert_eq!(blocker.await.unwrap(), Some(()));
        assert_eq!(queued.await.unwrap(), 7);
    }
}
