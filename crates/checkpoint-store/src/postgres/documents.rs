//! The PostgreSQL document store: documents, chunks, the embedding cache and connections, with
//! the same meaning as the SQLite one (`src/sqlite/documents.rs`).
//!
//! **Fencing.** A fenced write opens a transaction whose first statement is
//! [`sql::LEASE_HELD`]: the job row, still processing under the lease's token, locked
//! `FOR SHARE` until commit. Whatever takes a lease away updates that row, and an update
//! conflicts with the share lock, so the lease cannot be lost between the check and the commit:
//! a reaper waits for the write (or skips the job until its next pass), and a write that comes
//! after a reaper sees the new token and is refused. Several fenced writes of one lease share
//! the lock without waiting for each other.
//!
//! **Concurrency without SQLite's single writer.** Several workers write at once here, so the
//! multi-statement transactions lock what they depend on, always in the same order (job row,
//! document row, chunk rows by id, connection rows by key), which keeps them free of deadlocks:
//!
//! - `replace_chunks` and `replace_connections` of one document lock its row first
//!   (`FOR NO KEY UPDATE`), so they run one after the other: connections are never checked
//!   against one set of chunks and written against another.
//! - `replace_connections` locks every chunk it is about to reference `FOR KEY SHARE` and writes
//!   only connections whose two chunks it locked. A chunk of another document being deleted at
//!   that moment is waited for and left out; once locked, none can be deleted before commit. So
//!   no connection ever names a missing chunk, whoever reprocesses what. This lock is the rule:
//!   `connections` has no foreign keys here (migration 0015), because checking each of a book's
//!   thousands of rows on its own cost two thirds of the insert; a trigger deletes a chunk's
//!   connections with it, once per statement.
//! - `replace_chunks` locks the chunks it deletes and the connections that go with them in
//!   order before deleting, so two documents connected both ways can be reprocessed at once.
//!
//! Lists go in one statement each, as column arrays expanded with `UNNEST`.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::{Postgres, Transaction};

use super::terms::TermCountChanges;
use super::{PgStore, sql};
use crate::codec::{bigint, encode_vector, integer, parse_name, unsigned};
use crate::document_store::DocumentStore;
use crate::documents::{
    BookMetadata, ChunkSet, ChunkView, ConnectionFilter, ConnectionView, ConnectionsOutcome, Document, DocumentStatus,
    EmbeddedChunk, EmbeddingUsage, NewConnection, NewDocument, StoredChunk, check_chunks_belong_to, check_dimensions,
};
use crate::error::{StoreError, StoreResult};
use crate::jobs::Lease;
use crate::rows::{
    CachedEmbeddingRow, ChunkRow, ChunkViewRow, ConnectionViewRow, DocumentRow, EmbeddedChunkRow, convert_all,
};
use crate::term_index::IndexedChunk;

/// Rows per insert statement: a long book goes in a few bounded statements, inside the same
/// transaction.
const INSERT_BATCH: usize = 2_000;

/// How many times `create_document` looks again when its insert found a conflicting row that
/// its read then did not see. Documents are never deleted, so once is enough; the bound only
/// turns an impossible loop into an error.
const CREATE_ATTEMPTS: usize = 3;

impl PgStore {
    /// Opens a transaction that holds only while `lease` does: its first statement locks the
    /// job row `FOR SHARE` (see [`sql::LEASE_HELD`]).
    async fn begin_fenced(&self, lease: Lease) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        let held = sqlx::query(sql::LEASE_HELD).bind(lease.job_id.0).bind(lease.token).fetch_optional(&mut *tx).await?;
        if held.is_none() {
            return Err(StoreError::LeaseLost { job_id: lease.job_id });
        }
        Ok(tx)
    }

    /// Locks the document's row for the rest of `tx` and returns its recorded chunk count.
    async fn lock_document(tx: &mut Transaction<'static, Postgres>, id: &str) -> StoreResult<i32> {
        match sqlx::query_scalar::<_, i32>(sql::LOCK_DOCUMENT).bind(id).fetch_optional(&mut **tx).await? {
            Some(count) => Ok(count),
            None => Err(StoreError::DocumentNotFound(id.to_owned())),
        }
    }
}

#[async_trait]
impl DocumentStore for PgStore {
    async fn create_document(&self, document: NewDocument) -> StoreResult<(Document, bool)> {
        let id = NewDocument::id_for(&document.content_hash);
        // No transaction: under READ COMMITTED the insert waits for a concurrent insert of the
        // same content and then does nothing, and the read that follows (a new snapshot) sees
        // the row that won.
        for _ in 0..CREATE_ATTEMPTS {
            let inserted: Option<DocumentRow> = sqlx::query_as(sql::INSERT_DOCUMENT)
                .bind(&id)
                .bind(&document.content_hash)
                .bind(&document.file_name)
                .bind(bigint(document.byte_size))
                .bind(self.bound_now())
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = inserted {
                return Ok((row.try_into()?, true));
            }
            let existing: Option<DocumentRow> =
                sqlx::query_as(sql::DOCUMENT_BY_HASH).bind(&document.content_hash).fetch_optional(&self.pool).await?;
            if let Some(row) = existing {
                return Ok((row.try_into()?, false));
            }
        }
        Err(StoreError::Corrupt(format!(
            "document with content {} neither inserted nor found after {CREATE_ATTEMPTS} attempts",
            document.content_hash
        )))
    }

    async fn document(&self, id: &str) -> StoreResult<Option<Document>> {
        let row: Option<DocumentRow> = sqlx::query_as(sql::DOCUMENT_BY_ID).bind(id).fetch_optional(&self.pool).await?;
        row.map(Document::try_from).transpose()
    }

    async fn list_documents(&self) -> StoreResult<Vec<Document>> {
        let rows: Vec<DocumentRow> = sqlx::query_as(sql::LIST_DOCUMENTS).fetch_all(&self.pool).await?;
        convert_all(rows)
    }

    async fn set_document_status(
        &self,
        lease: Lease,
        id: &str,
        status: DocumentStatus,
        error: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_fenced(lease).await?;
        let changed = sqlx::query(sql::SET_DOCUMENT_STATUS)
            .bind(id)
            .bind(<&str>::from(status))
            .bind(error)
            .bind(self.bound_now())
            .execute(&mut *tx)
            .await?;
        if changed.rows_affected() == 0 {
            return Err(StoreError::DocumentNotFound(id.to_owned()));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_extraction(
        &self,
        lease: Lease,
        id: &str,
        metadata: &BookMetadata,
        markdown_hash: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin_fenced(lease).await?;
        sqlx::query(sql::RECORD_EXTRACTION)
            .bind(id)
            .bind(&metadata.title)
            .bind(&metadata.author)
            .bind(&metadata.language)
            .bind(markdown_hash)
            .bind(self.bound_now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn replace_chunks(&self, lease: Lease, id: &str, chunks: &[StoredChunk]) -> StoreResult<()> {
        // The document lock below serialises this with `replace_connections` of the same
        // document; it only means something if every chunk belongs to that document.
        check_chunks_belong_to(id, chunks)?;
        let mut tx = self.begin_fenced(lease).await?;
        // Waits for a `replace_connections` of this document to finish, and holds it off
        // until the new chunks are committed.
        Self::lock_document(&mut tx, id).await?;
        // The rows the delete will touch, locked in a fixed order first (chunks by id, then
        // the connections deleted with them, by key). Without this, two documents with
        // connections both ways, reprocessed at once, could each reach a connection row the
        // other had already deleted, and deadlock.
        sqlx::query(sql::LOCK_CHUNKS_OF_DOCUMENT).bind(id).execute(&mut *tx).await?;
        sqlx::query(sql::LOCK_CONNECTIONS_TOUCHING_DOCUMENT).bind(id).execute(&mut *tx).await?;
        let mut term_counts = TermCountChanges::default();
        term_counts.remove_document(&mut tx, id).await?;
        sqlx::query(sql::DELETE_CHUNKS).bind(id).execute(&mut *tx).await?;
        let chunk_terms: Vec<IndexedChunk> = chunks.iter().map(|chunk| IndexedChunk::of(&chunk.text)).collect();
        for indexed in &chunk_terms {
            term_counts.add(&indexed.terms);
        }
        for (slice, slice_terms) in chunks.chunks(INSERT_BATCH).zip(chunk_terms.chunks(INSERT_BATCH)) {
            let heading_paths = slice
                .iter()
                .map(|chunk| serde_json::to_string(&chunk.heading_path))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(sql::INSERT_CHUNKS)
                .bind(slice.iter().map(|chunk| chunk.id.as_str()).collect::<Vec<_>>())
                .bind(slice.iter().map(|chunk| chunk.document_id.as_str()).collect::<Vec<_>>())
                .bind(slice.iter().map(|chunk| integer(chunk.index)).collect::<Vec<_>>())
                .bind(heading_paths)
                .bind(slice.iter().map(|chunk| chunk.text.as_str()).collect::<Vec<_>>())
                .bind(slice.iter().map(|chunk| bigint(chunk.start)).collect::<Vec<_>>())
                .bind(slice.iter().map(|chunk| bigint(chunk.end)).collect::<Vec<_>>())
                .bind(slice.iter().map(|chunk| chunk.content_hash.as_str()).collect::<Vec<_>>())
                .bind(slice_terms.iter().map(IndexedChunk::indexed_terms).collect::<Vec<_>>())
                .bind(slice_terms.iter().map(|indexed| indexed.term_vector.as_str()).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
        }
        for (slice, slice_terms) in chunks.chunks(INSERT_BATCH).zip(chunk_terms.chunks(INSERT_BATCH)) {
            let (ids, terms): (Vec<&str>, Vec<&str>) = slice
                .iter()
                .zip(slice_terms)
                .flat_map(|(chunk, indexed)| indexed.terms.iter().map(move |term| (chunk.id.as_str(), term.as_str())))
                .unzip();
            sqlx::query(sql::INSERT_POSTINGS).bind(ids).bind(terms).execute(&mut *tx).await?;
        }
        term_counts.apply(&mut tx).await?;
        sqlx::query(sql::SET_CHUNK_COUNT)
            .bind(id)
            .bind(integer(chunks.len()))
            .bind(self.bound_now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn chunks(&self, id: &str) -> StoreResult<Vec<StoredChunk>> {
        let rows: Vec<ChunkRow> = sqlx::query_as(sql::CHUNKS_OF_DOCUMENT).bind(id).fetch_all(&self.pool).await?;
        convert_all(rows)
    }

    async fn chunk_views(&self, ids: &[String]) -> StoreResult<Vec<ChunkView>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<ChunkViewRow> = sqlx::query_as(sql::CHUNK_VIEWS_BY_ID).bind(ids).fetch_all(&self.pool).await?;
        convert_all(rows)
    }

    async fn cached_embeddings(
        &self,
        model: &str,
        dimensions: usize,
        content_hashes: &[String],
    ) -> StoreResult<HashMap<String, Vec<f32>>> {
        if content_hashes.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<CachedEmbeddingRow> = sqlx::query_as(sql::CACHED_EMBEDDINGS)
            .bind(model)
            .bind(integer(dimensions))
            .bind(content_hashes)
            .fetch_all(&self.pool)
            .await?;
        Ok(convert_all::<_, (String, Vec<f32>)>(rows)?.into_iter().collect())
    }

    async fn store_embeddings(
        &self,
        lease: Lease,
        model: &str,
        dimensions: usize,
        vectors: &[(String, Vec<f32>)],
    ) -> StoreResult<()> {
        let mut tx = self.begin_fenced(lease).await?;
        check_dimensions(dimensions, vectors)?;
        // Sorted, so that two workers caching overlapping hashes wait for each other's rows in
        // the same order (no deadlock); the first vector of a repeated hash wins, as in SQLite.
        let mut sorted: Vec<&(String, Vec<f32>)> = vectors.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        sorted.dedup_by(|later, first| later.0 == first.0);
        for slice in sorted.chunks(INSERT_BATCH) {
            sqlx::query(sql::INSERT_EMBEDDINGS)
                .bind(slice.iter().map(|(hash, _)| hash.as_str()).collect::<Vec<_>>())
                .bind(model)
                .bind(integer(dimensions))
                .bind(slice.iter().map(|(_, vector)| encode_vector(vector)).collect::<Vec<_>>())
                .bind(self.bound_now())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn mark_embedded(&self, lease: Lease, id: &str, usage: EmbeddingUsage) -> StoreResult<()> {
        let mut tx = self.begin_fenced(lease).await?;
        sqlx::query(sql::MARK_EMBEDDED)
            .bind(id)
            .bind(bigint(usage.ai_requests))
            .bind(bigint(usage.embeddings_from_cache))
            .bind(self.bound_now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn embedded_chunks(
        &self,
        document_id: Option<&str>,
        model: &str,
        dimensions: usize,
    ) -> StoreResult<Vec<EmbeddedChunk>> {
        let rows: Vec<EmbeddedChunkRow> = sqlx::query_as(sql::EMBEDDED_CHUNKS)
            .bind(document_id)
            .bind(model)
            .bind(integer(dimensions))
            .fetch_all(&self.pool)
            .await?;
        convert_all(rows)
    }

    async fn replace_connections(
        &self,
        lease: Lease,
        id: &str,
        computed_from: &ChunkSet,
        connections: &[NewConnection],
    ) -> StoreResult<ConnectionsOutcome> {
        let mut tx = self.begin_fenced(lease).await?;
        // The same lock `replace_chunks` takes first: a reprocessing of this document either
        // committed before this point (and the reads below see its chunks) or waits until this
        // transaction ends. The status and the chunks are read after the lock, in statements of
        // their own, so they see what committed while this one waited.
        let recorded = Self::lock_document(&mut tx, id).await?;
        let status: String = sqlx::query_scalar(sql::DOCUMENT_STATUS).bind(id).fetch_one(&mut *tx).await?;
        let present: Vec<String> = sqlx::query_scalar(sql::CHUNK_IDS_OF_DOCUMENT).bind(id).fetch_all(&mut *tx).await?;
        if !computed_from.is_current(parse_name("documents.status", &status)?, i64::from(recorded), present) {
            return Ok(ConnectionsOutcome::Superseded);
        }
        // Targets may belong to other documents, whose reprocessing the lock above does not
        // stop: lock the referenced chunks that still exist, so none of them can go before
        // commit, and keep only connections whose two chunks were locked. Rows naming a
        // missing chunk are skipped: no connection ever names one (see the module doc).
        let mut referenced: Vec<&str> = connections
            .iter()
            .flat_map(|connection| [connection.source_chunk_id.as_str(), connection.target_chunk_id.as_str()])
            .collect();
        referenced.sort_unstable();
        referenced.dedup();
        let existing: HashSet<String> = if referenced.is_empty() {
            HashSet::new()
        } else {
            sqlx::query_scalar::<_, String>(sql::LOCK_CHUNKS)
                .bind(&referenced)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect()
        };
        // One row per key; a repeated key keeps its last values, as SQLite's upsert does.
        let mut by_key: HashMap<(&str, &str, &str), &NewConnection> = HashMap::new();
        let mut keys = Vec::new();
        for connection in connections {
            if !existing.contains(&connection.source_chunk_id) || !existing.contains(&connection.target_chunk_id) {
                continue;
            }
            let key =
                (connection.source_chunk_id.as_str(), connection.target_chunk_id.as_str(), connection.engine.as_str());
            if by_key.insert(key, connection).is_none() {
                keys.push(key);
            }
        }
        let rows: Vec<&NewConnection> = keys.iter().map(|key| by_key[key]).collect();

        sqlx::query(sql::LOCK_CONNECTIONS_OF_DOCUMENT).bind(id).execute(&mut *tx).await?;
        sqlx::query(sql::DELETE_CONNECTIONS_OF_DOCUMENT).bind(id).execute(&mut *tx).await?;
        let mut written = 0;
        for slice in rows.chunks(INSERT_BATCH) {
            written += sqlx::query(sql::INSERT_CONNECTIONS)
                .bind(slice.iter().map(|c| c.source_chunk_id.as_str()).collect::<Vec<_>>())
                .bind(slice.iter().map(|c| c.target_chunk_id.as_str()).collect::<Vec<_>>())
                .bind(slice.iter().map(|c| c.engine.as_str()).collect::<Vec<_>>())
                .bind(slice.iter().map(|c| c.score).collect::<Vec<_>>())
                .bind(slice.iter().map(|c| c.reason.as_str()).collect::<Vec<_>>())
                .bind(self.bound_now())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        sqlx::query(sql::MARK_COMPLETE).bind(id).bind(self.bound_now()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(ConnectionsOutcome::Stored { written })
    }

    async fn connections(&self, id: &str, filter: &ConnectionFilter) -> StoreResult<Vec<ConnectionView>> {
        let rows: Vec<ConnectionViewRow> = sqlx::query_as(sql::CONNECTIONS_OF_DOCUMENT)
            .bind(id)
            .bind(&filter.engine)
            .bind(filter.min_score)
            .bind(i64::from(filter.limit.unwrap_or(50)))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|row| ConnectionView::from(row).facing(id)).collect())
    }

    async fn connection_count(&self, id: &str) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar(sql::CONNECTION_COUNT).bind(id).fetch_one(&self.pool).await?;
        unsigned("count", count)
    }
}
