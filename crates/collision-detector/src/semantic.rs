//! The semantic engine: cosine similarity of embeddings, from neighbours an index found or by
//! exact comparison.

use std::collections::HashSet;

use vector_index::{unit, unit_cosine};

use crate::{ChunkRef, Connection, ConnectionEngine};

/// Connects chunks whose embeddings point the same way.
///
/// For each source chunk with an embedding, every other candidate with an embedding of the same
/// dimension is scored by cosine similarity; the `top_k` best at or above `min_score` become
/// connections. Chunks without an embedding, with a zero or non-finite vector, or with a
/// different dimension are skipped, so every score is finite. [`ConnectionEngine::connect`] is
/// exact and costs
/// |sources| × |candidates| × dimension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SemanticEngine {
    /// How many connections each source chunk may get at most.
    pub top_k: usize,
    /// The lowest cosine similarity that makes a connection.
    pub min_score: f32,
}

impl SemanticEngine {
    /// Its [`ConnectionEngine::name`], stored with every connection it finds.
    pub const NAME: &'static str = "semantic";

    /// Top 5 per source chunk, cosine similarity at least 0.75.
    pub const DEFAULT: SemanticEngine = SemanticEngine { top_k: 5, min_score: 0.75 };
}

impl Default for SemanticEngine {
    /// [`SemanticEngine::DEFAULT`].
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A chunk that a nearest-neighbour search found for a source chunk, with its cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour<'a> {
    /// The chunk found.
    pub chunk_id: &'a str,
    /// Its cosine similarity with the source.
    pub score: f32,
}

impl SemanticEngine {
    /// The connections of one source chunk, from the neighbours an index (or an exact search)
    /// found for it: the source itself, non-finite scores and scores under `min_score` are
    /// dropped, and the `top_k` best remain, ties broken by chunk id. The exact engine
    /// ([`ConnectionEngine::connect`]) applies the same rule, so both paths agree.
    pub fn connect_neighbours(&self, source_chunk_id: &str, neighbours: &[Neighbour<'_>]) -> Vec<Connection> {
        let mut kept: Vec<Neighbour<'_>> = neighbours
            .iter()
            .copied()
            .filter(|n| n.chunk_id != source_chunk_id && n.score.is_finite() && n.score >= self.min_score)
            .map(|n| Neighbour { score: n.score.clamp(-1.0, 1.0), ..n })
            .collect();
        kept.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.chunk_id.cmp(b.chunk_id)));
        // A chunk listed twice (with different vectors, say) counts once, at its best score: its
        // copies need not be next to each other once sorted.
        let mut seen = HashSet::new();
        kept.retain(|n| seen.insert(n.chunk_id));
        kept.truncate(self.top_k);
        kept.into_iter()
            .map(|n| Connection {
                source_chunk_id: source_chunk_id.to_owned(),
                target_chunk_id: n.chunk_id.to_owned(),
                engine: self.name().to_owned(),
                score: n.score,
                reason: format!("cosine similarity {:.2}", n.score),
            })
            .collect()
    }
}

impl ConnectionEngine for SemanticEngine {
    fn name(&self) -> &'static str {
        SemanticEngine::NAME
    }

    fn connect(&self, sources: &[ChunkRef<'_>], candidates: &[ChunkRef<'_>]) -> Vec<Connection> {
        if self.top_k == 0 {
            return Vec::new();
        }
        // Normalise every candidate once; the pair loop is then one dot product per pair.
        let normalized: Vec<(usize, Vec<f32>)> =
            candidates.iter().enumerate().filter_map(|(i, c)| Some((i, unit(c.embedding?)?))).collect();
        let mut connections = Vec::new();
        let mut done = HashSet::new();
        for source in sources {
            // A chunk id listed twice among the sources is processed once.
            if !done.insert(source.chunk_id) {
                continue;
            }
            let Some(query) = source.embedding.and_then(unit) else {
                continue;
            };
            let neighbours: Vec<Neighbour<'_>> = normalized
                .iter()
                .filter(|(_, v)| v.len() == query.len())
                .map(|(i, v)| Neighbour { chunk_id: candidates[*i].chunk_id, score: unit_cosine(&query, v) })
                .collect();
            connections.extend(self.connect_neighbours(source.chunk_id, &neighbours));
        }
        connections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_keep_the_top_k_above_the_threshold_never_the_source_and_each_chunk_once() {
        let engine = SemanticEngine { top_k: 3, min_score: 0.5 };
        let n = |chunk_id, score| Neighbour { chunk_id, score };
        let found = engine.connect_neighbours(
            "s",
            &[
                n("s", 1.0),
                n("d", 0.7),
                n("b", 0.9),
                n("a", 0.7),
                n("b", 0.9),
                n("a", 0.95),
                n("low", 0.49),
                n("nan", f32::NAN),
                n("c", 0.7),
            ],
        );
        let kept: Vec<(&str, f32)> = found.iter().map(|c| (c.target_chunk_id.as_str(), c.score)).collect();
        // `a` twice, at 0.95 and 0.7: kept once, at its best.
        assert_eq!(kept, [("a", 0.95), ("b", 0.9), ("c", 0.7)]);
        assert!(found.iter().all(|c| c.source_chunk_id == "s" && c.engine == "semantic"));
        assert_eq!(found[0].reason, "cosine similarity 0.95");
        assert!(SemanticEngine { top_k: 0, min_score: 0.0 }.connect_neighbours("s", &[n("a", 1.0)]).is_empty());
    }
}
