//! Every action an operator takes on the queue, in one place: replaying a job, cancelling one,
//! retrying and purging dead letters, taking back jobs whose worker is gone, and recording a
//! dead letter's failure on its document. The CLI (`quire replay`, `jobs cancel`, `dlq`,
//! `clean`) and the HTTP API call these
//! functions and keep only their own parsing, confirmation and printing, so a rule of the queue
//! is never written twice.
//!
//! Each function works over the store traits (`&dyn JobStore`, `&dyn DocumentStore`), and its
//! answer serialises with serde, for a terminal's `--json` and an HTTP body alike. Where an
//! action changes a job and its document, the store does both in one transaction
//! ([`JobStore::retry_dead`](checkpoint_store::JobStore::retry_dead),
//! [`JobStore::requeue_with_checkpoint`](checkpoint_store::JobStore::requeue_with_checkpoint),
//! [`JobStore::take_back_stale`](checkpoint_store::JobStore::take_back_stale)): these functions
//! decide, the store writes.

mod cancel;
mod dead_letters;
mod replay;
mod stale;

pub use cancel::cancel;
pub use dead_letters::{
    DeadLetterRetries, MAX_DEAD_LETTERS_LISTED, Purged, RefusedRetry, dead_letters, purge_dead_letters,
    purgeable_dead_letters, retry_all_dead_letters, retry_dead_letters,
};
pub use replay::{ReplayFrom, ReplayResult, Replayed, replay, replay_result};
pub use stale::{StaleJob, TakeBackAction, TakenBack, stale_jobs, take_back_stale};

use checkpoint_store::{JobId, JobKind, JobStatus, StoreError};
use stage_machine::Stage;

/// Why an operator's action was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// No job has this id.
    #[error("no job {0}")]
    NoSuchJob(JobId),
    /// The job is held by a worker; only its own lease, or its expiry, may take it back.
    #[error("job {0} is processing; wait for it, or take it back with `quire clean` if its worker is gone")]
    Processing(JobId),
    /// A replay from a stage was asked of a job that has no stages.
    #[error("job {job_id} is a {kind} job, which has no stages; replay it from its checkpoint or fresh")]
    NoStages {
        /// The job.
        job_id: JobId,
        /// Its kind.
        kind: JobKind,
    },
    /// A replay from a stage that is not a working stage (`pending`, `complete`, `failed`).
    #[error("cannot replay from {stage}; use one of: {}", replayable_stage_names())]
    NotReplayable {
        /// The stage asked for.
        stage: Stage,
    },
    /// A replay from the checkpoint of a job that has completed every stage would do nothing.
    #[error("job {0} has completed every stage, so resuming it would do nothing; replay it from a stage or fresh")]
    NothingToResume(JobId),
    /// A cancel of a job that has finished: there is nothing to stop.
    #[error(
        "job {job_id} is {status}: only a pending or processing job can be cancelled; `quire replay` runs it again"
    )]
    Finished {
        /// The job.
        job_id: JobId,
        /// Its status: completed, failed, dead or cancelled.
        status: JobStatus,
    },
    /// The store refused the change or could not make it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stages a replay may start from, comma-separated, for messages.
pub fn replayable_stage_names() -> String {
    Stage::rewind_targets().map(|stage| stage.to_string()).collect::<Vec<_>>().join(", ")
}
