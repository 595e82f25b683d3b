//! [`Clock`]: the coordinator's time as this node knows it.
//!
//! Orders carry an expiry in the coordinator's clock. A volunteer's machine may run minutes
//! off (no NTP, a dead CMOS battery, a VM resumed from a snapshot); judged by its own clock,
//! a node ahead would refuse every order as expired, fail its audits and be disqualified
//! while holding every byte, and a node behind would accept orders long after they ended.
//! So every heartbeat answer carries the coordinator's clock (over the connection pinned to
//! the coordinator key, so no one else can set it), and the node checks orders against its
//! own clock corrected by the offset it measured.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Offset past which the node warns in its log: its own clock is then far enough off to
/// mislead anyone reading its logs or metrics.
const WARN_OFFSET_MS: i64 = 60_000;

/// The coordinator's clock, measured from heartbeat answers.
#[derive(Debug, Default)]
pub struct Clock {
    /// Coordinator time minus local time, in milliseconds (0 until the first answer).
    offset_ms: AtomicI64,
}

impl Clock {
    /// A clock that trusts the local time until the first heartbeat answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Milliseconds since the Unix epoch on this machine's own clock.
    pub fn local_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Takes the coordinator's `coordinator_ms`, read while a heartbeat sent at local time
    /// `sent_ms` was answered at local time `received_ms`: the coordinator read its clock
    /// somewhere in between, so the midpoint is the best guess (off by at most half the
    /// round trip).
    pub fn observe(&self, coordinator_ms: u64, sent_ms: u64, received_ms: u64) -> i64 {
        let midpoint = sent_ms / 2 + received_ms / 2;
        let offset = i64::try_from(coordinator_ms)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(midpoint).unwrap_or(i64::MAX));
        let before = self.offset_ms.swap(offset, Ordering::Relaxed);
        if offset.abs() >= WARN_OFFSET_MS && (offset - before).abs() >= 1_000 {
            tracing::warn!(
                offset_secs = offset as f64 / 1000.0,
                "this machine's clock is off from the coordinator's; orders are checked against the coordinator's time, but fix the clock (NTP)"
            );
        }
        offset
    }

    /// Coordinator time minus local time, in milliseconds.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Now in the coordinator's clock, in whole seconds since the Unix epoch: what order
    /// expiries are compared with.
    pub fn now_unix(&self) -> u64 {
        let local = i64::try_from(Self::local_ms()).unwrap_or(i64::MAX);
        let corrected = local.saturating_add(self.offset_ms());
        u64::try_from(corrected.max(0)).unwrap_or(0) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_taken_at_the_round_trip_s_midpoint() {
        let clock = Clock::new();
        assert_eq!(clock.offset_ms(), 0);
        // Sent at 1 000, answered at 1 100, the coordinator said 601 050: ten minutes ahead.
        assert_eq!(clock.observe(601_050, 1_000, 1_100), 600_000);
        let ahead = clock.now_unix();
        let local = Clock::local_ms() / 1000;
        assert!((599..=601).contains(&(ahead - local)), "{ahead} vs {local}");
        // Behind, and a coordinator clock of 0 cannot underflow.
        assert_eq!(clock.observe(0, 10_000, 10_000), -10_000);
        assert_eq!(Clock::new().observe(0, u64::MAX, u64::MAX), i64::MIN + 1);
        assert!(clock.now_unix() > 0);
    }
}
