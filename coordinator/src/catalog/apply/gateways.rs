//! The gateway registry's commands: [`Command::RegisterGateway`] and
//! [`Command::RemoveGateway`].
//!
//! [`Command::RegisterGateway`]: crate::catalog::Command::RegisterGateway
//! [`Command::RemoveGateway`]: crate::catalog::Command::RemoveGateway

use cairn_proto::identity::NodeId;
use redb::WriteTransaction;

use super::refused;
use crate::catalog::command::{CatalogError, CommandResult};
use crate::catalog::model::GatewayRecord;
use crate::catalog::{CatalogFault, GATEWAYS, encode};

/// [`Command::RegisterGateway`](crate::catalog::Command::RegisterGateway): registering a
/// key again replaces its record.
pub(super) fn register_gateway(
    txn: &WriteTransaction,
    gateway: &GatewayRecord,
) -> Result<CommandResult, CatalogFault> {
    txn.open_table(GATEWAYS)?
        .insert(*gateway.key.as_bytes(), encode(gateway)?.as_slice())?;
    Ok(CommandResult::Done)
}

/// [`Command::RemoveGateway`](crate::catalog::Command::RemoveGateway).
pub(super) fn remove_gateway(
    txn: &WriteTransaction,
    key: &NodeId,
) -> Result<CommandResult, CatalogFault> {
    if txn.open_table(GATEWAYS)?.remove(*key.as_bytes())?.is_none() {
        return refused(CatalogError::NoSuchGateway(key.to_string()));
    }
    Ok(CommandResult::Done)
}
