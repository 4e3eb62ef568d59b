//! Taking back processing jobs whose worker is gone (`quire clean`).
//!
//! [`stale_jobs`] lists the processing jobs whose lease has expired (and, with `silent_for`,
//! that have also been silent that long); [`take_back_stale`] hands them to
//! [`JobStore::take_back_stale`], which judges each one again inside its transaction: a job
//! renewed since the listing stays with its worker. A lease is the worker's own promise of how
//! long it may stay silent, so this never takes back a live job, whatever its lease and
//! heartbeat interval. A requeued job resumes from its checkpoint; a job out of attempts is
//! dead-lettered and, in the same transaction, its document marked failed, as its worker's
//! dead-letter hook would.

use std::time::Duration;

use checkpoint_store::{Job, JobId, JobKind, JobStore, RecoveryAction, StoreResult};
use serde::{Deserialize, Serialize};
use stage_machine::{Stage, UnixMillis};

/// A processing job whose worker looks gone, as listed before taking it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleJob {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: JobKind,
    /// The document it works on.
    pub document_id: Option<String>,
    /// The worker holding its expired lease.
    pub owner: Option<String>,
    /// Attempts used, this one included.
    pub attempts: u32,
    /// Attempts allowed: a job taken back with none left is dead-lettered.
    pub max_attempts: u32,
    /// The stage its checkpoint says it was in.
    pub stage: Stage,
    /// Seconds since the attempt was leased.
    pub running_for_seconds: u64,
    /// Seconds since the last heartbeat (or the lease, if none came).
    pub silent_for_seconds: u64,
}

impl StaleJob {
    fn new(job: &Job, now: UnixMillis) -> StaleJob {
        StaleJob {
            id: job.id,
            kind: job.kind,
            document_id: job.document_id().map(str::to_owned),
            owner: job.lock_owner.clone(),
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            stage: job.checkpoint().processing_stage,
            running_for_seconds: seconds_since(now, job.started_at),
            silent_for_seconds: seconds_since(now, job.last_heartbeat.or(job.started_at)),
        }
    }
}

fn seconds_since(now: UnixMillis, since: Option<UnixMillis>) -> u64 {
    since.map_or(0, |since| u64::try_from(now - since).unwrap_or(0) / 1000)
}

/// The processing jobs whose lease has expired and, when `silent_for` is given, whose last sign
/// of life is also at least that old, the longest expired first; ages measured at `now`.
pub async fn stale_jobs(
    store: &dyn JobStore,
    silent_for: Option<Duration>,
    now: UnixMillis,
) -> StoreResult<Vec<StaleJob>> {
    Ok(store.stale_jobs(silent_for).await?.iter().map(|job| StaleJob::new(job, now)).collect())
}

/// What taking back a listed job did to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TakeBackAction {
    /// Back to pending; it resumes from its checkpoint.
    Requeued,
    /// Out of attempts: dead-lettered, its document marked failed.
    DeadLettered,
    /// Its lease was renewed, or it finished, since the listing: still its worker's.
    LeftAlone,
}

impl From<RecoveryAction> for TakeBackAction {
    fn from(action: RecoveryAction) -> TakeBackAction {
        match action {
            RecoveryAction::Requeued => TakeBackAction::Requeued,
            RecoveryAction::DeadLettered => TakeBackAction::DeadLettered,
        }
    }
}

/// One listed job after [`take_back_stale`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TakenBack {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: JobKind,
    /// The document it works on.
    pub document_id: Option<String>,
    /// What was done.
    pub action: TakeBackAction,
    /// Attempts used.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
}

/// Takes back the `listed` jobs that still qualify (`silent_for` as they were listed with), in
/// one transaction, and says what became of each, in the listing's order.
pub async fn take_back_stale(
    store: &dyn JobStore,
    listed: &[StaleJob],
    silent_for: Option<Duration>,
) -> StoreResult<Vec<TakenBack>> {
    let ids: Vec<JobId> = listed.iter().map(|job| job.id).collect();
    let recoveries = store.take_back_stale(&ids, silent_for).await?;
    let outcomes = listed.iter().map(|job| {
        let recovery = recoveries.iter().find(|recovery| recovery.job_id == job.id);
        TakenBack {
            id: job.id,
            kind: job.kind,
            document_id: job.document_id.clone(),
            action: recovery.map_or(TakeBackAction::LeftAlone, |recovery| recovery.action.into()),
            attempts: recovery.map_or(job.attempts, |recovery| recovery.attempts),
            max_attempts: recovery.map_or(job.max_attempts, |recovery| recovery.max_attempts),
        }
    });
    Ok(outcomes.collect())
}
