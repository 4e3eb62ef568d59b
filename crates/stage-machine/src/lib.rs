//! The stages of quire's document pipeline and the checkpoint that records progress through them.
//!
//! A `process_document` job walks through [`Stage`]s in a fixed order. Each *working* stage
//! (`extracting`, `saving_markdown`, `chunking`, `embedding`) is followed by a *milestone*
//! (`extracted`, `markdown_saved`, `chunked`, `embedded`) that is recorded in a [`Checkpoint`]
//! once the work of that stage is durable. A retry reads the checkpoint and resumes at the first
//! stage that is not yet complete; [`Checkpoint::resume_stage`] and [`retry_deletes_chunks`] are
//! the two pure decisions the worker takes from it.
//!
//! The one design choice to understand: **a checkpoint only ever moves forward, one milestone at a
//! time**. [`Checkpoint::complete`] refuses to skip or repeat a milestone, so whatever sequence of
//! completions and crashes happens, a retry never resumes earlier than the last completed stage
//! and never skips one.
//!
//! This crate does no I/O: no async runtime, no database, no clock. Timestamps are passed in.
//!
//! ```
//! use stage_machine::{Checkpoint, Stage, retry_deletes_chunks};
//!
//! let mut checkpoint = Checkpoint::default();
//! assert_eq!(checkpoint.resume_stage(), Stage::Extracting);
//!
//! checkpoint.begin(Stage::Extracting, 1_000).unwrap();
//! checkpoint.complete(Stage::Extracted, 1_500).unwrap();
//! checkpoint.complete(Stage::MarkdownSaved, 1_700).unwrap();
//! checkpoint.complete(Stage::Chunked, 2_000).unwrap();
//!
//! // A crash now resumes at embedding and keeps the chunks already written.
//! assert_eq!(checkpoint.resume_stage(), Stage::Embedding);
//! assert!(!retry_deletes_chunks(checkpoint.resume_stage()));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as stored in checkpoints and in the job store.
pub type UnixMillis = i64;

/// A stage of the document pipeline, serialised in `snake_case` (`"saving_markdown"`).
///
/// The order of the variants is the order of the pipeline; `Failed` stands outside it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Stage {
    /// Nothing has happened yet.
    Pending,
    /// Reading the EPUB and converting it to markdown.
    Extracting,
    /// The markdown exists (in the attempt's memory or on disk).
    Extracted,
    /// Writing the markdown next to the upload, addressed by its content hash.
    SavingMarkdown,
    /// The markdown is durable; later attempts read it instead of extracting again.
    MarkdownSaved,
    /// Splitting the markdown into chunks and writing them.
    Chunking,
    /// The chunks are durable. From here on a retry keeps them.
    Chunked,
    /// Embedding the chunks batch by batch; progress is checkpointed after every batch.
    Embedding,
    /// Every chunk has an embedding; connection detection has been queued.
    Embedded,
    /// The job's work is done.
    Complete,
    /// The job failed permanently. Not part of the forward path.
    Failed,
}

/// The forward path, in order. `Failed` is not on it.
const PIPELINE: [Stage; 10] = [
    Stage::Pending,
    Stage::Extracting,
    Stage::Extracted,
    Stage::SavingMarkdown,
    Stage::MarkdownSaved,
    Stage::Chunking,
    Stage::Chunked,
    Stage::Embedding,
    Stage::Embedded,
    Stage::Complete,
];

impl Stage {
    /// The stage after this one on the forward path; `None` for `Complete` and `Failed`.
    pub fn next(self) -> Option<Stage> {
        let position = self.position()?;
        PIPELINE.get(position + 1).copied()
    }

    /// The stage before this one on the forward path; `None` for `Pending` and `Failed`.
    pub fn previous(self) -> Option<Stage> {
        let position = self.position()?;
        position.checked_sub(1).map(|p| PIPELINE[p])
    }

    /// True for the stages during which work happens (`extracting`, `saving_markdown`,
    /// `chunking`, `embedding`).
    pub fn is_working(self) -> bool {
        matches!(self, Stage::Extracting | Stage::SavingMarkdown | Stage::Chunking | Stage::Embedding)
    }

    /// True for the stages recorded in `completed_stages` once their work is durable
    /// (`extracted`, `markdown_saved`, `chunked`, `embedded`, `complete`).
    pub fn is_milestone(self) -> bool {
        matches!(self, Stage::Extracted | Stage::MarkdownSaved | Stage::Chunked | Stage::Embedded | Stage::Complete)
    }

    /// The milestone that closes this working stage (`chunking` → `chunked`).
    pub fn milestone(self) -> Option<Stage> {
        if self.is_working() { self.next() } else { None }
    }

    /// The working stage whose completion this milestone records (`chunked` → `chunking`).
    /// `complete` closes the pipeline rather than a working stage and has none.
    pub fn working_stage(self) -> Option<Stage> {
        if self.is_milestone() && self != Stage::Complete { self.previous() } else { None }
    }

    /// The milestones in pipeline order.
    pub fn milestones() -> impl Iterator<Item = Stage> {
        PIPELINE.into_iter().filter(|stage| stage.is_milestone())
    }

    /// True for the stages a job can be rewound to ([`Checkpoint::rewind_to`]) so that work runs
    /// again from there: every stage from `extracting` to `embedded`. `pending` is a fresh start,
    /// `complete` has nothing after it, and `failed` is off the forward path.
    pub fn is_rewind_target(self) -> bool {
        self.position().is_some_and(|position| position > 0 && position + 1 < PIPELINE.len())
    }

    /// The stages a job can be rewound to, in pipeline order ([`Stage::is_rewind_target`]).
    pub fn rewind_targets() -> impl Iterator<Item = Stage> {
        PIPELINE.into_iter().filter(|stage| stage.is_rewind_target())
    }

    fn position(self) -> Option<usize> {
        PIPELINE.iter().position(|&stage| stage == self)
    }
}

/// Whether a retry that resumes at `resume` must delete the document's existing chunks first.
///
/// Chunks are kept from `chunked` on (`chunked, embedding, embedded, complete`): they are durable
/// and their ids are deterministic, so keeping them preserves embeddings and connections.
/// Before that (`pending` … `chunking`) the chunks on disk, if any, belong to an attempt that did
/// not finish chunking and are replaced, in the same transaction as the new ones are written.
/// `failed` is treated as a fresh start.
pub fn retry_deletes_chunks(resume: Stage) -> bool {
    !matches!(resume, Stage::Chunked | Stage::Embedding | Stage::Embedded | Stage::Complete)
}

/// Facts cached by the stages so that a retry neither redoes nor re-pays for finished work.
///
/// Every field defaults, so a checkpoint written before a field existed still reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StageFacts {
    /// SHA-256 (hex) of the saved markdown; set at `markdown_saved`.
    pub markdown_hash: Option<String>,
    /// Size of the saved markdown in bytes.
    pub markdown_bytes: Option<u64>,
    /// Number of chunks written; set at `chunked`.
    pub chunk_count: Option<u32>,
    /// How many chunks (in index order) already have stored embeddings.
    pub embedded_chunks: u32,
    /// Embedding requests sent to the AI service by this job, over all attempts.
    pub ai_requests: u64,
    /// Inputs served from the embedding cache instead of the AI service, over all attempts.
    pub ai_cache_hits: u64,
    /// Inputs sent to the AI service, over all attempts.
    pub ai_inputs: u64,
    /// Inputs sent to the AI service since the current embedding pass started from its first
    /// chunk (a resume midway continues the pass; a rewind starts a new one). Chunks of the pass
    /// not sent came from the cache.
    pub embedding_pass_inputs: u64,
    /// Tokens the AI service reported (or that were estimated), over all attempts.
    pub ai_tokens: u64,
    /// The Batch API batch this job is waiting on, recorded as soon as the service created it,
    /// so that a retry asks the service about it before submitting anything again.
    pub embedding_batch: Option<BatchRef>,
}

/// A batch submitted to the AI service's Batch API, as a checkpoint remembers it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchRef {
    /// The service's batch id.
    pub id: String,
    /// The uploaded input file.
    pub input_file_id: String,
    /// When the batch was created (Unix milliseconds, quire's clock).
    pub created_at: UnixMillis,
    /// How many inputs (content hashes) the batch holds.
    pub hashes_count: u64,
    /// The embedding model (cache key) the batch was created for; its results are stored only
    /// under this model.
    pub model: String,
}

/// Progress of one job through the pipeline, stored in the job's metadata.
///
/// The JSON shape is part of quire's contract with operators and with older versions:
/// `{"processing_stage": "chunked", "completed_stages": [...], "stage_timestamps": {...}, "facts": {...}}`.
/// Metadata without these fields (written by an older version, or a new job) reads as `pending`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Checkpoint {
    /// The stage the job was in when the checkpoint was written.
    pub processing_stage: Stage,
    /// Milestones reached, in pipeline order, without gaps.
    pub completed_stages: Vec<Stage>,
    /// When each milestone was reached (and when each working stage was last entered).
    pub stage_timestamps: BTreeMap<Stage, UnixMillis>,
    /// Cached per-stage facts.
    pub facts: StageFacts,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            processing_stage: Stage::Pending,
            completed_stages: Vec::new(),
            stage_timestamps: BTreeMap::new(),
            facts: StageFacts::default(),
        }
    }
}

/// Why a checkpoint transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// A milestone was completed out of order.
    #[error("cannot complete {attempted}: the next milestone is {expected}")]
    OutOfOrder {
        /// The milestone that was attempted.
        attempted: Stage,
        /// The milestone the checkpoint expects next.
        expected: Stage,
    },
    /// The pipeline is already complete.
    #[error("cannot move to {attempted}: the pipeline is already complete")]
    AlreadyComplete {
        /// The stage that was attempted.
        attempted: Stage,
    },
    /// `begin` was given a stage that is not a working stage, or not the one due next.
    #[error("cannot begin {attempted}: the next working stage is {expected}")]
    NotDue {
        /// The stage that was attempted.
        attempted: Stage,
        /// The working stage due next.
        expected: Stage,
    },
}

impl Checkpoint {
    /// Reads a checkpoint from a job's metadata. Missing or unknown shapes read as `pending`:
    /// a damaged checkpoint must cost a redo, never a crash.
    pub fn from_metadata(metadata: &serde_json::Value) -> Checkpoint {
        Checkpoint::deserialize(metadata).unwrap_or_default().normalised()
    }

    /// The checkpoint as job metadata.
    pub fn to_metadata(&self) -> serde_json::Value {
        // A struct of strings, integers and maps always serialises.
        serde_json::to_value(self).expect("a checkpoint always serialises to JSON")
    }

    /// The last milestone reached, or `pending`.
    pub fn last_completed(&self) -> Stage {
        self.completed_stages.last().copied().unwrap_or(Stage::Pending)
    }

    /// True once `stage` has been reached.
    pub fn has_completed(&self, stage: Stage) -> bool {
        self.completed_stages.contains(&stage)
    }

    /// The milestone expected next, or `None` when the pipeline is complete.
    pub fn next_milestone(&self) -> Option<Stage> {
        let mut stage = self.last_completed().next()?;
        while !stage.is_milestone() {
            stage = stage.next()?;
        }
        Some(stage)
    }

    /// Where a retry resumes: the first stage whose work is not yet durable. `complete` once
    /// everything is done.
    pub fn resume_stage(&self) -> Stage {
        match self.last_completed() {
            Stage::Complete => Stage::Complete,
            // Every milestone but `complete` is followed by a working stage; `pending` too.
            last => last.next().unwrap_or(Stage::Complete),
        }
    }

    /// Records that the working stage `stage` has started.
    pub fn begin(&mut self, stage: Stage, now: UnixMillis) -> Result<(), StageError> {
        let expected = self.resume_stage();
        if expected == Stage::Complete {
            return Err(StageError::AlreadyComplete { attempted: stage });
        }
        if stage != expected || !stage.is_working() {
            return Err(StageError::NotDue { attempted: stage, expected });
        }
        self.processing_stage = stage;
        self.stage_timestamps.insert(stage, now);
        Ok(())
    }

    /// Records that milestone `stage` has been reached. Milestones must come in order, one at a
    /// time; completing the one already reached last is refused too, so a caller cannot count
    /// a stage twice.
    pub fn complete(&mut self, stage: Stage, now: UnixMillis) -> Result<(), StageError> {
        let Some(expected) = self.next_milestone() else {
            return Err(StageError::AlreadyComplete { attempted: stage });
        };
        if stage != expected {
            return Err(StageError::OutOfOrder { attempted: stage, expected });
        }
        self.completed_stages.push(stage);
        self.processing_stage = stage;
        self.stage_timestamps.insert(stage, now);
        Ok(())
    }

    /// Records a permanent failure. Completed milestones are kept: they tell an operator how far
    /// the job got, and a replay resumes from them.
    pub fn fail(&mut self, now: UnixMillis) {
        self.processing_stage = Stage::Failed;
        self.stage_timestamps.insert(Stage::Failed, now);
    }

    /// Rewinds the checkpoint so that the next attempt runs `stage` (a working stage) again and
    /// everything after it. Cached AI results stay in the embedding cache and are reused; facts
    /// that belong to undone milestones are cleared.
    pub fn rewind_to(&mut self, stage: Stage) {
        let keep_until = if stage.is_working() { stage } else { stage.working_stage().unwrap_or(stage) };
        self.completed_stages.retain(|&done| done < keep_until);
        self.stage_timestamps.retain(|&done, _| done < keep_until);
        self.processing_stage = self.last_completed();
        if !self.has_completed(Stage::MarkdownSaved) {
            self.facts.markdown_hash = None;
            self.facts.markdown_bytes = None;
        }
        if !self.has_completed(Stage::Chunked) {
            self.facts.chunk_count = None;
        }
        if !self.has_completed(Stage::Embedded) {
            // The embedding cache makes redoing this free of AI requests.
            self.facts.embedded_chunks = 0;
        }
    }

    /// Restores the invariants a stored checkpoint must satisfy: milestones in pipeline order
    /// without gaps or repeats. Anything after the first gap is dropped, which can only make a
    /// retry redo work, never skip it.
    pub fn normalised(mut self) -> Checkpoint {
        let mut valid = Vec::with_capacity(self.completed_stages.len());
        let mut milestones = Stage::milestones();
        for &stage in &self.completed_stages {
            if milestones.next() == Some(stage) {
                valid.push(stage);
            } else {
                break;
            }
        }
        self.completed_stages = valid;
        if self.processing_stage != Stage::Failed && self.processing_stage < self.last_completed() {
            self.processing_stage = self.last_completed();
        }
        self
    }
}
