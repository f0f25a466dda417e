//! A per-job cache shared by the page threads: decoded images, built PDF images, fonts.
//!
//! Each key is built once: the first thread to ask builds it, a thread asking for the same
//! key meanwhile waits for that build instead of repeating it (a photo on every page is
//! decoded once, whichever thread renders the page that needs it first). The cache is
//! bounded by a budget in the values' own cost unit (pixels, bytes): a value that would go
//! over it empties the cache first (values still in use live on in their `Arc`s).

use crate::error::JobError;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};

type Cell<V> = Arc<OnceLock<Result<V, JobError>>>;

pub(super) struct Cache<K, V> {
    state: Mutex<State<K, V>>,
    budget: u64,
}

struct State<K, V> {
    cells: HashMap<K, Cell<V>>,
    cost: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    /// A cache holding values whose costs add up to at most `budget`.
    pub fn new(budget: u64) -> Self {
        Cache { state: Mutex::new(State { cells: HashMap::new(), cost: 0 }), budget }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, V>> {
        // Every update below is a single map or counter write: a panic elsewhere cannot leave
        // the state half-updated, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key`, built by `build` on first use; `cost` weighs a built value against
    /// the budget. A failed build is remembered too (the job fails with it anyway).
    pub fn get(&self, key: &K, cost: impl FnOnce(&V) -> u64, build: impl FnOnce() -> Result<V, JobError>) -> Result<V, JobError> {
        let cell = self.lock().cells.entry(key.clone()).or_default().clone();
        let mut built = false;
        let value = cell
            .get_or_init(|| {
                built = true;
                build()
            })
            .clone();
        if let (true, Ok(v)) = (built, &value) {
            let c = cost(v);
            let mut st = self.lock();
            if st.cost + c > self.budget {
                st.cells.retain(|k, _| k == key);
                st.cost = 0;
            }
            st.cost += c;
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_key_is_built_once_across_threads() {
        let cache: Cache<&str, Arc<Vec<u8>>> = Cache::new(1 << 20);
        let builds = AtomicUsize::new(0);
        let gate = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    gate.wait();
                    let v = cache
                        .get(&"photo", |v| v.len() as u64, || {
                            builds.fetch_add(1, Ordering::SeqCst);
                            Ok(Arc::new(vec![7; 100]))
                        })
                        .unwrap();
                    assert_eq!(v.len(), 100);
                });
            }
        });
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn going_over_the_budget_empties_the_cache_but_keeps_the_new_value() {
        let cache: Cache<u32, u64> = Cache::new(10);
        let n = AtomicUsize::new(0);
        let get = |k: u32| {
            cache
                .get(&k, |v| *v, || {
                    n.fetch_add(1, Ordering::SeqCst);
                    Ok(6)
                })
                .unwrap()
        };
        get(1);
        get(1);
        assert_eq!(n.load(Ordering::SeqCst), 1, "cached");
        get(2); // 6 + 6 > 10: key 1 is dropped, 2 kept
        get(2);
        assert_eq!(n.load(Ordering::SeqCst), 2);
        get(1);
        assert_eq!(n.load(Ordering::SeqCst), 3, "rebuilt after the cache was emptied");
        let e = cache.get(&9, |v| *v, || Err(JobError::internal("boom"))).unwrap_err();
        assert!(e.message.contains("boom"));
    }
}
