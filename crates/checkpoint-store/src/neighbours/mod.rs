//! The nearest-neighbour seam: the chunks whose embeddings are nearest a batch of query vectors,
//! by cosine similarity, scoped to one model and dimension count.
//!
//! **The database is the source of truth; indexes and their buffers are caches.** Every stored
//! vector is a row of `embedding_cache`, named by a key that never changes (SQLite's `rowid`,
//! PostgreSQL's `seq`). An index maps query vectors to such keys only. Keys become chunks through the `chunks` table at
//! query time, so a reprocessed document's old chunks never come back from an index, and a vector
//! no chunk uses any more finds nothing. Three ways to find the keys, one algorithm around them:
//!
//! - [`SearchMode::Exact`]: a scan of every stored vector of the model, page by page, keeping the
//!   best k per query ([`vector_index::TopK`]); memory bounded by the page and k.
//! - the in-process HNSW index ([`InProcessIndexes`]), caught up with the database before every
//!   query; used on SQLite, and on PostgreSQL without pgvector. What a catch-up brings waits in
//!   an exact tail (searched one by one, merged with the graph's answer) and is folded into the
//!   graph once the index has been idle for a while (or when the process settles its indexes
//!   before it exits), so a new book's vectors are not inserted before its own query, nor while
//!   the job that asked still works;
//! - pgvector's HNSW index (PostgreSQL with the extension; see `postgres/vectors.rs`).
//!
//! An index returns keys, some of whose chunks may be excluded (the caller's document) or gone;
//! the search asks for more keys until it has `limit` chunks or the index has no more to give.

mod in_process;

use std::collections::HashMap;

use async_trait::async_trait;
pub use in_process::{InProcessIndexes, VectorSnapshots};
use vector_index::Scored;

use crate::error::{StoreError, StoreResult};

/// How to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    /// Through the backend's approximate index (HNSW): cost grows with the query, not the library.
    #[default]
    Approximate,
    /// Every stored vector is compared: exact, linear in the library.
    Exact,
}

/// A batch of nearest-neighbour queries.
#[derive(Debug, Clone, Copy)]
pub struct NeighbourQuery<'a> {
    /// The embedding model whose vectors are searched; vectors of other models never meet.
    pub model: &'a str,
    /// Their dimension count; every query vector must have it.
    pub dimensions: usize,
    /// The query vectors.
    pub vectors: &'a [Vec<f32>],
    /// How many chunks to return per query at most.
    pub limit: usize,
    /// Chunks of this document are left out.
    pub exclude_document: Option<&'a str>,
    /// Approximate (the default) or exact.
    pub mode: SearchMode,
}

/// A chunk near a query vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    /// The chunk.
    pub chunk_id: String,
    /// Its document.
    pub document_id: String,
    /// Cosine similarity with the query, in `[-1, 1]`.
    pub score: f32,
}

/// Which index answers approximate queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display)]
#[strum(serialize_all = "snake_case")]
pub enum VectorIndexKind {
    /// pgvector's HNSW index, inside PostgreSQL.
    Pgvector,
    /// An HNSW index in this process, caught up with the database before each query.
    InProcess,
}

/// Nearest-neighbour search over the stored embeddings.
#[async_trait]
pub trait NeighbourSearch: Send + Sync {
    /// For each query vector, up to `limit` chunks, highest cosine similarity first (ties by chunk
    /// id). A chunk whose content has no vector of the model is never returned. A query vector
    /// with the wrong dimension count is refused with [`StoreError::InvalidQuery`].
    async fn nearest_chunks(&self, query: NeighbourQuery<'_>) -> StoreResult<Vec<Vec<Neighbour>>>;

    /// Which index answers [`SearchMode::Approximate`] queries.
    fn vector_index_kind(&self) -> VectorIndexKind;

    /// Does now the index upkeep deferred while the process was busy (the in-process indexes
    /// fold their fresh tails into their graphs only once idle, and write their snapshots then),
    /// and returns when it is done. A one-shot process calls it before it exits, so that the next
    /// one starts from a snapshot that holds everything. Nothing to do for pgvector.
    async fn settle_indexes(&self) -> StoreResult<()>;

    /// Loads the index that approximate queries of this model use (its snapshot, or a build from
    /// the database) and catches it up, ahead of the first query: a process warms its indexes
    /// when it starts, so that its first job does not pay for the load. Nothing to do for
    /// pgvector.
    async fn warm_indexes(&self, model: &str, dimensions: usize) -> StoreResult<()>;
}

/// A chunk that uses a stored vector: what a key resolves to.
#[derive(Debug, Clone)]
pub(crate) struct KeyedChunk {
    pub key: i64,
    pub chunk_id: String,
    pub document_id: String,
}

/// What a backend offers the search: its stored vectors by key, and the chunks behind keys.
#[async_trait]
pub(crate) trait VectorRows: Send + Sync {
    /// The keys of the model's vectors above `after`, ascending.
    async fn vector_keys_after(&self, model: &str, dimensions: usize, after: i64) -> StoreResult<Vec<i64>>;

    /// Up to `limit` of the model's vectors with keys above `after`, in key order.
    async fn vectors_after(
        &self,
        model: &str,
        dimensions: usize,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, Vec<f32>)>>;

    /// The vectors stored under these keys.
    async fn vectors_by_key(&self, keys: &[i64]) -> StoreResult<Vec<(i64, Vec<f32>)>>;

    /// How many of the model's vectors have keys up to `key`.
    async fn count_vectors_up_to(&self, model: &str, dimensions: usize, key: i64) -> StoreResult<u64>;

    /// The chunks that use the vectors under these keys.
    async fn chunks_for_keys(&self, keys: &[i64]) -> StoreResult<Vec<KeyedChunk>>;

    /// Whether keys are assigned in commit order (one writer at a time), so that nothing can
    /// appear later below the highest key seen. False on PostgreSQL, where a transaction that
    /// took a key earlier may commit later.
    fn keys_follow_commits(&self) -> bool;

    /// The highest key of the model's vectors stored at least `age` ago, by the store's clock:
    /// where an index that has just been built may set its safe low (see `in_process.rs`).
    /// Only asked of backends whose keys do not follow commits.
    async fn settled_key(&self, model: &str, dimensions: usize, age: std::time::Duration) -> StoreResult<i64>;
}

/// How many vectors an exact scan holds at once.
const SCAN_PAGE: usize = 4096;

/// The most keys asked of an index per query while looking for `limit` chunks.
const MAX_KEYS_PER_QUERY: usize = 4096;

/// Checks the query's shape: every vector has the declared dimension count.
pub(crate) fn validate(query: &NeighbourQuery<'_>) -> StoreResult<()> {
    if query.dimensions == 0 {
        return Err(StoreError::InvalidQuery("a query needs at least one dimension".to_owned()));
    }
    if let Some((index, vector)) = query.vectors.iter().enumerate().find(|(_, v)| v.len() != query.dimensions) {
        return Err(StoreError::InvalidQuery(format!(
            "query vector {index} has {} dimensions, but {} has {}",
            vector.len(),
            query.model,
            query.dimensions
        )));
    }
    Ok(())
}

/// Runs `query` through `find_keys` (an index or an exact scan giving the best `n` keys per query
/// vector), resolving keys to chunks and asking for more keys while a query has fewer than `limit`
/// chunks and the index may have more.
pub(crate) async fn search<R, F, Fut>(
    rows: &R,
    query: NeighbourQuery<'_>,
    mut find_keys: F,
) -> StoreResult<Vec<Vec<Neighbour>>>
where
    R: VectorRows + ?Sized,
    F: FnMut(Vec<usize>, usize) -> Fut,
    Fut: std::future::Future<Output = StoreResult<Vec<Vec<Scored>>>>,
{
    validate(&query)?;
    let mut results: Vec<Option<Vec<Neighbour>>> = vec![None; query.vectors.len()];
    if query.limit == 0 {
        return Ok(vec![Vec::new(); query.vectors.len()]);
    }
    // Most keys name one chunk; ask for a margin over `limit` so that one round usually suffices:
    // a wide one when a document is left out (its own chunks are often the nearest), a narrow one
    // otherwise (only a vector whose chunks are all gone names none). Every key asked for is
    // named through the database, so a margin costs a lookup per query and key.
    let margin = if query.exclude_document.is_some() { query.limit + 8 } else { 2 };
    let mut asked = (query.limit + margin).min(MAX_KEYS_PER_QUERY);
    let mut pending: Vec<usize> = (0..query.vectors.len()).collect();
    while !pending.is_empty() {
        let started = std::time::Instant::now();
        let found = find_keys(pending.clone(), asked).await?;
        let searched_ms = started.elapsed().as_millis() as u64;
        let keys: Vec<i64> = {
            let mut keys: Vec<i64> = found.iter().flatten().filter_map(|s| i64::try_from(s.key).ok()).collect();
            keys.sort_unstable();
            keys.dedup();
            keys
        };
        let mut chunks_by_key: HashMap<i64, Vec<KeyedChunk>> = HashMap::new();
        for chunk in rows.chunks_for_keys(&keys).await? {
            chunks_by_key.entry(chunk.key).or_default().push(chunk);
        }
        tracing::debug!(
            queries = pending.len(),
            asked,
            keys = keys.len(),
            searched_ms,
            named_ms = started.elapsed().as_millis() as u64,
            "neighbour search: keys found and named"
        );
        let mut still_short = Vec::new();
        for (&query_index, scored) in pending.iter().zip(&found) {
            let mut neighbours: Vec<Neighbour> = scored
                .iter()
                .filter_map(|s| Some((s.score, chunks_by_key.get(&i64::try_from(s.key).ok()?)?)))
                .flat_map(|(score, chunks)| chunks.iter().map(move |chunk| (score, chunk)))
                .filter(|(_, chunk)| query.exclude_document != Some(chunk.document_id.as_str()))
                .map(|(score, chunk)| Neighbour {
                    chunk_id: chunk.chunk_id.clone(),
                    document_id: chunk.document_id.clone(),
                    score,
                })
                .collect();
            neighbours.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.chunk_id.cmp(&b.chunk_id)));
            neighbours.dedup_by(|a, b| a.chunk_id == b.chunk_id);
            // The index gave fewer keys than asked: it has no more, whatever we ask next.
            let exhausted = scored.len() < asked || asked >= MAX_KEYS_PER_QUERY;
            if neighbours.len() >= query.limit || exhausted {
                neighbours.truncate(query.limit);
                results[query_index] = Some(neighbours);
            } else {
                still_short.push(query_index);
            }
        }
        pending = still_short;
        asked = (asked * 4).min(MAX_KEYS_PER_QUERY);
    }
    Ok(results.into_iter().map(Option::unwrap_or_default).collect())
}

/// The best `count` keys of each query by an exact scan of every stored vector of the model, one
/// page at a time, scored off the async threads.
pub(crate) async fn exact_keys<R: VectorRows + ?Sized>(
    rows: &R,
    model: &str,
    dimensions: usize,
    queries: &[Vec<f32>],
    count: usize,
) -> StoreResult<Vec<Vec<Scored>>> {
    let units: std::sync::Arc<Vec<Option<Vec<f32>>>> =
        std::sync::Arc::new(queries.iter().map(|q| vector_index::unit(q)).collect());
    let mut best: Vec<vector_index::TopK> = queries.iter().map(|_| vector_index::TopK::new(count)).collect();
    let mut after = i64::MIN;
    loop {
        let page = rows.vectors_after(model, dimensions, after, SCAN_PAGE).await?;
        let Some(&(last, _)) = page.last() else { break };
        after = last;
        let units = units.clone();
        let mut kept = std::mem::take(&mut best);
        best = tokio::task::spawn_blocking(move || {
            for (key, vector) in &page {
                let (Some(vector), Ok(key)) = (vector_index::unit(vector), u64::try_from(*key)) else { continue };
                for (query, top) in units.iter().zip(kept.iter_mut()) {
                    if let Some(query) = query {
                        top.offer(Scored { score: vector_index::unit_cosine(query, &vector), key });
                    }
                }
            }
            kept
        })
        .await
        .map_err(|e| StoreError::VectorIndex(format!("exact search failed: {e}")))?;
    }
    Ok(best.into_iter().map(vector_index::TopK::into_sorted).collect())
}
