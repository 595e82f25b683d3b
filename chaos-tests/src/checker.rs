//! [`check`]: whether a [`History`](crate::history::History) of S3 operations is one a
//! correct store could have produced. Pure: operations in, a [`Report`] out.
//!
//! The rule, per key. A read may return the value of any write that was invoked before the
//! read completed, did not fail, and is not *superseded*: a write is superseded for a read
//! when another acknowledged write or an acknowledged delete of the key was invoked after
//! the write was acknowledged and was itself acknowledged before the read was invoked. A
//! write whose outcome is unknown never counts as acknowledged, so it may appear at any
//! later time (its request may still be in flight somewhere); a failed one (a definite S3
//! refusal) must never appear. A read may return "absent" unless some acknowledged write
//! completed before the read was invoked with no delete (acknowledged or of unknown outcome)
//! that could fall between that write and the read.
//!
//! The final pass reads every key once the faults have stopped and the cluster has healed;
//! a final read that misses an acknowledged write counts as a *lost* write, and every key
//! that was ever written to must have a successful final read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::history::{Op, OpKind, Outcome, ReadValue, WriteId};

/// What went wrong, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// A final read missed an acknowledged write: it is gone.
    Lost,
    /// A read during the load returned a superseded value, or nothing where an
    /// acknowledged write had to be visible.
    Stale,
    /// A read returned a value an acknowledged delete had removed.
    Resurrected,
    /// A read returned bytes that are no value ever written.
    Corrupt,
    /// A read returned a value no write to the key ever had, or one whose write had not yet
    /// been invoked when the read completed.
    NeverWritten,
    /// A read returned the value of a write the gateway had refused.
    FailedWriteVisible,
    /// A read returned another key's value.
    Foreign,
    /// A key that was written has no successful final read: nothing says it survived.
    Unread,
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            AnomalyKind::Lost => "lost",
            AnomalyKind::Stale => "stale",
            AnomalyKind::Resurrected => "resurrected",
            AnomalyKind::Corrupt => "corrupt",
            AnomalyKind::NeverWritten => "never written",
            AnomalyKind::FailedWriteVisible => "failed write visible",
            AnomalyKind::Foreign => "foreign",
            AnomalyKind::Unread => "unread",
        };
        f.write_str(name)
    }
}

/// One violation, tied to the key and the operation that showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// Its kind.
    pub kind: AnomalyKind,
    /// The key.
    pub key: String,
    /// The read that showed it (for [`AnomalyKind::Unread`], the key's last write).
    pub op: usize,
    /// What exactly was seen.
    pub detail: String,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} (op {}): {}",
            self.kind, self.key, self.op, self.detail
        )
    }
}

/// The verdict on a history, with its counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Operations recorded (final reads included).
    pub operations: usize,
    /// Of those, acknowledged.
    pub acknowledged: usize,
    /// Definitely refused.
    pub failed: usize,
    /// Ended with an unknown outcome, or never ended.
    pub unknown: usize,
    /// Acknowledged writes (PUTs and completed multipart uploads).
    pub acknowledged_writes: usize,
    /// Acknowledged deletes.
    pub acknowledged_deletes: usize,
    /// Acknowledged reads checked (final reads included).
    pub reads_checked: usize,
    /// Keys ever written to.
    pub keys: usize,
    /// Acknowledged writes missing from the final reads ([`AnomalyKind::Lost`]).
    pub lost: usize,
    /// Reads that returned bytes no write wrote ([`AnomalyKind::Corrupt`]).
    pub corrupt: usize,
    /// Every violation found.
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    /// Whether the history is one a correct store could have produced.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// Anomalies per kind.
    pub fn counts(&self) -> BTreeMap<AnomalyKind, usize> {
        let mut counts = BTreeMap::new();
        for anomaly in &self.anomalies {
            *counts.entry(anomaly.kind).or_default() += 1;
        }
        counts
    }
}

/// When an operation's effect may have happened at the latest: its acknowledgement, or
/// never bounded if it was not acknowledged (an unknown request may still be applied).
fn effect_end(op: &Op) -> u64 {
    if op.acknowledged() {
        op.completed_us.unwrap_or(u64::MAX)
    } else {
        u64::MAX
    }
}

/// Checks `ops` (in any order) against the rule in the module documentation.
pub fn check(ops: &[Op]) -> Report {
    let mut report = Report {
        operations: ops.len(),
        ..Report::default()
    };
    let mut by_key: HashMap<&str, Vec<&Op>> = HashMap::new();
    for op in ops {
        match &op.outcome {
            Some(Outcome::Ok) => {
                report.acknowledged += 1;
                if op.kind.writes() {
                    report.acknowledged_writes += 1;
                } else if op.kind == OpKind::Delete {
                    report.acknowledged_deletes += 1;
                }
            }
            Some(Outcome::Fail(_)) => report.failed += 1,
            Some(Outcome::Unknown(_)) | None => report.unknown += 1,
        }
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut keys: Vec<_> = by_key.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    for (key, ops) in keys {
        check_key(key, &ops, &mut report);
    }
    report.lost = report
        .anomalies
        .iter()
        .filter(|a| a.kind == AnomalyKind::Lost)
        .count();
    report.corrupt = report
        .anomalies
        .iter()
        .filter(|a| a.kind == AnomalyKind::Corrupt)
        .count();
    report
}

fn check_key(key: &str, ops: &[&Op], report: &mut Report) {
    let writes: HashMap<WriteId, &Op> = ops
        .iter()
        .filter(|op| op.kind.writes())
        .filter_map(|op| op.write.map(|w| (w, *op)))
        .collect();
    let acked_writes: Vec<&Op> = ops
        .iter()
        .filter(|op| op.kind.writes() && op.acknowledged())
        .copied()
        .collect();
    // Deletes that may have taken effect (a refused one had none).
    let deletes: Vec<&Op> = ops
        .iter()
        .filter(|op| op.kind == OpKind::Delete && !op.failed())
        .copied()
        .collect();
    let acked_mutations: Vec<&Op> = ops
        .iter()
        .filter(|op| (op.kind.writes() || op.kind == OpKind::Delete) && op.acknowledged())
        .copied()
        .collect();
    let possibly_written = ops.iter().any(|op| op.kind.writes() && !op.failed());
    if possibly_written {
        report.keys += 1;
    }

    let mut finals = 0;
    for read in ops.iter().filter(|op| op.kind == OpKind::Get) {
        let (Some(Outcome::Ok), Some(value), Some(completed)) =
            (&read.outcome, &read.read, read.completed_us)
        else {
            continue;
        };
        report.reads_checked += 1;
        if read.final_read {
            finals += 1;
        }
        let mut flag = |kind: AnomalyKind, detail: String| {
            report.anomalies.push(Anomaly {
                kind,
                key: key.to_string(),
                op: read.id,
                detail,
            });
        };
        match value {
            ReadValue::Corrupt(why) => flag(AnomalyKind::Corrupt, why.clone()),
            ReadValue::Foreign { key: other, write } => flag(
                AnomalyKind::Foreign,
                format!("returned write {write} of {other:?}"),
            ),
            ReadValue::Value(id) => {
                let Some(write) = writes.get(id) else {
                    flag(
                        AnomalyKind::NeverWritten,
                        format!("returned write {id}, never written to this key"),
                    );
                    continue;
                };
                if write.failed() {
                    let why = match &write.outcome {
                        Some(Outcome::Fail(why)) => why.as_str(),
                        _ => "",
                    };
                    flag(
                        AnomalyKind::FailedWriteVisible,
                        format!(
                            "returned write {id} (op {}), which was refused: {why}",
                            write.id
                        ),
                    );
                    continue;
                }
                if write.invoked_us > completed {
                    flag(
                        AnomalyKind::NeverWritten,
                        format!(
                            "returned write {id} (op {}) invoked at {} µs, after the read \
                             completed at {completed} µs",
                            write.id, write.invoked_us
                        ),
                    );
                    continue;
                }
                // Superseded by an acknowledged mutation that began after this write was
                // acknowledged and was acknowledged before the read began; the latest one
                // says what the read should have seen.
                let written = effect_end(write);
                let superseding = acked_mutations
                    .iter()
                    .filter(|x| x.id != write.id)
                    .filter(|x| {
                        written != u64::MAX
                            && x.invoked_us > written
                            && x.completed_us.is_some_and(|c| c < read.invoked_us)
                    })
                    .max_by_key(|x| x.completed_us);
                if let Some(x) = superseding {
                    let what = match x.kind {
                        OpKind::Delete => format!("acknowledged delete (op {})", x.id),
                        _ => format!(
                            "acknowledged write {} (op {})",
                            x.write.unwrap_or_default(),
                            x.id
                        ),
                    };
                    let kind = match (x.kind, read.final_read) {
                        (OpKind::Delete, _) => AnomalyKind::Resurrected,
                        (_, true) => AnomalyKind::Lost,
                        (_, false) => AnomalyKind::Stale,
                    };
                    flag(
                        kind,
                        format!(
                            "returned write {id} (op {}), superseded by {what}",
                            write.id
                        ),
                    );
                }
            }
            ReadValue::Absent => {
                // An acknowledged write that had to be visible: acknowledged before the read
                // began, with no delete that could fall between the two.
                let forced = acked_writes
                    .iter()
                    .filter(|w| w.completed_us.is_some_and(|c| c < read.invoked_us))
                    .filter(|w| {
                        !deletes
                            .iter()
                            .any(|d| effect_end(d) >= w.invoked_us && d.invoked_us < completed)
                    })
                    .max_by_key(|w| w.completed_us);
                if let Some(w) = forced {
                    let kind = if read.final_read {
                        AnomalyKind::Lost
                    } else {
                        AnomalyKind::Stale
                    };
                    flag(
                        kind,
                        format!(
                            "absent, but write {} (op {}) was acknowledged before the read",
                            w.write.unwrap_or_default(),
                            w.id
                        ),
                    );
                }
            }
        }
    }
    if possibly_written && finals == 0 {
        let last = ops
            .iter()
            .filter(|op| op.kind.writes())
            .map(|op| op.id)
            .max()
            .unwrap_or_default();
        report.anomalies.push(Anomaly {
            kind: AnomalyKind::Unread,
            key: key.to_string(),
            op: last,
            detail: "no successful final read".into(),
        });
    }
}

/// Every key a write was invoked on (refused ones included: a final read shows they stayed
/// invisible), sorted: what the final pass must read.
pub fn written_keys(ops: &[Op]) -> Vec<String> {
    ops.iter()
        .filter(|op| op.kind.writes() || op.kind == OpKind::Delete)
        .map(|op| op.key.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds histories with explicit times (µs).
    #[derive(Default)]
    struct Build(Vec<Op>);

    impl Build {
        fn push(
            &mut self,
            kind: OpKind,
            write: Option<WriteId>,
            span: (u64, Option<u64>),
            outcome: Option<Outcome>,
            read: Option<ReadValue>,
            final_read: bool,
        ) -> &mut Self {
            let id = self.0.len();
            self.0.push(Op {
                id,
                client: 0,
                kind,
                key: "k".into(),
                write,
                invoked_us: span.0,
                completed_us: span.1,
                outcome,
                read,
                final_read,
            });
            self
        }
        fn put(&mut self, w: WriteId, from: u64, to: u64) -> &mut Self {
            self.push(
                OpKind::Put,
                Some(w),
                (from, Some(to)),
                Some(Outcome::Ok),
                None,
                false,
            )
        }
        fn multipart(&mut self, w: WriteId, from: u64, to: u64) -> &mut Self {
            self.push(
                OpKind::MultipartComplete,
                Some(w),
                (from, Some(to)),
                Some(Outcome::Ok),
                None,
                false,
            )
        }
        fn put_unknown(&mut self, w: WriteId, from: u64, to: u64) -> &mut Self {
            self.push(
                OpKind::Put,
                Some(w),
                (from, Some(to)),
                Some(Outcome::Unknown("timeout".into())),
                None,
                false,
            )
        }
        fn put_failed(&mut self, w: WriteId, from: u64, to: u64) -> &mut Self {
            self.push(
                OpKind::Put,
                Some(w),
                (from, Some(to)),
                Some(Outcome::Fail("400".into())),
                None,
                false,
            )
        }
        fn delete(&mut self, from: u64, to: u64) -> &mut Self {
            self.push(
                OpKind::Delete,
                None,
                (from, Some(to)),
                Some(Outcome::Ok),
                None,
                false,
            )
        }
        fn delete_unknown(&mut self, from: u64) -> &mut Self {
            self.push(OpKind::Delete, None, (from, None), None, None, false)
        }
        fn get(&mut self, from: u64, to: u64, value: ReadValue) -> &mut Self {
            self.push(
                OpKind::Get,
                None,
                (from, Some(to)),
                Some(Outcome::Ok),
                Some(value),
                false,
            )
        }
        fn final_get(&mut self, at: u64, value: ReadValue) -> &mut Self {
            self.push(
                OpKind::Get,
                None,
                (at, Some(at + 1)),
                Some(Outcome::Ok),
                Some(value),
                true,
            )
        }
        fn report(&self) -> Report {
            check(&self.0)
        }
    }

    use ReadValue::{Absent, Value};

    fn kinds(report: &Report) -> Vec<AnomalyKind> {
        report.anomalies.iter().map(|a| a.kind).collect()
    }

    #[track_caller]
    fn valid(build: &Build) {
        let report = build.report();
        assert!(report.is_valid(), "{:#?}", report.anomalies);
    }

    // Histories that must pass.

    #[test]
    fn sequential_writes_and_reads_pass() {
        let mut h = Build::default();
        h.put(1, 0, 10)
            .get(20, 30, Value(1))
            .put(2, 40, 50)
            .get(60, 70, Value(2))
            .final_get(100, Value(2));
        let report = h.report();
        assert!(report.is_valid(), "{:?}", report.anomalies);
        assert_eq!(report.acknowledged_writes, 2);
        assert_eq!(report.reads_checked, 3);
        assert_eq!(report.keys, 1);
    }

    #[test]
    fn concurrent_writes_may_be_read_in_either_order() {
        for (during, last) in [(1, 2), (2, 1), (2, 2), (1, 1)] {
            let mut h = Build::default();
            h.put(1, 0, 50)
                .put(2, 10, 40)
                .get(20, 30, Value(during))
                .final_get(100, Value(last));
            valid(&h);
        }
    }

    #[test]
    fn a_read_concurrent_with_an_overwrite_or_delete_may_see_either_side() {
        let mut h = Build::default();
        h.put(1, 0, 10)
            .put(2, 20, 40)
            .get(30, 35, Value(1))
            .get(31, 36, Value(2))
            .delete(50, 60)
            .get(55, 58, Value(2))
            .get(56, 59, Absent)
            .final_get(100, Absent);
        valid(&h);
    }

    #[test]
    fn a_write_of_unknown_outcome_may_appear_late_or_never() {
        let mut h = Build::default();
        h.put(1, 0, 10)
            .put_unknown(2, 20, 30)
            .get(40, 50, Value(1))
            .get(60, 70, Value(2))
            .final_get(100, Value(2));
        valid(&h);
        let mut h = Build::default();
        h.put(1, 0, 10)
            .put_unknown(2, 20, 30)
            .final_get(100, Value(1));
        valid(&h);
        // An unknown write is never acknowledged, so even a later acknowledged write does not
        // rule it out: its request may be applied after.
        let mut h = Build::default();
        h.put_unknown(1, 0, 10)
            .put(2, 20, 30)
            .final_get(100, Value(1));
        valid(&h);
    }

    #[test]
    fn a_delete_of_unknown_outcome_may_or_may_not_have_happened() {
        for last in [Absent, Value(1)] {
            let mut h = Build::default();
            h.put(1, 0, 10).delete_unknown(20).final_get(100, last);
            valid(&h);
        }
    }

    #[test]
    fn deleted_keys_read_absent_and_a_never_written_key_may_be_absent() {
        let mut h = Build::default();
        h.put(1, 0, 10)
            .delete(20, 30)
            .get(40, 50, Absent)
            .final_get(100, Absent);
        valid(&h);
        let mut h = Build::default();
        h.put_failed(1, 0, 10).final_get(100, Absent);
        valid(&h);
    }

    #[test]
    fn multipart_completions_are_writes() {
        let mut h = Build::default();
        h.put(1, 0, 10)
            .multipart(2, 20, 30)
            .get(40, 50, Value(2))
            .final_get(100, Value(2));
        valid(&h);
    }

    #[test]
    fn failed_and_unknown_reads_are_not_judged() {
        let mut h = Build::default();
        h.put(1, 0, 10)
            .push(
                OpKind::Get,
                None,
                (20, Some(30)),
                Some(Outcome::Unknown("reset".into())),
                None,
                false,
            )
            .final_get(100, Value(1));
        valid(&h);
    }

    // Histories that must fail.

    #[test]
    fn a_lost_write_is_found() {
        let mut h = Build::default();
        h.put(1, 0, 10).final_get(100, Absent);
        let report = h.report();
        assert_eq!(kinds(&report), [AnomalyKind::Lost]);
        assert_eq!(report.lost, 1);
        // An overwrite lost: the final read returns the value it replaced.
        let mut h = Build::default();
        h.put(1, 0, 10).put(2, 20, 30).final_get(100, Value(1));
        assert_eq!(kinds(&h.report()), [AnomalyKind::Lost]);
        // A delete before the write does not excuse it.
        let mut h = Build::default();
        h.delete(0, 5).put(1, 10, 20).final_get(100, Absent);
        assert_eq!(kinds(&h.report()), [AnomalyKind::Lost]);
    }

    #[test]
    fn a_corrupt_read_is_found() {
        let mut h = Build::default();
        h.put(1, 0, 10)
            .get(20, 30, ReadValue::Corrupt("byte 7 differs".into()))
            .final_get(100, Value(1));
        let report = h.report();
        assert_eq!(kinds(&report), [AnomalyKind::Corrupt]);
        assert_eq!(report.corrupt, 1);
    }

    #[test]
    fn a_value_never_written_is_found() {
        let mut h = Build::default();
        h.put(1, 0, 10).final_get(100, Value(99));
        assert_eq!(kinds(&h.report()), [AnomalyKind::NeverWritten]);
        // Read before its write was even invoked.
        let mut h = Build::default();
        h.get(0, 10, Value(1))
            .put(1, 20, 30)
            .final_get(100, Value(1));
        assert_eq!(kinds(&h.report()), [AnomalyKind::NeverWritten]);
        let mut h = Build::default();
        h.put(1, 0, 10).final_get(
            100,
            ReadValue::Foreign {
                key: "other".into(),
                write: 1,
            },
        );
        assert_eq!(kinds(&h.report()), [AnomalyKind::Foreign]);
    }

    #[test]
    fn a_resurrected_delete_is_found() {
        let mut h = Build::default();
        h.put(1, 0, 10).delete(20, 30).final_get(100, Value(1));
        assert_eq!(kinds(&h.report()), [AnomalyKind::Resurrected]);
        let mut h = Build::default();
        h.put(1, 0, 10)
            .delete(20, 30)
            .get(40, 50, Value(1))
            .final_get(100, Absent);
        assert_eq!(kinds(&h.report()), [AnomalyKind::Resurrected]);
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_overwrite_is_found() {
        let mut h = Build::default();
        h.put(1, 0, 10)
            .put(2, 20, 30)
            .get(40, 50, Value(1))
            .final_get(100, Value(2));
        assert_eq!(kinds(&h.report()), [AnomalyKind::Stale]);
        // Or nothing at all where the write had to be visible.
        let mut h = Build::default();
        h.put(1, 0, 10).get(20, 30, Absent).final_get(100, Value(1));
        assert_eq!(kinds(&h.report()), [AnomalyKind::Stale]);
    }

    #[test]
    fn a_failed_write_that_appears_is_found() {
        let mut h = Build::default();
        h.put(1, 0, 10)
            .put_failed(2, 20, 30)
            .get(40, 50, Value(2))
            .final_get(100, Value(1));
        assert_eq!(kinds(&h.report()), [AnomalyKind::FailedWriteVisible]);
    }

    #[test]
    fn a_written_key_without_a_final_read_is_found() {
        let mut h = Build::default();
        h.put(1, 0, 10).get(20, 30, Value(1));
        assert_eq!(kinds(&h.report()), [AnomalyKind::Unread]);
    }

    #[test]
    fn keys_are_judged_apart() {
        let mut ops = Vec::new();
        for (i, key) in ["a", "b"].iter().enumerate() {
            let mut h = Build::default();
            h.put(i as u64 + 1, 0, 10)
                .final_get(100, Value(i as u64 + 1));
            for mut op in h.0 {
                op.key = key.to_string();
                op.id += i * 10;
                ops.push(op);
            }
        }
        // Key b's final read returns a's write id: never written to b.
        ops[3].read = Some(Value(1));
        let report = check(&ops);
        assert_eq!(kinds(&report), [AnomalyKind::NeverWritten]);
        assert_eq!(report.anomalies[0].key, "b");
        assert_eq!(written_keys(&ops), ["a", "b"]);
    }
}
