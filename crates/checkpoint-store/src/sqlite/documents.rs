//! The SQLite document store: documents, chunks, the embedding cache and connections.

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::{SqliteStore, sql};
use crate::document_store::DocumentStore;
use crate::documents::{
    BookMetadata, ChunkView, ConnectionFilter, ConnectionView, ConnectionsOutcome, Document, DocumentStatus,
    EmbeddedChunk, EmbeddingUsage, NewConnection, NewDocument, StoredChunk,
};
use crate::error::{StoreError, StoreResult};
use crate::model::Lease;

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
        let inserted = sqlx::query(sql::INSERT_DOCUMENT)
            .bind(&id)
            .bind(&document.content_hash)
            .bind(&document.file_name)
            .bind(i64::try_from(document.byte_size).unwrap_or(i64::MAX))
            .bind(self.now())
            .fetch_optional(&mut *tx)
            .await?;
        let (row, created) = match inserted {
            Some(row) => (row, true),
            None => (sqlx::query(sql::DOCUMENT_BY_HASH).bind(&document.content_hash).fetch_one(&mut *tx).await?, false),
        };
        tx.commit().await?;
        Ok((document_from_row(&row)?, created))
    }

    async fn document(&self, id: &str) -> StoreResult<Option<Document>> {
        let row = sqlx::query(sql::DOCUMENT_BY_ID).bind(id).fetch_optional(&self.reader).await?;
        row.as_ref().map(document_from_row).transpose()
    }

    async fn list_documents(&self) -> StoreResult<Vec<Document>> {
        let rows = sqlx::query(sql::LIST_DOCUMENTS).fetch_all(&self.reader).await?;
        rows.iter().map(document_from_row).collect()
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

    async fn reset_document_status(&self, id: &str, status: DocumentStatus, error: Option<&str>) -> StoreResult<()> {
        let changed = sqlx::query(sql::SET_DOCUMENT_STATUS)
            .bind(id)
            .bind(<&str>::from(status))
            .bind(error)
            .bind(self.now())
            .execute(&self.writer)
            .await?;
        if changed.rows_affected() == 0 {
            return Err(StoreError::DocumentNotFound(id.to_owned()));
        }
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
        let mut tx = self.begin_fenced(lease).await?;
        sqlx::query(sql::DELETE_CHUNKS).bind(id).execute(&mut *tx).await?;
        // Bounded statements: a long book is inserted in slices, inside the same transaction.
        for slice in chunks.chunks(500) {
            let json = serde_json::to_string(slice).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(sql::INSERT_CHUNKS).bind(json).execute(&mut *tx).await?;
        }
        sqlx::query(sql::SET_CHUNK_COUNT)
            .bind(id)
            .bind(i64::try_from(chunks.len()).unwrap_or(i64::MAX))
            .bind(self.now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn chunks(&self, id: &str) -> StoreResult<Vec<StoredChunk>> {
        let rows = sqlx::query(sql::CHUNKS_OF_DOCUMENT).bind(id).fetch_all(&self.reader).await?;
        rows.iter().map(chunk_from_row).collect()
    }

    async fn cached_embeddings(
        &self,
        model: &str,
        dimensions: usize,
        content_hashes: &[String],
    ) -> StoreResult<HashMap<String, Vec<f32>>> {
        let mut found = HashMap::new();
        for slice in content_hashes.chunks(500) {
            let rows = sqlx::query(sql::CACHED_EMBEDDINGS)
                .bind(model)
                .bind(i64::try_from(dimensions).unwrap_or(i64::MAX))
                .bind(serde_json::to_string(slice).unwrap_or_default())
                .fetch_all(&self.reader)
                .await?;
            for row in rows {
                let hash: String = row.try_get(0)?;
                let bytes: Vec<u8> = row.try_get(1)?;
                found.insert(hash, decode_vector(&bytes));
            }
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
        for (hash, vector) in vectors {
            if vector.len() != dimensions {
                return Err(StoreError::Corrupt(format!(
                    "embedding of {hash} has {} dimensions, expected {dimensions}",
                    vector.len()
                )));
            }
            sqlx::query(sql::INSERT_EMBEDDING)
                .bind(hash)
                .bind(model)
                .bind(i64::try_from(dimensions).unwrap_or(i64::MAX))
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
            .bind(i64::try_from(usage.ai_requests).unwrap_or(i64::MAX))
            .bind(i64::try_from(usage.embeddings_from_cache).unwrap_or(i64::MAX))
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
        let rows = sqlx::query(sql::EMBEDDED_CHUNKS)
            .bind(document_id)
            .bind(model)
            .bind(i64::try_from(dimensions).unwrap_or(i64::MAX))
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                let vector: Option<Vec<u8>> = row.try_get(8)?;
                Ok(EmbeddedChunk { chunk: chunk_from_row(row)?, embedding: vector.as_deref().map(decode_vector) })
            })
            .collect()
    }

    async fn replace_connections(
        &self,
        lease: Lease,
        id: &str,
        expected_chunk_count: u32,
        connections: &[NewConnection],
    ) -> StoreResult<ConnectionsOutcome> {
        let now = self.now();
        let mut tx = self.begin_fenced(lease).await?;
        let Some(row) = sqlx::query(sql::CHUNK_COUNT).bind(id).fetch_optional(&mut *tx).await? else {
            return Err(StoreError::DocumentNotFound(id.to_owned()));
        };
        let recorded: i64 = row.try_get(0)?;
        let present: i64 = row.try_get(1)?;
        if recorded != i64::from(expected_chunk_count) || present != recorded {
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
        let rows = sqlx::query(sql::CONNECTIONS_OF_DOCUMENT)
            .bind(id)
            .bind(&filter.engine)
            .bind(filter.min_score.map(f64::from))
            .bind(i64::from(filter.limit.unwrap_or(50)))
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ConnectionView {
                    engine: row.try_get(0)?,
                    score: row.try_get::<f64, _>(1)? as f32,
                    reason: row.try_get(2)?,
                    source: chunk_view(row, 3)?,
                    target: chunk_view(row, 9)?,
                })
            })
            .map(|view: StoreResult<ConnectionView>| view.map(|view| view.facing(id)))
            .collect()
    }

    async fn connection_count(&self, id: &str) -> StoreResult<u64> {
        let count: i64 = sqlx::query(sql::CONNECTION_COUNT).bind(id).fetch_one(&self.reader).await?.try_get(0)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

fn encode_vector(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|value| value.to_le_bytes()).collect()
}

fn decode_vector(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn unsigned(row: &SqliteRow, index: usize) -> StoreResult<u64> {
    Ok(u64::try_from(row.try_get::<i64, _>(index)?).unwrap_or(0))
}

fn heading_path(text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("heading_path: {e}")))
}

fn document_from_row(row: &SqliteRow) -> StoreResult<Document> {
    let status: String = row.try_get(7)?;
    Ok(Document {
        id: row.try_get(0)?,
        content_hash: row.try_get(1)?,
        file_name: row.try_get(2)?,
        byte_size: unsigned(row, 3)?,
        title: row.try_get(4)?,
        author: row.try_get(5)?,
        language: row.try_get(6)?,
        status: DocumentStatus::from_str(&status)
            .map_err(|_| StoreError::Corrupt(format!("document status {status:?}")))?,
        chunk_count: u32::try_from(unsigned(row, 8)?).unwrap_or(u32::MAX),
        markdown_hash: row.try_get(9)?,
        ai_requests: unsigned(row, 10)?,
        embeddings_from_cache: unsigned(row, 11)?,
        error: row.try_get(12)?,
        created_at: row.try_get(13)?,
        updated_at: row.try_get(14)?,
    })
}

fn chunk_from_row(row: &SqliteRow) -> StoreResult<StoredChunk> {
    Ok(StoredChunk {
        id: row.try_get(0)?,
        document_id: row.try_get(1)?,
        index: u32::try_from(unsigned(row, 2)?).unwrap_or(u32::MAX),
        heading_path: heading_path(&row.try_get::<String, _>(3)?)?,
        text: row.try_get(4)?,
        start: unsigned(row, 5)?,
        end: unsigned(row, 6)?,
        content_hash: row.try_get(7)?,
    })
}

fn chunk_view(row: &SqliteRow, first: usize) -> StoreResult<ChunkView> {
    Ok(ChunkView {
        chunk_id: row.try_get(first)?,
        document_id: row.try_get(first + 1)?,
        document_title: row.try_get(first + 2)?,
        chunk_index: u32::try_from(unsigned(row, first + 3)?).unwrap_or(u32::MAX),
        heading_path: heading_path(&row.try_get::<String, _>(first + 4)?)?,
        text: row.try_get(first + 5)?,
    })
}
