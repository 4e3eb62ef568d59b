//! How much work the pipeline did, counted as it happens, for metrics and for the tests that
//! prove work was not redone.

use stage_machine::Stage;

/// How much work the pipeline did, for metrics and for tests that prove work was not redone.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Books extracted.
    pub extractions: std::sync::atomic::AtomicU64,
    /// Markdown documents chunked.
    pub chunkings: std::sync::atomic::AtomicU64,
    /// Embedding requests sent.
    pub embedding_requests: std::sync::atomic::AtomicU64,
    /// Chunks whose embedding came from the cache.
    pub embedding_cache_hits: std::sync::atomic::AtomicU64,
    /// Connection detections run.
    pub detections: std::sync::atomic::AtomicU64,
    /// How long each working stage took, from its start to its milestone:
    /// extracting, saving_markdown, chunking, embedding.
    pub stage_durations: [crate::histogram::DurationHistogram; 4],
    /// Batch API status checks that got an answer.
    pub batch_checks_ok: std::sync::atomic::AtomicU64,
    /// Batch API status checks that failed (service unreachable, refused, unreadable).
    pub batch_checks_failed: std::sync::atomic::AtomicU64,
    /// Batches submitted to the Batch API.
    pub batches_submitted: std::sync::atomic::AtomicU64,
    /// Batches found completed (their results were fetched).
    pub batches_completed: std::sync::atomic::AtomicU64,
    /// Batches found failed.
    pub batches_failed: std::sync::atomic::AtomicU64,
    /// Batches found expired.
    pub batches_expired: std::sync::atomic::AtomicU64,
    /// Batches found cancelled.
    pub batches_cancelled: std::sync::atomic::AtomicU64,
    /// Batches this worker asked the service to cancel (their job was dead-lettered).
    pub batch_cancel_requests: std::sync::atomic::AtomicU64,
    /// Inputs embedded by direct requests.
    pub inputs_direct: std::sync::atomic::AtomicU64,
    /// Inputs embedded through the Batch API (results stored in the cache).
    pub inputs_batch: std::sync::atomic::AtomicU64,
}

impl PipelineStats {
    /// The working stages whose durations are kept, in the order of `stage_durations`.
    pub const TIMED_STAGES: [Stage; 4] = [Stage::Extracting, Stage::SavingMarkdown, Stage::Chunking, Stage::Embedding];

    pub(super) fn observe_stage(&self, stage: Stage, duration: std::time::Duration) {
        if let Some(index) = Self::TIMED_STAGES.iter().position(|&timed| timed == stage) {
            self.stage_durations[index].observe(duration);
        }
    }
}

pub(super) fn bump(counter: &std::sync::atomic::AtomicU64, by: u64) {
    counter.fetch_add(by, std::sync::atomic::Ordering::Relaxed);
}
