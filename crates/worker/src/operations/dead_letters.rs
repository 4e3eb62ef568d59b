//! The dead-letter queue: listing it, bringing jobs back (`quire dlq retry`), purging it, and
//! recording a dead job's failure on its document.
//!
//! A retry goes one job at a time through [`JobStore::retry_dead`], which requeues the job with
//! its document in one transaction. A job that cannot come back (another active job holds its
//! unique key, or it left the dead-letter queue meanwhile) is a refusal to report, not a reason
//! to stop: the others are still retried. A failure of the store itself stops the run.

use std::time::Duration;

use checkpoint_store::{Job, JobFilter, JobId, JobStatus, JobStore, StoreError, StoreResult};
use serde::{Serialize, Serializer};
use stage_machine::UnixMillis;

/// Dead jobs listed (and retried by [`retry_all_dead_letters`]) at most.
pub const MAX_DEAD_LETTERS_LISTED: u32 = 10_000;

/// The dead-lettered jobs, newest first, at most [`MAX_DEAD_LETTERS_LISTED`].
pub async fn dead_letters(store: &dyn JobStore) -> StoreResult<Vec<Job>> {
    let filter =
        JobFilter { status: Some(JobStatus::Dead), limit: Some(MAX_DEAD_LETTERS_LISTED), ..Default::default() };
    store.list_jobs(&filter).await
}

/// What retrying a list of dead-lettered jobs did.
#[derive(Debug, Default, Serialize)]
pub struct DeadLetterRetries {
    /// The jobs back in the queue, as they are now, in the order asked.
    pub retried: Vec<Job>,
    /// The jobs left as they were, in the order asked.
    pub refused: Vec<RefusedRetry>,
}

/// A dead-lettered job the store would not bring back.
#[derive(Debug, Serialize)]
pub struct RefusedRetry {
    /// The job asked for.
    pub job_id: JobId,
    /// The job as it is now, unchanged; `None` when it is no longer stored (purged meanwhile).
    pub job: Option<Job>,
    /// The store's reason: another active job holds its unique key, or it is not dead.
    #[serde(serialize_with = "as_text")]
    pub reason: StoreError,
}

fn as_text<S: Serializer>(error: &StoreError, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(error)
}

/// Retries each of `ids` that can be retried; see the module documentation.
pub async fn retry_dead_letters(store: &dyn JobStore, ids: &[JobId]) -> StoreResult<DeadLetterRetries> {
    let mut retries = DeadLetterRetries::default();
    for &job_id in ids {
        match store.retry_dead(job_id).await {
            Ok(job) => retries.retried.push(job),
            Err(reason) if reason.is_refusal() => {
                let job = store.job(job_id).await?;
                retries.refused.push(RefusedRetry { job_id, job, reason });
            }
            Err(error) => return Err(error),
        }
    }
    Ok(retries)
}

/// Retries every dead-lettered job [`dead_letters`] lists.
pub async fn retry_all_dead_letters(store: &dyn JobStore) -> StoreResult<DeadLetterRetries> {
    let ids: Vec<JobId> = dead_letters(store).await?.iter().map(|job| job.id).collect();
    retry_dead_letters(store, &ids).await
}

/// How many dead-lettered jobs [`purge_dead_letters`] would delete at `now`: those that finished
/// at least `older_than` before it.
pub async fn purgeable_dead_letters(store: &dyn JobStore, older_than: Duration, now: UnixMillis) -> StoreResult<usize> {
    let before = now.saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
    let dead = dead_letters(store).await?;
    Ok(dead.iter().filter(|job| job.finished_at.is_some_and(|at| at <= before)).count())
}

/// What purging the dead-letter queue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Purged {
    /// Jobs deleted for good.
    pub purged: u64,
}

/// Deletes, for good, the dead-lettered jobs that finished at least `older_than` ago: the only
/// way a job ever leaves the table.
pub async fn purge_dead_letters(store: &dyn JobStore, older_than: Duration) -> StoreResult<Purged> {
    Ok(Purged { purged: store.purge_dead(older_than).await? })
}
