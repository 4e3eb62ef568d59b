//! The SQLite document store: documents, chunks, the embedding cache and connections.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{Sqlite, Transaction};

use super::{SqliteStore, sql};
use crate::codec::{bigint, encode_vector, parse_name, unsigned};
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

impl SqliteStore {
    /// Opens a write transaction that holds only while `lease` does.
    async fn begin_fenced(&self, lease: Lease) -> StoreResult<Transaction<'static, Sqlite>> {
        let mut tx = self.begin_immediate().await?;
        let held = sqlx::query(sql::LEASE_HELD).bind(lease.job_id.0).bind(lease.token).fetch_optional(&mut *tx).await?;
        if held.is_none() {
            return Err(StoreError::LeaseLost { job_id: lease.job_id });
        }
        Ok(tx)
    }
}

#[async_trait]
impl DocumentStore for SqliteStore {
    async fn create_document(&self, document: NewDocument) -> StoreResult<(Document, bool)> {
        let id = NewDocument::id_for(&document.content_hash);
        let mut tx = self.begin_immediate().await?;
        let inserted: Option<DocumentRow> = sqlx::query_as(sql::INSERT_DOCUMENT)
            .bind(&id)
            .bind(&document.content_hash)
            .bind(&document.file_name)
            .bind(bigint(document.byte_size))
            .bind(self.now())
            .fetch_optional(&mut *tx)
            .await?;
        let (row, created) = match inserted {
            Some(row) => (row, true),
            None => {
                (sqlx::query_as(sql::DOCUMENT_BY_HASH).bind(&document.content_hash).fetch_one(&mut *tx).await?, false)
            }
        };
        tx.commit().await?;
        Ok((row.try_into()?, created))
    }

    async fn document(&self, id: &str) -> StoreResult<Option<Document>> {
        let row: Option<DocumentRow> =
            sqlx::query_as(sql::DOCUMENT_BY_ID).bind(id).fetch_optional(&self.reader).await?;
        row.map(Document::try_from).transpose()
    }

    async fn list_documents(&self) -> StoreResult<Vec<Document>> {
        let rows: Vec<DocumentRow> = sqlx::query_as(sql::LIST_DOCUMENTS).fetch_all(&self.reader).await?;
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
            .bind(self.now())
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
            .bind(self.now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn replace_chunks(&self, lease: Lease, id: &str, chunks: &[StoredChunk]) -> StoreResult<()> {
        check_chunks_belong_to(id, chunks)?;
        let mut tx = self.begin_fenced(lease).await?;
        sqlx::query(sql::DELETE_CHUNKS).bind(id).execute(&mut *tx).await?;
        // Bounded statements: a long book is inserted in slices, inside the same transaction.
        for slice in chunks.chunks(500) {
            let json = serde_json::to_string(slice).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(sql::INSERT_CHUNKS).bind(json).execute(&mut *tx).await?;
        }
        super::terms::index_chunks(&mut tx, chunks.iter().map(|chunk| (chunk.id.as_str(), chunk.text.as_str())))
            .await?;
        sqlx::query(sql::SET_CHUNK_COUNT)
            .bind(id)
            .bind(bigint(chunks.len()))
            .bind(self.now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn chunks(&self, id: &str) -> StoreResult<Vec<StoredChunk>> {
        let rows: Vec<ChunkRow> = sqlx::query_as(sql::CHUNKS_OF_DOCUMENT).bind(id).fetch_all(&self.reader).await?;
        convert_all(rows)
    }

    async fn chunk_views(&self, ids: &[String]) -> StoreResult<Vec<ChunkView>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<ChunkViewRow> = sqlx::query_as(sql::CHUNK_VIEWS_BY_ID)
            .bind(serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned()))
            .fetch_all(&self.reader)
            .await?;
        convert_all(rows)
    }

    async fn cached_embeddings(
        &self,
        model: &str,
        dimensions: usize,
        content_hashes: &[String],
    ) -> StoreResult<HashMap<String, Vec<f32>>> {
        let mut found = HashMap::new();
        for slice in content_hashes.chunks(500) {
            let rows: Vec<CachedEmbeddingRow> = sqlx::query_as(sql::CACHED_EMBEDDINGS)
                .bind(model)
                .bind(bigint(dimensions))
                .bind(serde_json::to_string(slice).unwrap_or_default())
                .fetch_all(&self.reader)
                .await?;
            found.extend(convert_all::<_, (String, Vec<f32>)>(rows)?);
        }
        Ok(found)
    }

    async fn store_embeddings(
        &self,
        lease: Lease,
        model: &str,
        dimensions: usize,
        vectors: &[(String, Vec<f32>)],
    ) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.begin_fenced(lease).await?;
        check_dimensions(dimensions, vectors)?;
        for (hash, vector) in vectors {
            sqlx::query(sql::INSERT_EMBEDDING)
                .bind(hash)
                .bind(model)
                .bind(bigint(dimensions))
                .bind(encode_vector(vector))
                .bind(now)
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
            .bind(self.now())
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
            .bind(bigint(dimensions))
            .fetch_all(&self.reader)
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
        let now = self.now();
        let mut tx = self.begin_fenced(lease).await?;
        let document: Option<(String, i64)> =
            sqlx::query_as(sql::CONNECTIONS_PRECONDITION).bind(id).fetch_optional(&mut *tx).await?;
        let Some((status, recorded)) = document else {
            return Err(StoreError::DocumentNotFound(id.to_owned()));
        };
        let present: Vec<String> = sqlx::query_scalar(sql::CHUNK_IDS_OF_DOCUMENT).bind(id).fetch_all(&mut *tx).await?;
        if !computed_from.is_current(parse_name("documents.status", &status)?, recorded, present) {
            return Ok(ConnectionsOutcome::Superseded);
        }
        sqlx::query(sql::DELETE_CONNECTIONS_OF_DOCUMENT).bind(id).execute(&mut *tx).await?;
        let mut written = 0;
        for slice in connections.chunks(500) {
            let json = serde_json::to_string(slice).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            written +=
                sqlx::query(sql::INSERT_CONNECTIONS).bind(json).bind(now).execute(&mut *tx).await?.rows_affected();
        }
        sqlx::query(sql::MARK_COMPLETE).bind(id).bind(now).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(ConnectionsOutcome::Stored { written })
    }

    async fn connections(&self, id: &str, filter: &ConnectionFilter) -> StoreResult<Vec<ConnectionView>> {
        let rows: Vec<ConnectionViewRow> = sqlx::query_as(sql::CONNECTIONS_OF_DOCUMENT)
            .bind(id)
            .bind(&filter.engine)
            .bind(filter.min_score.map(f64::from))
            .bind(i64::from(filter.limit.unwrap_or(50)))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().map(|row| ConnectionView::from(row).facing(id)).collect())
    }

    async fn connection_count(&self, id: &str) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar(sql::CONNECTION_COUNT).bind(id).fetch_one(&self.reader).await?;
        unsigned("count", count)
    }
}
