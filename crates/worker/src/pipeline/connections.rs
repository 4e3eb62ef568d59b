//! The `detect_connections` handler: runs the connection engines over a document's embedded
//! chunks against the library and stores the connections found.

use std::collections::HashSet;

use async_trait::async_trait;
use checkpoint_store::{ConnectionsOutcome, DocumentStatus, EmbeddedChunk, Job, NewConnection};
use collision_detector::{ChunkRef, ConnectionEngine, LexicalEngine, SemanticEngine};
use serde_json::{Value, json};
use tracing::info;

use super::stats::bump;
use super::{Pipeline, document_id};
use crate::job::{JobContext, JobError, JobHandler};

/// The `detect_connections` handler.
#[derive(Debug, Clone)]
pub struct DetectConnections(pub Pipeline);

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
