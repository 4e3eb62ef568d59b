//! The two job handlers: `process_document` (extract → save markdown → chunk → embed) and
//! `detect_connections`.
//!
//! `process_document` checkpoints after every stage through the fenced store call, and on a
//! retry resumes at [`Checkpoint::resume_stage`]: extraction is not redone once its markdown is
//! saved, chunks are replaced only when the resume stage says so (and then in one transaction
//! with the new ones), and embeddings already in the cache are never requested again.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use checkpoint_store::{
    BookMetadata, Clock, ConnectionsOutcome, DocumentStatus, EmbeddedChunk, EmbeddingUsage, EnqueueOptions, Job,
    JobKind, NewConnection, Store, StoredChunk,
};
use chunker::ChunkerConfig;
use collision_detector::{ChunkRef, ConnectionEngine, LexicalEngine, SemanticEngine};
use embedder::{BatchInfo, BatchInput, BatchService, BatchState, Embedder};
use serde_json::{Value, json};
use stage_machine::{BatchRef, Checkpoint, Stage, retry_deletes_chunks};
use tracing::{info, warn};

use crate::data_dir::{DataDir, sha256_hex, write_atomically};
use crate::isolation::{ExtractedMetadata, Isolation, files};
use crate::job::{JobContext, JobError, JobHandler};

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
    fn wants_batch(&self, missing: usize) -> bool {
        self.service.is_some()
            && missing > 0
            && match self.mode {
                EmbeddingMode::Direct => false,
                EmbeddingMode::Batch => true,
                EmbeddingMode::Auto => missing > self.threshold,
            }
    }
}

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

    fn observe_stage(&self, stage: Stage, duration: std::time::Duration) {
        if let Some(index) = Self::TIMED_STAGES.iter().position(|&timed| timed == stage) {
            self.stage_durations[index].observe(duration);
        }
    }
}

fn bump(counter: &std::sync::atomic::AtomicU64, by: u64) {
    counter.fetch_add(by, std::sync::atomic::Ordering::Relaxed);
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

    /// The handlers of both job kinds.
    pub fn handlers(&self) -> crate::runtime::Handlers {
        crate::runtime::Handlers {
            process_document: Arc::new(ProcessDocument(self.clone())),
            detect_connections: Arc::new(DetectConnections(self.clone())),
        }
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

fn document_id(job: &Job) -> Result<String, JobError> {
    job.document_id()
        .map(str::to_owned)
        .ok_or_else(|| JobError::Permanent(format!("job {} has no document_id in its payload", job.id)))
}

/// The `process_document` handler.
#[derive(Debug, Clone)]
pub struct ProcessDocument(pub Pipeline);

/// The `detect_connections` handler.
#[derive(Debug, Clone)]
pub struct DetectConnections(pub Pipeline);

/// One attempt of `process_document`.
struct Attempt<'a> {
    pipeline: &'a Pipeline,
    context: &'a JobContext,
    document_id: String,
    checkpoint: Checkpoint,
    work_dir: PathBuf,
    /// Inputs whose vectors this attempt took from Batch API results (not cache hits).
    batch_inputs_this_attempt: u64,
}

impl Attempt<'_> {
    fn now(&self) -> i64 {
        self.pipeline.clock.now()
    }

    async fn save(&self) -> Result<(), JobError> {
        self.pipeline.store.save_checkpoint(self.context.lease, &self.checkpoint).await?;
        Ok(())
    }

    async fn begin(&mut self, stage: Stage) -> Result<(), JobError> {
        self.context.checkpoint_boundary()?;
        self.checkpoint.begin(stage, self.now()).map_err(|e| JobError::Permanent(e.to_string()))?;
        tracing::Span::current().record("stage", tracing::field::display(stage));
        info!(stage = %stage, "stage started");
        self.save().await
    }

    async fn complete(&mut self, stage: Stage) -> Result<(), JobError> {
        let now = self.now();
        self.checkpoint.complete(stage, now).map_err(|e| JobError::Permanent(e.to_string()))?;
        self.save().await?;
        if let Some(working) = stage.working_stage()
            && let Some(&began) = self.checkpoint.stage_timestamps.get(&working)
        {
            let took = std::time::Duration::from_millis(u64::try_from(now - began).unwrap_or(0));
            self.pipeline.stats.observe_stage(working, took);
        }
        info!(stage = %stage, "checkpoint saved");
        Ok(())
    }

    async fn run(mut self) -> Result<Value, JobError> {
        let store = &self.pipeline.store;
        let resume = self.checkpoint.resume_stage();
        if resume != Stage::Complete {
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

    async fn embed(&mut self) -> Result<(), JobError> {
        self.begin(Stage::Embedding).await?;
        if self.checkpoint.facts.embedded_chunks == 0 {
            self.checkpoint.facts.embedding_pass_inputs = 0;
        }
        let pipeline = self.pipeline;
        let embedder = &pipeline.embedder;
        let (model, dimensions) = (embedder.model(), embedder.dimensions());
        let chunks = pipeline.store.chunks(&self.document_id).await?;
        if Some(chunks.len() as u32) != self.checkpoint.facts.chunk_count {
            // The chunks on disk are not the ones this checkpoint recorded: chunk again.
            warn!(found = chunks.len(), "chunk count differs from the checkpoint; chunking again");
            self.checkpoint.rewind_to(Stage::Chunking);
            return Ok(());
        }
        // Identical texts share one embedding: ask for each content hash once.
        let mut seen = HashSet::new();
        let unique: Vec<&StoredChunk> = chunks.iter().filter(|c| seen.insert(c.content_hash.as_str())).collect();
        let hashes: Vec<String> = unique.iter().map(|c| c.content_hash.clone()).collect();
        let limits = embedder.batch_limits();
        let per_input = limits.max_tokens.min(embedder::OPENAI_MAX_INPUT_TOKENS);
        // Recovery asks first: a batch an earlier attempt submitted is settled with the service
        // (results fetched, or waited on) before anything is submitted again.
        if self.checkpoint.facts.embedding_batch.is_some() {
            self.resume_batch(&model, dimensions).await?;
        }
        let mut cached = pipeline.store.cached_embeddings(&model, dimensions, &hashes).await?;
        let mut missing: Vec<&StoredChunk> =
            unique.iter().copied().filter(|c| !cached.contains_key(&c.content_hash)).collect();
        if pipeline.batching.wants_batch(missing.len()) {
            self.run_new_batch(&missing, per_input, &model, dimensions).await?;
            // What the batch did not return (requests the service refused) is embedded directly.
            cached = pipeline.store.cached_embeddings(&model, dimensions, &hashes).await?;
            missing = unique.iter().copied().filter(|c| !cached.contains_key(&c.content_hash)).collect();
        }
        let texts: Vec<String> =
            missing.iter().map(|c| embedder::truncate_for_embedding(&c.text, per_input).to_owned()).collect();
        let batches = embedder::plan_batches(&texts, limits);
        info!(
            chunks = chunks.len(),
            cached = cached.len(),
            to_embed = texts.len(),
            batches = batches.len(),
            "embedding"
        );
        let mut done = unique.len() - missing.len();
        bump(&pipeline.stats.embedding_cache_hits, (done as u64).saturating_sub(self.batch_inputs_this_attempt));
        for batch in batches {
            self.context.checkpoint_boundary()?;
            self.checkpoint.facts.ai_requests += 1;
            bump(&pipeline.stats.embedding_requests, 1);
            let vectors = match embedder.embed(&texts[batch.clone()]).await {
                Ok(vectors) => vectors,
                Err(error) => {
                    // Keep the request count; finished batches are already in the cache.
                    let _ = self.save().await;
                    return Err(error.into());
                }
            };
            if vectors.len() != batch.len() {
                return Err(JobError::Permanent(format!(
                    "the embedder returned {} vectors for {} inputs",
                    vectors.len(),
                    batch.len()
                )));
            }
            crash_point!("before_storing_embeddings");
            let pairs: Vec<(String, Vec<f32>)> =
                missing[batch.clone()].iter().map(|c| c.content_hash.clone()).zip(vectors).collect();
            pipeline.store.store_embeddings(self.context.lease, &model, dimensions, &pairs).await?;
            done += batch.len();
            bump(&pipeline.stats.inputs_direct, batch.len() as u64);
            let facts = &mut self.checkpoint.facts;
            facts.ai_inputs += batch.len() as u64;
            facts.embedding_pass_inputs += batch.len() as u64;
            facts.ai_tokens += texts[batch].iter().map(|t| embedder::estimate_tokens(t) as u64).sum::<u64>();
            facts.embedded_chunks = done as u32;
            self.save().await?;
            crash_point!("after_embedding_batch");
        }
        let facts = &mut self.checkpoint.facts;
        facts.embedded_chunks = unique.len() as u32;
        facts.ai_cache_hits = (unique.len() as u64).saturating_sub(facts.embedding_pass_inputs);
        let usage = EmbeddingUsage { ai_requests: facts.ai_requests, embeddings_from_cache: facts.ai_cache_hits };
        pipeline.store.mark_embedded(self.context.lease, &self.document_id, usage).await?;
        let chunk_count = chunks.len();
        let enqueued = pipeline
            .store
            .enqueue(
                JobKind::DetectConnections,
                json!({ "document_id": self.document_id, "chunk_count": chunk_count }),
                EnqueueOptions { unique_key: Some(detect_connections_key(&self.document_id)), ..Default::default() },
            )
            .await?;
        info!(detect_job = %enqueued.job.id, deduplicated = enqueued.deduplicated, "connection detection queued");
        self.complete(Stage::Embedded).await?;
        crash_point!("after_checkpoint_embedded");
        self.complete(Stage::Complete).await?;
        Ok(())
    }

    /// Settles the batch recorded in the checkpoint by an earlier attempt, asking the service
    /// before anything else: completed → its results go into the cache; still running → wait on
    /// it; failed, expired or cancelled → forget it (partial results kept), and the caller submits
    /// the inputs still missing. An unreachable service is an ordinary retryable failure, and the
    /// batch stays recorded for the next attempt.
    async fn resume_batch(&mut self, model: &str, dimensions: usize) -> Result<(), JobError> {
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
    async fn run_new_batch(
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
    /// meanwhile; a lost lease stops at once, a shutdown hands the job back with the batch kept.
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
async fn check_batch(stats: &PipelineStats, service: &dyn BatchService, batch_id: &str) -> Result<BatchInfo, JobError> {
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

    async fn dead_lettered(&self, job: &Job, reason: &str) {
        if let Some(document_id) = job.document_id()
            && let Err(error) =
                self.0.store.reset_document_status(document_id, DocumentStatus::Failed, Some(reason)).await
        {
            warn!(%error, document_id, "could not mark the document failed");
        }
        let _ = std::fs::remove_dir_all(self.0.data_dir.root().join("work").join(job.id.0.to_string()));
        self.cancel_abandoned_batch(job).await;
    }
}

impl ProcessDocument {
    /// A dead job will never collect its batch: cancel it on the service unless it already
    /// finished. Logged either way; failures change nothing else.
    async fn cancel_abandoned_batch(&self, job: &Job) {
        let pipeline = &self.0;
        let Some(service) = &pipeline.batching.service else { return };
        // `job` may be the copy leased before the attempt that submitted the batch.
        let current = pipeline.store.job(job.id).await.ok().flatten();
        let Some(batch) = current.as_ref().unwrap_or(job).checkpoint().facts.embedding_batch else { return };
        match check_batch(&pipeline.stats, service.as_ref(), &batch.id).await {
            Ok(info) if !info.state.is_running() || info.state == BatchState::Cancelling => {
                info!(job_id = %job.id, batch_id = %batch.id, state = %info.state, "dead-lettered job's batch already finished; not cancelling");
                return;
            }
            Ok(_) => {}
            Err(_) => info!(job_id = %job.id, batch_id = %batch.id, "cancelling the batch without knowing its state"),
        }
        bump(&pipeline.stats.batch_cancel_requests, 1);
        match service.cancel(&batch.id).await {
            Ok(after) => {
                info!(job_id = %job.id, batch_id = %batch.id, state = %after.state, "cancelled the dead-lettered job's batch")
            }
            Err(error) => {
                warn!(job_id = %job.id, batch_id = %batch.id, %error, "could not cancel the dead-lettered job's batch")
            }
        }
    }
}

#[async_trait]
impl JobHandler for DetectConnections {
    async fn run(&self, job: &Job, context: &JobContext) -> Result<Value, JobError> {
        let pipeline = &self.0;
        let document_id = document_id(job)?;
        let mut expected = job.payload.get("chunk_count").and_then(Value::as_u64).unwrap_or(0) as u32;
        let (model, dimensions) = (pipeline.embedder.model(), pipeline.embedder.dimensions());
        // A reprocessing that finishes while we compute supersedes our result; when it has
        // finished (the document is embedded again), its own request for connections may have
        // been folded into this job, so compute again for the new chunks, a bounded number of times.
        for _ in 0..3 {
            context.checkpoint_boundary()?;
            let Some(document) = pipeline.store.document(&document_id).await? else {
                return Ok(json!({ "document_id": document_id, "skipped": "the document no longer exists" }));
            };
            if document.chunk_count != expected {
                if document.status != DocumentStatus::Embedded {
                    info!(
                        expected,
                        found = document.chunk_count,
                        "document is being reprocessed; leaving connections to the newer job"
                    );
                    return Ok(json!({ "document_id": document_id, "superseded": true }));
                }
                expected = document.chunk_count;
            }
            bump(&pipeline.stats.detections, 1);
            let sources = pipeline.store.embedded_chunks(Some(&document_id), &model, dimensions).await?;
            let candidates = pipeline.store.embedded_chunks(None, &model, dimensions).await?;
            let connections = tokio::task::spawn_blocking(move || find_connections(&sources, &candidates))
                .await
                .map_err(|e| JobError::Retryable(format!("connection detection crashed: {e}")))?;
            match pipeline.store.replace_connections(context.lease, &document_id, expected, &connections).await? {
                ConnectionsOutcome::Stored { written } => {
                    info!(connections = written, "connections stored");
                    return Ok(json!({ "document_id": document_id, "connections": written }));
                }
                ConnectionsOutcome::Superseded => {
                    info!("chunks changed while connections were computed");
                }
            }
        }
        Ok(json!({ "document_id": document_id, "superseded": true }))
    }

    async fn dead_lettered(&self, _job: &Job, _reason: &str) {}
}

/// Runs every engine over the document's chunks against the library. A pair within one document
/// is stored once, from its lower chunk id, since both directions say the same.
fn find_connections(sources: &[EmbeddedChunk], candidates: &[EmbeddedChunk]) -> Vec<NewConnection> {
    let source_refs = chunk_refs(sources);
    let candidate_refs = chunk_refs(candidates);
    let semantic = SemanticEngine::default();
    let lexical = LexicalEngine::default();
    let engines: [&dyn ConnectionEngine; 2] = [&semantic, &lexical];
    let source_ids: HashSet<&str> = sources.iter().map(|s| s.chunk.id.as_str()).collect();
    collision_detector::detect(&engines, &source_refs, &candidate_refs)
        .into_iter()
        .filter(|c| !(source_ids.contains(c.target_chunk_id.as_str()) && c.target_chunk_id < c.source_chunk_id))
        .map(|c| NewConnection {
            source_chunk_id: c.source_chunk_id,
            target_chunk_id: c.target_chunk_id,
            engine: c.engine,
            score: c.score,
            reason: c.reason,
        })
        .collect()
}

fn chunk_refs(chunks: &[EmbeddedChunk]) -> Vec<ChunkRef<'_>> {
    chunks
        .iter()
        .map(|c| ChunkRef {
            chunk_id: &c.chunk.id,
            document_id: &c.chunk.document_id,
            text: &c.chunk.text,
            embedding: c.embedding.as_deref(),
        })
        .collect()
}
