//! The store's error type.

use crate::jobs::JobId;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller's lease on the job is gone (expired and taken over, timed out, released or
    /// finished). The caller must stop working on the job: nothing it writes will be accepted.
    #[error("lease on job {job_id} was lost")]
    LeaseLost {
        /// The job whose lease was lost.
        job_id: JobId,
    },
    /// No such job.
    #[error("job {0} not found")]
    JobNotFound(JobId),
    /// No such document.
    #[error("document {0} not found")]
    DocumentNotFound(String),
    /// The operation does not apply to the job in its current state.
    #[error("job {job_id} is {status}: {reason}")]
    InvalidState {
        /// The job.
        job_id: JobId,
        /// Its status.
        status: String,
        /// Why the operation does not apply.
        reason: String,
    },
    /// Queuing the job again would give its unique key a second pending-or-processing job: an
    /// operator's retry or replay while another job of the same key (a resubmission, a newer
    /// connection detection) is active. Nothing was changed.
    #[error(
        "job {job_id} cannot be queued again: job {holder} is active with the same unique key {unique_key:?}; \
         wait for it to finish"
    )]
    UniqueKeyTaken {
        /// The job asked for.
        job_id: JobId,
        /// Its unique key.
        unique_key: String,
        /// The active job holding the key.
        holder: JobId,
    },
    /// A value read from the database does not have the expected shape.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A query the store cannot answer as asked (e.g. a vector with the wrong dimension count).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A similarity index failed (out of memory, an internal error). Indexes are caches of the
    /// database, so nothing stored is affected.
    #[error("vector index: {0}")]
    VectorIndex(String),
    /// The database URL is not one quire can use.
    #[error("unsupported database URL scheme {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The database could not be reached or rejected a statement.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The lock that lets one process at a time migrate an SQLite file could not be taken.
    #[error("cannot lock {} to migrate the database: {source}", path.display())]
    MigrationLock {
        /// The lock file, beside the database.
        path: std::path::PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for StoreError {
    /// A column that does not decode into its row field (a count out of range, malformed JSON)
    /// is a corrupt row; everything else is the database's own error.
    fn from(error: sqlx::Error) -> StoreError {
        match error {
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => StoreError::Corrupt(error.to_string()),
            error => StoreError::Database(error),
        }
    }
}

impl StoreError {
    /// True when the operation was refused because of the job's state or another job's (a
    /// conflict to report, not a failure of the store): the job is not in a state the operation
    /// applies to, is gone, or another active job holds its unique key.
    pub fn is_refusal(&self) -> bool {
        matches!(self, StoreError::InvalidState { .. } | StoreError::JobNotFound(_) | StoreError::UniqueKeyTaken { .. })
    }

    /// True when the caller lost its lease and must stop.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, StoreError::LeaseLost { .. })
    }

    /// True when the database itself was out of reach (a dropped or refused connection, an
    /// exhausted or closed pool, a server shutting down): nothing about the job caused it, and
    /// the same statement will succeed once the database is back.
    pub fn is_connection_loss(&self) -> bool {
        match self {
            StoreError::Database(error) => match error {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(database) => database.code().is_some_and(|code| {
                    // SQLSTATE class 08 (connection exception) and 57P01–57P03 (the server is
                    // shutting down, crashed, or not accepting connections yet).
                    code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_loss_is_told_apart_from_other_failures() {
        let lost = [
            StoreError::Database(sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))),
            StoreError::Database(sqlx::Error::PoolTimedOut),
            StoreError::Database(sqlx::Error::PoolClosed),
        ];
        for error in lost {
            assert!(error.is_connection_loss(), "{error}");
        }
        let other = [
            StoreError::Database(sqlx::Error::RowNotFound),
            StoreError::LeaseLost { job_id: JobId(1) },
            StoreError::Corrupt("x".into()),
        ];
        for error in other {
            assert!(!error.is_connection_loss(), "{error}");
        }
    }
}
