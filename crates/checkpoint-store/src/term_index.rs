//! The term-index seam: the database's own full-text index over the chunks' terms, which the
//! lexical engine asks for its statistics and its candidates instead of reading the library.
//!
//! Each chunk is indexed by its distinct terms as the `terms` crate cuts them, written in the same
//! transaction as the chunk and gone with it:
//!
//! - SQLite: a contentless FTS5 table `chunk_terms` keyed by the chunk's rowid, tokenised on spaces
//!   only (`ascii`: every non-ASCII character belongs to a token), whose postings are read with
//!   one `MATCH` per term, and a table `chunk_term_counts` for the document frequencies (a seek
//!   per term, where fts5vocab counts a term's whole doclist). Triggers keep both from the
//!   chunk's stored term vector whenever a chunk is inserted, reindexed or deleted. FTS5 buffers
//!   new postings and merges its segments, so storing a book stays cheap in a large library; a
//!   plain `(term, chunk)` b-tree read postings faster but cost a random page write per posting
//!   (BENCHMARKS.md);
//! - PostgreSQL: a `tsvector` column `chunks.terms` built with `array_to_tsvector` (no parser, no
//!   dictionary) with a GIN index, `chunks.seq` as the chunk's key, and two tables kept by the
//!   store in the same transaction as the chunks: `chunk_term_postings` (term, chunk seq), read
//!   by its primary key (GIN reaches a term's chunks only through the heap, a millisecond per
//!   term), and `chunk_term_counts` for the document frequencies.
//!
//! **Search is term at a time** ([`chunks_sharing_terms`]): the postings of every distinct asked
//! term are read once, as chunk keys, and each query's chunks are scored by the summed weight of
//! its terms they contain; only the best keys become chunk ids. The databases' own rankings (FTS5's
//! BM25, `ts_rank`) were tried first: both read every matching row's size or vector, which cost
//! FTS5 17 ms per query at 100k chunks.
//!
//! The database never tokenises text by rules of its own, so what a query looks up is exactly what
//! was indexed. Each chunk's term vector ([`terms::term_vector`]) is stored beside it, so the
//! lexical engine scores candidates without reading or cutting their text
//! ([`TermIndex::chunk_terms`]). Each store records the edition its index holds (the
//! [`terms::RULES_EDITION`] and the index's layout) and rebuilds the index from the chunks' text
//! when it opens a database indexed under another edition (or not yet indexed, after the
//! migration that adds it).
//!
//! Both stores answer the seam from an in-process copy of this index (`term_cache.rs`), caught
//! up with the database before each answer; the database's own answers remain, as each store's
//! `*_in_database` methods, for the tests that compare the two.

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;

use crate::codec::{decode_term_vector, encode_term_vector, unsigned};
use crate::error::{StoreError, StoreResult};

/// The library's term statistics: what BM25's inverse document frequency needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TermCounts {
    /// How many chunks the library holds.
    pub chunk_count: u64,
    /// For each asked term that some chunk contains, how many chunks contain it. A term missing
    /// here is in no chunk.
    pub document_frequency: HashMap<String, u64>,
}

/// Full-text search over the chunks' terms.
#[async_trait]
pub trait TermIndex: Send + Sync {
    /// The number of chunks, and the document frequency of each of `terms`.
    async fn term_counts(&self, terms: &[String]) -> StoreResult<TermCounts>;

    /// For each query (terms as [`terms::terms`] gives them, each with a weight), the ids of up
    /// to `limit` chunks containing at least one of its terms, ranked by the summed weight of the
    /// query's terms they contain (ties by the chunk's key, oldest first). An empty query finds
    /// nothing; a term's weight that is not finite and positive counts as zero.
    ///
    /// The cost is the postings of the asked terms, read once per call however many queries ask
    /// for the same term: callers bound it by asking for rare terms.
    async fn chunks_sharing_terms(&self, queries: &[WeightedTerms], limit: usize) -> StoreResult<Vec<Vec<String>>>;

    /// The counted terms ([`terms::term_vector`] of the text) of each chunk of `ids` that exists,
    /// as stored beside it, in no particular order: what the lexical engine scores, without
    /// reading or cutting the chunks' text.
    async fn chunk_terms(&self, ids: &[String]) -> StoreResult<Vec<ChunkTerms>>;

    /// [`TermIndex::chunk_terms`] of `ids` with their terms numbered, and the library's
    /// [`TermIndex::term_counts`] of every term they hold: what the lexical engine scores, read
    /// in one call, so that it looks up no term by its text. A backend that keeps its terms
    /// numbered answers without spelling a term out per chunk.
    async fn term_table(&self, ids: &[String]) -> StoreResult<TermTable> {
        term_table_of(self, ids).await
    }

    /// Loads and catches up whatever the backend keeps of the index in memory, ahead of the first
    /// question ([`crate::NeighbourSearch::warm_indexes`] for the term index). Nothing to do for a
    /// backend that asks its database each time.
    async fn warm_term_index(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// [`TermIndex::term_table`] from the backend's [`TermIndex::chunk_terms`] and
/// [`TermIndex::term_counts`].
pub(crate) async fn term_table_of<B: TermIndex + ?Sized>(backend: &B, ids: &[String]) -> StoreResult<TermTable> {
    let chunks = backend.chunk_terms(ids).await?;
    let distinct: BTreeSet<&str> =
        chunks.iter().flat_map(|chunk| chunk.terms.iter().map(|(term, _)| term.as_str())).collect();
    let distinct: Vec<String> = distinct.into_iter().map(str::to_owned).collect();
    let counts = backend.term_counts(&distinct).await?;
    Ok(TermTable::number(distinct, &counts, chunks))
}

/// Chunks' counted terms under one numbering of their terms, with the library's counts
/// ([`TermIndex::term_table`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TermTable {
    /// How many chunks the library holds.
    pub chunk_count: u64,
    /// Term id → term, in alphabetical order, each term once: every term of [`TermTable::chunks`].
    pub terms: Vec<String>,
    /// Term id → how many chunks of the library contain it.
    pub document_frequency: Vec<u64>,
    /// Each asked chunk that exists, in no particular order.
    pub chunks: Vec<NumberedChunk>,
}

/// A chunk's id and its counted terms by their ids in a [`TermTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberedChunk {
    /// The chunk's id.
    pub chunk_id: String,
    /// Its (term id, count) pairs, sorted by term id (so by term).
    pub terms: Vec<(u32, u32)>,
}

impl TermTable {
    /// The table of `chunks`, whose terms are exactly `terms` (sorted, distinct), with `counts`
    /// for their document frequencies.
    fn number(terms: Vec<String>, counts: &TermCounts, chunks: Vec<ChunkTerms>) -> TermTable {
        let id_of = |term: &str| terms.binary_search_by(|known| known.as_str().cmp(term)).ok();
        let chunks = chunks
            .into_iter()
            .map(|chunk| {
                let mut numbered: Vec<(u32, u32)> = chunk
                    .terms
                    .iter()
                    .filter_map(|(term, count)| Some((u32::try_from(id_of(term)?).ok()?, *count)))
                    .collect();
                if !numbered.is_sorted() {
                    numbered.sort_unstable();
                }
                NumberedChunk { chunk_id: chunk.chunk_id, terms: numbered }
            })
            .collect();
        let document_frequency =
            terms.iter().map(|term| counts.document_frequency.get(term).copied().unwrap_or(0)).collect();
        TermTable { chunk_count: counts.chunk_count, terms, document_frequency, chunks }
    }
}

/// A chunk's id and its counted terms ([`TermIndex::chunk_terms`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkTerms {
    /// The chunk's id.
    pub chunk_id: String,
    /// Its terms and how often each occurs, sorted by term.
    pub terms: terms::TermVector,
}

impl ChunkTerms {
    /// A chunk as a backend reads it: its stored term vector, or (for a chunk stored before term
    /// vectors were, not yet reindexed) its text, cut now.
    pub(crate) fn from_row(chunk_id: String, vector: Option<String>, text: Option<String>) -> StoreResult<ChunkTerms> {
        let terms = match (vector, text) {
            (Some(vector), _) => decode_term_vector(&vector)?,
            (None, Some(text)) => terms::term_vector(&text),
            (None, None) => return Err(StoreError::Corrupt(format!("chunk {chunk_id}: no term vector and no text"))),
        };
        Ok(ChunkTerms { chunk_id, terms })
    }
}

/// What the term index keeps of a chunk, computed once when the chunk is stored: its term vector
/// (as stored, [`encode_term_vector`]) and its distinct terms.
pub(crate) struct IndexedChunk {
    pub term_vector: String,
    pub terms: Vec<String>,
}

impl IndexedChunk {
    pub(crate) fn of(text: &str) -> IndexedChunk {
        let vector = terms::term_vector(text);
        let term_vector = encode_term_vector(&vector);
        IndexedChunk { term_vector, terms: vector.into_iter().map(|(term, _)| term).collect() }
    }

    /// The distinct terms, space-separated, as a full-text index takes them.
    pub(crate) fn indexed_terms(&self) -> String {
        self.terms.join(" ")
    }
}

/// A query of [`TermIndex::chunks_sharing_terms`]: terms and their weights.
pub type WeightedTerms = Vec<(String, f32)>;

/// What a backend offers the term search: the postings of terms, by a chunk key that never changes
/// (SQLite's rowid, PostgreSQL's `chunks.key`), and the chunks behind keys.
#[async_trait]
pub(crate) trait TermPostings: Send + Sync {
    /// Each of `terms` that some chunk contains, with the keys of every chunk containing it.
    async fn postings(&self, terms: &[&str]) -> StoreResult<Vec<(String, Vec<i64>)>>;

    /// `(key, chunk id)` of the chunks under these keys that still exist.
    async fn chunk_ids(&self, keys: &[i64]) -> StoreResult<Vec<(i64, String)>>;
}

/// [`TermIndex::chunks_sharing_terms`] over a backend's postings: term at a time, every distinct
/// term's postings read once, each query's chunks scored by the summed weight of its terms.
pub(crate) async fn chunks_sharing_terms<B: TermPostings + ?Sized>(
    backend: &B,
    queries: &[WeightedTerms],
    limit: usize,
) -> StoreResult<Vec<Vec<String>>> {
    let cleaned: Vec<Vec<(&str, f32)>> = queries.iter().map(|query| weighted_query_terms(query)).collect();
    let mut distinct: Vec<&str> = cleaned.iter().flatten().map(|(term, _)| *term).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if limit == 0 || distinct.is_empty() {
        return Ok(vec![Vec::new(); queries.len()]);
    }
    let started = std::time::Instant::now();
    // Two readers at once, each over half of the terms: the database reads while the other
    // half's rows are parsed.
    let (first, second) = distinct.split_at(distinct.len() / 2);
    let (first, second) = tokio::try_join!(postings_of(backend, first), postings_of(backend, second))?;
    let postings: HashMap<String, Vec<i64>> = first.into_iter().chain(second).collect();
    tracing::debug!(
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        terms = distinct.len(),
        postings = postings.values().map(Vec::len).sum::<usize>(),
        "term search: postings read"
    );
    let mut scores = SharedWeights::over(&postings);
    let ranked: Vec<Vec<i64>> = cleaned.iter().map(|query| scores.rank(query, &postings, limit)).collect();
    let mut keys: Vec<i64> = ranked.iter().flatten().copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut ids: HashMap<i64, String> = HashMap::with_capacity(keys.len());
    for slice in keys.chunks(LOOKUP_BATCH) {
        ids.extend(backend.chunk_ids(slice).await?);
    }
    Ok(ranked.into_iter().map(|keys| keys.iter().filter_map(|key| ids.get(key).cloned()).collect()).collect())
}

/// Sums, per chunk key, the weights of one query's terms each contains: a dense array over the
/// keys' range when the range is compact (keys are rowids or sequence values, so it nearly always
/// is), which costs an add per posting; a map otherwise.
struct SharedWeights {
    lowest: i64,
    dense: Vec<f32>,
    touched: Vec<i64>,
    sparse: HashMap<i64, f32>,
}

impl SharedWeights {
    /// Room for the keys of `postings`.
    fn over(postings: &HashMap<String, Vec<i64>>) -> SharedWeights {
        let keys = || postings.values().flatten().copied();
        let (lowest, highest) = (keys().min().unwrap_or(0), keys().max().unwrap_or(0));
        let total: usize = postings.values().map(Vec::len).sum();
        let span = usize::try_from(highest.abs_diff(lowest)).unwrap_or(usize::MAX).saturating_add(1);
        let dense = if span <= total.saturating_mul(4).max(1 << 20) { vec![0.0; span] } else { Vec::new() };
        SharedWeights { lowest, dense, touched: Vec::new(), sparse: HashMap::new() }
    }

    /// The best `limit` keys for one query: summed weight of the query's terms each contains,
    /// highest first, ties by key.
    fn rank(&mut self, query: &[(&str, f32)], postings: &HashMap<String, Vec<i64>>, limit: usize) -> Vec<i64> {
        let mut scored: Vec<(f32, i64, ())> = Vec::new();
        if self.dense.is_empty() {
            for (term, weight) in query {
                for &key in postings.get(*term).map(Vec::as_slice).unwrap_or_default() {
                    *self.sparse.entry(key).or_default() += shared_weight(*weight);
                }
            }
            scored.extend(self.sparse.drain().map(|(key, score)| (score, key, ())));
        } else {
            for (term, weight) in query {
                for &key in postings.get(*term).map(Vec::as_slice).unwrap_or_default() {
                    // In range: `over` saw every key of these postings.
                    let slot = &mut self.dense[key.abs_diff(self.lowest) as usize];
                    if *slot == 0.0 {
                        self.touched.push(key);
                    }
                    *slot += shared_weight(*weight);
                }
            }
            for key in self.touched.drain(..) {
                let slot = &mut self.dense[key.abs_diff(self.lowest) as usize];
                scored.push((*slot, key, ()));
                *slot = 0.0;
            }
        }
        keep_best(&mut scored, limit);
        scored.into_iter().map(|(_, key, ())| key).collect()
    }
}

/// What a summed weight counts for a chunk that contains a term of the query: a zero weight counts
/// as the least positive one, so that a chunk sharing only such terms is still found (after every
/// chunk sharing a weighed one).
pub(crate) fn shared_weight(weight: f32) -> f32 {
    weight.max(f32::MIN_POSITIVE)
}

/// Keeps the best `limit` of `(summed weight, key, …)`, in ranking order: highest weight first,
/// ties by key, so that every backend and the cache rank alike.
pub(crate) fn keep_best<T: Copy>(scored: &mut Vec<(f32, i64, T)>, limit: usize) {
    let order = |a: &(f32, i64, T), b: &(f32, i64, T)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if scored.len() > limit && limit > 0 {
        scored.select_nth_unstable_by(limit - 1, order);
    }
    scored.truncate(limit);
    scored.sort_unstable_by(order);
}

/// The postings of `terms`, read a statement's worth at a time.
async fn postings_of<B: TermPostings + ?Sized>(backend: &B, terms: &[&str]) -> StoreResult<Vec<(String, Vec<i64>)>> {
    let mut postings = Vec::new();
    for slice in terms.chunks(POSTINGS_TERMS_PER_STATEMENT) {
        postings.extend(backend.postings(slice).await?);
    }
    Ok(postings)
}

/// How many terms' postings one statement reads.
const POSTINGS_TERMS_PER_STATEMENT: usize = 1_000;

impl TermCounts {
    /// The counts as a backend reads them: the library's chunk count and `(term, chunks)` rows.
    pub(crate) fn from_rows(
        chunk_count: i64,
        rows: impl IntoIterator<Item = (String, i64)>,
    ) -> StoreResult<TermCounts> {
        let mut counts = TermCounts { chunk_count: unsigned("chunk count", chunk_count)?, ..TermCounts::default() };
        for (term, chunks) in rows {
            counts.document_frequency.insert(term, unsigned("term frequency", chunks)?);
        }
        Ok(counts)
    }
}

/// The shape of what the index keeps beside the term rules' edition; change it with any change
/// to what a rebuild writes. `vectors-1`: each chunk's term vector is stored beside it.
const LAYOUT: &str = "vectors-1";

/// What an index records it was built under: the term rules' edition and the index's layout.
pub(crate) fn index_edition() -> String {
    format!("{} {LAYOUT}", terms::RULES_EDITION)
}

/// Whether an index built under `edition` (none: never built) serves this binary; if not, the
/// rebuild about to happen is logged.
pub(crate) fn edition_is_current(edition: Option<&str>) -> bool {
    let current = index_edition();
    if edition == Some(current.as_str()) {
        return true;
    }
    if let Some(previous) = edition {
        tracing::warn!(previous, edition = current, "the term rules or the index changed; rebuilding the term index");
    }
    false
}

/// Logs a finished rebuild of the index over `indexed` chunks (none: nothing to say).
pub(crate) fn rebuilt(indexed: usize) {
    if indexed > 0 {
        tracing::info!(chunks = indexed, edition = index_edition(), "term index built");
    }
}

/// The ids among `ids` that the term cache did not find, each once: a chunk stored without a term
/// vector (written by an older binary, not yet reindexed), which the database reads from its
/// text, or one that is gone.
pub(crate) fn uncached(found: &[ChunkTerms], ids: &[String]) -> Vec<String> {
    if found.len() >= ids.len() {
        return Vec::new();
    }
    // Seeded with what the cache found, so each id missing from it is named once.
    let mut seen: HashSet<&str> = found.iter().map(|chunk| chunk.chunk_id.as_str()).collect();
    ids.iter().filter(|id| seen.insert(id.as_str())).cloned().collect()
}

/// How many chunks' terms a rebuild of the index computes and writes per statement.
pub(crate) const REBUILD_BATCH: usize = 1_000;

/// How many terms, keys or chunk ids one lookup statement names: bounds the statement's size.
pub(crate) const LOOKUP_BATCH: usize = 1_000;

/// The most terms one query may name: a bound on the statement's size whatever the caller asks.
pub(crate) const MAX_QUERY_TERMS: usize = 256;

/// The terms a query may look up, with their weights: non-empty, at most [`MAX_QUERY_TERMS`],
/// without characters that a full-text query language would read as syntax (the `terms` crate
/// never produces them, but a caller may pass anything). A weight that is not finite and positive
/// becomes zero. Duplicates are dropped; order is kept.
pub(crate) fn weighted_query_terms(query: &[(String, f32)]) -> Vec<(&str, f32)> {
    let mut seen = std::collections::HashSet::new();
    query
        .iter()
        .map(|(term, weight)| (term.as_str(), if weight.is_finite() && *weight > 0.0 { *weight } else { 0.0 }))
        .filter(|(term, _)| {
            !term.is_empty() && term.chars().all(|c| c.is_alphanumeric() || (!c.is_ascii() && !c.is_whitespace()))
        })
        .filter(|(term, _)| seen.insert(*term))
        .take(MAX_QUERY_TERMS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(terms: &[(&str, f32)]) -> WeightedTerms {
        terms.iter().map(|(term, weight)| (term.to_string(), *weight)).collect()
    }

    #[test]
    fn query_terms_drop_syntax_empties_and_duplicates() {
        let asked = query(&[
            ("whale", 1.0),
            ("", 1.0),
            ("a\"b", 1.0),
            ("o'clock", 1.0),
            ("東京", 2.0),
            ("whale", 5.0),
            ("x y", 1.0),
            ("NEAR(", 1.0),
            ("שלום", f32::NAN),
        ]);
        assert_eq!(weighted_query_terms(&asked), [("whale", 1.0), ("東京", 2.0), ("שלום", 0.0)]);
    }

    #[test]
    fn query_terms_are_bounded() {
        let asked: WeightedTerms = (0..1000).map(|i| (format!("term{i}"), 1.0)).collect();
        assert_eq!(weighted_query_terms(&asked).len(), MAX_QUERY_TERMS);
    }

    #[test]
    fn chunks_rank_by_the_summed_weight_of_the_terms_they_share_then_by_key() {
        let postings: HashMap<String, Vec<i64>> =
            [("rare", vec![7, 3]), ("common", vec![1, 2, 3, 4, 7]), ("absent", vec![])]
                .into_iter()
                .map(|(term, keys)| (term.to_owned(), keys))
                .collect();
        let query = [("rare", 5.0), ("common", 1.0), ("absent", 9.0)];
        // 3 and 7 share both (6.0), then 1, 2 and 4 share only the common term (1.0).
        assert_eq!(SharedWeights::over(&postings).rank(&query, &postings, 10), [3, 7, 1, 2, 4]);
        assert_eq!(SharedWeights::over(&postings).rank(&query, &postings, 3), [3, 7, 1]);
        // The same through the map, as for keys too far apart for an array, and reused.
        let mut sparse = SharedWeights::over(&postings);
        sparse.dense.clear();
        assert_eq!(sparse.rank(&query, &postings, 10), [3, 7, 1, 2, 4]);
        assert_eq!(sparse.rank(&query, &postings, 3), [3, 7, 1]);
        let mut dense = SharedWeights::over(&postings);
        assert_eq!(dense.rank(&query, &postings, 3), [3, 7, 1]);
        assert_eq!(dense.rank(&[("common", 1.0)], &postings, 2), [1, 2]);
    }
}
