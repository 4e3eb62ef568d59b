//! What the jobs the worker queues carry: one typed payload per job kind. The payload is the
//! worker's own; the store keeps it as opaque JSON and learns of a job's document only from the
//! enqueue options, which [`JobPayload`] fills from the same value, so the two never disagree.

use checkpoint_store::{EnqueueOptions, Enqueued, FollowUp, Job, JobKind, JobStore, StoreResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::JobError;

/// A job's input, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobPayload {
    /// Extract, chunk and embed a document.
    ProcessDocument(ProcessDocumentPayload),
    /// Find a document's connections to the library.
    DetectConnections(DetectConnectionsPayload),
}

/// The payload of a `process_document` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessDocumentPayload {
    /// The document to process.
    pub document_id: String,
}

/// The payload of a `detect_connections` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectConnectionsPayload {
    /// The document whose connections to find.
    pub document_id: String,
    /// How many chunks the document had when its connections were asked for (for operators
    /// reading the queue; the job reads the chunks the document has when it runs).
    #[serde(default)]
    pub chunk_count: usize,
}

impl JobPayload {
    /// A `process_document` job's payload.
    pub fn process_document(document_id: impl Into<String>) -> JobPayload {
        JobPayload::ProcessDocument(ProcessDocumentPayload { document_id: document_id.into() })
    }

    /// A `detect_connections` job's payload.
    pub fn detect_connections(document_id: impl Into<String>, chunk_count: usize) -> JobPayload {
        JobPayload::DetectConnections(DetectConnectionsPayload { document_id: document_id.into(), chunk_count })
    }

    /// The payload of a leased job, read by its kind. A payload that does not fit its kind can
    /// never run, so that is a permanent failure.
    pub fn of(job: &Job) -> Result<JobPayload, JobError> {
        let payload = job.payload.clone();
        let parsed = match job.kind {
            JobKind::ProcessDocument => serde_json::from_value(payload).map(JobPayload::ProcessDocument),
            JobKind::DetectConnections => serde_json::from_value(payload).map(JobPayload::DetectConnections),
        };
        parsed.map_err(|e| JobError::Permanent(format!("job {}: not a {} payload: {e}", job.id, job.kind)))
    }

    /// The job kind that runs this payload.
    pub fn kind(&self) -> JobKind {
        match self {
            JobPayload::ProcessDocument(_) => JobKind::ProcessDocument,
            JobPayload::DetectConnections(_) => JobKind::DetectConnections,
        }
    }

    /// The document the job works on.
    pub fn document_id(&self) -> &str {
        match self {
            JobPayload::ProcessDocument(payload) => &payload.document_id,
            JobPayload::DetectConnections(payload) => &payload.document_id,
        }
    }

    /// The payload as stored.
    pub fn to_json(&self) -> Value {
        let json = match self {
            JobPayload::ProcessDocument(payload) => serde_json::to_value(payload),
            JobPayload::DetectConnections(payload) => serde_json::to_value(payload),
        };
        // Both are structs of strings and integers, which always serialise.
        json.unwrap_or_default()
    }

    /// The job to queue for this payload, with `options` naming its document to the store.
    pub fn follow_up(&self, options: EnqueueOptions) -> FollowUp {
        let options = EnqueueOptions { document_id: Some(self.document_id().to_owned()), ..options };
        FollowUp { kind: self.kind(), payload: self.to_json(), options }
    }

    /// Queues the job for this payload ([`JobStore::enqueue`]).
    pub async fn enqueue(&self, store: &dyn JobStore, options: EnqueueOptions) -> StoreResult<Enqueued> {
        let FollowUp { kind, payload, options } = self.follow_up(options);
        store.enqueue(kind, payload, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkpoint_store::{JobId, JobStatus};
    use serde_json::json;

    fn job(kind: JobKind, payload: Value) -> Job {
        Job {
            id: JobId(7),
            kind,
            document_id: None,
            payload,
            status: JobStatus::Processing,
            priority: 0,
            attempts: 1,
            max_attempts: 3,
            run_at: 0,
            lock_owner: None,
            lock_until: None,
            lease_token: 1,
            started_at: None,
            last_heartbeat: None,
            timeout: kind.default_timeout(),
            unique_key: None,
            metadata: json!({}),
            result: None,
            last_error: None,
            error_kind: None,
            created_at: 0,
            updated_at: 0,
            finished_at: None,
            cancel_requested_at: None,
        }
    }

    #[test]
    fn a_payload_reads_back_as_it_was_queued_and_names_its_document_to_the_store() {
        for payload in [JobPayload::process_document("d1"), JobPayload::detect_connections("d2", 12)] {
            let follow_up = payload.follow_up(EnqueueOptions { priority: 3, ..Default::default() });
            assert_eq!(follow_up.kind, payload.kind());
            assert_eq!(follow_up.options.document_id.as_deref(), Some(payload.document_id()));
            assert_eq!(follow_up.options.priority, 3);
            assert_eq!(JobPayload::of(&job(follow_up.kind, follow_up.payload)).unwrap(), payload);
        }
    }

    #[test]
    fn a_payload_that_does_not_fit_its_kind_is_a_permanent_failure() {
        for (kind, payload) in [
            (JobKind::ProcessDocument, json!({})),
            (JobKind::ProcessDocument, json!({ "document_id": 5 })),
            (JobKind::DetectConnections, json!("d1")),
        ] {
            let error = JobPayload::of(&job(kind, payload)).unwrap_err();
            assert!(matches!(&error, JobError::Permanent(reason) if reason.contains("job 7")), "{error:?}");
        }
    }

    #[test]
    fn connection_jobs_queued_before_chunk_counts_were_recorded_still_read() {
        let read = JobPayload::of(&job(JobKind::DetectConnections, json!({ "document_id": "d1" }))).unwrap();
        assert_eq!(read, JobPayload::detect_connections("d1", 0));
    }
}
