//! What a handler gets and what it reports.

use std::time::Duration;

use async_trait::async_trait;
use checkpoint_store::{Job, Lease, StoreError};
use embedder::EmbedError;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// How an attempt ended, when it did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// No retry can fix this (a broken book, a rejected request). Dead-letters the job.
    #[error("{0}")]
    Permanent(String),
    /// Another attempt may succeed. Retried with backoff while attempts remain.
    #[error("{0}")]
    Retryable(String),
    /// The AI service asked us to wait. The job is postponed without using an attempt.
    #[error("rate limited; retry after {}s", retry_after.as_secs())]
    RateLimited {
        /// How long the service asked us to wait.
        retry_after: Duration,
    },
    /// The worker is shutting down; the job stopped at a stage boundary with its checkpoint
    /// saved. It is postponed without using an attempt.
    #[error("interrupted by shutdown")]
    Interrupted,
    /// Nothing is wrong with the job, but it cannot progress now: it waits on work the AI
    /// service is doing, or the database dropped the connection. It is postponed by
    /// `retry_after` without using an attempt, its checkpoint kept.
    #[error("deferred for {}s: {reason}", retry_after.as_secs())]
    Deferred {
        /// How long to wait before the next attempt.
        retry_after: Duration,
        /// What the job waits for.
        reason: String,
    },
    /// The AI service refuses the account (a bad key, no access, no credit left): no book can
    /// progress until an operator acts, and nothing is wrong with this one. The job is postponed
    /// without using an attempt, its checkpoint kept, and the worker pauses its AI work.
    #[error("the embedding service refuses this account: {0}")]
    AccountRefused(String),
    /// The lease was lost; nothing more may be written.
    #[error("lease lost")]
    LeaseLost,
    /// An operator asked to cancel the job; it stopped at a stage boundary with its checkpoint
    /// saved. It is recorded `cancelled` under its lease, and never retried.
    #[error("cancelled by an operator")]
    Cancelled,
}

impl From<StoreError> for JobError {
    fn from(error: StoreError) -> JobError {
        match error {
            StoreError::LeaseLost { .. } => JobError::LeaseLost,
            // The book is not at fault: spend no attempt on a database that went away.
            error if error.is_connection_loss() => JobError::Deferred {
                retry_after: Duration::from_secs(5),
                reason: format!("database unavailable: {error}"),
            },
            // A row that cannot be read will not read better next time.
            StoreError::Corrupt(reason) => JobError::Permanent(format!("corrupt data: {reason}")),
            StoreError::DocumentNotFound(id) => JobError::Permanent(format!("document {id} does not exist")),
            // A vector of the wrong size for its model will not change size on a retry.
            StoreError::InvalidQuery(reason) => JobError::Permanent(format!("invalid query: {reason}")),
            other => JobError::Retryable(other.to_string()),
        }
    }
}

impl From<EmbedError> for JobError {
    fn from(error: EmbedError) -> JobError {
        match error {
            EmbedError::RateLimited { retry_after } => JobError::RateLimited { retry_after },
            EmbedError::Retryable(reason) => JobError::Retryable(format!("embedding service: {reason}")),
            EmbedError::Permanent(reason) => JobError::Permanent(format!("embedding service: {reason}")),
            EmbedError::AccountRefused(reason) => JobError::AccountRefused(reason),
        }
    }
}

/// What an attempt gets besides the job.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The lease every write is fenced with.
    pub lease: Lease,
    /// Which attempt this is, from 1 (the job's leases so far, this one included).
    pub attempt: u32,
    /// Cancelled when the lease is lost; handlers stop at once and write nothing more.
    pub lease_lost: CancellationToken,
    /// Cancelled when a shutting-down worker's grace period is over; handlers stop at the next
    /// stage boundary, their checkpoint saved.
    pub shutdown: CancellationToken,
    /// Cancelled when an operator asked to cancel the job (the worker learns it from a
    /// heartbeat); handlers stop at the next stage boundary, their checkpoint saved, as for a
    /// shutdown, but the job ends `cancelled` instead of being handed back.
    pub cancel: CancellationToken,
}

impl JobContext {
    /// Returns the error that ends the attempt, if the lease is gone, an operator cancelled the
    /// job, or shutdown was asked for. Called at stage boundaries.
    pub fn checkpoint_boundary(&self) -> Result<(), JobError> {
        if self.lease_lost.is_cancelled() {
            return Err(JobError::LeaseLost);
        }
        // A cancelled job is not handed back to run again, even by a worker shutting down.
        if self.cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        if self.shutdown.is_cancelled() {
            return Err(JobError::Interrupted);
        }
        Ok(())
    }
}

/// Runs jobs of one kind.
#[async_trait]
pub trait JobHandler: Send + Sync {
    /// Runs one attempt. On success, returns what the job's `result` should hold.
    async fn run(&self, job: &Job, context: &JobContext) -> Result<Value, JobError>;

    /// Whether the jobs need the AI service. While the service asks to wait (a rate limit, a
    /// refused account), a worker leases only jobs whose handler says no.
    fn needs_ai_service(&self) -> bool;

    /// Called after the job was dead-lettered, outside any lease, to undo what the job left
    /// running (a work directory, a Batch API batch). The store has already recorded the job and
    /// its document. Does nothing by default.
    async fn dead_lettered(&self, job: &Job) {
        let _ = job;
    }

    /// Called after the job was cancelled at an operator's request, outside any lease, to undo
    /// what the job left running (a Batch API batch). The store has already recorded the job
    /// and its document. Does nothing by default.
    async fn cancelled(&self, job: &Job) {
        let _ = job;
    }
}
