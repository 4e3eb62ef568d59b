//! Running a job again (`quire replay`): from its checkpoint, from a chosen stage, or fresh.
//! The job and its document go back to `pending` in the store's one transaction; a job held by
//! a worker is never replayed, and one whose unique key another active job holds is refused.

use checkpoint_store::{Job, JobFilter, JobId, JobKind, JobStatus, JobStore};
use serde::{Deserialize, Serialize};
use stage_machine::{Checkpoint, Stage};

use super::OperationError;

/// Where a replayed job starts. In JSON: `"checkpoint"`, `"fresh"`, or `{"stage": "chunked"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayFrom {
    /// Where it stopped: its checkpoint as it is. Refused for a `process_document` job that has
    /// completed every stage, since it would do nothing.
    Checkpoint,
    /// The checkpoint rewound ([`Checkpoint::rewind_to`]) so that this stage and every later
    /// one run again; `process_document` jobs only. Embeddings stay cached, so unchanged text
    /// costs no AI request.
    Stage(Stage),
    /// An empty checkpoint: everything runs again and the chunks are replaced (the embedding
    /// cache is still used).
    Fresh,
}

impl ReplayFrom {
    /// The name reports give this choice: `checkpoint`, `from_stage` or `fresh`.
    pub fn mode(self) -> &'static str {
        match self {
            ReplayFrom::Checkpoint => "checkpoint",
            ReplayFrom::Stage(_) => "from_stage",
            ReplayFrom::Fresh => "fresh",
        }
    }
}

/// A job queued again by [`replay`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replayed {
    /// The job as it is now: pending, with a fresh attempt budget and its new checkpoint.
    pub job: Job,
    /// Where it was asked to start.
    pub from: ReplayFrom,
    /// The stage its next attempt runs first.
    pub resumes_at: Stage,
}

/// Queues job `id` again from where `from` says; see the module documentation.
pub async fn replay(store: &dyn JobStore, id: JobId, from: ReplayFrom) -> Result<Replayed, OperationError> {
    let job = store.job(id).await?.ok_or(OperationError::NoSuchJob(id))?;
    if job.status == JobStatus::Processing {
        return Err(OperationError::Processing(id));
    }
    let checkpoint = match from {
        ReplayFrom::Stage(stage) => {
            if job.kind != JobKind::ProcessDocument {
                return Err(OperationError::NoStages { job_id: id, kind: job.kind });
            }
            if !stage.is_rewind_target() {
                return Err(OperationError::NotReplayable { stage });
            }
            let mut checkpoint = job.checkpoint();
            checkpoint.rewind_to(stage);
            checkpoint
        }
        ReplayFrom::Fresh => Checkpoint::default(),
        ReplayFrom::Checkpoint => {
            let checkpoint = job.checkpoint();
            if job.kind == JobKind::ProcessDocument && checkpoint.resume_stage() == Stage::Complete {
                return Err(OperationError::NothingToResume(id));
            }
            checkpoint
        }
    };
    let resumes_at = checkpoint.resume_stage();
    let job = store.requeue_with_checkpoint(id, &checkpoint).await?;
    Ok(Replayed { job, from, resumes_at })
}

/// Where a replayed job stands after the queue ran it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayResult {
    /// The replayed job.
    pub job: Job,
    /// For a `process_document` job: the newest connection detection of its document, which
    /// its replay queued once embedded (none if it never got that far).
    pub detect_connections: Option<Job>,
}

impl ReplayResult {
    /// Whether the replay did all it was for: the job completed, and so did the connection
    /// detection it led to, if any.
    pub fn completed(&self) -> bool {
        self.job.status == JobStatus::Completed
            && self.detect_connections.as_ref().is_none_or(|detect| detect.status == JobStatus::Completed)
    }
}

/// Reads where replayed job `id` and the connection detection it led to stand now.
pub async fn replay_result(store: &dyn JobStore, id: JobId) -> Result<ReplayResult, OperationError> {
    let job = store.job(id).await?.ok_or(OperationError::NoSuchJob(id))?;
    let detect_connections = match job.processed_document() {
        Some(document_id) => {
            let filter = JobFilter {
                kind: Some(JobKind::DetectConnections),
                document_id: Some(document_id.to_owned()),
                limit: Some(1),
                ..Default::default()
            };
            store.list_jobs(&filter).await?.into_iter().next()
        }
        None => None,
    };
    Ok(ReplayResult { job, detect_connections })
}
