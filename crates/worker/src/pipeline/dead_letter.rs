//! What a `process_document` job that will not run again leaves behind, when it is dead-lettered
//! or cancelled by an operator: the work directory is removed and a batch still running on the
//! service is cancelled. Its document was marked failed by the store, in the transaction that
//! ended the job.

use checkpoint_store::Job;
use embedder::BatchState;
use tracing::{info, warn};

use super::ProcessDocument;
use super::batch::check_batch;
use super::stats::bump;

/// Why a job's batch is abandoned, for the log.
#[derive(Debug, Clone, Copy)]
enum Abandoned {
    DeadLettered,
    Cancelled,
}

impl Abandoned {
    fn job(self) -> &'static str {
        match self {
            Abandoned::DeadLettered => "dead-lettered job",
            Abandoned::Cancelled => "cancelled job",
        }
    }
}

impl ProcessDocument {
    /// Removes a dead-lettered job's work directory and cancels its abandoned batch.
    pub(super) async fn clean_up_dead_job(&self, job: &Job) {
        self.abandon(job, Abandoned::DeadLettered).await;
    }

    /// Removes a cancelled job's work directory and cancels its abandoned batch. Its checkpoint
    /// stays in the store: a replay resumes from it (extracting again if the work directory's
    /// markdown is needed), and asks the service about the batch it records first.
    pub(super) async fn clean_up_cancelled_job(&self, job: &Job) {
        self.abandon(job, Abandoned::Cancelled).await;
    }

    async fn abandon(&self, job: &Job, why: Abandoned) {
        let _ = std::fs::remove_dir_all(self.0.data_dir.root().join("work").join(job.id.0.to_string()));
        self.cancel_abandoned_batch(job, why).await;
    }

    /// A job that will not run again will never collect its batch: cancel it on the service
    /// unless it already finished. Logged either way; failures change nothing else.
    async fn cancel_abandoned_batch(&self, job: &Job, why: Abandoned) {
        let pipeline = &self.0;
        let Some(service) = &pipeline.batching.service else { return };
        // `job` may be the copy leased before the attempt that submitted the batch.
        let current = pipeline.store.job(job.id).await.ok().flatten();
        let Some(batch) = current.as_ref().unwrap_or(job).checkpoint().facts.embedding_batch else { return };
        let whose = why.job();
        match check_batch(&pipeline.stats, service.as_ref(), &batch.id).await {
            Ok(info) if !info.state.is_running() || info.state == BatchState::Cancelling => {
                info!(job_id = %job.id, batch_id = %batch.id, state = %info.state, "{whose}'s batch already finished; not cancelling");
                return;
            }
            Ok(_) => {}
            Err(_) => info!(job_id = %job.id, batch_id = %batch.id, "cancelling the batch without knowing its state"),
        }
        bump(&pipeline.stats.batch_cancel_requests, 1);
        match service.cancel(&batch.id).await {
            Ok(after) => {
                info!(job_id = %job.id, batch_id = %batch.id, state = %after.state, "cancelled the {whose}'s batch")
            }
            Err(error) => {
                warn!(job_id = %job.id, batch_id = %batch.id, %error, "could not cancel the {whose}'s batch")
            }
        }
    }
}
