//! The commit watermark: per partition, the offsets taken but not yet finished. The offset
//! that may be committed is just below the lowest unfinished one, so a crash redelivers every
//! job that had not finished, and no finished job is committed out of order.

use std::collections::{BTreeSet, HashMap};

/// A (topic, partition).
pub type Tp = (String, i32);

#[derive(Default)]
struct Partition {
    in_flight: BTreeSet<i64>,
    /// Offsets handed back unfinished ([`Offsets::release`]): the watermark stays below them,
    /// but nothing waits for them.
    released: BTreeSet<i64>,
    /// Lowest and highest offsets taken so far.
    min_seen: Option<i64>,
    max_seen: Option<i64>,
    /// Highest offset handed to the offset store.
    stored: Option<i64>,
}

#[derive(Default)]
pub struct Offsets {
    parts: HashMap<Tp, Partition>,
}

impl Offsets {
    /// A message was taken from the partition.
    pub fn begin(&mut self, tp: &Tp, offset: i64) {
        let p = self.parts.entry(tp.clone()).or_default();
        p.in_flight.insert(offset);
        p.min_seen = Some(p.min_seen.map_or(offset, |m| m.min(offset)));
        p.max_seen = Some(p.max_seen.map_or(offset, |m| m.max(offset)));
    }

    /// A message's job is finished and acknowledged. Returns the offset to store (librdkafka
    /// commits it + 1) when the watermark moved.
    pub fn finish(&mut self, tp: &Tp, offset: i64) -> Option<i64> {
        let p = self.parts.get_mut(tp)?;
        if !p.in_flight.remove(&offset) {
            return None;
        }
        let lowest = p.in_flight.first().into_iter().chain(p.released.first()).min();
        let mark = match lowest {
            Some(lowest) => lowest - 1,
            None => p.max_seen?,
        };
        // Below the first offset taken there is nothing of ours to commit.
        if mark < 0 || p.min_seen.is_some_and(|m| mark < m) || p.stored.is_some_and(|s| s >= mark) {
            return None;
        }
        p.stored = Some(mark);
        Some(mark)
    }

    /// A message's job is handed back unfinished (the worker is shutting down): no longer in
    /// flight (a revoke does not wait for it), and never committed past, so the partition's
    /// next owner gets it again.
    pub fn release(&mut self, tp: &Tp, offset: i64) {
        if let Some(p) = self.parts.get_mut(tp) {
            if p.in_flight.remove(&offset) {
                p.released.insert(offset);
            }
        }
    }

    /// Unfinished messages of these partitions.
    pub fn in_flight_of(&self, tps: &[Tp]) -> usize {
        tps.iter().filter_map(|tp| self.parts.get(tp)).map(|p| p.in_flight.len()).sum()
    }

    pub fn in_flight(&self) -> usize {
        self.parts.values().map(|p| p.in_flight.len()).sum()
    }

    /// Forgets partitions that were revoked (a later assignment starts from the committed offset).
    pub fn forget(&mut self, tps: &[Tp]) {
        for tp in tps {
            self.parts.remove(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> Tp {
        ("kiln.jobs".into(), 0)
    }

    #[test]
    fn the_watermark_waits_for_the_lowest_unfinished_offset() {
        let mut o = Offsets::default();
        for off in 10..15 {
            o.begin(&tp(), off);
        }
        assert_eq!(o.finish(&tp(), 12), None, "10 and 11 are still running");
        assert_eq!(o.finish(&tp(), 11), None);
        assert_eq!(o.finish(&tp(), 10), Some(12), "10..=12 done: store 12 (commit 13)");
        assert_eq!(o.finish(&tp(), 14), None);
        assert_eq!(o.finish(&tp(), 13), Some(14));
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.finish(&tp(), 13), None, "finishing twice is harmless");
    }

    #[test]
    fn a_released_offset_holds_the_watermark_but_is_not_waited_for() {
        let mut o = Offsets::default();
        for off in 0..4 {
            o.begin(&tp(), off);
        }
        assert_eq!(o.finish(&tp(), 0), Some(0));
        o.release(&tp(), 1);
        assert_eq!(o.in_flight(), 2, "2 and 3 are in flight; 1 is not waited for");
        assert_eq!(o.finish(&tp(), 2), None, "1 was handed back: nothing past it is committed");
        assert_eq!(o.finish(&tp(), 3), None);
        assert_eq!(o.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent_and_forgettable() {
        let mut o = Offsets::default();
        let a = tp();
        let b: Tp = ("kiln.jobs".into(), 1);
        o.begin(&a, 0);
        o.begin(&b, 5);
        assert_eq!(o.in_flight_of(std::slice::from_ref(&a)), 1);
        assert_eq!(o.finish(&b, 5), Some(5));
        o.forget(std::slice::from_ref(&a));
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.finish(&a, 0), None);
    }
}
