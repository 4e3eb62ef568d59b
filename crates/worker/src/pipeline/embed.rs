//! The embedding stage of `process_document`: cached vectors are reused, the rest is embedded
//! directly or through the Batch API, then connection detection is queued.

use std::collections::HashSet;

use checkpoint_store::{EmbeddingUsage, EnqueueOptions, FollowUp, StoredChunk};
use stage_machine::Stage;
use tracing::{info, warn};

use super::detect_connections_key;
use super::stages::Attempt;
use super::stats::bump;
use crate::job::JobError;
use crate::payload::JobPayload;

impl Attempt<'_> {
    pub(super) async fn embed(&mut self) -> Result<(), JobError> {
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
        let per_input = limits.max_input_tokens.min(limits.max_tokens);
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
        pipeline.store.mark_embedded(self.context.lease, &self.document_id, self.embedding_usage()).await?;
        // Asked for with the `embedded` checkpoint, in one transaction: a retry that resumes
        // after it never asks again (and so never detects twice), one that resumes before it does.
        let follow_up = self.detect_connections(chunks.len());
        let enqueued = self.complete_with(Stage::Embedded, follow_up).await?;
        info!(detect_job = %enqueued.job.id, deduplicated = enqueued.deduplicated, "connection detection queued");
        crash_point!("after_checkpoint_embedded");
        self.complete(Stage::Complete).await?;
        Ok(())
    }

    /// What embedding the book cost, as its checkpoint counted it.
    pub(super) fn embedding_usage(&self) -> EmbeddingUsage {
        let facts = &self.checkpoint.facts;
        EmbeddingUsage { ai_requests: facts.ai_requests, embeddings_from_cache: facts.ai_cache_hits }
    }

    /// The book's connection detection, as a follow-up: one active job per book (its unique key).
    pub(super) fn detect_connections(&self, chunks: usize) -> FollowUp {
        JobPayload::detect_connections(&self.document_id, chunks).follow_up(EnqueueOptions {
            unique_key: Some(detect_connections_key(&self.document_id)),
            ..Default::default()
        })
    }
}
