//! The lexical half of `detect_connections`, through the store's full-text index: the library's
//! term statistics and, for each chunk of the document, the chunks sharing its rarest terms,
//! scored from the term vectors stored beside them. Only the document, its shortlists (chunk ids)
//! and one round of candidates' term vectors, at most [`CANDIDATES_PER_ROUND`] chunks, are ever in
//! memory, whatever the library's size; no candidate's text is read.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use checkpoint_store::{ChunkTerms, EmbeddedChunk, Store};
use collision_detector::{CandidateQuery, Connection, CountedChunk, LexicalEngine, Shortlist, TermStatistics};
use tracing::debug;

use crate::job::JobError;

/// The lexical engine's choice for one document.
const LEXICAL: LexicalEngine = LexicalEngine::DEFAULT;

/// How many other chunks (their term vectors) one round of scoring holds at most: the bound on
/// the memory the library costs, whatever its size. Rounds take the book's chunks in order while
/// their shortlists stay within it, so a small library is read once.
const CANDIDATES_PER_ROUND: usize = 16_384;

/// The lexical connections of a document's chunks (`sources`) to the library's, as
/// `detect_connections` finds them with `plan` = [`CandidateQuery::default`] (before it drops the
/// second direction of pairs within the document).
pub async fn lexical_connections(
    store: &dyn Store,
    sources: Arc<Vec<EmbeddedChunk>>,
    plan: CandidateQuery,
) -> Result<Vec<Connection>, JobError> {
    let started = Instant::now();
    // The book's chunks' terms, as the store cut them when it stored the chunks; a chunk it has
    // none for (gone meanwhile) is cut here.
    let ids: Vec<String> = sources.iter().map(|source| source.chunk.id.clone()).collect();
    let mut stored: HashMap<String, terms::TermVector> =
        store.chunk_terms(&ids).await?.into_iter().map(|chunk| (chunk.chunk_id, chunk.terms)).collect();
    let sources: Arc<Vec<ChunkTerms>> = Arc::new(
        blocking(move || {
            sources
                .iter()
                .map(|source| ChunkTerms {
                    chunk_id: source.chunk.id.clone(),
                    terms: stored.remove(&source.chunk.id).unwrap_or_else(|| terms::term_vector(&source.chunk.text)),
                })
                .collect()
        })
        .await?,
    );
    let book_terms: BTreeSet<&str> =
        sources.iter().flat_map(|source| source.terms.iter().map(|(term, _)| term.as_str())).collect();
    let book_terms: Vec<String> = book_terms.into_iter().map(str::to_owned).collect();
    let counts = store.term_counts(&book_terms).await?;
    debug!(elapsed_ms = elapsed_ms(started), terms = book_terms.len(), "lexical: the book's terms counted");
    let mut statistics =
        Arc::new(TermStatistics { chunk_count: counts.chunk_count, document_frequency: counts.document_frequency });

    // Every chunk's shortlist first (ids only: bounded by the book), so that rounds can be cut
    // by how many distinct candidates they read. All in one call: the store reads each distinct
    // term's postings once, and the book's chunks share most of their rare terms.
    let queries: Vec<_> = sources.iter().map(|source| LEXICAL.query_terms(&source.terms, &statistics, &plan)).collect();
    let shortlists = store.chunks_sharing_terms(&queries, plan.candidates_per_source).await?;
    debug!(elapsed_ms = elapsed_ms(started), terms = book_terms.len(), "lexical: shortlists found");
    let own: HashSet<&str> = sources.iter().map(|source| source.chunk_id.as_str()).collect();

    let mut connections = Vec::new();
    let mut first = 0;
    while first < sources.len() {
        // A round takes sources while the other chunks they shortlisted stay within the bound.
        // Hash sets: a round asks about tens of thousands of ids and terms, in no particular order.
        let mut wanted: HashSet<&str> = HashSet::new();
        let mut end = first;
        while end < sources.len() {
            let fresh: Vec<&str> = shortlists[end]
                .iter()
                .map(String::as_str)
                .filter(|id| !own.contains(id) && !wanted.contains(id))
                .collect();
            if end > first && wanted.len() + fresh.len() > CANDIDATES_PER_ROUND {
                break;
            }
            wanted.extend(fresh);
            end += 1;
        }
        let wanted: Vec<String> = wanted.into_iter().map(str::to_owned).collect();
        let others = store.chunk_terms(&wanted).await?;
        debug!(elapsed_ms = elapsed_ms(started), candidates = wanted.len(), "lexical: candidates read");
        // A candidate's terms that the book lacks still weigh in its norm: ask their frequencies
        // too, or they would count as terms no chunk has, and its scores would come out low.
        let unknown: HashSet<&str> = others
            .iter()
            .flat_map(|other| other.terms.iter().map(|(term, _)| term.as_str()))
            .filter(|term| !statistics.document_frequency.contains_key(*term))
            .collect();
        if !unknown.is_empty() {
            let unknown: Vec<String> = unknown.into_iter().map(str::to_owned).collect();
            let counts = store.term_counts(&unknown).await?;
            Arc::make_mut(&mut statistics).document_frequency.extend(counts.document_frequency);
            debug!(elapsed_ms = elapsed_ms(started), terms = unknown.len(), "lexical: their other terms counted");
        }
        let round_shortlists = shortlists[first..end].to_vec();
        let (round_sources, round_statistics) = (sources.clone(), statistics.clone());
        let found =
            blocking(move || score_round(&round_sources, first..end, &round_shortlists, &others, &round_statistics))
                .await?;
        connections.extend(found);
        debug!(elapsed_ms = elapsed_ms(started), candidates = wanted.len(), "lexical: round scored");
        first = end;
    }
    Ok(connections)
}

/// Scores one round of sources against their shortlisted candidates: the document's own chunks
/// and `others`, read from the store. A shortlisted id that is neither (a chunk deleted meanwhile)
/// is skipped.
fn score_round(
    sources: &[ChunkTerms],
    round: std::ops::Range<usize>,
    shortlists: &[Vec<String>],
    others: &[ChunkTerms],
    statistics: &TermStatistics,
) -> Vec<Connection> {
    let known: HashMap<&str, &ChunkTerms> =
        sources.iter().chain(others).map(|chunk| (chunk.chunk_id.as_str(), chunk)).collect();
    // Only the chunks shortlisted in this round, each once.
    let mut candidates: Vec<CountedChunk<'_>> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    let indexes: Vec<Vec<usize>> = shortlists
        .iter()
        .map(|ids| {
            ids.iter()
                .filter_map(|id| {
                    if let Some(&index) = position.get(id.as_str()) {
                        return Some(index);
                    }
                    let candidate = counted(known.get(id.as_str())?);
                    position.insert(candidate.chunk_id, candidates.len());
                    candidates.push(candidate);
                    Some(candidates.len() - 1)
                })
                .collect()
        })
        .collect();
    let shortlists: Vec<Shortlist<'_>> = round
        .zip(&indexes)
        .map(|(source, candidates)| Shortlist { source: counted(&sources[source]), candidates })
        .collect();
    LEXICAL.connect_with_statistics(&shortlists, &candidates, statistics)
}

fn counted(chunk: &ChunkTerms) -> CountedChunk<'_> {
    CountedChunk { chunk_id: &chunk.chunk_id, terms: &chunk.terms }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Runs CPU-bound work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, JobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| JobError::Retryable(format!("connection detection crashed: {e}")))
}
