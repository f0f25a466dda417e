//! [`SlotWatch`]: wakes the capacity publishers (HTTP in capacity.rs, the Kafka topic in
//! capacity_topic.rs) when the scheduler's slots change, so a report follows a change instead
//! of waiting for the next interval.

use crate::runtime::Runtime;
use std::sync::Arc;
use std::time::Duration;

/// How often [`SlotWatch`] looks at the scheduler.
const SLOT_POLL: Duration = Duration::from_millis(50);

/// Resolves when the scheduler's counts (running and queued, per kind) differ from the
/// last ones seen: a slot filled or freed, a job queued or taken. A snapshot every 50 ms
/// (one short lock), so a report follows a slot change within that; nothing changes,
/// nothing is sent.
pub struct SlotWatch {
    rt: Arc<Runtime>,
    last: crate::scheduler::Snapshot,
}

impl SlotWatch {
    pub fn new(rt: Arc<Runtime>) -> Self {
        let last = rt.scheduler().snapshot();
        SlotWatch { rt, last }
    }

    pub async fn changed(&mut self) {
        loop {
            tokio::time::sleep(SLOT_POLL).await;
            let now = self.rt.scheduler().snapshot();
            if now != self.last {
                self.last = now;
                return;
            }
        }
    }
}

