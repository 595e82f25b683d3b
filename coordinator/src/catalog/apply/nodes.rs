//! The storage node commands: registration ([`Command::RegisterNode`]), invitations and
//! joins ([`Command::CreateInvite`], [`Command::JoinNode`]), the lifecycle
//! ([`Command::SetNodeState`], [`Command::ChangeNodeState`]) and addresses
//! ([`Command::MoveNode`]). A node's organisation is set once, by the invitation it joined
//! with.
//!
//! [`Command::RegisterNode`]: crate::catalog::Command::RegisterNode
//! [`Command::CreateInvite`]: crate::catalog::Command::CreateInvite
//! [`Command::JoinNode`]: crate::catalog::Command::JoinNode
//! [`Command::SetNodeState`]: crate::catalog::Command::SetNodeState
//! [`Command::ChangeNodeState`]: crate::catalog::Command::ChangeNodeState
//! [`Command::MoveNode`]: crate::catalog::Command::MoveNode

use cairn_proto::identity::NodeId;
use redb::{ReadableTable, WriteTransaction};

use super::refused;
use crate::catalog::command::{CatalogError, CommandResult};
use crate::catalog::model::{Invite, NodeRecord, NodeState};
use crate::catalog::{CatalogFault, INVITES, NODES, decode, encode};

/// [`Command::RegisterNode`](crate::catalog::Command::RegisterNode).
pub(super) fn register_node(
    txn: &WriteTransaction,
    node: &NodeRecord,
) -> Result<CommandResult, CatalogFault> {
    let mut table = txn.open_table(NODES)?;
    let record = match read_node(&table, &node.id)? {
        // A known node re-registering keeps its history, state and organisation.
        Some(known) => rejoined(known, node),
        None => node.clone(),
    };
    table.insert(*node.id.as_bytes(), encode(&record)?.as_slice())?;
    Ok(CommandResult::Done)
}

/// [`Command::CreateInvite`](crate::catalog::Command::CreateInvite).
pub(super) fn create_invite(
    txn: &WriteTransaction,
    secret_hash: &[u8; 32],
    expires_ms: u64,
    org: Option<&str>,
) -> Result<CommandResult, CatalogFault> {
    let invite = Invite {
        expires_ms,
        used_by: None,
        org: org.map(str::to_string),
    };
    txn.open_table(INVITES)?
        .insert(*secret_hash, encode(&invite)?.as_slice())?;
    Ok(CommandResult::Done)
}

/// [`Command::JoinNode`](crate::catalog::Command::JoinNode): the invitation must be unused,
/// unexpired and name the node's organisation; it is used up by the join.
pub(super) fn join_node(
    txn: &WriteTransaction,
    node: &NodeRecord,
    secret_hash: &[u8; 32],
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    let mut invites = txn.open_table(INVITES)?;
    let invite: Option<Invite> = invites
        .get(*secret_hash)?
        .map(|v| decode(v.value()))
        .transpose()?;
    let Some(mut invite) = invite.filter(|i| i.used_by.is_none() && i.expires_ms > now_ms) else {
        return refused(CatalogError::InvalidInvite);
    };
    // Every invitation names the organisation the operator vouches for; one that
    // does not (made before that was required) admits no one.
    let Some(invited) = invite.org.clone() else {
        return refused(CatalogError::InvalidInvite);
    };
    if invited != node.org {
        return refused(CatalogError::WrongOrg {
            invited,
            claimed: node.org.clone(),
        });
    }
    invite.used_by = Some(node.id);
    invites.insert(*secret_hash, encode(&invite)?.as_slice())?;
    let mut nodes = txn.open_table(NODES)?;
    // A node that re-joins (new disk, new address) keeps its history, state and
    // organisation.
    let record = match read_node(&nodes, &node.id)? {
        Some(known) if known.org != node.org => {
            return refused(CatalogError::WrongOrg {
                invited: known.org,
                claimed: node.org.clone(),
            });
        }
        Some(known) => rejoined(known, node),
        // A new node starts with nothing earned, whatever the record says.
        None => NodeRecord {
            state: NodeState::Vetting,
            joined_ms: now_ms,
            state_since_ms: now_ms,
            vetted: false,
            reputation: Default::default(),
            ..node.clone()
        },
    };
    nodes.insert(*node.id.as_bytes(), encode(&record)?.as_slice())?;
    Ok(CommandResult::Done)
}

/// Moves `node` to `state`, if it is in `from` (when given).
pub(super) fn set_node_state(
    txn: &WriteTransaction,
    node: &NodeId,
    from: Option<NodeState>,
    state: NodeState,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    let mut table = txn.open_table(NODES)?;
    let Some(mut record) = read_node(&table, node)? else {
        return Ok(CommandResult::Refused(CatalogError::NoSuchNode(
            node.to_string(),
        )));
    };
    if let Some(from) = from
        && record.state != from
    {
        return Ok(CommandResult::Refused(CatalogError::Stale(format!(
            "node {node} is {}, not {}",
            record.state.as_str(),
            from.as_str()
        ))));
    }
    if record.state != state {
        record.state = state;
        record.state_since_ms = now_ms;
        // Remembered so a suspect node that comes back regains the trust it had earned;
        // only failed audits take it away.
        match state {
            NodeState::Active => record.vetted = true,
            NodeState::Disqualified => record.vetted = false,
            _ => {}
        }
        table.insert(*node.as_bytes(), encode(&record)?.as_slice())?;
    }
    Ok(CommandResult::Done)
}

/// [`Command::MoveNode`](crate::catalog::Command::MoveNode): the node's new address.
pub(super) fn move_node(
    txn: &WriteTransaction,
    node: &NodeId,
    addr: &str,
) -> Result<CommandResult, CatalogFault> {
    let mut nodes = txn.open_table(NODES)?;
    let Some(mut record) = read_node(&nodes, node)? else {
        return refused(CatalogError::NoSuchNode(node.to_string()));
    };
    if record.addr != addr {
        record.addr = addr.to_string();
        nodes.insert(*node.as_bytes(), encode(&record)?.as_slice())?;
    }
    Ok(CommandResult::Done)
}

/// A known node registering again (new address, disk or site) keeps its history,
/// lifecycle state and organisation (which only an invitation vouches for); only what it
/// declares about its machine changes.
fn rejoined(known: NodeRecord, node: &NodeRecord) -> NodeRecord {
    NodeRecord {
        addr: node.addr.clone(),
        site: node.site.clone(),
        capacity: node.capacity,
        ..known
    }
}

/// The record of node `id`, if it is known.
pub(super) fn read_node(
    table: &redb::Table<[u8; 32], &[u8]>,
    id: &NodeId,
) -> Result<Option<NodeRecord>, CatalogFault> {
    table
        .get(*id.as_bytes())?
        .map(|v| decode(v.value()))
        .transpose()
}
