//! The two job handlers: `process_document` (extract → save markdown → chunk → embed) and
//! `detect_connections`.
//!
//! `process_document` checkpoints after every stage through the fenced store call, and on a
//! retry resumes at [`Checkpoint::resume_stage`](stage_machine::Checkpoint::resume_stage):
//! extraction is not redone once its markdown is saved, chunks are replaced only when the resume
//! stage says so (and then in one transaction with the new ones), and embeddings already in the
//! cache are never requested again.
//!
//! The code is split by concern: `stats` counts the work done, `stages` runs one attempt of
//! `process_document` stage by stage, `embed` is its embedding stage, `batch` its use of the
//! Batch API and the recovery of a batch an earlier attempt submitted, `dead_letter` what
//! happens to a dead-lettered job, and `connections` the `detect_connections` handler.

use std::path::PathBuf;
use std::sync::Arc;

use checkpoint_store::{Clock, Job, JobKind, Store};
use chunker::ChunkerConfig;
use embedder::Embedder;

use crate::data_dir::DataDir;
use crate::isolation::Isolation;
use crate::job::JobError;
use crate::payload::JobPayload;

/// A named failpoint for the crash tests, compiled out unless the `failpoints` feature is on.
///
/// Configured (through `FAILPOINTS` or `fail::cfg`) to `return`, it ends the attempt as a crash
/// would: nothing more is written and the lease is left to expire. To `return(MS)`, it stalls
/// the attempt for MS milliseconds without blocking the worker, which keeps heartbeating, as a
/// slow stage would. Other actions (`sleep`, `panic`, `pause`) behave as the `fail` crate says.
macro_rules! crash_point {
    ($name:expr) => {
        #[cfg(feature = "failpoints")]
        if let Some(argument) = fail::eval($name, |argument| argument) {
            match argument.as_deref().map(str::parse::<u64>) {
                Some(Ok(millis)) => tokio::time::sleep(std::time::Duration::from_millis(millis)).await,
                _ => return Err(JobError::LeaseLost),
            }
        }
    };
}

mod batch;
mod connections;
mod dead_letter;
mod embed;
mod lexical;
mod stages;
mod stats;

pub use batch::{Batching, EmbeddingMode};
pub use connections::DetectConnections;
pub use lexical::lexical_connections;
pub use stats::PipelineStats;

/// Everything the handlers share.
#[derive(Clone)]
pub struct Pipeline {
    /// Jobs and documents.
    pub store: Arc<dyn Store>,
    /// The embedding service.
    pub embedder: Arc<dyn Embedder>,
    /// Uploads and markdown.
    pub data_dir: DataDir,
    /// How book parsing is isolated.
    pub isolation: Isolation,
    /// Chunk sizes.
    pub chunker: ChunkerConfig,
    /// Stage timestamps.
    pub clock: Arc<dyn Clock>,
    /// Work counters.
    pub stats: Arc<PipelineStats>,
    /// When and how the embedding stage uses the AI service's Batch API.
    pub batching: Batching,
}

impl Pipeline {
    /// A pipeline with the default chunk sizes and isolation limits, isolating book parsing in
    /// `program` (the `quire` binary) and timing stages with the system clock.
    pub fn new(
        store: Arc<dyn Store>,
        embedder: Arc<dyn Embedder>,
        data_dir: DataDir,
        program: impl Into<PathBuf>,
    ) -> Pipeline {
        Pipeline {
            store,
            embedder,
            data_dir,
            isolation: Isolation::new(program),
            chunker: ChunkerConfig::default(),
            clock: Arc::new(checkpoint_store::SystemClock),
            stats: Arc::default(),
            batching: Batching::default(),
        }
    }

    /// The handlers of the pipeline's job kinds.
    pub fn handlers(&self) -> crate::runtime::Handlers {
        crate::runtime::Handlers::new()
            .with(JobKind::ProcessDocument, Arc::new(ProcessDocument(self.clone())))
            .with(JobKind::DetectConnections, Arc::new(DetectConnections(self.clone())))
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("data_dir", &self.data_dir).field("model", &self.embedder.model()).finish()
    }
}

/// The unique key that keeps one connection job per document in the queue.
pub fn detect_connections_key(document_id: &str) -> String {
    format!("detect_connections:{document_id}")
}

/// The unique key that keeps one processing job per document in the queue.
pub fn process_document_key(document_id: &str) -> String {
    format!("process_document:{document_id}")
}

pub(super) fn document_id(job: &Job) -> Result<String, JobError> {
    Ok(JobPayload::of(job)?.document_id().to_owned())
}

/// The `process_document` handler.
#[derive(Debug, Clone)]
pub struct ProcessDocument(pub Pipeline);
