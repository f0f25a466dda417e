//! Dynamic batching: each loaded model has one or more instances (Triton's instance group),
//! each a thread owning its own ONNX Runtime session, and runs the items of concurrent
//! requests as one batch. The instances share one queue: while one runs a batch, the next
//! forms its batch from the requests arriving meanwhile.
//!
//! A batch starts with the oldest waiting request and takes every request already queued,
//! then waits for more until `max_delay` after that first request arrived, and runs as soon as
//! it holds `max_batch` items. It waits only while another request is on its way: jobs
//! announce themselves ([`Batcher::announce`]) while they decode and preprocess, so a lone
//! request (nothing announced) runs at once instead of sitting out the delay. So no request waits longer than the delay for others (it may
//! wait for the batch before it to finish running). Requests are at most `max_batch` items of
//! one shape; a request of another shape, or one that would overflow the batch, starts the
//! next batch. Outputs are split back per request along the first (batch) dimension.

use crate::error::JobError;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Zero items added to pad batches up to `max_batch` (see [`Batcher::start`]).
    pub padding: AtomicU64,
}

pub struct Batcher {
    tx: Mutex<mpsc::Sender<Request>>,
    /// Jobs preparing a request for this model (see [`Arrival`]).
    incoming: Arc<AtomicUsize>,
    pub max_batch: usize,
    pub stats: Arc<BatchStats>,
}

impl Batcher {
    /// Starts one batch thread per runner (the model's instances); they end when the
    /// `Batcher` is dropped. With `pad` every batch runs at `max_batch` items: the missing
    /// ones are zeros and their outputs are dropped, so the session only ever sees one input
    /// shape (batches of varying size were measured slow on CUDA).
    pub fn start<R: RunBatch>(
        name: &str,
        runners: Vec<R>,
        max_batch: usize,
        max_delay: Duration,
        pad: bool,
        stats: Arc<BatchStats>,
    ) -> Result<Batcher, JobError> {
        let (tx, rx) = mpsc::channel::<Request>();
        let incoming = Arc::new(AtomicUsize::new(0));
        let queue = Arc::new(Mutex::new(Queue { rx, carry: None, incoming: incoming.clone() }));
        let max_batch = max_batch.max(1);
        for (i, runner) in runners.into_iter().enumerate() {
            let st = stats.clone();
            let q = queue.clone();
            std::thread::Builder::new()
                .name(format!("kiln-infer-{}-{i}", name.chars().take(8).collect::<String>()))
                .spawn(move || batch_loop(&q, runner, max_batch, max_delay, pad, &st))
                .map_err(|e| JobError::internal(format!("starting the batch thread: {e}")))?;
        }
        Ok(Batcher { tx: Mutex::new(tx), incoming, max_batch, stats })
    }

    /// Says a request is being prepared (images decoding): batches forming meanwhile wait
    /// for it, up to their delay. The announcement ends when the `Arrival` is passed to
    /// [`Batcher::infer`] or dropped.
    pub fn announce(&self) -> Arrival {
        self.incoming.fetch_add(1, Ordering::SeqCst);
        Arrival(self.incoming.clone())
    }

    /// Runs `items` (all of one shape, at most `max_batch`) in the next batch and waits for
    /// their outputs and the size of the batch they ran in. `check` is polled while waiting
    /// (cancel, deadline).
    pub fn infer(
        &self,
        items: Vec<Item>,
        arrival: Option<Arrival>,
        check: impl Fn() -> Result<(), JobError>,
    ) -> Result<(Outputs, usize), JobError> {
        debug_assert!(!items.is_empty() && items.len() <= self.max_batch);
        let (reply, rx) = mpsc::channel();
        let req = Request { items, arrived: Instant::now(), reply };
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(req)
            .map_err(|_| JobError::internal("the model's batch thread has stopped"))?;
        // Queued: no longer on its way.
        drop(arrival);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => return r,
                Err(RecvTimeoutError::Timeout) => check()?,
                Err(RecvTimeoutError::Disconnected) => return Err(JobError::internal("the model's batch thread stopped")),
            }
        }
    }
}

/// How long a forming batch waits between looks at who is still on the way.
const WAIT_STEP: Duration = Duration::from_millis(2);

/// A job preparing a request for a model ([`Batcher::announce`]); ends when dropped.
pub struct Arrival(Arc<AtomicUsize>);

impl Drop for Arrival {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The requests waiting for a batch, shared by a model's instances; whichever instance holds
/// the lock forms the next batch.
struct Queue {
    rx: mpsc::Receiver<Request>,
    /// A request that did not fit the previous batch: it starts the next one.
    carry: Option<Request>,
    incoming: Arc<AtomicUsize>,
}

/// A formed batch: its requests, their item shape and count.
struct Formed {
    requests: Vec<Request>,
    shape: Vec<i64>,
    items: usize,
}

fn batch_loop(queue: &Mutex<Queue>, mut runner: impl RunBatch, max_batch: usize, delay: Duration, pad: bool, stats: &BatchStats) {
    loop {
        let formed = {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            form(&mut q, max_batch, delay)
        };
        let Some(b) = formed else { return };
        let run_as = if pad { max_batch.max(b.items) } else { b.items };
        run_one(&mut runner, b.requests, &b.shape, b.items, run_as, stats);
    }
}

/// Takes the oldest request, then whatever joins it before its deadline, up to `max_batch`
/// items of its shape. `None` once the queue has closed and is empty.
fn form(q: &mut Queue, max_batch: usize, delay: Duration) -> Option<Formed> {
    let first = match q.carry.take() {
        Some(r) => r,
        None => q.rx.recv().ok()?,
    };
    let deadline = first.arrived + delay;
    let shape = first.items[0].shape.clone();
    let mut n = first.items.len();
    let mut batch = vec![first];
    while n < max_batch {
        let r = match q.rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline || q.incoming.load(Ordering::SeqCst) == 0 {
                    // The delay is over, or nobody is on the way: run what we have.
                    break;
                }
                // Wait in short steps, so an announced job that gives up (a bad image) does
                // not hold the batch for the whole delay.
                match q.rx.recv_timeout((deadline - now).min(WAIT_STEP)) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        if r.items[0].shape == shape && n + r.items.len() <= max_batch {
            n += r.items.len();
            batch.push(r);
        } else {
            q.carry = Some(r);
            break;
        }
    }
    Some(Formed { requests: batch, shape, items: n })
}

/// Runs the `n` items of `batch` as a batch of `run_as` ≥ `n` (zeros after the real items).
fn run_one(runner: &mut impl RunBatch, batch: Vec<Request>, shape: &[i64], n: usize, run_as: usize, stats: &BatchStats) {
    let per_item: usize = shape.iter().map(|d| *d as usize).product();
    let mut data = Vec::with_capacity(per_item * run_as);
    for r in &batch {
        for it in &r.items {
            data.extend_from_slice(&it.data);
        }
    }
    data.resize(per_item * run_as, 0.0);
    let mut batch_shape = vec![run_as as i64];
    batch_shape.extend_from_slice(shape);
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.items.fetch_add(n as u64, Ordering::Relaxed);
    stats.largest.fetch_max(n as u64, Ordering::Relaxed);
    stats.padding.fetch_add((run_as - n) as u64, Ordering::Relaxed);
    let started = Instant::now();
    let result = runner.run(&batch_shape, data).and_then(|outs| split(unpad(outs, n, run_as), n));
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

/// Drops the padding items' outputs: every output whose batch dimension is `run_as` keeps
/// its first `n` items.
fn unpad(outs: Vec<BatchOutput>, n: usize, run_as: usize) -> Vec<BatchOutput> {
    if run_as == n {
        return outs;
    }
    outs.into_iter()
        .map(|(name, mut shape, mut data)| {
            if shape.first().copied() == Some(run_as as i64) && data.len() % run_as == 0 {
                data.truncate(data.len() / run_as * n);
                shape[0] = n as i64;
            }
            (name, shape, data)
        })
        .collect()
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
        let b = Arc::new(Batcher::start("t", vec![Fake { sizes: sizes.clone() }], 4, Duration::from_secs(30), false, Default::default()).unwrap());
        let barrier = Arc::new(Barrier::new(4));
        let started = Instant::now();
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let (b, barrier) = (b.clone(), barrier.clone());
                std::thread::spawn(move || {
                    // Each job says it is coming before any of them sends.
                    let arrival = b.announce();
                    barrier.wait();
                    b.infer(vec![item(i as f32)], Some(arrival), || Ok(())).unwrap().0
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
    fn a_lone_request_runs_at_once_unless_another_is_announced() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        // A delay long enough that a busy test host cannot mistake waiting it out for not.
        let delay = Duration::from_millis(1500);
        let b = Batcher::start("t", vec![Fake { sizes: sizes.clone() }], 8, delay, false, Default::default()).unwrap();
        // Nobody else on the way: no wait for the delay.
        let started = Instant::now();
        let (out, n) = b.infer(vec![item(1.0), item(2.0)], None, || Ok(())).unwrap();
        assert!(started.elapsed() < delay / 2, "a lone request waited {:?}", started.elapsed());
        assert_eq!((n, out.len()), (2, 2));
        assert_eq!(out[1][1].data, vec![2.0]); // the batch held two items
        // Another job announced but never sends (say its image was bad): the batch waits
        // for it, but no longer than the delay.
        let ghost = b.announce();
        let started = Instant::now();
        b.infer(vec![item(3.0)], None, || Ok(())).unwrap();
        let waited = started.elapsed();
        assert!(waited >= delay && waited < delay * 4, "{waited:?}");
        drop(ghost);
        // With the announcement over, a lone request runs at once again.
        let started = Instant::now();
        b.infer(vec![item(4.0)], None, || Ok(())).unwrap();
        assert!(started.elapsed() < delay / 2, "waited {:?} for a job that gave up", started.elapsed());
        assert_eq!(*sizes.lock().unwrap(), vec![2, 1, 1]);
    }

    #[test]
    fn padded_batches_always_run_at_max_batch_and_return_only_the_real_items() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Batcher::start("t", vec![Fake { sizes: sizes.clone() }], 4, Duration::from_millis(1), true, Default::default())
            .unwrap();
        let (out, n) = b.infer(vec![item(1.0), item(2.0)], None, || Ok(())).unwrap();
        // The caller gets its two items back (and the real batch size), the session saw four.
        assert_eq!((n, out.len()), (2, 2));
        assert_eq!(out[0][0].data, vec![2.0, 3.0]);
        assert_eq!(out[1][0].data, vec![4.0, 5.0]);
        assert_eq!(out[1][1].data, vec![4.0], "the runner reports the batch it ran");
        let (out, _) = b.infer(vec![item(3.0)], None, || Ok(())).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0][0].data, vec![6.0, 7.0]);
        assert_eq!(*sizes.lock().unwrap(), vec![4, 4]);
        assert_eq!(b.stats.padding.load(Ordering::SeqCst), 2 + 3);
        assert_eq!(b.stats.items.load(Ordering::SeqCst), 3);
        // An output without the batch dimension first is passed through as it is, and then
        // refused by the split like any output that is not per item.
        assert_eq!(unpad(vec![("s".into(), vec![1], vec![9.0])], 2, 4), vec![("s".to_string(), vec![1i64], vec![9.0f32])]);
    }

    #[test]
    fn different_shapes_go_to_different_batches() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Arc::new(Batcher::start("t", vec![Fake { sizes: sizes.clone() }], 8, Duration::from_millis(30), false, Default::default()).unwrap());
        let b2 = b.clone();
        let h = std::thread::spawn(move || b2.infer(vec![Item { shape: vec![3], data: vec![1.0; 3] }], None, || Ok(())).unwrap().0);
        let out = b.infer(vec![item(1.0)], None, || Ok(())).unwrap().0;
        let other = h.join().unwrap();
        assert_eq!(out[0][0].shape, vec![2]);
        assert_eq!(other[0][0].shape, vec![3]);
        assert_eq!(sizes.lock().unwrap().iter().sum::<usize>(), 2);
    }

    /// Waits (up to 5 s) until `want` batches have started, and records how many had.
    struct Overlap {
        running: Arc<(Mutex<usize>, std::sync::Condvar)>,
        seen: Arc<AtomicU64>,
        want: usize,
    }
    impl RunBatch for Overlap {
        fn run(&mut self, shape: &[i64], data: Vec<f32>) -> Result<Vec<BatchOutput>, JobError> {
            // `running` counts batches started; a batch ends only once `want` have started or
            // 5 s passed, so `seen` is the number that overlapped.
            let (lock, cv) = &*self.running;
            let mut n = lock.lock().unwrap();
            *n += 1;
            self.seen.fetch_max(*n as u64, Ordering::SeqCst);
            cv.notify_all();
            let _ = cv.wait_timeout_while(n, Duration::from_secs(5), |n| *n < self.want).unwrap();
            Ok(vec![("y".into(), shape.to_vec(), data)])
        }
    }

    #[test]
    fn instances_run_batches_at_the_same_time() {
        let running = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
        let seen = Arc::new(AtomicU64::new(0));
        let runners = (0..2).map(|_| Overlap { running: running.clone(), seen: seen.clone(), want: 2 }).collect();
        // Batches of one: two requests make two batches, one on each instance.
        let b = Arc::new(Batcher::start("t", runners, 1, Duration::from_millis(1), false, Default::default()).unwrap());
        let started = Instant::now();
        let hs: Vec<_> = (0..2)
            .map(|i| {
                let b = b.clone();
                std::thread::spawn(move || b.infer(vec![item(i as f32)], None, || Ok(())).unwrap().0)
            })
            .collect();
        for (i, h) in hs.into_iter().enumerate() {
            assert_eq!(h.join().unwrap()[0][0].data[0], i as f32);
        }
        assert_eq!(seen.load(Ordering::SeqCst), 2, "the two batches did not overlap");
        assert!(started.elapsed() < Duration::from_secs(4), "one instance waited for the other");
        assert_eq!(b.stats.batches.load(Ordering::SeqCst), 2);
    }
}
