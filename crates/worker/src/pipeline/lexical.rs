//! The lexical half of `detect_connections`, through the store's full-text index: the library's
//! term statistics and, for each chunk of the document, the chunks sharing its rarest terms. Only
//! the document, its shortlists (chunk ids) and one round of candidates' text, at most
//! [`CANDIDATES_PER_ROUND`] chunks, are ever in memory, whatever the library's size.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use checkpoint_store::{ChunkView, EmbeddedChunk, Store};
use collision_detector::{CandidateQuery, ChunkRef, Connection, LexicalEngine, Shortlist, TermStatistics};

use crate::job::JobError;

/// The lexical engine's choice for one document.
const LEXICAL: LexicalEngine = LexicalEngine::DEFAULT;

/// How many shortlists one statement asks for: bounds the statement's size.
const QUERIES_PER_STATEMENT: usize = 256;

/// How many other chunks (their text) one round of scoring holds at most: the bound on the
/// memory the library costs, whatever its size. Rounds take the book's chunks in order while
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
    let book_terms: BTreeSet<String> = {
        let sources = sources.clone();
        blocking(move || sources.iter().flat_map(|source| terms::distinct_terms(&source.chunk.text)).collect()).await?
    };
    let counts = store.term_counts(&book_terms.into_iter().collect::<Vec<_>>()).await?;
    let mut statistics =
        Arc::new(TermStatistics { chunk_count: counts.chunk_count, document_frequency: counts.document_frequency });

    // Every chunk's shortlist first (ids only: bounded by the book), so that rounds can be cut
    // by how many distinct candidates they read.
    let queries = {
        let (sources, statistics) = (sources.clone(), statistics.clone());
        blocking(move || {
            sources.iter().map(|source| LEXICAL.query_terms(&source.chunk.text, &statistics, &plan)).collect::<Vec<_>>()
        })
        .await?
    };
    let mut shortlists: Vec<Vec<String>> = Vec::with_capacity(queries.len());
    for batch in queries.chunks(QUERIES_PER_STATEMENT) {
        shortlists.extend(store.chunks_sharing_terms(batch, plan.candidates_per_source).await?);
    }
    let own: HashSet<&str> = sources.iter().map(|source| source.chunk.id.as_str()).collect();

    let mut connections = Vec::new();
    let mut first = 0;
    while first < sources.len() {
        // A round takes sources while the other chunks they shortlisted stay within the bound.
        let mut wanted: BTreeSet<&str> = BTreeSet::new();
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
        let others: Vec<ChunkView> = store.chunk_views(&wanted).await?;
        // A candidate's terms that the book lacks still weigh in its norm: ask their frequencies
        // too, or they would count as terms no chunk has, and its scores would come out low.
        let (others, unknown) = {
            let statistics = statistics.clone();
            blocking(move || {
                let unknown: BTreeSet<String> = others
                    .iter()
                    .flat_map(|other| terms::distinct_terms(&other.text))
                    .filter(|term| !statistics.document_frequency.contains_key(term))
                    .collect();
                (others, unknown)
            })
            .await?
        };
        if !unknown.is_empty() {
            let counts = store.term_counts(&unknown.into_iter().collect::<Vec<_>>()).await?;
            Arc::make_mut(&mut statistics).document_frequency.extend(counts.document_frequency);
        }
        let round_shortlists = shortlists[first..end].to_vec();
        let (sources, statistics) = (sources.clone(), statistics.clone());
        let found =
            blocking(move || score_round(&sources, first..end, &round_shortlists, &others, &statistics)).await?;
        connections.extend(found);
        first = end;
    }
    Ok(connections)
}

/// Scores one round of sources against their shortlisted candidates: the document's own chunks
/// and `others`, read from the store. A shortlisted id that is neither (a chunk deleted meanwhile)
/// is skipped.
fn score_round(
    sources: &[EmbeddedChunk],
    round: std::ops::Range<usize>,
    shortlists: &[Vec<String>],
    others: &[ChunkView],
    statistics: &TermStatistics,
) -> Vec<Connection> {
    let own: HashMap<&str, &EmbeddedChunk> = sources.iter().map(|source| (source.chunk.id.as_str(), source)).collect();
    let others: HashMap<&str, &ChunkView> = others.iter().map(|other| (other.chunk_id.as_str(), other)).collect();
    // Only the chunks shortlisted in this round, each once: the engine reads every candidate's text.
    let mut candidates: Vec<ChunkRef<'_>> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    let indexes: Vec<Vec<usize>> = shortlists
        .iter()
        .map(|ids| {
            ids.iter()
                .filter_map(|id| {
                    if let Some(&index) = position.get(id.as_str()) {
                        return Some(index);
                    }
                    let candidate = match (own.get(id.as_str()), others.get(id.as_str())) {
                        (Some(source), _) => chunk_ref(source),
                        (None, Some(other)) => ChunkRef {
                            chunk_id: &other.chunk_id,
                            document_id: &other.document_id,
                            text: &other.text,
                            embedding: None,
                        },
                        (None, None) => return None,
                    };
                    position.insert(candidate.chunk_id, candidates.len());
                    candidates.push(candidate);
                    Some(candidates.len() - 1)
                })
                .collect()
        })
        .collect();
    let shortlists: Vec<Shortlist<'_>> = round
        .zip(&indexes)
        .map(|(source, candidates)| Shortlist { source: chunk_ref(&sources[source]), candidates })
        .collect();
    LEXICAL.connect_with_statistics(&shortlists, &candidates, statistics)
}

fn chunk_ref(chunk: &EmbeddedChunk) -> ChunkRef<'_> {
    ChunkRef {
        chunk_id: &chunk.chunk.id,
        document_id: &chunk.chunk.document_id,
        text: &chunk.chunk.text,
        embedding: None,
    }
}

/// Runs CPU-bound work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, JobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| JobError::Retryable(format!("connection detection crashed: {e}")))
}
