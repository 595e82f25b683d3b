//! [`TypeConfig`]: the concrete types Cairn's Raft group runs with.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::catalog::{Command, CommandResult};

/// A coordinator member as Raft knows it: where to reach it.
///
/// Members need no key of their own here: every member holds the one coordinator key (the
/// key nodes pin and that signs orders), and member-to-member connections are pinned to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// QUIC address of the member's endpoint (Raft, nodes and gateways all use it).
    pub addr: String,
    /// HTTP address of the member's admin API, so followers can point clients to the leader.
    pub admin: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (admin {})", self.addr, self.admin)
    }
}

openraft::declare_raft_types!(
    /// Raft over the catalog: log entries carry [`Command`]s, members are [`Member`]s with
    /// numeric ids, snapshots are in-memory byte buffers.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft log id of this group.
pub type LogId = openraft::LogId<u64>;
/// The membership as stored with the state.
pub type StoredMembership = openraft::StoredMembership<u64, Member>;
