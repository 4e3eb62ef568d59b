//! One attempt of `process_document`: the stages up to chunking, each checkpointed through the
//! fenced store call, and the loop that resumes at the checkpoint's resume stage.

use std::path::PathBuf;

use async_trait::async_trait;
use checkpoint_store::{BookMetadata, DocumentStatus, Enqueued, FollowUp, Job, StoredChunk};
use serde_json::{Value, json};
use stage_machine::{Checkpoint, Stage, UnixMillis, retry_deletes_chunks};
use tracing::{info, warn};

use super::stats::bump;
use super::{Pipeline, ProcessDocument, document_id};
use crate::data_dir::{sha256_hex, write_atomically};
use crate::isolation::{ExtractedMetadata, files};
use crate::job::{JobContext, JobError, JobHandler};

/// One attempt of `process_document`.
pub(super) struct Attempt<'a> {
    pub(super) pipeline: &'a Pipeline,
    pub(super) context: &'a JobContext,
    pub(super) document_id: String,
    pub(super) checkpoint: Checkpoint,
    pub(super) work_dir: PathBuf,
    /// Inputs whose vectors this attempt took from Batch API results (not cache hits).
    pub(super) batch_inputs_this_attempt: u64,
}

impl Attempt<'_> {
    pub(super) fn now(&self) -> i64 {
        self.pipeline.clock.now()
    }

    pub(super) async fn save(&self) -> Result<(), JobError> {
        self.pipeline.store.save_checkpoint(self.context.lease, &self.checkpoint).await?;
        Ok(())
    }

    pub(super) async fn begin(&mut self, stage: Stage) -> Result<(), JobError> {
        self.context.checkpoint_boundary()?;
        self.checkpoint.begin(stage, self.now()).map_err(|e| JobError::Permanent(e.to_string()))?;
        tracing::Span::current().record("stage", tracing::field::display(stage));
        info!(stage = %stage, "stage started");
        self.save().await
    }

    pub(super) async fn complete(&mut self, stage: Stage) -> Result<(), JobError> {
        let now = self.now();
        self.checkpoint.complete(stage, now).map_err(|e| JobError::Permanent(e.to_string()))?;
        self.save().await?;
        self.completed(stage, now);
        Ok(())
    }

    /// Completes `stage` and adds `follow_up` in one transaction: both or neither.
    pub(super) async fn complete_with(&mut self, stage: Stage, follow_up: FollowUp) -> Result<Enqueued, JobError> {
        let now = self.now();
        self.checkpoint.complete(stage, now).map_err(|e| JobError::Permanent(e.to_string()))?;
        let enqueued =
            self.pipeline.store.save_checkpoint_and_enqueue(self.context.lease, &self.checkpoint, follow_up).await?;
        self.completed(stage, now);
        Ok(enqueued)
    }

    /// Records the time the stage's work took, once its checkpoint is saved.
    fn completed(&self, stage: Stage, now: UnixMillis) {
        if let Some(working) = stage.working_stage()
            && let Some(&began) = self.checkpoint.stage_timestamps.get(&working)
        {
            let took = std::time::Duration::from_millis(u64::try_from(now - began).unwrap_or(0));
            self.pipeline.stats.observe_stage(working, took);
        }
        info!(stage = %stage, "checkpoint saved");
    }

    /// An attempt with nothing left to do (the last one ended after the book's final
    /// checkpoint, and the job was then dead-lettered and retried, say) finds the book as the
    /// operator's retry left it, `pending`. Its chunks and vectors are stored, so it is
    /// `embedded` again, and its connections are asked for again, whose job marks it `complete`.
    /// Marked first, asked second, as the embedding stage does (a detection finding the book not
    /// embedded leaves it alone); a book already `embedded` is asked for again all the same,
    /// since an attempt may have died between the two: one active detection per book makes a
    /// second request a no-op.
    async fn restore_finished_document(&mut self) -> Result<(), JobError> {
        let store = &self.pipeline.store;
        let status = store.document(&self.document_id).await?.map(|document| document.status);
        match status {
            None | Some(DocumentStatus::Complete) => return Ok(()),
            Some(DocumentStatus::Embedded) => {}
            Some(_) => store.mark_embedded(self.context.lease, &self.document_id, self.embedding_usage()).await?,
        }
        let facts = &self.checkpoint.facts;
        let chunks = facts.chunk_count.unwrap_or(facts.embedded_chunks) as usize;
        let enqueued = store
            .save_checkpoint_and_enqueue(self.context.lease, &self.checkpoint, self.detect_connections(chunks))
            .await?;
        info!(detect_job = %enqueued.job.id, deduplicated = enqueued.deduplicated, "finished book restored to embedded");
        Ok(())
    }

    async fn run(mut self) -> Result<Value, JobError> {
        let store = &self.pipeline.store;
        let resume = self.checkpoint.resume_stage();
        if resume == Stage::Complete {
            self.restore_finished_document().await?;
        } else {
            info!(resume = %resume, deletes_chunks = retry_deletes_chunks(resume), "resuming");
            store.set_document_status(self.context.lease, &self.document_id, DocumentStatus::Processing, None).await?;
        }
        loop {
            match self.checkpoint.resume_stage() {
                Stage::Extracting => self.extract().await?,
                Stage::SavingMarkdown => self.save_markdown().await?,
                Stage::Chunking => self.chunk().await?,
                Stage::Embedding => self.embed().await?,
                Stage::Complete => break,
                other => {
                    return Err(JobError::Permanent(format!(
                        "checkpoint resumes at {other}, which is not a working stage"
                    )));
                }
            }
        }
        // An attempt that stopped between the `embedded` checkpoint and the last one (killed, or
        // its write lost with the database connection) leaves the last one to this attempt.
        if self.checkpoint.last_completed() != Stage::Complete {
            self.complete(Stage::Complete).await?;
        }
        crash_point!("before_complete");
        let _ = std::fs::remove_dir_all(&self.work_dir);
        let facts = &self.checkpoint.facts;
        Ok(json!({
            "document_id": self.document_id,
            "chunk_count": facts.chunk_count,
            "ai_requests": facts.ai_requests,
            "ai_cache_hits": facts.ai_cache_hits,
        }))
    }

    async fn extract(&mut self) -> Result<(), JobError> {
        self.begin(Stage::Extracting).await?;
        let document = self
            .pipeline
            .store
            .document(&self.document_id)
            .await?
            .ok_or_else(|| JobError::Permanent(format!("document {} does not exist", self.document_id)))?;
        let upload = self.pipeline.data_dir.upload_path(&document.content_hash);
        if !upload.exists() {
            return Err(JobError::Permanent(format!(
                "the upload {} is missing from the data directory",
                upload.display()
            )));
        }
        bump(&self.pipeline.stats.extractions, 1);
        let metadata = self.pipeline.isolation.extract(&upload, &self.work_dir, self.context).await?;
        info!(chapters = metadata.chapters, title = ?metadata.title, "extracted");
        self.complete(Stage::Extracted).await?;
        crash_point!("after_checkpoint_extracted");
        Ok(())
    }

    async fn save_markdown(&mut self) -> Result<(), JobError> {
        let markdown_file = self.work_dir.join(files::MARKDOWN);
        let (Ok(markdown), Ok(metadata)) =
            (std::fs::read(&markdown_file), std::fs::read(self.work_dir.join(files::METADATA)))
        else {
            // The extraction's output did not survive (another machine, a cleaned work
            // directory): extract again rather than fail.
            warn!("extracted markdown is gone; extracting again");
            self.checkpoint.rewind_to(Stage::Extracting);
            return Ok(());
        };
        self.begin(Stage::SavingMarkdown).await?;
        let metadata: ExtractedMetadata = serde_json::from_slice(&metadata).unwrap_or_default();
        let hash = sha256_hex(&markdown);
        let path = self.pipeline.data_dir.markdown_path(&hash);
        if !path.exists() {
            write_atomically(&path, &markdown)
                .map_err(|e| JobError::Retryable(format!("cannot save markdown: {e}")))?;
        }
        let book = BookMetadata { title: metadata.title, author: metadata.author, language: metadata.language };
        self.pipeline.store.record_extraction(self.context.lease, &self.document_id, &book, &hash).await?;
        self.checkpoint.facts.markdown_hash = Some(hash);
        self.checkpoint.facts.markdown_bytes = Some(markdown.len() as u64);
        self.complete(Stage::MarkdownSaved).await?;
        crash_point!("after_checkpoint_markdown_saved");
        Ok(())
    }

    async fn chunk(&mut self) -> Result<(), JobError> {
        let markdown =
            self.checkpoint.facts.markdown_hash.as_deref().map(|hash| self.pipeline.data_dir.markdown_path(hash));
        let Some(markdown) = markdown.filter(|path| path.exists()) else {
            warn!("saved markdown is gone; extracting again");
            self.checkpoint.rewind_to(Stage::Extracting);
            return Ok(());
        };
        self.begin(Stage::Chunking).await?;
        bump(&self.pipeline.stats.chunkings, 1);
        let chunks = self
            .pipeline
            .isolation
            .chunk(&self.document_id, &markdown, &self.pipeline.chunker, &self.work_dir, self.context)
            .await?;
        if chunks.is_empty() {
            return Err(JobError::Permanent("the book contains no text to chunk".into()));
        }
        let stored: Vec<StoredChunk> = chunks
            .into_iter()
            .map(|chunk| StoredChunk {
                id: chunk.id,
                document_id: self.document_id.clone(),
                index: chunk.index,
                heading_path: chunk.heading_path,
                text: chunk.text,
                start: chunk.start as u64,
                end: chunk.end as u64,
                content_hash: chunk.content_hash,
            })
            .collect();
        // Old chunks go in the same transaction as the new ones arrive.
        self.pipeline.store.replace_chunks(self.context.lease, &self.document_id, &stored).await?;
        self.checkpoint.facts.chunk_count = Some(stored.len() as u32);
        self.checkpoint.facts.embedded_chunks = 0;
        self.complete(Stage::Chunked).await?;
        crash_point!("after_checkpoint_chunked");
        Ok(())
    }
}

#[async_trait]
impl JobHandler for ProcessDocument {
    async fn run(&self, job: &Job, context: &JobContext) -> Result<Value, JobError> {
        let document_id = document_id(job)?;
        let work_dir =
            self.0.data_dir.work_dir(job.id.0).map_err(|e| JobError::Retryable(format!("work directory: {e}")))?;
        let attempt = Attempt {
            pipeline: &self.0,
            context,
            document_id,
            checkpoint: job.checkpoint(),
            work_dir,
            batch_inputs_this_attempt: 0,
        };
        attempt.run().await
    }

    /// It embeds the document's chunks.
    fn needs_ai_service(&self) -> bool {
        true
    }

    async fn dead_lettered(&self, job: &Job) {
        self.clean_up_dead_job(job).await;
    }

    async fn cancelled(&self, job: &Job) {
        self.clean_up_cancelled_job(job).await;
    }
}
