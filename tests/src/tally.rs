//! Counting results per job id, so "exactly one result" is checked as such: a map keyed by id
//! would hide a duplicate. Used by the Kafka tests over a whole results topic
//! ([`crate::broker::Broker::read_all`]) and by the hostile tests over `kiln run`'s lines.

use serde_json::Value;
use std::collections::BTreeMap;

/// How many results each job id got, and which results (the last one per id).
#[derive(Debug, Default)]
pub struct Tally {
    pub per_id: BTreeMap<String, usize>,
    pub last: BTreeMap<String, Value>,
}

impl Tally {
    /// Tallies result payloads (JSON objects with an `"id"`); anything else is counted under
    /// the empty id, so a garbled result fails an exactly-once check too.
    pub fn of<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Tally {
        let mut t = Tally::default();
        for p in payloads {
            let v: Value = serde_json::from_slice(p).unwrap_or(Value::Null);
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            *t.per_id.entry(id.clone()).or_default() += 1;
            t.last.insert(id, v);
        }
        t
    }

    /// Ids with more than one result.
    pub fn duplicates(&self) -> Vec<(&str, usize)> {
        self.per_id.iter().filter(|(_, c)| **c > 1).map(|(id, c)| (id.as_str(), *c)).collect()
    }

    /// Panics unless `expected` ids each have exactly one result and no other id has any.
    pub fn assert_exactly_once<S: AsRef<str>>(&self, expected: &[S]) {
        let want: std::collections::BTreeSet<&str> = expected.iter().map(|s| s.as_ref()).collect();
        let lost: Vec<&str> = want.iter().copied().filter(|id| !self.per_id.contains_key(*id)).collect();
        let extra: Vec<&str> = self.per_id.keys().map(|s| s.as_str()).filter(|id| !want.contains(id)).collect();
        let dup = self.duplicates();
        assert!(
            lost.is_empty() && extra.is_empty() && dup.is_empty(),
            "exactly one result per job: lost {lost:?}, duplicated {dup:?}, unexpected {extra:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "duplicated [(\"a\", 2)]")]
    fn a_duplicate_fails() {
        let msgs: [&[u8]; 3] = [br#"{"id":"a"}"#, br#"{"id":"b"}"#, br#"{"id":"a"}"#];
        Tally::of(msgs).assert_exactly_once(&["a", "b"]);
    }

    #[test]
    #[should_panic(expected = "lost [\"c\"]")]
    fn a_lost_result_fails() {
        let msgs: [&[u8]; 2] = [br#"{"id":"a"}"#, br#"{"id":"b"}"#];
        Tally::of(msgs).assert_exactly_once(&["a", "b", "c"]);
    }

    #[test]
    fn one_each_passes() {
        let msgs: [&[u8]; 2] = [br#"{"id":"a"}"#, br#"{"id":"b"}"#];
        let t = Tally::of(msgs);
        t.assert_exactly_once(&["a", "b"]);
        assert!(t.duplicates().is_empty());
    }
}
