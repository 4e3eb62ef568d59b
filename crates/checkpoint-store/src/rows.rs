//! The rows both backends read, with named columns, and their one conversion each into the
//! domain types.
//!
//! `#[derive(sqlx::FromRow)]` is generic over the row type, so one struct maps a `SqliteRow` and
//! a `PgRow` alike, by column name: every statement that feeds one of these structs selects
//! (or aliases) exactly these names. Field types are the ones both drivers decode for the
//! column: `i32` for INTEGER columns that PostgreSQL keeps in 32 bits, `i64` for the others,
//! [`Json`] for JSON (TEXT in SQLite, JSONB in PostgreSQL). Everything that turns a row into a
//! domain value, and refuses one that does not fit, is here and in [`crate::codec`]; the
//! backends hold only their SQL, transactions and locking.

use std::time::Duration;

use serde_json::Value;
use sqlx::types::Json;

use crate::codec::{decode_vector, parse_name, unsigned};
use crate::documents::{ChunkView, ConnectionView, Document, EmbeddedChunk, StoredChunk};
use crate::error::{StoreError, StoreResult};
use crate::jobs::{AttemptsEnded, HeartbeatReport, Job, JobAttempt, JobId, Lease, QueueCount, ReaperPass};
use crate::neighbours::KeyedChunk;

/// A row of `jobs`, every column.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct JobRow {
    id: i64,
    kind: String,
    payload: Json<Value>,
    status: String,
    priority: i32,
    attempts: i32,
    max_attempts: i32,
    run_at: i64,
    lock_owner: Option<String>,
    lock_until: Option<i64>,
    lease_token: i64,
    started_at: Option<i64>,
    last_heartbeat: Option<i64>,
    timeout_ms: i64,
    unique_key: Option<String>,
    metadata: Json<Value>,
    result: Option<Json<Value>>,
    last_error: Option<String>,
    error_kind: Option<String>,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    cancel_requested_at: Option<i64>,
    document_id: Option<String>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(row: JobRow) -> StoreResult<Job> {
        Ok(Job {
            id: JobId(row.id),
            kind: parse_name("kind", &row.kind)?,
            document_id: row.document_id,
            payload: row.payload.0,
            status: parse_name("status", &row.status)?,
            priority: row.priority,
            attempts: unsigned("attempts", row.attempts)?,
            max_attempts: unsigned("max_attempts", row.max_attempts)?,
            run_at: row.run_at,
            lock_owner: row.lock_owner,
            lock_until: row.lock_until,
            lease_token: row.lease_token,
            started_at: row.started_at,
            last_heartbeat: row.last_heartbeat,
            timeout: Duration::from_millis(unsigned("timeout_ms", row.timeout_ms)?),
            unique_key: row.unique_key,
            metadata: row.metadata.0,
            result: row.result.map(|Json(result)| result),
            last_error: row.last_error,
            error_kind: row.error_kind.as_deref().map(|kind| parse_name("error_kind", kind)).transpose()?,
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
            cancel_requested_at: row.cancel_requested_at,
        })
    }
}

/// What a fenced failure reads of the job it holds, and the time to record it at.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct HeldJobRow {
    /// The job, every column.
    #[sqlx(flatten)]
    pub job: JobRow,
    /// "Now" for the rest of the transaction.
    pub now: i64,
}

/// A lease a heartbeat renewed, and whether an operator asked to cancel its job.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RenewedRow {
    id: i64,
    lease_token: i64,
    cancel_requested: bool,
}

/// What a heartbeat over `leases` found, from the rows it renewed: the same for both backends.
pub(crate) fn heartbeat_report(leases: &[Lease], renewed: &[RenewedRow]) -> HeartbeatReport {
    let held: Vec<Lease> = renewed.iter().map(Lease::from).collect();
    HeartbeatReport {
        renewed: held.iter().map(|lease| lease.job_id).collect(),
        lost: leases.iter().filter(|lease| !held.contains(lease)).map(|lease| lease.job_id).collect(),
        cancel_requested: renewed.iter().filter(|row| row.cancel_requested).map(|row| JobId(row.id)).collect(),
    }
}

impl From<&RenewedRow> for Lease {
    fn from(row: &RenewedRow) -> Lease {
        Lease { job_id: JobId(row.id), token: row.lease_token }
    }
}

/// One line of the queue counts.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct CountRow {
    status: String,
    kind: String,
    count: i64,
    oldest_created_at: Option<i64>,
}

/// A row of `job_attempts`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AttemptRow {
    attempt: i32,
    worker: Option<String>,
    started_at: Option<i64>,
    ended_at: i64,
    stage: Option<String>,
    outcome: String,
    error: Option<String>,
}

impl TryFrom<AttemptRow> for JobAttempt {
    type Error = StoreError;

    fn try_from(row: AttemptRow) -> StoreResult<JobAttempt> {
        Ok(JobAttempt {
            attempt: unsigned("attempt", row.attempt)?,
            worker: row.worker,
            started_at: row.started_at,
            ended_at: row.ended_at,
            stage: row.stage.as_deref().map(|stage| parse_name("stage", stage)).transpose()?,
            outcome: parse_name("outcome", &row.outcome)?,
            error: row.error,
        })
    }
}

/// A row of [`JobStore::attempts_ended`](crate::JobStore::attempts_ended)'s statement.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AttemptsEndedRow {
    period_start: i64,
    outcome: String,
    count: i64,
}

impl TryFrom<AttemptsEndedRow> for AttemptsEnded {
    type Error = StoreError;

    fn try_from(row: AttemptsEndedRow) -> StoreResult<AttemptsEnded> {
        Ok(AttemptsEnded {
            period_start: row.period_start,
            outcome: parse_name("outcome", &row.outcome)?,
            count: unsigned("count", row.count)?,
        })
    }
}

/// The row of `reaper_passes`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ReaperPassRow {
    worker: String,
    passed_at: i64,
    requeued: i32,
    dead_lettered: i32,
}

impl TryFrom<ReaperPassRow> for ReaperPass {
    type Error = StoreError;

    fn try_from(row: ReaperPassRow) -> StoreResult<ReaperPass> {
        Ok(ReaperPass {
            worker: row.worker,
            passed_at: row.passed_at,
            requeued: unsigned("requeued", row.requeued)?,
            dead_lettered: unsigned("dead_lettered", row.dead_lettered)?,
        })
    }
}

impl TryFrom<CountRow> for QueueCount {
    type Error = StoreError;

    fn try_from(row: CountRow) -> StoreResult<QueueCount> {
        Ok(QueueCount {
            status: parse_name("status", &row.status)?,
            kind: parse_name("kind", &row.kind)?,
            count: unsigned("count", row.count)?,
            oldest_created_at: row.oldest_created_at,
        })
    }
}

/// A row of `documents`, every column.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DocumentRow {
    id: String,
    content_hash: String,
    file_name: String,
    byte_size: i64,
    title: Option<String>,
    author: Option<String>,
    language: Option<String>,
    status: String,
    chunk_count: i32,
    markdown_hash: Option<String>,
    ai_requests: i64,
    embeddings_from_cache: i64,
    error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<DocumentRow> for Document {
    type Error = StoreError;

    fn try_from(row: DocumentRow) -> StoreResult<Document> {
        Ok(Document {
            id: row.id,
            content_hash: row.content_hash,
            file_name: row.file_name,
            byte_size: unsigned("byte_size", row.byte_size)?,
            title: row.title,
            author: row.author,
            language: row.language,
            status: parse_name("status", &row.status)?,
            chunk_count: unsigned("chunk_count", row.chunk_count)?,
            markdown_hash: row.markdown_hash,
            ai_requests: unsigned("ai_requests", row.ai_requests)?,
            embeddings_from_cache: unsigned("embeddings_from_cache", row.embeddings_from_cache)?,
            error: row.error,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A row of `chunks`, every column.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ChunkRow {
    id: String,
    document_id: String,
    chunk_index: i32,
    heading_path: Json<Vec<String>>,
    text: String,
    start_offset: i64,
    end_offset: i64,
    content_hash: String,
}

impl TryFrom<ChunkRow> for StoredChunk {
    type Error = StoreError;

    fn try_from(row: ChunkRow) -> StoreResult<StoredChunk> {
        Ok(StoredChunk {
            id: row.id,
            document_id: row.document_id,
            index: unsigned("chunk_index", row.chunk_index)?,
            heading_path: row.heading_path.0,
            text: row.text,
            start: unsigned("start_offset", row.start_offset)?,
            end: unsigned("end_offset", row.end_offset)?,
            content_hash: row.content_hash,
        })
    }
}

/// A chunk and the vector cached for it under the model asked about, if any.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EmbeddedChunkRow {
    #[sqlx(flatten)]
    chunk: ChunkRow,
    vector: Option<Vec<u8>>,
}

impl TryFrom<EmbeddedChunkRow> for EmbeddedChunk {
    type Error = StoreError;

    fn try_from(row: EmbeddedChunkRow) -> StoreResult<EmbeddedChunk> {
        Ok(EmbeddedChunk {
            chunk: row.chunk.try_into()?,
            embedding: row.vector.as_deref().map(decode_vector).transpose()?,
        })
    }
}

/// One entry of the embedding cache.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct CachedEmbeddingRow {
    content_hash: String,
    vector: Vec<u8>,
}

impl TryFrom<CachedEmbeddingRow> for (String, Vec<f32>) {
    type Error = StoreError;

    fn try_from(row: CachedEmbeddingRow) -> StoreResult<(String, Vec<f32>)> {
        Ok((row.content_hash, decode_vector(&row.vector)?))
    }
}

/// A connection with both of its chunks and their documents' titles. Each side comes as one
/// JSON object with the fields of a [`ChunkView`], so the two sides share one shape.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ConnectionViewRow {
    engine: String,
    score: f32,
    reason: String,
    source: Json<ChunkView>,
    target: Json<ChunkView>,
}

impl From<ConnectionViewRow> for ConnectionView {
    fn from(row: ConnectionViewRow) -> ConnectionView {
        ConnectionView {
            engine: row.engine,
            score: row.score,
            reason: row.reason,
            source: row.source.0,
            target: row.target.0,
        }
    }
}

/// A chunk for display, with its document's title.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ChunkViewRow {
    chunk_id: String,
    document_id: String,
    document_title: Option<String>,
    chunk_index: i32,
    heading_path: Json<Vec<String>>,
    text: String,
}

impl TryFrom<ChunkViewRow> for ChunkView {
    type Error = StoreError;

    fn try_from(row: ChunkViewRow) -> StoreResult<ChunkView> {
        Ok(ChunkView {
            chunk_id: row.chunk_id,
            document_id: row.document_id,
            document_title: row.document_title,
            chunk_index: unsigned("chunk_index", row.chunk_index)?,
            heading_path: row.heading_path.0,
            text: row.text,
        })
    }
}

/// A stored vector under its key (see the nearest-neighbour seam).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct KeyedVectorRow {
    key: i64,
    vector: Vec<u8>,
}

impl TryFrom<KeyedVectorRow> for (i64, Vec<f32>) {
    type Error = StoreError;

    fn try_from(row: KeyedVectorRow) -> StoreResult<(i64, Vec<f32>)> {
        Ok((row.key, decode_vector(&row.vector)?))
    }
}

/// A chunk that uses the vector stored under `key`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct KeyedChunkRow {
    key: i64,
    chunk_id: String,
    document_id: String,
}

impl From<KeyedChunkRow> for KeyedChunk {
    fn from(row: KeyedChunkRow) -> KeyedChunk {
        KeyedChunk { key: row.key, chunk_id: row.chunk_id, document_id: row.document_id }
    }
}

/// Converts every row, stopping at the first that does not fit.
pub(crate) fn convert_all<R, T>(rows: Vec<R>) -> StoreResult<Vec<T>>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}
