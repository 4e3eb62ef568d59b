//! An operator's cancellation of a job, decided once for every backend. Backends only run the
//! statements.
//!
//! A job no worker holds (pending: new, retrying or postponed) is cancelled at once. A job a
//! worker holds is only asked to stop: nothing takes a job from a worker whose lease holds, so
//! the request is recorded on the row, the worker learns of it from its next heartbeat, stops
//! at the job's next stage boundary with its checkpoint kept, and records the cancellation
//! itself under its lease ([`JobStore::cancel_held`](crate::JobStore::cancel_held)). A job that
//! has finished (completed, failed, dead or cancelled) is refused: there is nothing to stop, and
//! `quire replay` is how an operator runs it again.
//!
//! A cancelled `process_document` job's document becomes `failed` with [`REASON`] as its error,
//! in the same transaction as the job: the document statuses say whether a book is usable, and
//! a cancelled book is not, until it is replayed (which sets it back to `pending`).

use crate::error::StoreError;
use crate::jobs::{Job, JobStatus};

/// Recorded as a cancelled job's last error and its document's error.
pub const REASON: &str = "cancelled by an operator";

/// What cancelling a job in its present state does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Not held by a worker: cancel it now.
    AtOnce,
    /// Held by a worker: record the request for the worker to honour.
    Request,
}

/// Decides what cancelling `job` does, or why it is refused.
pub(crate) fn plan(job: &Job) -> Result<Plan, StoreError> {
    match job.status {
        JobStatus::Pending => Ok(Plan::AtOnce),
        JobStatus::Processing => Ok(Plan::Request),
        JobStatus::Completed | JobStatus::Failed | JobStatus::Dead | JobStatus::Cancelled => {
            Err(StoreError::InvalidState {
                job_id: job.id,
                status: job.status.to_string(),
                reason: "only a pending or processing job can be cancelled; `quire replay` runs a finished job again"
                    .to_owned(),
            })
        }
    }
}
