//! What happens when a `process_document` job is dead-lettered: the document is marked failed,
//! the work directory removed and a batch still running on the service cancelled.

use checkpoint_store::Job;
use embedder::BatchState;
use tracing::{info, warn};

use super::ProcessDocument;
use super::batch::check_batch;
use super::stats::bump;
use crate::operations;

impl ProcessDocument {
    /// Records a dead-lettered job's failure where users look for it (the document's status),
    /// removes its work directory and cancels its abandoned batch.
    pub(super) async fn clean_up_dead_job(&self, job: &Job, reason: &str) {
        if let Err(error) = operations::fail_document_of_dead_job(self.0.store.as_ref(), job, reason).await {
            warn!(%error, document_id = job.document_id(), "could not mark the document failed");
        }
        let _ = std::fs::remove_dir_all(self.0.data_dir.root().join("work").join(job.id.0.to_string()));
        self.cancel_abandoned_batch(job).await;
    }

    /// A dead job will never collect its batch: cancel it on the service unless it already
    /// finished. Logged either way; failures change nothing else.
    async fn cancel_abandoned_batch(&self, job: &Job) {
        let pipeline = &self.0;
        let Some(service) = &pipeline.batching.service else { return };
        // `job` may be the copy leased before the attempt that submitted the batch.
        let current = pipeline.store.job(job.id).await.ok().flatten();
        let Some(batch) = current.as_ref().unwrap_or(job).checkpoint().facts.embedding_batch else { return };
        match check_batch(&pipeline.stats, service.as_ref(), &batch.id).await {
            Ok(info) if !info.state.is_running() || info.state == BatchState::Cancelling => {
                info!(job_id = %job.id, batch_id = %batch.id, state = %info.state, "dead-lettered job's batch already finished; not cancelling");
                return;
            }
            Ok(_) => {}
            Err(_) => info!(job_id = %job.id, batch_id = %batch.id, "cancelling the batch without knowing its state"),
        }
        bump(&pipeline.stats.batch_cancel_requests, 1);
        match service.cancel(&batch.id).await {
            Ok(after) => {
                info!(job_id = %job.id, batch_id = %batch.id, state = %after.state, "cancelled the dead-lettered job's batch")
            }
            Err(error) => {
                warn!(job_id = %job.id, batch_id = %batch.id, %error, "could not cancel the dead-lettered job's batch")
            }
        }
    }
}
