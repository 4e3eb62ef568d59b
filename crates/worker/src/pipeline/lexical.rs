//! The lexical half of `detect_connections`, through the store's full-text index: the library's
//! term statistics and, for each chunk of the document, the chunks sharing its rarest terms. Only
//! the document and one batch of candidates are ever in memory, whatever the library's size.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use checkpoint_store::{ChunkView, EmbeddedChunk, Store};
use collision_detector::{CandidateQuery, ChunkRef, Connection, LexicalEngine, Shortlist, TermStatistics};

use crate::job::JobError;

/// The lexical engine's choice for one document.
const LEXICAL: LexicalEngine = LexicalEngine::DEFAULT;

/// How many of the document's chunks are scored per round: bounds the candidates held at once
/// (this many times [`CandidateQuery::candidates_per_source`]).
const SOURCES_PER_ROUND: usize = 64;

/// A candidate chunk, owned.
struct Candidate {
    chunk_id: String,
    document_id: String,
    text: String,
}

impl From<ChunkView> for Candidate {
    fn from(view: ChunkView) -> Self {
        Candidate { chunk_id: view.chunk_id, document_id: view.document_id, text: view.text }
    }
}

/// The lexical connections of the document's chunks (`sources`) to the library's.
pub(super) async fn lexical_connections(
    store: &dyn Store,
    sources: Arc<Vec<EmbeddedChunk>>,
) -> Result<Vec<Connection>, JobError> {
    let plan = CandidateQuery::default();
    let book_terms: BTreeSet<String> = {
        let sources = sources.clone();
        blocking(move || sources.iter().flat_map(|source| terms::distinct_terms(&source.chunk.text)).collect()).await?
    };
    let counts = store.term_counts(&book_terms.into_iter().collect::<Vec<_>>()).await?;
    let mut statistics =
        Arc::new(TermStatistics { chunk_count: counts.chunk_count, document_frequency: counts.document_frequency });

    let mut connections = Vec::new();
    for first in (0..sources.len()).step_by(SOURCES_PER_ROUND) {
        let round = first..sources.len().min(first + SOURCES_PER_ROUND);
        let queries = {
            let (sources, statistics, round) = (sources.clone(), statistics.clone(), round.clone());
            blocking(move || {
                sources[round]
                    .iter()
                    .map(|source| {
                        LEXICAL
                            .query_terms(&source.chunk.text, &statistics, &plan)
                            .into_iter()
                            .map(|(term, _)| term)
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
            .await?
        };
        let shortlists = store.chunks_sharing_terms(&queries, plan.candidates_per_source).await?;
        // The document's own chunks are at hand; only the others are read.
        let own: HashMap<&str, usize> =
            sources.iter().enumerate().map(|(index, source)| (source.chunk.id.as_str(), index)).collect();
        let mut wanted: Vec<String> =
            shortlists.iter().flatten().filter(|id| !own.contains_key(id.as_str())).cloned().collect();
        wanted.sort_unstable();
        wanted.dedup();
        let others: Vec<Candidate> = store.chunk_views(&wanted).await?.into_iter().map(Candidate::from).collect();
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
        let (sources, statistics) = (sources.clone(), statistics.clone());
        let found = blocking(move || score_round(&sources, round, &shortlists, &others, &statistics)).await?;
        connections.extend(found);
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
    others: &[Candidate],
    statistics: &TermStatistics,
) -> Vec<Connection> {
    let own: HashMap<&str, &EmbeddedChunk> = sources.iter().map(|source| (source.chunk.id.as_str(), source)).collect();
    let others: HashMap<&str, &Candidate> = others.iter().map(|other| (other.chunk_id.as_str(), other)).collect();
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
