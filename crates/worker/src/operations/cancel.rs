//! Cancelling a job (`quire jobs cancel`, `POST /v1/jobs/{id}/cancel`).
//!
//! A job no worker holds (pending: new, waiting for its retry, or postponed) is cancelled at
//! once, and a `process_document` job's document marked `failed` ("cancelled by an operator") in
//! the same transaction. A job a worker holds keeps its lease: the request is recorded, the
//! worker learns of it from its next heartbeat and stops the job at its next stage boundary,
//! keeping its checkpoint, then records it `cancelled` under its lease and cancels the Batch API
//! batch it may have left running. A finished job has nothing to stop and is refused; a
//! cancelled job is never retried nor dead-lettered, and `quire replay` queues it again.

use checkpoint_store::{Cancellation, JobId, JobStatus, JobStore, StoreError};

use super::OperationError;

/// Cancels job `id`, or asks its worker to; see the module documentation.
pub async fn cancel(store: &dyn JobStore, id: JobId) -> Result<Cancellation, OperationError> {
    match store.cancel(id).await {
        Ok(cancellation) => Ok(cancellation),
        Err(StoreError::JobNotFound(_)) => Err(OperationError::NoSuchJob(id)),
        Err(StoreError::InvalidState { job_id, status, reason }) => match status.parse::<JobStatus>() {
            Ok(status) => Err(OperationError::Finished { job_id, status }),
            Err(_) => Err(StoreError::InvalidState { job_id, status, reason }.into()),
        },
        Err(error) => Err(error.into()),
    }
}
