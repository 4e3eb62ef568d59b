//! Submitting uploads: store the file by content hash, record the document, queue its job.

use std::path::Path;

use checkpoint_store::{DocumentStatus, EnqueueOptions, JobFilter, JobId, JobKind, NewDocument, Store, StoreError};
use serde::Serialize;
use serde_json::json;

use crate::data_dir::DataDir;
use crate::pipeline::process_document_key;

/// What a submission did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Submission {
    /// The document (existing when the same content was uploaded before).
    pub document_id: String,
    /// The job processing it (or that processed it).
    pub job_id: Option<JobId>,
    /// True when no new work was queued: the content was already known.
    pub deduplicated: bool,
    /// The name the file was submitted under.
    pub file_name: String,
}

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The file could not be read or stored.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Submits the file at `path`.
pub async fn submit_file(store: &dyn Store, data_dir: &DataDir, path: &Path) -> Result<Submission, SubmitError> {
    let io = |source| SubmitError::Io { path: path.display().to_string(), source };
    let bytes = std::fs::read(path).map_err(io)?;
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    submit_bytes(store, data_dir, &name, &bytes).await
}

/// Submits an upload held in memory under `file_name`.
pub async fn submit_bytes(
    store: &dyn Store,
    data_dir: &DataDir,
    file_name: &str,
    bytes: &[u8],
) -> Result<Submission, SubmitError> {
    let hash = data_dir.store_upload(bytes).map_err(|source| SubmitError::Io { path: file_name.to_owned(), source })?;
    let new = NewDocument { content_hash: hash, file_name: file_name.to_owned(), byte_size: bytes.len() as u64 };
    let (document, created) = store.create_document(new).await?;
    if !created
        && matches!(document.status, DocumentStatus::Embedded | DocumentStatus::Complete | DocumentStatus::Failed)
    {
        // Already processed (or refused): the same bytes would give the same result.
        let filter = JobFilter {
            kind: Some(JobKind::ProcessDocument),
            document_id: Some(document.id.clone()),
            limit: Some(1),
            ..Default::default()
        };
        let job_id = store.list_jobs(&filter).await?.first().map(|job| job.id);
        return Ok(Submission {
            document_id: document.id,
            job_id,
            deduplicated: true,
            file_name: file_name.to_owned(),
        });
    }
    let enqueued = store
        .enqueue(
            JobKind::ProcessDocument,
            json!({ "document_id": document.id }),
            EnqueueOptions { unique_key: Some(process_document_key(&document.id)), ..Default::default() },
        )
        .await?;
    Ok(Submission {
        document_id: document.id,
        job_id: Some(enqueued.job.id),
        deduplicated: !created || enqueued.deduplicated,
        file_name: file_name.to_owned(),
    })
}
