//! Starting several processes on one SQLite file: what happens before the first job.
//!
//! Each opener runs on its own thread with its own runtime, so the openers share nothing but the
//! file, as processes would (SQLite's and the migration lock's file locks are taken per open
//! file, so threads contend for them exactly as processes do).

use std::path::Path;
use std::sync::{Arc, Barrier};

use checkpoint_store::{JobStore, SqliteStore, SqliteStoreOptions};

/// Opens the store at `path` from `openers` threads released at the same instant; returns each
/// opener's error, if any.
fn open_at_once(path: &Path, openers: usize) -> Vec<String> {
    let start = Arc::new(Barrier::new(openers));
    let threads: Vec<_> = (0..openers)
        .map(|_| {
            let start = start.clone();
            let path = path.to_path_buf();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                start.wait();
                runtime.block_on(async {
                    let store = SqliteStore::open(&path, SqliteStoreOptions::default()).await?;
                    store.counts().await?;
                    store.close().await;
                    Ok::<_, checkpoint_store::StoreError>(())
                })
            })
        })
        .collect();
    threads
        .into_iter()
        .filter_map(|thread| thread.join().expect("the opener does not panic").err().map(|e| e.to_string()))
        .collect()
}

#[test]
fn processes_starting_together_on_a_fresh_database_all_open_it() {
    // Regression: sqlx's SQLite migrator takes no lock, so the slower of two processes applying
    // migration 1 to a fresh file failed on a table the faster one had just created. Several
    // rounds, because a race that loses once in a while must lose here.
    for round in 0..6 {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("quire.db");
        let errors = open_at_once(&path, 6);
        assert!(errors.is_empty(), "round {round}: {} of 6 openers failed: {errors:#?}", errors.len());
    }
}

#[tokio::test]
async fn migrating_an_open_database_again_is_a_no_op() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("quire.db");
    let store = SqliteStore::open(&path, SqliteStoreOptions::default()).await.expect("opens");
    store.migrate().await.expect("migrates again");
    let again = SqliteStore::open(&path, SqliteStoreOptions::default()).await.expect("opens again");
    again.counts().await.expect("reads");
    assert!(path.with_file_name("quire.db-migrate.lock").exists(), "the lock file sits beside the database");
}
