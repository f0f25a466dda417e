//! Dynamic batching: one thread per loaded model owns its ONNX Runtime session and runs the
//! items of concurrent requests as one batch.
//!
//! A batch starts with the oldest waiting request and takes every request already queued,
//! then waits for more until `max_delay` after that first request arrived, and runs as soon as
//! it holds `max_batch` items. So no request waits longer than the delay for others (it may
//! wait for the batch before it to finish running). Requests are at most `max_batch` items of
//! one shape; a request of another shape, or one that would overflow the batch, starts the
//! next batch. Outputs are split back per request along the first (batch) dimension.

use crate::error::JobError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One input item, without the batch dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
}

/// One output of one item, without the batch dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemOutput {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
}

pub type Outputs = Vec<Vec<ItemOutput>>;

/// One batched output: name, shape (batch dimension first), values.
pub type BatchOutput = (String, Vec<i64>, Vec<f32>);

/// Runs one batch: items stacked along a new first dimension → per-output (shape, data).
pub trait RunBatch: Send + 'static {
    fn run(&mut self, batch_shape: &[i64], data: Vec<f32>) -> Result<Vec<BatchOutput>, JobError>;
}

struct Request {
    items: Vec<Item>,
    arrived: Instant,
    reply: mpsc::Sender<Result<(Outputs, usize), JobError>>,
}

#[derive(Debug, Default)]
pub struct BatchStats {
    /// Batches run.
    pub batches: AtomicU64,
    /// Items run, over all batches.
    pub items: AtomicU64,
    /// The largest batch so far.
    pub largest: AtomicU64,
}

pub struct Batcher {
    tx: Mutex<mpsc::Sender<Request>>,
    pub max_batch: usize,
    pub stats: Arc<BatchStats>,
}

impl Batcher {
    /// Starts the model's batch thread; it ends when the `Batcher` is dropped.
    pub fn start(
        name: &str,
        runner: impl RunBatch,
        max_batch: usize,
        max_delay: Duration,
        stats: Arc<BatchStats>,
    ) -> Result<Batcher, JobError> {
        let (tx, rx) = mpsc::channel::<Request>();
        let st = stats.clone();
        let max_batch = max_batch.max(1);
        std::thread::Builder::new()
            .name(format!("kiln-infer-{}", name.chars().take(8).collect::<String>()))
            .spawn(move || batch_loop(rx, runner, max_batch, max_delay, &st))
            .map_err(|e| JobError::internal(format!("starting the batch thread: {e}")))?;
        Ok(Batcher { tx: Mutex::new(tx), max_batch, stats })
    }

    /// Runs `items` (all of one shape, at most `max_batch`) in the next batch and waits for
    /// their outputs and the size of the batch they ran in. `check` is polled while waiting
    /// (cancel, deadline).
    pub fn infer(&self, items: Vec<Item>, check: impl Fn() -> Result<(), JobError>) -> Result<(Outputs, usize), JobError> {
        debug_assert!(!items.is_empty() && items.len() <= self.max_batch);
        let (reply, rx) = mpsc::channel();
        let req = Request { items, arrived: Instant::now(), reply };
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(req)
            .map_err(|_| JobError::internal("the model's batch thread has stopped"))?;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => return r,
                Err(RecvTimeoutError::Timeout) => check()?,
                Err(RecvTimeoutError::Disconnected) => return Err(JobError::internal("the model's batch thread stopped")),
            }
        }
    }
}

fn batch_loop(rx: mpsc::Receiver<Request>, mut runner: impl RunBatch, max_batch: usize, delay: Duration, stats: &BatchStats) {
    let mut carry: Option<Request> = None;
    loop {
        let first = match carry.take() {
            Some(r) => r,
            None => match rx.recv() {
                Ok(r) => r,
                Err(_) => return,
            },
        };
        let deadline = first.arrived + delay;
        let shape = first.items[0].shape.clone();
        let mut n = first.items.len();
        let mut batch = vec![first];
        let mut closed = false;
        while n < max_batch {
            let next = match rx.try_recv() {
                Ok(r) => Some(r),
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    None
                }
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        None
                    } else {
                        match rx.recv_timeout(deadline - now) {
                            Ok(r) => Some(r),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => {
                                closed = true;
                                None
                            }
                        }
                    }
                }
            };
            let Some(r) = next else { break };
            if r.items[0].shape == shape && n + r.items.len() <= max_batch {
                n += r.items.len();
                batch.push(r);
            } else {
                carry = Some(r);
                break;
            }
        }
        run_one(&mut runner, batch, &shape, n, stats);
        if closed && carry.is_none() {
            return;
        }
    }
}

fn run_one(runner: &mut impl RunBatch, batch: Vec<Request>, shape: &[i64], n: usize, stats: &BatchStats) {
    let per_item: usize = shape.iter().map(|d| *d as usize).product();
    let mut data = Vec::with_capacity(per_item * n);
    for r in &batch {
        for it in &r.items {
            data.extend_from_slice(&it.data);
        }
    }
    let mut batch_shape = vec![n as i64];
    batch_shape.extend_from_slice(shape);
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.items.fetch_add(n as u64, Ordering::Relaxed);
    stats.largest.fetch_max(n as u64, Ordering::Relaxed);
    let started = Instant::now();
    let result = runner.run(&batch_shape, data).and_then(|outs| split(outs, n));
    tracing::debug!(batch = n, requests = batch.len(), ms = started.elapsed().as_secs_f64() * 1e3, "batch run");
    match result {
        Ok(mut per_item) => {
            let mut rest = per_item.drain(..);
            for r in batch {
                let mine: Outputs = rest.by_ref().take(r.items.len()).collect();
                let _ = r.reply.send(Ok((mine, n)));
            }
        }
        Err(e) => {
            for r in batch {
                let _ = r.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Splits batched outputs into one list of outputs per item.
fn split(outs: Vec<BatchOutput>, n: usize) -> Result<Outputs, JobError> {
    let mut items: Outputs = (0..n).map(|_| Vec::with_capacity(outs.len())).collect();
    for (name, shape, data) in outs {
        if shape.first().copied() != Some(n as i64) || data.len() % n != 0 {
            return Err(JobError::internal(format!("output {name:?} has shape {shape:?}, not a batch of {n}")));
        }
        let size = data.len() / n;
        for (i, item) in items.iter_mut().enumerate() {
            item.push(ItemOutput { name: name.clone(), shape: shape[1..].to_vec(), data: data[i * size..(i + 1) * size].to_vec() });
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    /// Doubles its input and reports the batch size as a second output; blocks on `gate`
    /// first so requests pile up while a batch "runs".
    struct Fake {
        sizes: Arc<Mutex<Vec<usize>>>,
    }
    impl RunBatch for Fake {
        fn run(&mut self, shape: &[i64], data: Vec<f32>) -> Result<Vec<BatchOutput>, JobError> {
            let n = shape[0] as usize;
            self.sizes.lock().unwrap().push(n);
            let doubled: Vec<f32> = data.iter().map(|v| v * 2.0).collect();
            Ok(vec![("y".into(), shape.to_vec(), doubled), ("n".into(), vec![n as i64, 1], vec![n as f32; n])])
        }
    }

    fn item(v: f32) -> Item {
        Item { shape: vec![2], data: vec![v, v + 0.5] }
    }

    #[test]
    fn concurrent_requests_share_a_batch_and_get_their_own_outputs() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        // A long delay: the batch must run because it is full, not because the delay passed.
        let b = Arc::new(Batcher::start("t", Fake { sizes: sizes.clone() }, 4, Duration::from_secs(30), Default::default()).unwrap());
        let barrier = Arc::new(Barrier::new(4));
        let started = Instant::now();
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let (b, barrier) = (b.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    b.infer(vec![item(i as f32)], || Ok(())).unwrap().0
                })
            })
            .collect();
        for (i, h) in hs.into_iter().enumerate() {
            let out = h.join().unwrap();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0][0].data, vec![i as f32 * 2.0, i as f32 * 2.0 + 1.0]);
            assert_eq!(out[0][0].shape, vec![2]);
        }
        assert!(started.elapsed() < Duration::from_secs(10), "a full batch waited for the delay");
        assert_eq!(*sizes.lock().unwrap(), vec![4]);
        assert_eq!(b.stats.largest.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_lone_request_runs_after_the_delay() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Batcher::start("t", Fake { sizes: sizes.clone() }, 8, Duration::from_millis(20), Default::default()).unwrap();
        let started = Instant::now();
        let (out, n) = b.infer(vec![item(1.0), item(2.0)], || Ok(())).unwrap();
        assert_eq!(n, 2);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(20) && waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(out.len(), 2);
        assert_eq!(out[1][1].data, vec![2.0]); // the batch held two items
        assert_eq!(*sizes.lock().unwrap(), vec![2]);
    }

    #[test]
    fn different_shapes_go_to_different_batches() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Arc::new(Batcher::start("t", Fake { sizes: sizes.clone() }, 8, Duration::from_millis(30), Default::default()).unwrap());
        let b2 = b.clone();
        let h = std::thread::spawn(move || b2.infer(vec![Item { shape: vec![3], data: vec![1.0; 3] }], || Ok(())).unwrap().0);
        let out = b.infer(vec![item(1.0)], || Ok(())).unwrap().0;
        let other = h.join().unwrap();
        assert_eq!(out[0][0].shape, vec![2]);
        assert_eq!(other[0][0].shape, vec![3]);
        assert_eq!(sizes.lock().unwrap().iter().sum::<usize>(), 2);
    }
}
