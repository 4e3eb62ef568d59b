//! The library's vocabulary: documents, chunks, cached embeddings and connections.

use serde::{Deserialize, Serialize};
use stage_machine::UnixMillis;

use crate::error::{StoreError, StoreResult};

/// Where a document is in its processing.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DocumentStatus {
    /// Uploaded; its processing job has not started.
    Pending,
    /// Its processing job is running.
    Processing,
    /// Chunks and embeddings are stored: the document is searchable. Connections are on the way.
    Embedded,
    /// Connections are stored too.
    Complete,
    /// Processing failed permanently; `error` says why.
    Failed,
}

/// An uploaded book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Identity, derived from the content hash.
    pub id: String,
    /// SHA-256 (hex) of the uploaded file: the same upload is one document.
    pub content_hash: String,
    /// The file name it was first uploaded under.
    pub file_name: String,
    /// Size of the upload in bytes.
    pub byte_size: u64,
    /// Title from the package document.
    pub title: Option<String>,
    /// Author from the package document.
    pub author: Option<String>,
    /// Language from the package document.
    pub language: Option<String>,
    /// Where the document is in its processing.
    pub status: DocumentStatus,
    /// Number of chunks stored.
    pub chunk_count: u32,
    /// SHA-256 (hex) of the extracted markdown.
    pub markdown_hash: Option<String>,
    /// Requests sent to the embedding service for this document.
    pub ai_requests: u64,
    /// Chunks whose embedding came from the cache.
    pub embeddings_from_cache: u64,
    /// Why processing failed.
    pub error: Option<String>,
    /// When it was uploaded.
    pub created_at: UnixMillis,
    /// When it last changed.
    pub updated_at: UnixMillis,
}

/// What [`DocumentStore::create_document`](crate::DocumentStore::create_document) needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDocument {
    /// SHA-256 (hex) of the file.
    pub content_hash: String,
    /// The name it was uploaded under.
    pub file_name: String,
    /// Its size in bytes.
    pub byte_size: u64,
}

impl NewDocument {
    /// The document id for a content hash: stable, short enough to type.
    pub fn id_for(content_hash: &str) -> String {
        format!("doc-{}", &content_hash[..content_hash.len().min(16)])
    }
}

/// Metadata read from the book itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BookMetadata {
    /// Title.
    pub title: Option<String>,
    /// Author.
    pub author: Option<String>,
    /// Language.
    pub language: Option<String>,
}

/// A chunk of a document's markdown, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredChunk {
    /// Deterministic id (document, index, content hash).
    pub id: String,
    /// The document.
    pub document_id: String,
    /// Position in the document, from 0.
    pub index: u32,
    /// Headings in force at the chunk's start, outermost first.
    pub heading_path: Vec<String>,
    /// The text.
    pub text: String,
    /// Offset of the first character in the markdown (in characters).
    pub start: u64,
    /// Offset after the last character in the markdown (in characters).
    pub end: u64,
    /// SHA-256 (hex) of the text: the embedding cache key.
    pub content_hash: String,
}

/// A connection between two chunks found by one engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewConnection {
    /// The chunk of the document being processed.
    pub source_chunk_id: String,
    /// The chunk it connects to (any document).
    pub target_chunk_id: String,
    /// The engine that found it.
    pub engine: String,
    /// How strong, engine-specific, higher is stronger.
    pub score: f32,
    /// A short human reason.
    pub reason: String,
}

/// A stored connection with both chunks, for display.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConnectionView {
    /// The document's chunk.
    pub source: ChunkView,
    /// The chunk it connects to.
    pub target: ChunkView,
    /// The engine that found it.
    pub engine: String,
    /// How strong.
    pub score: f32,
    /// Why.
    pub reason: String,
}

impl ConnectionView {
    /// The same connection seen from `document_id`: its own chunk as `source`. Connections are
    /// stored from the document that found them; either document may ask.
    pub fn facing(self, document_id: &str) -> ConnectionView {
        if self.source.document_id != document_id && self.target.document_id == document_id {
            ConnectionView { source: self.target, target: self.source, ..self }
        } else {
            self
        }
    }
}

/// A chunk with its document's title, for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChunkView {
    /// The chunk id.
    pub chunk_id: String,
    /// Its document.
    pub document_id: String,
    /// Its document's title.
    pub document_title: Option<String>,
    /// Its position.
    pub chunk_index: u32,
    /// Its headings.
    pub heading_path: Vec<String>,
    /// Its text.
    pub text: String,
}

/// Filter for [`DocumentStore::connections`](crate::DocumentStore::connections).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionFilter {
    /// Only this engine.
    pub engine: Option<String>,
    /// Only at least this score.
    pub min_score: Option<f32>,
    /// At most this many, strongest first. Default 50.
    pub limit: Option<u32>,
}

/// The chunks a document's connections were computed from, by id. Connections are stored only
/// for the very chunks the document still has: a reprocessing may keep the chunk count and change
/// every chunk, so a count says too little.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChunkSet {
    /// Sorted, each once.
    ids: Vec<String>,
}

impl ChunkSet {
    /// The set of these chunk ids (order and repeats do not matter).
    pub fn of<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> ChunkSet {
        let mut ids: Vec<String> = ids.into_iter().map(Into::into).collect();
        ids.sort_unstable();
        ids.dedup();
        ChunkSet { ids }
    }

    /// How many chunks the set holds.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether connections computed from this set may replace a document's connections: the
    /// document's chunks (`present`, as read inside the writing transaction) are exactly this set,
    /// its recorded chunk count agrees, and it is `embedded` or `complete`. A document that a
    /// newer processing has taken back to `pending` or `processing`, or that `failed`, is never
    /// moved to `complete` by an older job; the newer processing queues its own detection.
    pub(crate) fn is_current(&self, status: DocumentStatus, recorded_chunks: i64, present: Vec<String>) -> bool {
        matches!(status, DocumentStatus::Embedded | DocumentStatus::Complete)
            && usize::try_from(recorded_chunks).is_ok_and(|recorded| recorded == self.ids.len())
            && ChunkSet::of(present) == *self
    }
}

/// What [`DocumentStore::replace_connections`](crate::DocumentStore::replace_connections) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionsOutcome {
    /// The connections were stored and the document marked complete.
    Stored {
        /// Connections written.
        written: u64,
    },
    /// The document no longer has the chunks the connections were computed from, or a newer
    /// processing of it is under way ([`ChunkSet`]); nothing was written.
    Superseded,
}

/// Counts the embedding step accumulated for a document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmbeddingUsage {
    /// Requests sent to the embedding service.
    pub ai_requests: u64,
    /// Chunks served from the cache.
    pub embeddings_from_cache: u64,
}

/// A chunk with its vector, as the connection engines and search read them.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedChunk {
    /// The chunk.
    pub chunk: StoredChunk,
    /// Its embedding, if one is cached for the model asked about.
    pub embedding: Option<Vec<f32>>,
}

/// Refuses chunks that belong to another document than `document_id`: chunk replacement is
/// serialised per document, which only means something if every chunk is that document's.
pub(crate) fn check_chunks_belong_to(document_id: &str, chunks: &[StoredChunk]) -> StoreResult<()> {
    match chunks.iter().find(|chunk| chunk.document_id != document_id) {
        Some(stray) => Err(StoreError::Corrupt(format!(
            "chunk {} belongs to document {}, not {document_id}",
            stray.id, stray.document_id
        ))),
        None => Ok(()),
    }
}

/// Refuses vectors whose length is not the `dimensions` they are cached under.
pub(crate) fn check_dimensions(dimensions: usize, vectors: &[(String, Vec<f32>)]) -> StoreResult<()> {
    match vectors.iter().find(|(_, vector)| vector.len() != dimensions) {
        Some((hash, vector)) => Err(StoreError::Corrupt(format!(
            "embedding of {hash} has {} dimensions, expected {dimensions}",
            vector.len()
        ))),
        None => Ok(()),
    }
}
