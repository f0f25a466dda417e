//! What-if replay (seed §4.2: "the router's decisions are logged and replayable"): re-decide
//! every line of a decision log ([`LogRecord`] JSONL) with another policy, using the features,
//! capacity snapshot and random draws the line carries, and count what would differ.
//!
//! Replaying a log with the policy that wrote it gives zero differences; replaying with
//! another one shows how traffic would have shifted (counts by tier, each changed decision).
//! Unreadable lines are counted and skipped, never fatal.

use crate::config::PolicyConfig;
use crate::decision::{Decision, LogRecord, TierPair};
use crate::report::Tier;
use crate::router::decide;
use serde::Serialize;

/// One request the other policy would have placed differently.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// 1-based line number in the log.
    pub line: usize,
    pub logged: Decision,
    pub replayed: Decision,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplayReport {
    /// Decisions read.
    pub decisions: usize,
    /// Lines that are not decision-log records: (line number, why).
    pub unreadable: Vec<(usize, String)>,
    pub logged_by_tier: TierPair<usize>,
    pub replayed_by_tier: TierPair<usize>,
    pub logged_exercise: usize,
    pub replayed_exercise: usize,
    pub logged_dual: usize,
    pub replayed_dual: usize,
    /// Decisions whose placement differs (see [`Decision::same_placement`]).
    pub changed: Vec<Change>,
}

impl ReplayReport {
    pub fn differences(&self) -> usize {
        self.changed.len()
    }

    /// Changed decisions that moved from one tier to the other.
    pub fn tier_changes(&self) -> usize {
        self.changed.iter().filter(|c| c.logged.target.tier != c.replayed.target.tier).count()
    }
}

fn count(pair: &mut TierPair<usize>, tier: Tier) {
    *pair.get_mut(tier) += 1;
}

/// Re-decides each logged request with `policy` (its decisions carry `version`). Blank lines
/// are skipped.
pub fn replay<'a, I>(lines: I, policy: &PolicyConfig, version: u64) -> ReplayReport
where
    I: IntoIterator<Item = &'a str>,
{
    let mut report = ReplayReport::default();
    for (i, line) in lines.into_iter().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let rec = match LogRecord::from_json_line(line) {
            Ok(r) => r,
            Err(e) => {
                report.unreadable.push((line_no, e.to_string()));
                continue;
            }
        };
        let replayed = decide(policy, version, &rec.features, &rec.snapshot, rec.draws);
        report.decisions += 1;
        count(&mut report.logged_by_tier, rec.decision.target.tier);
        count(&mut report.replayed_by_tier, replayed.target.tier);
        report.logged_exercise += usize::from(rec.decision.exercise);
        report.replayed_exercise += usize::from(replayed.exercise);
        report.logged_dual += usize::from(rec.decision.dual);
        report.replayed_dual += usize::from(replayed.dual);
        if !rec.decision.same_placement(&replayed) {
            report.changed.push(Change { line: line_no, logged: rec.decision, replayed });
        }
    }
    report
}

impl crate::router::Router {
    /// Replays a decision log against this router's current policy and version.
    pub fn replay<'a, I>(&self, lines: I) -> ReplayReport
    where
        I: IntoIterator<Item = &'a str>,
    {
        replay(lines, self.config(), self.version())
    }
}
