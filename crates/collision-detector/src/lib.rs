//! Connections between chunks for quire, within and across documents.
//!
//! A [`ConnectionEngine`] looks at the chunks of the document being processed (the *sources*)
//! and at every chunk of the library (the *candidates*, which include the sources' own
//! document) and proposes [`Connection`]s, each with a score and a human-readable reason.
//! Two engines ship here:
//!
//! - [`SemanticEngine`]: cosine similarity of embeddings, top-k per source above a threshold;
//! - [`LexicalEngine`]: TF-IDF cosine over shared rare terms (terms as the `terms` crate defines
//!   them). In memory, the inverse document frequency is taken from the candidates and an inverted
//!   index scores only chunks sharing a term; against a library, it is taken from the library's
//!   [`LibraryTerms`] and each source is scored against the [`Shortlist`] of candidates a
//!   full-text index returned for it ([`LexicalEngine::connect_with_statistics`]), each chunk as
//!   its counted terms ([`CountedChunk`]), which a store keeps beside the chunk.
//!
//! [`detect`] runs several engines and returns their connections in one deterministic order.
//!
//! **Key design choice:** the engines score, they do not search a library. The exact
//! [`ConnectionEngine::connect`] compares the sources with the candidates it is given, which suits
//! tests and small inputs; at a library's size the candidates come from an index instead
//! (nearest neighbours by embedding, chunks sharing rare terms), and the same scoring rules apply
//! to what it found ([`SemanticEngine::connect_neighbours`]), so both paths agree.
//!
//! **Invariants:** the crate is pure (no I/O, no async); a chunk never connects to itself; every
//! score is finite; the same inputs give the same output in the same order, ties being broken by
//! chunk id.
//!
//! ```
//! use collision_detector::{detect, ChunkRef, ConnectionEngine, LexicalEngine, SemanticEngine};
//!
//! let chunk = |id, text, embedding| ChunkRef { chunk_id: id, document_id: "doc", text, embedding };
//! let library = [
//!     chunk("a", "The whale breached near the Nantucket harpoon boat.", Some(&[1.0, 0.0][..])),
//!     chunk("b", "A harpoon boat from Nantucket chased the whale.", Some(&[0.9, 0.1][..])),
//!     chunk("c", "Tea and biscuits in the drawing room at noon.", Some(&[0.0, 1.0][..])),
//! ];
//! let semantic = SemanticEngine::default();
//! let lexical = LexicalEngine::default();
//! let engines: [&dyn ConnectionEngine; 2] = [&semantic, &lexical];
//!
//! let connections = detect(&engines, &library[..1], &library);
//! assert!(connections.iter().all(|c| c.source_chunk_id == "a" && c.target_chunk_id == "b"));
//! assert_eq!(connections.len(), 2);
//! assert!(connections.iter().any(|c| c.reason.starts_with("cosine similarity 0.99")));
//! assert!(connections.iter().any(|c| c.reason.contains("nantucket")));
//! ```

mod lexical;
mod semantic;

pub use lexical::{CandidateQuery, CountedChunk, LexicalEngine, LibraryTerms, Shortlist};
pub use semantic::{Neighbour, SemanticEngine};

/// The names of the engines quire runs, as stored with their connections.
pub const ENGINE_NAMES: [&str; 2] = [LexicalEngine::NAME, SemanticEngine::NAME];

/// A borrowed view of one chunk, as the engines see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkRef<'a> {
    /// The chunk's id; connections name chunks by it, and ties are broken by it.
    pub chunk_id: &'a str,
    /// The id of the document the chunk belongs to.
    pub document_id: &'a str,
    /// The chunk's text (markdown).
    pub text: &'a str,
    /// The chunk's embedding, if it has one yet. Engines that need it skip chunks without one.
    pub embedding: Option<&'a [f32]>,
}

/// A proposed link from a source chunk to a candidate chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    /// The chunk of the document being processed.
    pub source_chunk_id: String,
    /// The related chunk, in the same document or another one; never the source itself.
    pub target_chunk_id: String,
    /// The [`ConnectionEngine::name`] of the engine that found it.
    pub engine: String,
    /// The engine's score: finite, higher is stronger; for both engines here in `[0, 1]`.
    pub score: f32,
    /// Why the engine connected the chunks, for people (e.g. "cosine similarity 0.91").
    pub reason: String,
}

/// A way of finding connections. Implementations must be deterministic and must never connect a
/// chunk to itself (same `chunk_id`).
pub trait ConnectionEngine: Send + Sync {
    /// A short stable name, stored in [`Connection::engine`].
    fn name(&self) -> &'static str;

    /// Returns connections from each of `sources` to chunks of `candidates`.
    ///
    /// `candidates` may contain the sources themselves; those pairs are skipped.
    fn connect(&self, sources: &[ChunkRef<'_>], candidates: &[ChunkRef<'_>]) -> Vec<Connection>;
}

/// Runs every engine and returns all their connections, ordered by source chunk id, then engine
/// name, then score (highest first), then target chunk id, so the order does not depend on the
/// order of the inputs.
pub fn detect(
    engines: &[&dyn ConnectionEngine],
    sources: &[ChunkRef<'_>],
    candidates: &[ChunkRef<'_>],
) -> Vec<Connection> {
    let mut connections: Vec<Connection> =
        engines.iter().flat_map(|engine| engine.connect(sources, candidates)).collect();
    sort(&mut connections);
    connections
}

/// Puts connections in [`detect`]'s order: by source chunk id, then engine name, then score
/// (highest first), then target chunk id.
pub fn sort(connections: &mut [Connection]) {
    connections.sort_by(|a, b| {
        a.source_chunk_id
            .cmp(&b.source_chunk_id)
            .then_with(|| a.engine.cmp(&b.engine))
            .then_with(|| b.score.total_cmp(&a.score))
            .then_with(|| a.target_chunk_id.cmp(&b.target_chunk_id))
    });
}

/// Keeps the `top_k` best of `scored` (score, candidate index): highest score first, ties broken
/// by candidate chunk id, a chunk id listed twice among the candidates kept once.
pub(crate) fn best<'a>(
    mut scored: Vec<(f32, usize)>,
    chunk_id: impl Fn(usize) -> &'a str,
    top_k: usize,
) -> Vec<(f32, usize)> {
    scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then_with(|| chunk_id(a.1).cmp(chunk_id(b.1))));
    let mut out: Vec<(f32, usize)> = Vec::with_capacity(top_k.min(scored.len()));
    for (score, index) in scored {
        if out.len() == top_k {
            break;
        }
        let id = chunk_id(index);
        if !out.iter().any(|&(_, kept)| chunk_id(kept) == id) {
            out.push((score, index));
        }
    }
    out
}
