//! The pace of the leader's own loops (repair surveys, garbage collection, audits): a tick
//! every interval, saying whether this member leads at that moment.

use std::time::Duration;

use openraft::Raft;

use super::types::TypeConfig;

/// Ticks every interval (late ticks are delayed, not bunched) and reads leadership fresh
/// at each one.
pub struct LeaderTicks {
    ticker: tokio::time::Interval,
    metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, super::types::Member>>,
}

impl LeaderTicks {
    /// Ticks of `interval` for the member behind `raft`.
    pub fn new(raft: &Raft<TypeConfig>, interval: Duration) -> Self {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            ticker,
            metrics: raft.metrics(),
        }
    }

    /// Waits for the next tick: `Some(true)` if this member leads, `Some(false)` if not,
    /// `None` once Raft has shut down (the loop should end).
    pub async fn next(&mut self) -> Option<bool> {
        self.ticker.tick().await;
        if self.metrics.has_changed().is_err() {
            return None;
        }
        // Read and dropped at once: the guard must never be held across an await.
        let m = self.metrics.borrow_and_update();
        Some(m.current_leader == Some(m.id))
    }
}
