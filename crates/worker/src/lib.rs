//! quire's worker: the document pipeline's job handlers and the runtime that runs them.
//!
//! The main types are [`Worker`] (lease, run, heartbeat, reap, shut down), the [`JobHandler`]s
//! [`ProcessDocument`] and [`DetectConnections`] built on a shared [`Pipeline`], and
//! [`Isolation`], which reads books in a child process. Beside them, [`operations`] holds every
//! action an operator takes on the queue (replay, retry or purge dead letters, take back stale
//! jobs), which the CLI and the HTTP API both call.
//!
//! The one design choice to understand: **a handler never decides a job's fate in the store
//! itself.** It returns `Ok(result)` or a classified [`JobError`], and the runtime settles the job
//! (complete, retry, dead-letter, postpone) with the lease the job was given. The handler's own
//! writes (checkpoints, chunks, embeddings) are all fenced by the same lease, so a handler that
//! lost its lease cannot change anything even before it notices.

mod ai_pause;
mod attempt;
mod config;
mod data_dir;
mod heartbeat;
mod histogram;
mod isolation;
mod job;
pub mod operations;
mod payload;
mod pipeline;
mod runtime;
mod submit;

pub use ai_pause::{ACCOUNT_REFUSED_FIRST_PAUSE, ACCOUNT_REFUSED_MAX_PAUSE, account_refused_pause};
pub use attempt::run_attempt;
pub use config::{ConfigError, WorkerConfig};
pub use data_dir::{DataDir, StoredUpload, UploadWriter, sha256_hex, write_atomically};
pub use histogram::{DURATION_BUCKETS, DurationHistogram};
pub use isolation::{ExtractedMetadata, Isolation, run_child};
pub use job::{JobContext, JobError, JobHandler};
pub use payload::{DetectConnectionsPayload, JobPayload, ProcessDocumentPayload};
pub use pipeline::{
    Batching, DetectConnections, EmbeddingMode, Pipeline, PipelineStats, ProcessDocument, detect_connections_key,
    lexical_connections, process_document_key,
};
pub use runtime::{Finished, Handlers, Worker, WorkerMetrics, default_owner};
pub use submit::{Submission, SubmitError, submit_bytes, submit_file, submit_stored};
