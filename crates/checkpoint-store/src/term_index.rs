//! The term-index seam: the database's own full-text index over the chunks' terms, which the
//! lexical engine asks for its statistics and its candidates instead of reading the library.
//!
//! Each chunk is indexed by its distinct terms as the `terms` crate cuts them
//! ([`terms::indexed_terms`]), written in the same transaction as the chunk and gone with it:
//!
//! - SQLite: a contentless FTS5 table `chunk_terms` keyed by the chunk's rowid, tokenised on spaces
//!   only (`ascii`: every non-ASCII character belongs to a token), with its two `fts5vocab` tables
//!   for the document frequencies and the postings, and a trigger that removes a deleted chunk's
//!   row;
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
//! was indexed. Each store records the [`terms::RULES_EDITION`] its index holds and rebuilds the
//! index from the chunks' text when it opens a database indexed under another edition (or not yet
//! indexed, after the migration that adds it).

use std::collections::HashMap;

use async_trait::async_trait;

use crate::codec::unsigned;
use crate::error::StoreResult;

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
}

/// A query of [`TermIndex::chunks_sharing_terms`]: terms and their weights.
pub type WeightedTerms = Vec<(String, f32)>;

/// What a backend offers the term search: the postings of terms, by a chunk key that never changes
/// (SQLite's rowid, PostgreSQL's `chunks.key`), and the chunks behind keys.
#[async_trait]
pub(crate) trait TermPostings: Send + Sync {
    /// `(term, key)` for every chunk containing each of `terms`.
    async fn postings(&self, terms: &[&str]) -> StoreResult<Vec<(String, i64)>>;

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
    let mut postings: HashMap<String, Vec<i64>> = HashMap::new();
    for slice in distinct.chunks(POSTINGS_TERMS_PER_STATEMENT) {
        for (term, key) in backend.postings(slice).await? {
            postings.entry(term).or_default().push(key);
        }
    }
    let ranked: Vec<Vec<i64>> = cleaned.iter().map(|query| rank_by_shared_weight(query, &postings, limit)).collect();
    let mut keys: Vec<i64> = ranked.iter().flatten().copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut ids: HashMap<i64, String> = HashMap::with_capacity(keys.len());
    for slice in keys.chunks(REBUILD_BATCH) {
        ids.extend(backend.chunk_ids(slice).await?);
    }
    Ok(ranked.into_iter().map(|keys| keys.iter().filter_map(|key| ids.get(key).cloned()).collect()).collect())
}

/// The best `limit` keys for one query: summed weight of the query's terms each contains, highest
/// first, ties by key.
fn rank_by_shared_weight(query: &[(&str, f32)], postings: &HashMap<String, Vec<i64>>, limit: usize) -> Vec<i64> {
    let mut scores: HashMap<i64, f32> = HashMap::new();
    for (term, weight) in query {
        for &key in postings.get(*term).map(Vec::as_slice).unwrap_or_default() {
            *scores.entry(key).or_default() += weight;
        }
    }
    let mut scored: Vec<(f32, i64)> = scores.into_iter().map(|(key, score)| (score, key)).collect();
    scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(limit).map(|(_, key)| key).collect()
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

/// Whether an index built under `edition` (none: never built) serves this binary's term rules;
/// if not, the rebuild about to happen is logged.
pub(crate) fn edition_is_current(edition: Option<&str>) -> bool {
    if edition == Some(terms::RULES_EDITION) {
        return true;
    }
    if let Some(previous) = edition {
        tracing::warn!(previous, edition = terms::RULES_EDITION, "the term rules changed; rebuilding the term index");
    }
    false
}

/// Logs a finished rebuild of the index over `indexed` chunks (none: nothing to say).
pub(crate) fn rebuilt(indexed: usize) {
    if indexed > 0 {
        tracing::info!(chunks = indexed, edition = terms::RULES_EDITION, "term index built");
    }
}

/// How many chunks' terms a rebuild of the index computes and writes per statement.
pub(crate) const REBUILD_BATCH: usize = 1_000;

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
        assert_eq!(rank_by_shared_weight(&query, &postings, 10), [3, 7, 1, 2, 4]);
        assert_eq!(rank_by_shared_weight(&query, &postings, 3), [3, 7, 1]);
    }
}
