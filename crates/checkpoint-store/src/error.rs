//! The store's error type.

use crate::model::JobId;

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
    /// A value read from the database does not have the expected shape.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database URL is not one quire can use.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The database could not be reached or rejected a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// True when the caller lost its lease and must stop.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, StoreError::LeaseLost { .. })
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;
