//! `quire search TEXT`: the library's chunks nearest a query, by cosine similarity.
//!
//! The query is embedded once and handed to the store's nearest-neighbour seam
//! ([`checkpoint_store::NeighbourSearch`]): an index answers (pgvector's, or the in-process HNSW
//! index), or, with `--exact`, a comparison with every stored vector. Only the chunks found are
//! read back, so memory does not grow with the library.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use checkpoint_store::{ChunkView, NeighbourQuery, SearchMode, Store};
use embedder::Embedder;
use serde::Serialize;

use crate::app::{App, embedder};
use crate::cli::{EmbedderOptions, GlobalOptions};
use crate::commands::connections::describe;
use crate::output::{excerpt, print_json, table};

/// One result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    /// Cosine similarity with the query, in [-1, 1].
    pub score: f32,
    /// The chunk.
    #[serde(flatten)]
    pub chunk: ChunkView,
}

/// The `limit` chunks nearest `query`, best first, for `quire search` and `GET /v1/search`.
pub async fn search(
    store: &dyn Store,
    embedder: &dyn Embedder,
    query: &str,
    limit: usize,
    mode: SearchMode,
) -> anyhow::Result<Vec<SearchHit>> {
    let (model, dimensions) = (embedder.model(), embedder.dimensions());
    let vector = embedder
        .embed(&[query.to_owned()])
        .await
        .context("cannot embed the query")?
        .pop()
        .context("the embedder returned no vector for the query")?;
    let vectors = [vector];
    let search = NeighbourQuery { model: &model, dimensions, vectors: &vectors, limit, exclude_document: None, mode };
    let found = store.nearest_chunks(search).await?.pop().unwrap_or_default();
    let ids: Vec<String> = found.iter().map(|n| n.chunk_id.clone()).collect();
    let mut views: HashMap<String, ChunkView> =
        store.chunk_views(&ids).await?.into_iter().map(|view| (view.chunk_id.clone(), view)).collect();
    // Best first, as found; a chunk replaced since the search is left out.
    Ok(found.iter().filter_map(|n| Some(SearchHit { score: n.score, chunk: views.remove(&n.chunk_id)? })).collect())
}

/// Prints the `limit` best chunks for `query`.
pub async fn run(
    global: &GlobalOptions,
    query: &str,
    limit: usize,
    mode: SearchMode,
    options: &EmbedderOptions,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if query.trim().is_empty() {
        bail!("the query is empty");
    }
    let app = App::open(global).await?;
    let embedder = embedder(options)?;
    let (model, dimensions) = (embedder.model(), embedder.dimensions());
    let hits = search(app.store.as_ref(), embedder.as_ref(), query, limit, mode).await?;
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
