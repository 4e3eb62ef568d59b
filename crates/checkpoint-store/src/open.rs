//! Choosing the backend: one place that turns where the database is into an open [`Store`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::Store;
use crate::error::{StoreError, StoreResult};
use crate::neighbours::VectorSnapshots;
use crate::postgres::{PgStore, PgStoreOptions};
use crate::retry_policy::RetryPolicy;
use crate::sqlite::{SqliteStore, SqliteStoreOptions};

/// Where the store's database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file, created if missing (the embedded default).
    SqliteFile(PathBuf),
    /// `sqlite://PATH` (with SQLite's URL options) or `postgres://…` / `postgresql://…`.
    Url(String),
}

/// What every backend is opened with; each backend's other settings keep their defaults.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Backoff between attempts after retryable failures and timeouts.
    pub retry_policy: RetryPolicy,
    /// Where in-process vector indexes keep their snapshots.
    pub vector_snapshots: VectorSnapshots,
    /// The PostgreSQL schema holding the tables; `None` keeps [`PgStoreOptions`]'s default.
    pub postgres_schema: Option<String>,
}

/// Opens the store at `location`, applying migrations: SQLite for a file or a `sqlite:` URL,
/// PostgreSQL for a `postgres:` or `postgresql:` URL. Any other URL is
/// [`StoreError::UnsupportedUrl`], naming only its scheme (a URL may carry a password).
pub async fn open(location: &StoreLocation, options: OpenOptions) -> StoreResult<Arc<dyn Store>> {
    let sqlite_options = || SqliteStoreOptions {
        retry_policy: options.retry_policy.clone(),
        vector_snapshots: options.vector_snapshots.clone(),
        ..SqliteStoreOptions::default()
    };
    match location {
        StoreLocation::SqliteFile(path) => Ok(Arc::new(SqliteStore::open(path, sqlite_options()).await?)),
        StoreLocation::Url(url) => match scheme(url) {
            Some("sqlite") => Ok(Arc::new(SqliteStore::open_url(url, sqlite_options()).await?)),
            Some("postgres" | "postgresql") => {
                let defaults = PgStoreOptions::default();
                let postgres_options = PgStoreOptions {
                    retry_policy: options.retry_policy.clone(),
                    vector_snapshots: options.vector_snapshots.clone(),
                    schema: options.postgres_schema.clone().unwrap_or(defaults.schema.clone()),
                    ..defaults
                };
                Ok(Arc::new(PgStore::connect(url, postgres_options).await?))
            }
            other => Err(StoreError::UnsupportedUrl(other.unwrap_or("").to_owned())),
        },
    }
}

/// The URL's scheme, lowercase letters only: what comes before the first `:`.
fn scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    (!scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))).then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_what_comes_before_the_first_colon() {
        assert_eq!(scheme("postgres://u:p@h/db"), Some("postgres"));
        assert_eq!(scheme("sqlite://quire.db?mode=rwc"), Some("sqlite"));
        assert_eq!(scheme("quire.db"), None);
        assert_eq!(scheme("we ird:x"), None);
    }

    #[tokio::test]
    async fn an_unsupported_url_names_its_scheme_and_never_its_password() {
        let location = StoreLocation::Url("mysql://admin:hunter2@db/quire".into());
        let error = open(&location, OpenOptions::default()).await.err().expect("mysql is not a backend");
        assert!(matches!(&error, StoreError::UnsupportedUrl(scheme) if scheme == "mysql"), "{error}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[tokio::test]
    async fn a_file_and_a_sqlite_url_open_the_same_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quire.db");
        let store = open(&StoreLocation::SqliteFile(path.clone()), OpenOptions::default()).await.unwrap();
        let payload = serde_json::json!({ "document_id": "d1" });
        let options = crate::EnqueueOptions::default();
        store.enqueue(crate::JobKind::ProcessDocument, payload, options).await.unwrap();
        drop(store);
        let url = format!("sqlite://{}", path.display());
        let again = open(&StoreLocation::Url(url), OpenOptions::default()).await.unwrap();
        assert_eq!(again.list_jobs(&crate::JobFilter::default()).await.unwrap().len(), 1);
    }
}
