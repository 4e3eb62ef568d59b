//! Where the queue under test lives: one fresh, empty store per measured run.
//!
//! Every run gets its own database so that no run inherits another's completed rows, index
//! pages or WAL. To add a backend, add a [`Backend`] variant, an arm in
//! [`Backend::fresh`] that creates an empty database or schema and returns its store, and an
//! arm in [`FreshStore::close`] that drops it; the scenarios only see `dyn JobStore`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use checkpoint_store::{JobStore, PgStore, PgStoreOptions, SqliteStore, SqliteStoreOptions};
use tempfile::TempDir;

/// The environment variable naming the PostgreSQL server for `--backend postgres`.
pub const DATABASE_URL_VAR: &str = "QUIRE_BENCH_DATABASE_URL";

/// Result type of the benchmark: any error ends the run with its message.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The job store implementations the benchmark can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// `SqliteStore` on a file in a fresh temporary directory, with the store's default options
    /// (WAL, synchronous=NORMAL, one writer connection, four readers).
    Sqlite,
    /// `PgStore` on a fresh schema (`quire_bench_<pid>_<n>`, dropped after the run) of the
    /// database named by `QUIRE_BENCH_DATABASE_URL`, with the store's default options (a pool
    /// of 10 connections, the server's clock).
    Postgres,
}

impl Backend {
    /// A new, empty, migrated store.
    pub async fn fresh(self) -> BenchResult<FreshStore> {
        self.fresh_at(None).await
    }

    /// As [`Backend::fresh`], with the PostgreSQL URL given (`--database-url`) instead of taken
    /// from `QUIRE_BENCH_DATABASE_URL`.
    pub async fn fresh_at(self, database_url: Option<&str>) -> BenchResult<FreshStore> {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new().prefix("quire-queue-bench-").tempdir()?;
                let store = SqliteStore::open(dir.path().join("quire.db"), SqliteStoreOptions::default()).await?;
                Ok(FreshStore { store: Arc::new(store.clone()), owned: Owned::Sqlite { store, _dir: dir } })
            }
            Backend::Postgres => {
                static RUN: AtomicU32 = AtomicU32::new(0);
                let url = database_url
                    .map(str::to_owned)
                    .or_else(|| std::env::var(DATABASE_URL_VAR).ok())
                    .filter(|url| !url.trim().is_empty())
                    .ok_or_else(|| format!("--backend postgres needs {DATABASE_URL_VAR} (a postgres://… URL)"))?;
                let schema = format!("quire_bench_{}_{}", std::process::id(), RUN.fetch_add(1, Ordering::Relaxed));
                let store = PgStore::connect(&url, PgStoreOptions { schema, ..PgStoreOptions::default() }).await?;
                Ok(FreshStore { store: Arc::new(store.clone()), owned: Owned::Postgres { store } })
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
    /// The schema is dropped, then the pool closed.
    Postgres { store: PgStore },
}

impl FreshStore {
    /// The store as a worker that gets no job signal sees it: on SQLite a second store on the
    /// same file (as a worker in another process has, which this process's commits do not
    /// signal), on PostgreSQL the same store with the notifying trigger dropped.
    pub async fn without_job_signal(&self) -> BenchResult<Arc<dyn JobStore>> {
        match &self.owned {
            Owned::Sqlite { _dir, .. } => {
                let other = SqliteStore::open(_dir.path().join("quire.db"), SqliteStoreOptions::default()).await?;
                Ok(Arc::new(other))
            }
            Owned::Postgres { store } => {
                sqlx::query("DROP TRIGGER jobs_notify_pending ON jobs").execute(store.pool()).await?;
                Ok(self.store.clone())
            }
        }
    }

    /// Drops the trigger that records every ended attempt (`job_attempts`), for a baseline run
    /// of what that history costs.
    pub async fn drop_attempt_history(&self) -> BenchResult<()> {
        match &self.owned {
            Owned::Sqlite { store, .. } => {
                sqlx::query("DROP TRIGGER jobs_record_attempt_end").execute(store.writer_pool()).await?;
            }
            Owned::Postgres { store } => {
                sqlx::query("DROP TRIGGER jobs_record_attempt_end ON jobs").execute(store.pool()).await?;
            }
        }
        Ok(())
    }

    /// Closes the store's connections and deletes its database.
    pub async fn close(self) {
        match self.owned {
            Owned::Sqlite { store, _dir } => store.close().await,
            Owned::Postgres { store } => {
                // The name was made above from digits and `_`: safe to interpolate.
                let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", store.schema());
                if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(drop.clone())).execute(store.pool()).await {
                    eprintln!("warning: could not drop schema {}: {error}", store.schema());
                }
                store.close().await;
            }
        }
    }
}
