#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! openraft's storage conformance suite (about forty tests of the log store and the state
//! machine) against Fjord's, on real files and on the simulated disk.

use std::path::Path;
use std::sync::Arc;

use fjord_log::Storage;
use fjord_log::sim::SimStorage;
use fjord_quorum::{LogStore, StateMachine, TypeConfig};
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

fn open(storage: Arc<dyn Storage>, dir: &Path) -> (LogStore, StateMachine) {
    let log = LogStore::open(storage.clone(), dir, 0).expect("raft log opens");
    let sm = StateMachine::open(storage, dir).expect("state machine opens");
    (log, sm)
}

struct OnFiles;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnFiles {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = open(Arc::new(fjord_log::FsStorage), &dir.path().join("meta"));
        Ok((dir, log, sm))
    }
}

struct OnSimulatedDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachine> for OnSimulatedDisk {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<TypeConfig>> {
        let (log, sm) = open(Arc::new(SimStorage::new()), Path::new("/data/meta"));
        Ok(((), log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openraft_storage_suite_passes_on_files() {
    Suite::test_all(OnFiles).await.expect("suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openraft_storage_suite_passes_on_the_simulated_disk() {
    Suite::test_all(OnSimulatedDisk).await.expect("suite");
}
