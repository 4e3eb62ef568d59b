//! Where the queue under test lives: one fresh, empty store per measured run.
//!
//! Every run gets its own database so that no run inherits another's completed rows, index
//! pages or WAL. To add a backend (PostgreSQL next), add a [`Backend`] variant, an arm in
//! [`Backend::fresh`] that creates an empty database or schema and returns its store, and an
//! arm in [`FreshStore::close`] that drops it; the scenarios only see `dyn JobStore`.

use std::sync::Arc;

use checkpoint_store::{JobStore, SqliteStore, StoreOptions};
use tempfile::TempDir;

/// Result type of the benchmark: any error ends the run with its message.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The job store implementations the benchmark can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// `SqliteStore` on a file in a fresh temporary directory, with the store's default options
    /// (WAL, synchronous=NORMAL, one writer connection, four readers).
    Sqlite,
}

impl Backend {
    /// A new, empty, migrated store.
    pub async fn fresh(self) -> BenchResult<FreshStore> {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new().prefix("quire-queue-bench-").tempdir()?;
                let store = SqliteStore::open(dir.path().join("quire.db"), StoreOptions::default()).await?;
                Ok(FreshStore { store: Arc::new(store.clone()), owned: Owned::Sqlite { store, _dir: dir } })
            }
        }
    }
}

/// A store made for one run, with whatever must be torn down after it.
pub struct FreshStore {
    /// The store, as the scenarios use it.
    pub store: Arc<dyn JobStore>,
    owned: Owned,
}

/// The backend-specific handle kept for teardown.
enum Owned {
    /// The temporary directory is deleted when dropped, after the pools are closed.
    Sqlite { store: SqliteStore, _dir: TempDir },
}

impl FreshStore {
    /// Closes the store's connections and deletes its database.
    pub async fn close(self) {
        match self.owned {
            Owned::Sqlite { store, _dir } => store.close().await,
        }
    }
}
