//! The term-index seam: the database's own full-text index over the chunks' terms, which the
//! lexical engine asks for its statistics and its candidates instead of reading the library.
//!
//! Each chunk is indexed by its distinct terms as the `terms` crate cuts them
//! ([`terms::indexed_terms`]), written in the same transaction as the chunk and gone with it:
//!
//! - SQLite: a contentless FTS5 table `chunk_terms` keyed by the chunk's rowid, tokenised on spaces
//!   only (`ascii`: every non-ASCII character belongs to a token), with its `fts5vocab` table for
//!   the document frequencies, and a trigger that removes a deleted chunk's row;
//! - PostgreSQL: a `tsvector` column `chunks.terms` built with `array_to_tsvector` (no parser, no
//!   dictionary), a GIN index over it, and `chunk_term_counts`, kept by the store in the same
//!   transaction as the chunks, for the document frequencies.
//!
//! The database never tokenises text by rules of its own, so what a query looks up is exactly what
//! was indexed. Each store records the [`terms::RULES_EDITION`] its index holds and rebuilds the
//! index from the chunks' text when it opens a database indexed under another edition (or not yet
//! indexed, after the migration that adds it).

use std::collections::HashMap;

use async_trait::async_trait;

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

    /// For each query (a set of terms, as [`terms::terms`] gives them), the ids of up to `limit`
    /// chunks containing at least one of its terms, those sharing the most (and the rarest) first,
    /// as the database's own ranking orders them. An empty query finds nothing.
    async fn chunks_sharing_terms(&self, queries: &[Vec<String>], limit: usize) -> StoreResult<Vec<Vec<String>>>;
}

/// How many chunks' terms a rebuild of the index computes and writes per statement.
pub(crate) const REBUILD_BATCH: usize = 1_000;

/// The most terms one query may name: a bound on the statement's size whatever the caller asks.
pub(crate) const MAX_QUERY_TERMS: usize = 256;

/// The terms a query may look up: non-empty, at most [`MAX_QUERY_TERMS`], without characters that
/// the full-text query languages would read as syntax (the `terms` crate never produces them, but
/// a caller may pass anything). Duplicates are dropped; order is kept.
pub(crate) fn query_terms(query: &[String]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    query
        .iter()
        .map(String::as_str)
        .filter(|term| {
            !term.is_empty() && term.chars().all(|c| c.is_alphanumeric() || (!c.is_ascii() && !c.is_whitespace()))
        })
        .filter(|term| seen.insert(*term))
        .take(MAX_QUERY_TERMS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_terms_drop_syntax_empties_and_duplicates() {
        let query: Vec<String> =
            ["whale", "", "a\"b", "o'clock", "東京", "whale", "x y", "NEAR(", "שלום"].map(String::from).to_vec();
        assert_eq!(query_terms(&query), ["whale", "東京", "שלום"]);
    }

    #[test]
    fn query_terms_are_bounded() {
        let query: Vec<String> = (0..1000).map(|i| format!("term{i}")).collect();
        assert_eq!(query_terms(&query).len(), MAX_QUERY_TERMS);
    }
}
