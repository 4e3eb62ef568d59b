//! The embedding stage's use of the AI service's Batch API: the settings, submitting a batch,
//! waiting on it, taking its results, and recovering a batch an earlier attempt submitted.

use std::sync::Arc;

use checkpoint_store::StoredChunk;
use embedder::{BatchInfo, BatchInput, BatchService, BatchState};
use stage_machine::BatchRef;
use tracing::{info, warn};

use super::stages::Attempt;
use super::stats::{PipelineStats, bump};
use crate::job::JobError;

/// How the embedding stage sends its inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EmbeddingMode {
    /// One request per planned batch, answered at once.
    Direct,
    /// Through the Batch API whenever there is anything to embed.
    Batch,
    /// Through the Batch API when more than [`Batching::threshold`] inputs are missing from the
    /// cache, directly otherwise.
    #[default]
    Auto,
}

/// The Batch API settings of the embedding stage.
#[derive(Clone)]
pub struct Batching {
    /// The service; `None` (the local embedder) always embeds directly.
    pub service: Option<Arc<dyn BatchService>>,
    /// Direct, batch or auto.
    pub mode: EmbeddingMode,
    /// In `auto` mode, documents with more inputs to embed than this use the Batch API.
    pub threshold: usize,
    /// First wait between two status checks of a running batch; doubles up to `max_poll_interval`.
    pub poll_interval: std::time::Duration,
    /// Longest wait between two status checks.
    pub max_poll_interval: std::time::Duration,
    /// Longest one attempt waits on a running batch before handing the job back (without using
    /// an attempt) to check again later, so that a batch taking hours never runs into the job's
    /// timeout nor holds a worker slot.
    pub max_wait_per_attempt: std::time::Duration,
}

impl Default for Batching {
    fn default() -> Batching {
        Batching {
            service: None,
            mode: EmbeddingMode::Auto,
            threshold: 500,
            poll_interval: std::time::Duration::from_secs(5),
            max_poll_interval: std::time::Duration::from_secs(60),
            max_wait_per_attempt: std::time::Duration::from_secs(10 * 60),
        }
    }
}

impl std::fmt::Debug for Batching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batching")
            .field("service", &self.service.is_some())
            .field("mode", &self.mode)
            .field("threshold", &self.threshold)
            .field("poll_interval", &self.poll_interval)
            .field("max_poll_interval", &self.max_poll_interval)
            .field("max_wait_per_attempt", &self.max_wait_per_attempt)
            .finish()
    }
}

impl Batching {
    /// Whether `missing` inputs go through the Batch API.
    pub(super) fn wants_batch(&self, missing: usize) -> bool {
        self.service.is_some()
            && missing > 0
            && match self.mode {
                EmbeddingMode::Direct => false,
                EmbeddingMode::Batch => true,
                EmbeddingMode::Auto => missing > self.threshold,
            }
    }
}

impl Attempt<'_> {
    /// Settles the batch recorded in the checkpoint by an earlier attempt, asking the service
    /// before anything else: completed → its results go into the cache; still running → wait on
    /// it; failed, expired or cancelled → forget it (partial results kept), and the caller submits
    /// the inputs still missing. An unreachable service is an ordinary retryable failure, and the
    /// batch stays recorded for the next attempt.
    pub(super) async fn resume_batch(&mut self, model: &str, dimensions: usize) -> Result<(), JobError> {
        let Some(batch) = self.checkpoint.facts.embedding_batch.clone() else { return Ok(()) };
        let service = match &self.pipeline.batching.service {
            Some(service) if batch.model.is_empty() || batch.model == model => service.clone(),
            _ => {
                // Another embedder or model now: its vectors would not belong in this cache key.
                warn!(batch_id = %batch.id, batch_model = %batch.model, model, "the recorded batch does not match the configured embedder; forgetting it");
                self.checkpoint.facts.embedding_batch = None;
                return self.save().await;
            }
        };
        info!(batch_id = %batch.id, inputs = batch.hashes_count, "an earlier attempt submitted a batch: asking the service about it first");
        let info = self.wait_for_batch(service.as_ref(), &batch.id).await?;
        let state = self.settle_batch(service.as_ref(), &batch, info, model, dimensions).await?;
        if state != BatchState::Completed {
            info!(batch_id = %batch.id, %state, "the recorded batch did not complete; submitting the missing inputs again");
        }
        Ok(())
    }

    /// Submits `missing` as one batch, records it in the checkpoint at once, waits for it and
    /// stores its results. A batch that fails, expires or is cancelled fails the attempt
    /// (retryable): the next attempt submits what is still missing.
    pub(super) async fn run_new_batch(
        &mut self,
        missing: &[&StoredChunk],
        per_input: usize,
        model: &str,
        dimensions: usize,
    ) -> Result<(), JobError> {
        let Some(service) = self.pipeline.batching.service.clone() else { return Ok(()) };
        let stats = &self.pipeline.stats;
        let inputs: Vec<BatchInput> = missing
            .iter()
            .map(|c| BatchInput {
                custom_id: c.content_hash.clone(),
                text: embedder::truncate_for_embedding(&c.text, per_input).to_owned(),
            })
            .collect();
        self.context.checkpoint_boundary()?;
        self.checkpoint.facts.ai_requests += 1;
        bump(&stats.embedding_requests, 1);
        let info = match service.submit(&inputs).await {
            Ok(info) => info,
            Err(error) => {
                let _ = self.save().await;
                return Err(error.into());
            }
        };
        bump(&stats.batches_submitted, 1);
        // The service is working (and billing) from now on: record the batch before anything
        // else can fail, so that every later attempt asks about it instead of paying again.
        let batch = BatchRef {
            id: info.id.clone(),
            input_file_id: info.input_file_id.clone(),
            created_at: self.now(),
            hashes_count: inputs.len() as u64,
            model: model.to_owned(),
        };
        self.checkpoint.facts.embedding_batch = Some(batch.clone());
        if let Err(error) = self.save().await {
            // Nobody would ever ask about this batch again: do not let it run for nothing.
            match service.cancel(&batch.id).await {
                Ok(after) => {
                    warn!(batch_id = %batch.id, state = %after.state, "could not record the batch; cancelled it")
                }
                Err(cancel) => {
                    warn!(batch_id = %batch.id, error = %cancel, "could not record the batch, nor cancel it")
                }
            }
            return Err(error);
        }
        info!(batch_id = %batch.id, inputs = inputs.len(), "embedding batch submitted");
        crash_point!("after_batch_created");
        let info = if info.state.is_running() { self.wait_for_batch(service.as_ref(), &batch.id).await? } else { info };
        let state = self.settle_batch(service.as_ref(), &batch, info.clone(), model, dimensions).await?;
        if state != BatchState::Completed {
            let why = info.errors.map(|e| format!(": {e}")).unwrap_or_default();
            return Err(JobError::Retryable(format!("embedding service: batch {} ended {state}{why}", batch.id)));
        }
        Ok(())
    }

    /// Asks the service about `batch_id` until it stops running, waiting longer between checks
    /// (from the configured poll interval, doubling up to the maximum). The worker heartbeats
    /// meanwhile; a lost lease stops at once, a shutdown hands the job back with the batch kept,
    /// an operator's cancel ends the job (and the caller cancels the batch on the service).
    async fn wait_for_batch(&self, service: &dyn BatchService, batch_id: &str) -> Result<BatchInfo, JobError> {
        let batching = &self.pipeline.batching;
        let mut delay = batching.poll_interval;
        let started = tokio::time::Instant::now();
        loop {
            self.context.checkpoint_boundary()?;
            let info = check_batch(&self.pipeline.stats, service, batch_id).await?;
            if !info.state.is_running() {
                return Ok(info);
            }
            if started.elapsed() >= batching.max_wait_per_attempt {
                // The batch id is in the checkpoint: the next attempt asks about it first.
                return Err(JobError::Deferred {
                    retry_after: delay,
                    reason: format!("waiting on embedding batch {batch_id} ({})", info.state),
                });
            }
            tracing::debug!(batch_id, state = %info.state, wait = ?delay, "batch still running");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.context.lease_lost.cancelled() => return Err(JobError::LeaseLost),
                () = self.context.cancel.cancelled() => return Err(JobError::Cancelled),
                () = self.context.shutdown.cancelled() => return Err(JobError::Interrupted),
            }
            delay = (delay * 2).min(batching.max_poll_interval.max(batching.poll_interval));
        }
    }

    /// Takes what a finished batch produced: its results (all of them when completed, the
    /// finished part when it expired or was cancelled) go into the cache, then the batch is
    /// forgotten. Returns the batch's final state.
    async fn settle_batch(
        &mut self,
        service: &dyn BatchService,
        batch: &BatchRef,
        info: BatchInfo,
        model: &str,
        dimensions: usize,
    ) -> Result<BatchState, JobError> {
        let stats = &self.pipeline.stats;
        let counter = match info.state {
            BatchState::Completed => &stats.batches_completed,
            BatchState::Failed => &stats.batches_failed,
            BatchState::Expired => &stats.batches_expired,
            _ => &stats.batches_cancelled,
        };
        bump(counter, 1);
        if let Some(output) = &info.output_file_id {
            match service.results(output).await {
                Ok(results) => {
                    if !results.failed.is_empty() {
                        let (id, reason) = &results.failed[0];
                        warn!(batch_id = %batch.id, failed = results.failed.len(), first = %id, %reason, "some batch requests failed");
                    }
                    let stored = results.vectors.len() as u64;
                    if stored > 0 {
                        self.pipeline
                            .store
                            .store_embeddings(self.context.lease, model, dimensions, &results.vectors)
                            .await?;
                    }
                    bump(&stats.inputs_batch, stored);
                    self.batch_inputs_this_attempt += stored;
                    let facts = &mut self.checkpoint.facts;
                    facts.ai_inputs += stored;
                    facts.embedding_pass_inputs += stored;
                    facts.embedded_chunks = facts.embedded_chunks.saturating_add(stored as u32);
                    info!(batch_id = %batch.id, state = %info.state, stored, "batch results stored in the embedding cache");
                }
                // Completed results are what this job waits for: try again later, batch kept.
                Err(error) if info.state == BatchState::Completed => return Err(error.into()),
                Err(error) => {
                    warn!(batch_id = %batch.id, %error, "could not download the partial results of a finished batch")
                }
            }
        } else if info.state == BatchState::Completed {
            warn!(batch_id = %batch.id, "the completed batch has no output file");
        }
        self.checkpoint.facts.embedding_batch = None;
        self.save().await?;
        Ok(info.state)
    }
}

/// One status check, counted by outcome.
pub(super) async fn check_batch(
    stats: &PipelineStats,
    service: &dyn BatchService,
    batch_id: &str,
) -> Result<BatchInfo, JobError> {
    match service.status(batch_id).await {
        Ok(info) => {
            bump(&stats.batch_checks_ok, 1);
            Ok(info)
        }
        Err(error) => {
            bump(&stats.batch_checks_failed, 1);
            warn!(batch_id, %error, "could not ask the embedding service about the batch");
            Err(error.into())
        }
    }
}
