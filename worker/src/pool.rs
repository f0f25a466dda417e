//! The job threads: one OS thread per job the scheduler may start (`scheduler.job_threads`),
//! named `kiln-job-N`, that run jobs and nothing else.
//!
//! Jobs always run on these few threads (not on whichever tokio blocking thread is free), so
//! the allocator's per-thread caches are reused from job to job instead of piling up freed
//! pixel buffers in many threads' heaps: this is what keeps RSS flat under sustained load.
//! The scheduler never starts more jobs than there are threads (a job waiting without its CPU
//! slot still holds its thread), so a job granted a slot never waits here.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Task = Box<dyn FnOnce() + Send + 'static>;

pub struct JobPool {
    tx: Mutex<mpsc::Sender<Task>>,
}

impl JobPool {
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("kiln-job-{n}")).spawn(move || loop {
                let task = {
                    let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
                    guard.recv()
                };
                match task {
                    Ok(task) => task(),
                    Err(_) => return, // the pool was dropped
                }
            })?;
        }
        Ok(JobPool { tx: Mutex::new(tx) })
    }

    /// Runs `f` on a job thread; the receiver yields its value (or an error if `f` panicked,
    /// which the caller should have caught).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let task: Task = Box::new(move || {
            let _ = tx.send(f());
        });
        let sent = self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(task);
        if let Err(mpsc::SendError(task)) = sent {
            // No thread left (cannot happen while the pool lives): run inline rather than lose it.
            task();
        }
        rx
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
}
