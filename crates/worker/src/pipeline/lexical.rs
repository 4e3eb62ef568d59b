//! The lexical half of `detect_connections`, through the store's full-text index: the library's
//! term statistics and, for each chunk of the document, the chunks sharing its rarest terms,
//! scored from the term vectors stored beside them. Only the document, its shortlists (chunk ids)
//! and one round of candidates' term vectors, at most [`CANDIDATES_PER_ROUND`] chunks, are ever in
//! memory, whatever the library's size; no candidate's text is read, and no term is looked up by
//! its text while scoring: the store hands every round's terms over numbered
//! ([`checkpoint_store::TermTable`]).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use checkpoint_store::{EmbeddedChunk, NumberedChunk, Store, TermTable};
use collision_detector::{CandidateQuery, Connection, CountedChunk, LexicalEngine, LibraryTerms, Shortlist};
use tracing::debug;

use crate::job::JobError;

/// The lexical engine's choice for one document.
const LEXICAL: LexicalEngine = LexicalEngine::DEFAULT;

/// How many chunks (their term vectors) one round of scoring holds at most, the round's own
/// among them: the bound on the memory the library costs, whatever its size. Rounds take the
/// book's chunks in order while their shortlists stay within it, so a small library is read once.
const CANDIDATES_PER_ROUND: usize = 16_384;

/// The lexical connections of a document's chunks (`sources`) to the library's, as
/// `detect_connections` finds them with `plan` = [`CandidateQuery::default`] (before it drops the
/// second direction of pairs within the document). A chunk of the document that is gone from the
/// store meanwhile is left out (the job then finds its chunks changed and computes again).
pub async fn lexical_connections(
    store: &dyn Store,
    sources: &[EmbeddedChunk],
    plan: CandidateQuery,
) -> Result<Vec<Connection>, JobError> {
    let started = Instant::now();
    // The book's chunks' terms, as the store cut them when it stored the chunks, in the book's
    // order.
    let ids: Vec<String> = sources.iter().map(|source| source.chunk.id.clone()).collect();
    let mut book = store.term_table(&ids).await?;
    let order: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    book.chunks.sort_by_key(|chunk| order.get(chunk.chunk_id.as_str()).copied().unwrap_or(usize::MAX));
    debug!(elapsed_ms = elapsed_ms(started), terms = book.terms.len(), "lexical: the book's terms counted");

    // Every chunk's shortlist first (ids only: bounded by the book), so that rounds can be cut
    // by how many distinct chunks they read. All in one call: the store reads each distinct
    // term's postings once, and the book's chunks share most of their rare terms.
    let queries: Vec<_> =
        book.chunks.iter().map(|source| LEXICAL.query_terms(&source.terms, &library_terms(&book), &plan)).collect();
    debug!(elapsed_ms = elapsed_ms(started), "lexical: queries weighed");
    let shortlists = store.chunks_sharing_terms(&queries, plan.candidates_per_source).await?;
    debug!(elapsed_ms = elapsed_ms(started), queries = queries.len(), "lexical: shortlists found");
    let sources: Vec<String> = book.chunks.into_iter().map(|chunk| chunk.chunk_id).collect();

    let mut connections = Vec::new();
    let mut first = 0;
    while first < sources.len() {
        // A round takes sources while the chunks they and their shortlists name stay within the
        // bound. A hash set: a round asks about tens of thousands of ids, in no particular order.
        let mut wanted: HashSet<&str> = HashSet::new();
        let mut end = first;
        while end < sources.len() {
            let fresh: Vec<&str> = std::iter::once(&sources[end])
                .chain(&shortlists[end])
                .map(String::as_str)
                .filter(|id| !wanted.contains(id))
                .collect();
            if end > first && wanted.len() + fresh.len() > CANDIDATES_PER_ROUND {
                break;
            }
            wanted.extend(fresh);
            end += 1;
        }
        let wanted: Vec<String> = wanted.into_iter().map(str::to_owned).collect();
        let table = store.term_table(&wanted).await?;
        debug!(
            elapsed_ms = elapsed_ms(started),
            chunks = wanted.len(),
            terms = table.terms.len(),
            "lexical: round read"
        );
        let round_sources = sources[first..end].to_vec();
        let round_shortlists = shortlists[first..end].to_vec();
        let found = blocking(move || score_round(&round_sources, &round_shortlists, &table)).await?;
        connections.extend(found);
        debug!(elapsed_ms = elapsed_ms(started), "lexical: round scored");
        first = end;
    }
    Ok(connections)
}

/// Scores one round of sources against their shortlisted candidates, every one of them read in
/// `table`. A source or shortlisted id the table lacks (a chunk deleted meanwhile) is skipped.
fn score_round(sources: &[String], shortlists: &[Vec<String>], table: &TermTable) -> Vec<Connection> {
    let chunks: Vec<CountedChunk<'_>> = table.chunks.iter().map(counted).collect();
    let position: HashMap<&str, usize> =
        table.chunks.iter().enumerate().map(|(index, chunk)| (chunk.chunk_id.as_str(), index)).collect();
    let indexes: Vec<(usize, Vec<usize>)> = sources
        .iter()
        .zip(shortlists)
        .filter_map(|(source, shortlist)| {
            let candidates = shortlist.iter().filter_map(|id| position.get(id.as_str()).copied()).collect();
            Some((*position.get(source.as_str())?, candidates))
        })
        .collect();
    let shortlists: Vec<Shortlist<'_>> =
        indexes.iter().map(|(source, candidates)| Shortlist { source: chunks[*source], candidates }).collect();
    LEXICAL.connect_with_statistics(&shortlists, &chunks, &library_terms(table))
}

fn library_terms(table: &TermTable) -> LibraryTerms<'_> {
    LibraryTerms { terms: &table.terms, document_frequency: &table.document_frequency, chunk_count: table.chunk_count }
}

fn counted(chunk: &NumberedChunk) -> CountedChunk<'_> {
    CountedChunk { chunk_id: &chunk.chunk_id, terms: &chunk.terms }
}

/// Milliseconds since `since`, for the job's debug log.
pub(super) fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Runs CPU-bound work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, JobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| JobError::Retryable(format!("connection detection crashed: {e}")))
}
