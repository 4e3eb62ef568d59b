//! Submitting uploads: store the file by content hash, record the document, queue its job.

use std::path::Path;

use checkpoint_store::{DocumentStatus, EnqueueOptions, JobFilter, JobId, JobKind, NewDocument, Store, StoreError};
use serde::Serialize;

use crate::data_dir::{DataDir, StoredUpload};
use crate::payload::JobPayload;
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

/// Submits the file at `path`, streaming it into the data directory off the async threads.
pub async fn submit_file(store: &dyn Store, data_dir: &DataDir, path: &Path) -> Result<Submission, SubmitError> {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let (data_dir, source) = (data_dir.clone(), path.to_owned());
    let stored = blocking(move || {
        let mut file = std::fs::File::open(&source)?;
        let mut writer = data_dir.upload_writer()?;
        std::io::copy(&mut file, &mut writer)?;
        writer.finish()
    })
    .await
    .map_err(|source| SubmitError::Io { path: path.display().to_string(), source })?;
    submit_stored(store, &name, stored).await
}

/// Submits an upload held in memory under `file_name`.
pub async fn submit_bytes(
    store: &dyn Store,
    data_dir: &DataDir,
    file_name: &str,
    bytes: &[u8],
) -> Result<Submission, SubmitError> {
    let (data_dir, bytes) = (data_dir.clone(), bytes.to_vec());
    let stored = blocking(move || {
        let mut writer = data_dir.upload_writer()?;
        writer.write(&bytes)?;
        writer.finish()
    })
    .await
    .map_err(|source| SubmitError::Io { path: file_name.to_owned(), source })?;
    submit_stored(store, file_name, stored).await
}

/// Runs file work (hashing, writing, syncing) on a blocking thread.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|error| Err(std::io::Error::other(error)))
}

/// Records an upload already stored in the data directory ([`DataDir::upload_writer`]) and
/// queues its processing.
///
/// When this returns a new job, the job and the document row were committed durably
/// ([`EnqueueOptions::durable`]): with the file synced before, an acknowledged upload survives a
/// power loss.
pub async fn submit_stored(
    store: &dyn Store,
    file_name: &str,
    stored: StoredUpload,
) -> Result<Submission, SubmitError> {
    let new =
        NewDocument { content_hash: stored.content_hash, file_name: file_name.to_owned(), byte_size: stored.byte_size };
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
    let enqueued =
        JobPayload::process_document(&document.id).enqueue(store, submission_job_options(&document.id)).await?;
    Ok(Submission {
        document_id: document.id,
        job_id: Some(enqueued.job.id),
        deduplicated: !created || enqueued.deduplicated,
        file_name: file_name.to_owned(),
    })
}

/// How a submission queues its document's processing: once per document, and durably, since the
/// caller is told the upload was accepted as soon as this commit returns.
fn submission_job_options(document_id: &str) -> EnqueueOptions {
    EnqueueOptions { unique_key: Some(process_document_key(document_id)), durable: true, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submission_commits_its_job_durably() {
        let options = submission_job_options("doc-1");
        assert!(options.durable, "an acknowledged upload's job must survive a power loss");
        assert_eq!(options.unique_key.as_deref(), Some(process_document_key("doc-1").as_str()));
    }
}
