//! [`Liveness`]: the latest heartbeat of every node, in the leader's memory.
//!
//! Heartbeats are frequent and their content is soft state, so they never go through the
//! Raft log; only the state changes they lead to (suspect, lost) will be committed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use cairn_proto::identity::NodeId;
use cairn_proto::wire::Heartbeat;

/// Last heartbeat per node and when it arrived.
#[derive(Default)]
pub struct Liveness {
    seen: Mutex<HashMap<NodeId, (Instant, Heartbeat)>>,
}

impl Liveness {
    /// Records a heartbeat.
    pub fn record(&self, heartbeat: Heartbeat) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(heartbeat.node, (Instant::now(), heartbeat));
        }
    }

    /// The last heartbeat of `node` and how long ago it came.
    pub fn last(&self, node: &NodeId) -> Option<(std::time::Duration, Heartbeat)> {
        let seen = self.seen.lock().ok()?;
        seen.get(node).map(|(at, hb)| (at.elapsed(), hb.clone()))
    }
}
