//! [`Command::Once`]: a client's change applied at most once, its result remembered under
//! the client's request id.

use redb::{ReadableTable, WriteTransaction};

use super::apply;
use crate::catalog::command::{CatalogError, Command, CommandResult, REQUEST_MEMORY_MS, RequestId};
use crate::catalog::{CatalogFault, REQUESTS, REQUESTS_BY_TIME, decode, encode, request_time_key};

/// Most remembered requests forgotten per [`Command::Once`]: more than one, so the memory
/// shrinks back after a burst, and few, so no single apply does much work.
const FORGET_PER_REQUEST: usize = 4;

/// Applies [`Command::Once`]: the remembered result if `request` was applied before,
/// otherwise `command`'s, remembered; then forgets a few requests older than
/// [`REQUEST_MEMORY_MS`].
pub(super) fn once(
    txn: &WriteTransaction,
    request: &RequestId,
    command: &Command,
    now_ms: u64,
) -> Result<CommandResult, CatalogFault> {
    if let Some(seen) = txn.open_table(REQUESTS)?.get(request.0)? {
        let (_, result): (u64, CommandResult) = decode(seen.value())?;
        return Ok(result);
    }
    let result = match command {
        Command::Once { .. } => CommandResult::Refused(CatalogError::Malformed(
            "a request cannot wrap another request".into(),
        )),
        command => apply(txn, command)?,
    };
    let mut requests = txn.open_table(REQUESTS)?;
    let mut by_time = txn.open_table(REQUESTS_BY_TIME)?;
    requests.insert(request.0, encode(&(now_ms, result.clone()))?.as_slice())?;
    by_time.insert(request_time_key(now_ms, &request.0), ())?;
    let horizon = request_time_key(now_ms.saturating_sub(REQUEST_MEMORY_MS), &[0; 16]);
    let expired: Vec<[u8; 24]> = by_time
        .range(..horizon)?
        .take(FORGET_PER_REQUEST)
        .map(|item| item.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()?;
    for key in expired {
        by_time.remove(key)?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&key[8..]);
        requests.remove(id)?;
    }
    Ok(result)
}
