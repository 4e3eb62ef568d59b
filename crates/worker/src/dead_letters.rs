//! Bringing dead-lettered jobs back (`quire dlq retry`), one job at a time through
//! [`JobStore::retry_dead`], which requeues each with its document in one transaction.
//!
//! A job that cannot come back (another active job holds its unique key, or it left the
//! dead-letter queue meanwhile) is a refusal to report, not a reason to stop: the others are
//! still retried. A failure of the store itself stops the run.

use checkpoint_store::{Job, JobId, JobStore, StoreError, StoreResult};

/// What retrying a list of dead-lettered jobs did.
#[derive(Debug, Default)]
pub struct DeadLetterRetries {
    /// The jobs back in the queue, as they are now, in the order asked.
    pub retried: Vec<Job>,
    /// The jobs left as they were, with the store's reason, in the order asked.
    pub refused: Vec<(JobId, StoreError)>,
}

/// Retries each of `ids` that can be retried; see the module documentation.
pub async fn retry_dead_letters(store: &dyn JobStore, ids: &[JobId]) -> StoreResult<DeadLetterRetries> {
    let mut retries = DeadLetterRetries::default();
    for &id in ids {
        match store.retry_dead(id).await {
            Ok(job) => retries.retried.push(job),
            Err(error) if error.is_refusal() => retries.refused.push((id, error)),
            Err(error) => return Err(error),
        }
    }
    Ok(retries)
}
