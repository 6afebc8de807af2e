//! The cluster storage against openraft's own storage suite, and the durability properties the
//! suite cannot see (they need a reopen).

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use tempfile::TempDir;

use super::log::LogStore;
use super::state::StateMachine;
use super::types::TypeConfig;

/// Builds a log store and state machine in fresh temporary directories, as a node lays them out.
struct TempStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for TempStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new().expect("a temporary directory");
        let log = LogStore::open(&dir.path().join("raft")).expect("the log opens");
        let state = StateMachine::open(&dir.path().join("raft").join("state"))
            .expect("the state machine opens");
        Ok((dir, log, state))
    }
}

/// Every case of openraft's storage suite passes: log state, reads, vote, truncate, purge,
/// append, apply, snapshot build and install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(TempStores)
        .await
        .expect("openraft's storage suite passes");
}
