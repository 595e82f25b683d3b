//! The commands that judge nodes: [`Command::RecordAudits`] (the leader's audit
//! judgements, folded into each node's score) and [`Command::ReportBadRead`] (a gateway's
//! report, counted but not judged).
//!
//! [`Command::RecordAudits`]: crate::catalog::Command::RecordAudits
//! [`Command::ReportBadRead`]: crate::catalog::Command::ReportBadRead

use cairn_proto::identity::NodeId;
use redb::WriteTransaction;

use super::nodes::read_node;
use super::refused;
use crate::catalog::command::{CatalogError, CommandResult};
use crate::catalog::model::{NodeRecord, NodeState, ReputationPolicy};
use crate::catalog::{CatalogFault, NODES, encode};

/// [`Command::ReportBadRead`](crate::catalog::Command::ReportBadRead).
pub(super) fn report_bad_read(
    txn: &WriteTransaction,
    node: &NodeId,
) -> Result<CommandResult, CatalogFault> {
    let mut table = txn.open_table(NODES)?;
    let Some(mut record) = read_node(&table, node)? else {
        return refused(CatalogError::NoSuchNode(node.to_string()));
    };
    // Counted, not judged: one gateway's word is a reason to audit the shard, and
    // the audit judges the node.
    record.reputation.bad_reads += 1;
    table.insert(*node.as_bytes(), encode(&record)?.as_slice())?;
    Ok(CommandResult::Done)
}

/// [`Command::RecordAudits`](crate::catalog::Command::RecordAudits): one round's
/// judgements, under the leader's policy carried in the command.
pub(super) fn record_audits(
    txn: &WriteTransaction,
    results: &[(NodeId, bool)],
    policy: &ReputationPolicy,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    let mut table = txn.open_table(NODES)?;
    for (node, passed) in results {
        // A node removed since the round began is simply not judged.
        let Some(mut record) = read_node(&table, node)? else {
            continue;
        };
        if *passed {
            record.reputation.audits_passed += 1;
        } else {
            record.reputation.audits_failed += 1;
        }
        judge(&mut record, *passed, policy, now_ms);
        table.insert(*node.as_bytes(), encode(&record)?.as_slice())?;
    }
    Ok(CommandResult::Done)
}

/// Folds one judgement into a node's score, then moves it if the score says so: below the
/// threshold a node holding or taking data is disqualified (its shards count as lost from
/// then on); a vetting node with enough passed audits becomes active. Nodes already lost,
/// gone or disqualified keep their state.
fn judge(record: &mut NodeRecord, passed: bool, policy: &ReputationPolicy, now_ms: u64) {
    record.reputation.judge(passed, policy.lambda_ppm);
    let next =
        if record.reputation.score_ppm < policy.disqualify_below_ppm && record.state.holds_data() {
            Some(NodeState::Disqualified)
        } else if record.state == NodeState::Vetting
            && record.reputation.audits_passed >= policy.vetting_audits
        {
            Some(NodeState::Active)
        } else {
            None
        };
    if let Some(state) = next {
        record.state = state;
        record.state_since_ms = now_ms;
        record.vetted = state == NodeState::Active;
    }
}
