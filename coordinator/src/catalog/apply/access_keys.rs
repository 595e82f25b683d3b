//! The S3 access key commands: [`Command::CreateAccessKey`] and
//! [`Command::RevokeAccessKey`].
//!
//! [`Command::CreateAccessKey`]: crate::catalog::Command::CreateAccessKey
//! [`Command::RevokeAccessKey`]: crate::catalog::Command::RevokeAccessKey

use redb::{ReadableTable, WriteTransaction};

use super::refused;
use crate::catalog::command::{CatalogError, CommandResult};
use crate::catalog::model::AccessKey;
use crate::catalog::{ACCESS_KEYS, CatalogFault, decode, encode};

/// [`Command::CreateAccessKey`](crate::catalog::Command::CreateAccessKey): refused for an
/// id already taken.
pub(super) fn create_access_key(
    txn: &WriteTransaction,
    key: &AccessKey,
) -> Result<CommandResult, CatalogFault> {
    let mut table = txn.open_table(ACCESS_KEYS)?;
    if table.get(key.id.as_str())?.is_some() {
        return refused(CatalogError::AccessKeyExists(key.id.clone()));
    }
    table.insert(key.id.as_str(), encode(key)?.as_slice())?;
    Ok(CommandResult::Done)
}

/// [`Command::RevokeAccessKey`](crate::catalog::Command::RevokeAccessKey): the key is kept,
/// marked revoked.
pub(super) fn revoke_access_key(
    txn: &WriteTransaction,
    id: &str,
) -> Result<CommandResult, CatalogFault> {
    let mut table = txn.open_table(ACCESS_KEYS)?;
    let Some(mut key) = table
        .get(id)?
        .map(|v| decode::<AccessKey>(v.value()))
        .transpose()?
    else {
        return refused(CatalogError::NoSuchAccessKey(id.to_string()));
    };
    key.revoked = true;
    table.insert(id, encode(&key)?.as_slice())?;
    Ok(CommandResult::Done)
}
