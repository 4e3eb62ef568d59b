//! `quire search TEXT`: the library's chunks nearest a query, by cosine similarity.
//!
//! The search is exact and in process: the query is embedded once, then compared with every
//! chunk that has an embedding for the configured model. That is linear in the library, which is
//! fine for thousands of books' chunks; an approximate index would slot in behind the same command.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use checkpoint_store::ChunkView;
use serde::Serialize;

use crate::app::{App, embedder};
use crate::cli::{EmbedderOptions, GlobalOptions};
use crate::commands::connections::describe;
use crate::output::{excerpt, print_json, table};

/// One result.
#[derive(Debug, Serialize)]
pub struct SearchHit {
    /// Cosine similarity with the query, in [-1, 1].
    pub score: f32,
    /// The chunk.
    #[serde(flatten)]
    pub chunk: ChunkView,
}

/// Cosine similarity; 0 when either vector is all zeros or the sizes differ.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 { 0.0 } else { dot / (aa.sqrt() * bb.sqrt()) }
}

/// Prints the `limit` best chunks for `query`.
pub async fn run(
    global: &GlobalOptions,
    query: &str,
    limit: usize,
    options: &EmbedderOptions,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if query.trim().is_empty() {
        bail!("the query is empty");
    }
    let app = App::open(global).await?;
    let embedder = embedder(options)?;
    let (model, dimensions) = (embedder.model(), embedder.dimensions());
    let vector = embedder
        .embed(&[query.to_owned()])
        .await
        .context("cannot embed the query")?
        .pop()
        .context("the embedder returned no vector for the query")?;
    let titles: HashMap<String, Option<String>> =
        app.store.list_documents().await?.into_iter().map(|d| (d.id, d.title)).collect();
    let chunks = app.store.embedded_chunks(None, &model, dimensions).await?;
    let mut hits: Vec<SearchHit> = chunks
        .into_iter()
        .filter_map(|c| {
            let score = cosine(&vector, c.embedding.as_deref()?);
            let chunk = c.chunk;
            Some(SearchHit {
                score,
                chunk: ChunkView {
                    document_title: titles.get(&chunk.document_id).cloned().flatten(),
                    chunk_id: chunk.id,
                    document_id: chunk.document_id,
                    chunk_index: chunk.index,
                    heading_path: chunk.heading_path,
                    text: chunk.text,
                },
            })
        })
        .collect();
    // Highest first; ties by chunk id so the order is stable.
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.chunk.chunk_id.cmp(&b.chunk.chunk_id)));
    hits.truncate(limit);
    if json {
        print_json(&hits)?;
        return Ok(ExitCode::SUCCESS);
    }
    if hits.is_empty() {
        println!("no chunk is embedded with {model} ({dimensions} dimensions) yet");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = hits.iter().map(|h| [format!("{:.3}", h.score), describe(&h.chunk), excerpt(&h.chunk.text, 100)]);
    println!("{}", table(["score", "chunk", "text"], rows));
    Ok(ExitCode::SUCCESS)
}
