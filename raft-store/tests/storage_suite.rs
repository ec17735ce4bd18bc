//! Runs openraft's storage conformance suite (`openraft::testing::log::Suite::test_all`) against
//! Skiff's real sled-backed [`LogStore`] and [`StateMachineStore`]: log reads and bounds, vote
//! persistence, append/truncate/purge semantics, the log state after a purge, the initial state
//! openraft derives on startup (membership, last applied, re-applying committed logs) and
//! building, installing and reading back snapshots. Every sub-test gets fresh stores on a fresh
//! sled database in its own temporary directory.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use raft_store::raft::log_store::LogStore;
use raft_store::raft::state_machine::StateMachineStore;
use raft_store::raft::TypeConfig;
use tempfile::TempDir;

/// Opens fresh, empty stores on a new sled database for each sub-test.
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let store_err = |e: std::io::Error| {
            StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, e)
        };
        let dir = tempfile::tempdir().map_err(store_err)?;
        let db = sled::Config::new()
            .path(dir.path())
            .open()
            .map_err(|e| store_err(std::io::Error::other(e)))?;
        let log = LogStore::open(&db, dir.path()).map_err(store_err)?;
        let sm = StateMachineStore::open(&db, &dir.path().join("snap")).map_err(store_err)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_suite() {
    Suite::test_all(SledBuilder).await.unwrap();
}
