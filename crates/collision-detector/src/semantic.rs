//! The semantic engine: exact cosine similarity of embeddings.

use std::collections::HashSet;

use crate::{ChunkRef, Connection, ConnectionEngine, best};

/// Connects chunks whose embeddings point the same way.
///
/// For each source chunk with an embedding, every other candidate with an embedding of the same
/// dimension is scored by cosine similarity; the `top_k` best at or above `min_score` become
/// connections. Chunks without an embedding, with a zero or non-finite vector, or with a
/// different dimension are skipped, so every score is finite. The search is exact and costs
/// |sources| × |candidates| × dimension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SemanticEngine {
    /// How many connections each source chunk may get at most.
    pub top_k: usize,
    /// The lowest cosine similarity that makes a connection.
    pub min_score: f32,
}

impl Default for SemanticEngine {
    /// Top 5 per source chunk, cosine similarity at least 0.75.
    fn default() -> Self {
        Self { top_k: 5, min_score: 0.75 }
    }
}

impl ConnectionEngine for SemanticEngine {
    fn name(&self) -> &'static str {
        "semantic"
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
            let scored: Vec<(f32, usize)> = normalized
                .iter()
                .filter(|(i, v)| v.len() == query.len() && candidates[*i].chunk_id != source.chunk_id)
                .filter_map(|(i, v)| {
                    let cosine = dot(&query, v);
                    // Rounding can push identical vectors a hair past 1.
                    let score = cosine.clamp(-1.0, 1.0);
                    (score.is_finite() && score >= self.min_score).then_some((score, *i))
                })
                .collect();
            for (score, target) in best(scored, candidates, self.top_k) {
                connections.push(Connection {
                    source_chunk_id: source.chunk_id.to_owned(),
                    target_chunk_id: candidates[target].chunk_id.to_owned(),
                    engine: self.name().to_owned(),
                    score,
                    reason: format!("cosine similarity {score:.2}"),
                });
            }
        }
        connections
    }
}

/// The vector scaled to length 1, or `None` when it is empty, zero or not finite.
fn unit(v: &[f32]) -> Option<Vec<f32>> {
    // Accumulate in f64 so that large or tiny components neither overflow nor vanish.
    let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return None;
    }
    let scaled: Vec<f32> = v.iter().map(|&x| (f64::from(x) / norm) as f32).collect();
    scaled.iter().all(|x| x.is_finite()).then_some(scaled)
}

/// Dot product with eight independent partial sums: the compiler may not reorder a single float
/// sum, but can vectorise eight lanes (about 8× faster on 1536-dimension embeddings). The order of
/// additions is fixed, so results stay deterministic.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    let mut lanes = [0f32; LANES];
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_naive_sum() {
        for len in [0, 1, 7, 8, 9, 17, 1536] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-3, "len {len}");
        }
    }

    #[test]
    fn unit_rejects_degenerate_vectors() {
        assert_eq!(unit(&[]), None);
        assert_eq!(unit(&[0.0, 0.0]), None);
        assert_eq!(unit(&[f32::NAN, 1.0]), None);
        assert_eq!(unit(&[f32::INFINITY, 1.0]), None);
        assert_eq!(unit(&[3.0, 4.0]), Some(vec![0.6, 0.8]));
        // Squares overflow f32 but not the f64 accumulator.
        let big = unit(&[f32::MAX, f32::MAX]).unwrap();
        assert!((big[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!(unit(&[1e-40, 0.0]).is_some());
    }
}
