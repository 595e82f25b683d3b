//! openraft's storage test suite against the real pair: the redb log and the catalog
//! state machine (membership, applied state, snapshot build and install).

use cairn_coordinator::raft::log_store::LogStore;
use cairn_coordinator::raft::state_machine::StateMachine;
use cairn_coordinator::raft::types::TypeConfig;
use openraft::StorageError;
use openraft::StorageIOError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct Fresh;

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachine, TempDir> for Fresh {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<TypeConfig>, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|err| StorageIOError::write(&err))?;
        let log = LogStore::open(&dir.path().join("raft-log.redb"))?;
        let sm = StateMachine::open(&dir.path().join("catalog.redb"))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn log_and_catalog_pass_openraft_storage_suite() {
    if let Err(err) = Suite::test_all(Fresh) {
        panic!("storage suite hit a storage error: {err}");
    }
}
