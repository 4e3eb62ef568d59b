//! The `detect_connections` handler: runs the connection engines over a document's embedded
//! chunks against the library and stores the connections found. The library is reached through
//! the store's indexes (nearest neighbours by embedding, chunks sharing rare terms), so the cost
//! and the memory follow the document, not the library.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use checkpoint_store::{
    ChunkSet, ConnectionsOutcome, DocumentStatus, EmbeddedChunk, Job, Neighbour as StoreNeighbour, NeighbourQuery,
    NewConnection, SearchMode, Store,
};
use collision_detector::{CandidateQuery, Connection, Neighbour, SemanticEngine};
use serde_json::{Value, json};
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info};

use super::lexical::{elapsed_ms, lexical_connections};
use super::stats::bump;
use super::{Pipeline, document_id};
use crate::job::{JobContext, JobError, JobHandler};

/// The `detect_connections` handler.
#[derive(Debug, Clone)]
pub struct DetectConnections(pub Pipeline);

#[async_trait]
impl JobHandler for DetectConnections {
    /// It compares vectors already stored, never asking for new ones.
    fn needs_ai_service(&self) -> bool {
        false
    }

    async fn run(&self, job: &Job, context: &JobContext) -> Result<Value, JobError> {
        let pipeline = &self.0;
        let document_id = document_id(job)?;
        let (model, dimensions) = (pipeline.embedder.model(), pipeline.embedder.dimensions());
        // A reprocessing that starts while we compute supersedes our result; one that has
        // finished (the document is embedded again) may have folded its own request for
        // connections into this job, so compute again for its chunks, a bounded number of times.
        for _ in 0..3 {
            context.checkpoint_boundary()?;
            let Some(document) = pipeline.store.document(&document_id).await? else {
                return Ok(json!({ "document_id": document_id, "skipped": "the document no longer exists" }));
            };
            if !matches!(document.status, DocumentStatus::Embedded | DocumentStatus::Complete) {
                info!(status = %document.status, "document is being reprocessed; leaving connections to the newer job");
                return Ok(json!({ "document_id": document_id, "superseded": true }));
            }
            bump(&pipeline.stats.detections, 1);
            let sources = Arc::new(pipeline.store.embedded_chunks(Some(&document_id), &model, dimensions).await?);
            let computed_from = ChunkSet::of(sources.iter().map(|source| source.chunk.id.as_str()));
            // The two halves are independent, and each spends stretches on the CPU between its
            // awaits: the semantic half is a task of its own, so that it moves on while the
            // lexical half computes, rather than only when the lexical half awaits.
            let started = Instant::now();
            // Aborted when dropped (the lexical half failed first), so it never outlives the
            // attempt; logged in the job's span.
            let semantic = AbortOnDropHandle::new(tokio::spawn(
                {
                    let (store, sources, model) = (pipeline.store.clone(), sources.clone(), model.clone());
                    async move {
                        let found = semantic_neighbours(store.as_ref(), &sources, &model, dimensions).await;
                        debug!(elapsed_ms = elapsed_ms(started), "semantic: neighbours found");
                        found
                    }
                }
                .in_current_span(),
            ));
            let lexical = lexical_connections(pipeline.store.as_ref(), &sources, CandidateQuery::default()).await?;
            let neighbours = semantic.await.map_err(crashed)??;
            let connections = tokio::task::spawn_blocking(move || find_connections(&sources, &neighbours, lexical))
                .await
                .map_err(crashed)?;
            debug!(elapsed_ms = elapsed_ms(started), connections = connections.len(), "connections put together");
            match pipeline.store.replace_connections(context.lease, &document_id, &computed_from, &connections).await? {
                ConnectionsOutcome::Stored { written } => {
                    info!(connections = written, took_ms = elapsed_ms(started), "connections stored");
                    return Ok(json!({ "document_id": document_id, "connections": written }));
                }
                ConnectionsOutcome::Superseded => {
                    info!("chunks changed while connections were computed");
                }
            }
        }
        Ok(json!({ "document_id": document_id, "superseded": true }))
    }
}

/// A task of the job that panicked: retried, as any crash.
fn crashed(error: tokio::task::JoinError) -> JobError {
    JobError::Retryable(format!("connection detection crashed: {error}"))
}

/// The semantic engine's choice for one document.
const SEMANTIC: SemanticEngine = SemanticEngine::DEFAULT;

/// The nearest chunks of the library to each of the document's embedded chunks, through the
/// store's nearest-neighbour index: the cost follows the document, not the library. One more
/// than the engine keeps is asked for, since a chunk finds itself first.
async fn semantic_neighbours(
    store: &dyn Store,
    sources: &[EmbeddedChunk],
    model: &str,
    dimensions: usize,
) -> Result<Vec<(String, Vec<StoreNeighbour>)>, JobError> {
    let embedded: Vec<(&str, Vec<f32>)> =
        sources.iter().filter_map(|s| Some((s.chunk.id.as_str(), s.embedding.clone()?))).collect();
    let vectors: Vec<Vec<f32>> = embedded.iter().map(|(_, v)| v.clone()).collect();
    let query = NeighbourQuery {
        model,
        dimensions,
        vectors: &vectors,
        limit: SEMANTIC.top_k + 1,
        exclude_document: None,
        mode: SearchMode::Approximate,
    };
    let found = store.nearest_chunks(query).await?;
    Ok(embedded.into_iter().map(|(id, _)| id.to_owned()).zip(found).collect())
}

/// Puts the engines' findings together: the semantic engine's over the neighbours the index
/// found, and the lexical engine's. A pair within one document is stored once, from its lower
/// chunk id, since both directions say the same.
fn find_connections(
    sources: &[EmbeddedChunk],
    neighbours: &[(String, Vec<StoreNeighbour>)],
    mut connections: Vec<Connection>,
) -> Vec<NewConnection> {
    for (source, found) in neighbours {
        let found: Vec<Neighbour<'_>> =
            found.iter().map(|n| Neighbour { chunk_id: &n.chunk_id, score: n.score }).collect();
        connections.extend(SEMANTIC.connect_neighbours(source, &found));
    }
    collision_detector::sort(&mut connections);
    let source_ids: HashSet<&str> = sources.iter().map(|s| s.chunk.id.as_str()).collect();
    connections
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
