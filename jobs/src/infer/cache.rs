//! The warm model cache: one load per model however many requests arrive first
//! (single-flight), least-recently-used eviction under a host-memory and a GPU-memory budget,
//! and counters for the metrics (hits, misses, loads, evictions, load seconds).
//!
//! Generic over the cached value so its policy is tested without ONNX Runtime. Warm entries
//! are pinned: loaded at start and never evicted. An evicted model stays alive for the jobs
//! that hold it (an `Arc`) and is freed when the last one finishes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// How a lookup was served (the span attribute `cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
        }
    }
}

/// What a loader reports besides the value.
#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    pub host_bytes: u64,
    pub gpu_bytes: u64,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub loads: AtomicU64,
    pub load_failures: AtomicU64,
    pub evictions: AtomicU64,
    /// Sum of load times, microseconds.
    pub load_micros: AtomicU64,
}

enum Slot<T> {
    Loading,
    Ready { value: Arc<T>, size: Footprint, last_used: u64, pinned: bool },
}

struct State<T> {
    slots: HashMap<String, Slot<T>>,
    clock: u64,
}

pub struct ModelCache<T> {
    state: Mutex<State<T>>,
    loaded: Condvar,
    host_budget: u64,
    gpu_budget: u64,
    pub stats: Stats,
}

impl<T> ModelCache<T> {
    pub fn new(host_budget: u64, gpu_budget: u64) -> Self {
        ModelCache {
            state: Mutex::new(State { slots: HashMap::new(), clock: 0 }),
            loaded: Condvar::new(),
            host_budget,
            gpu_budget,
            stats: Stats::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every update below is complete before the lock is released: a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model `name`, loading it with `load` when absent. Concurrent callers for the same
    /// absent model wait for the one load; if it fails, each gets the error of its own try.
    pub fn get<E>(
        &self,
        name: &str,
        pinned: bool,
        load: impl FnOnce() -> Result<(T, Footprint), E>,
    ) -> Result<(Arc<T>, Outcome), E> {
        let mut st = self.lock();
        loop {
            st.clock += 1;
            let now = st.clock;
            match st.slots.get_mut(name) {
                Some(Slot::Ready { value, last_used, .. }) => {
                    *last_used = now;
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok((value.clone(), Outcome::Hit));
                }
                Some(Slot::Loading) => st = self.loaded.wait(st).unwrap_or_else(|p| p.into_inner()),
                None => break,
            }
        }
        st.slots.insert(name.to_owned(), Slot::Loading);
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        drop(st);

        // Unwinding out of `load` must not leave the slot Loading forever.
        struct Unmark<'a, T>(&'a ModelCache<T>, &'a str, bool);
        impl<T> Drop for Unmark<'_, T> {
            fn drop(&mut self) {
                if self.2 {
                    self.0.lock().slots.remove(self.1);
                    self.0.loaded.notify_all();
                }
            }
        }
        let mut guard = Unmark(self, name, true);
        let started = Instant::now();
        let result = load();
        self.stats.load_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let (value, size) = match result {
            Ok(v) => v,
            Err(e) => {
                self.stats.load_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e); // the guard removes the slot and wakes the waiters
            }
        };
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        guard.2 = false;
        let value = Arc::new(value);
        let mut st = self.lock();
        self.make_room(&mut st, name, size);
        st.clock += 1;
        let now = st.clock;
        st.slots.insert(name.to_owned(), Slot::Ready { value: value.clone(), size, last_used: now, pinned });
        drop(st);
        self.loaded.notify_all();
        Ok((value, Outcome::Miss))
    }

    /// Evicts least-recently-used unpinned models until `incoming` fits both budgets (or
    /// nothing evictable is left: a model larger than the budget still loads, alone).
    fn make_room(&self, st: &mut State<T>, incoming: &str, size: Footprint) {
        loop {
            let (host, gpu) = used(st);
            let over_host = host + size.host_bytes > self.host_budget;
            let over_gpu = size.gpu_bytes > 0 && gpu + size.gpu_bytes > self.gpu_budget;
            if !over_host && !over_gpu {
                return;
            }
            let victim = st
                .slots
                .iter()
                .filter_map(|(k, s)| match s {
                    Slot::Ready { last_used, pinned: false, size: sz, .. }
                        if k != incoming && (over_host || sz.gpu_bytes > 0) =>
                    {
                        Some((*last_used, k.clone()))
                    }
                    _ => None,
                })
                .min();
            let Some((_, key)) = victim else {
                tracing::warn!(model = incoming, host_bytes = size.host_bytes, gpu_bytes = size.gpu_bytes, "model exceeds the cache budget; keeping it anyway");
                return;
            };
            st.slots.remove(&key);
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(model = %key, for_model = incoming, "model evicted from the cache");
        }
    }

    /// Names of the models loaded now, sorted.
    pub fn loaded(&self) -> Vec<String> {
        let st = self.lock();
        let mut v: Vec<String> =
            st.slots.iter().filter(|(_, s)| matches!(s, Slot::Ready { .. })).map(|(k, _)| k.clone()).collect();
        v.sort();
        v
    }

    /// (host, gpu) bytes the loaded models take.
    pub fn used(&self) -> (u64, u64) {
        used(&self.lock())
    }
}

fn used<T>(st: &State<T>) -> (u64, u64) {
    st.slots.values().fold((0, 0), |(h, g), s| match s {
        Slot::Ready { size, .. } => (h + size.host_bytes, g + size.gpu_bytes),
        Slot::Loading => (h, g),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    fn fp(host: u64) -> Footprint {
        Footprint { host_bytes: host, gpu_bytes: 0 }
    }

    #[test]
    fn concurrent_first_requests_load_once() {
        let cache = Arc::new(ModelCache::<u32>::new(1000, 0));
        let loads = Arc::new(AtomicU64::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (cache, loads, barrier) = (cache.clone(), loads.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let (v, _) = cache
                        .get("m", false, || {
                            loads.fetch_add(1, Ordering::SeqCst);
                            // Slow enough that the others arrive while it loads.
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok::<_, ()>((7, fp(10)))
                        })
                        .unwrap();
                    *v
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 7);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats.misses.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats.hits.load(Ordering::SeqCst), 7);
    }

    #[test]
    fn lru_eviction_under_the_host_budget() {
        let cache = ModelCache::<&str>::new(250, 0);
        let mut loads = 0;
        let mut get = |name: &'static str, cache: &ModelCache<&str>| {
            cache
                .get(name, false, || {
                    loads += 1;
                    Ok::<_, ()>((name, fp(100)))
                })
                .unwrap()
                .1
        };
        assert_eq!(get("a", &cache), Outcome::Miss);
        assert_eq!(get("b", &cache), Outcome::Miss);
        assert_eq!(get("a", &cache), Outcome::Hit); // b is now the least recently used
        assert_eq!(get("c", &cache), Outcome::Miss); // evicts b
        assert_eq!(cache.loaded(), vec!["a", "c"]);
        assert_eq!(get("a", &cache), Outcome::Hit);
        assert_eq!(get("b", &cache), Outcome::Miss); // evicts c
        assert_eq!(cache.stats.evictions.load(Ordering::SeqCst), 2);
        assert_eq!(loads, 4);
        assert_eq!(cache.used().0, 200);
    }

    #[test]
    fn pinned_models_stay_and_failed_loads_are_retried() {
        let cache = ModelCache::<u8>::new(150, 0);
        cache.get("warm", true, || Ok::<_, ()>((1, fp(100)))).unwrap();
        cache.get("x", false, || Ok::<_, ()>((2, fp(100)))).unwrap();
        cache.get("y", false, || Ok::<_, ()>((3, fp(100)))).unwrap();
        assert_eq!(cache.loaded(), vec!["warm", "y"]);
        assert!(cache.get("bad", false, || Err::<(u8, Footprint), _>("broken")).is_err());
        let (v, o) = cache.get("bad", false, || Ok::<_, &str>((9, fp(1)))).unwrap();
        assert_eq!((*v, o), (9, Outcome::Miss));
        assert_eq!(cache.stats.load_failures.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn gpu_budget_evicts_only_gpu_models() {
        let cache = ModelCache::<u8>::new(10_000, 100);
        cache.get("cpu", false, || Ok::<_, ()>((1, fp(10)))).unwrap();
        cache.get("g1", false, || Ok::<_, ()>((2, Footprint { host_bytes: 10, gpu_bytes: 80 }))).unwrap();
        cache.get("g2", false, || Ok::<_, ()>((3, Footprint { host_bytes: 10, gpu_bytes: 80 }))).unwrap();
        assert_eq!(cache.loaded(), vec!["cpu", "g2"]);
    }
}
