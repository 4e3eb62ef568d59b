//! The document store's contract, shared by every backend.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::documents::{
    BookMetadata, ChunkSet, ChunkView, ConnectionFilter, ConnectionView, ConnectionsOutcome, Document, DocumentStatus,
    EmbeddedChunk, EmbeddingUsage, NewConnection, NewDocument, StoredChunk,
};
use crate::error::StoreResult;
use crate::jobs::Lease;

/// Documents, chunks, the embedding cache and connections.
///
/// Writes made while processing a job take the job's [`Lease`] and are refused with
/// [`StoreError::LeaseLost`](crate::StoreError::LeaseLost) once it is gone, exactly like the job
/// store's own writes: the lease is checked inside the same transaction as the write.
#[async_trait]
pub trait DocumentStore: Send + Sync {
    /// Records an upload; returns the existing document when the same content was uploaded
    /// before, with `false`.
    async fn create_document(&self, document: NewDocument) -> StoreResult<(Document, bool)>;

    /// One document.
    async fn document(&self, id: &str) -> StoreResult<Option<Document>>;

    /// All documents, oldest first.
    async fn list_documents(&self) -> StoreResult<Vec<Document>>;

    /// Sets a document's status (and error, for `failed`). Fenced.
    async fn set_document_status(
        &self,
        lease: Lease,
        id: &str,
        status: DocumentStatus,
        error: Option<&str>,
    ) -> StoreResult<()>;

    /// Records what extraction found: title, author, language and the markdown's hash. Fenced.
    async fn record_extraction(
        &self,
        lease: Lease,
        id: &str,
        metadata: &BookMetadata,
        markdown_hash: &str,
    ) -> StoreResult<()>;

    /// Replaces the document's chunks, in one transaction: the old chunks (and the connections
    /// that reference them) go and the new ones arrive together, so a failure never leaves the
    /// document without chunks. Fenced.
    async fn replace_chunks(&self, lease: Lease, id: &str, chunks: &[StoredChunk]) -> StoreResult<()>;

    /// The document's chunks in order.
    async fn chunks(&self, id: &str) -> StoreResult<Vec<StoredChunk>>;

    /// These chunks, for display, in no particular order; ids that name no chunk are skipped.
    async fn chunk_views(&self, ids: &[String]) -> StoreResult<Vec<ChunkView>>;

    /// Cached vectors for these content hashes under `model`/`dimensions`.
    async fn cached_embeddings(
        &self,
        model: &str,
        dimensions: usize,
        content_hashes: &[String],
    ) -> StoreResult<HashMap<String, Vec<f32>>>;

    /// Adds vectors to the cache (existing entries are kept). Fenced.
    async fn store_embeddings(
        &self,
        lease: Lease,
        model: &str,
        dimensions: usize,
        vectors: &[(String, Vec<f32>)],
    ) -> StoreResult<()>;

    /// Marks the document embedded and records its embedding usage. Fenced.
    async fn mark_embedded(&self, lease: Lease, id: &str, usage: EmbeddingUsage) -> StoreResult<()>;

    /// Chunks with their cached vectors: of one document, or of the whole library.
    async fn embedded_chunks(
        &self,
        document_id: Option<&str>,
        model: &str,
        dimensions: usize,
    ) -> StoreResult<Vec<EmbeddedChunk>>;

    /// Replaces the connections whose source is one of the document's chunks, and marks the
    /// document complete, in one transaction — but only if `computed_from` is still the
    /// document's chunk set and the document is `embedded` or `complete` ([`ChunkSet`]);
    /// otherwise writes nothing and reports [`ConnectionsOutcome::Superseded`]. Connections
    /// naming a chunk that no longer exists are skipped. Fenced.
    async fn replace_connections(
        &self,
        lease: Lease,
        id: &str,
        computed_from: &ChunkSet,
        connections: &[NewConnection],
    ) -> StoreResult<ConnectionsOutcome>;

    /// The connections of a document's chunks, whichever document found them, strongest first;
    /// each shown with the document's own chunk as `source`.
    async fn connections(&self, id: &str, filter: &ConnectionFilter) -> StoreResult<Vec<ConnectionView>>;

    /// Number of connections that touch one of the document's chunks.
    async fn connection_count(&self, id: &str) -> StoreResult<u64>;
}
