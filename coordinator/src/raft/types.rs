//! [`TypeConfig`]: the concrete types Cairn's Raft group runs with.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalog::{Command, CommandResult};

/// A coordinator member as Raft knows it: where to reach it and who it is.
///
/// Every member serves under the one coordinator key (the key nodes and gateways pin, and
/// that signs orders), but speaks Raft to the others as itself: its own member key,
/// registered by the operator's `cairn admin members add --key`, is what the other members
/// accept Raft traffic from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// QUIC address of the member's endpoint (Raft, nodes and gateways all use it).
    pub addr: String,
    /// HTTP address of the member's admin API, so followers can point clients to the leader.
    pub admin: String,
    /// The member's own key (text form), presented when it sends Raft traffic.
    pub key: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (admin {})", self.addr, self.admin)
    }
}

openraft::declare_raft_types!(
    /// Raft over the catalog: log entries carry [`Command`]s, members are [`Member`]s with
    /// numeric ids, snapshots are files (sent and received in chunks by openraft).
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = super::snapshot_file::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft log id of this group.
pub type LogId = openraft::LogId<u64>;
/// The membership as stored with the state.
pub type StoredMembership = openraft::StoredMembership<u64, Member>;
