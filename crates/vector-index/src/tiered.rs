//! [`TieredIndex`]: an [`AnnIndex`] graph plus a *fresh tail* of recent vectors that are searched
//! exactly until they are folded into the graph.
//!
//! Inserting a vector into an HNSW graph costs about as much as a search at the build's candidate
//! list (efConstruction): thousands of distance computations. Comparing a query with one vector
//! costs one. So vectors that have just arrived and are about to be queried (a new book's chunks,
//! asked for their neighbours right after they are stored) are cheaper to keep in a flat list and
//! compare with every query than to insert first; they can go into the graph afterwards, when no
//! caller waits for it. Vector databases do the same with their growing segments, searched by
//! brute force until they are sealed into an index.
//!
//! A search merges the graph's approximate answer with the tail's exact one. The tail's scores
//! are exact cosine similarities ([`unit_cosine`]) and rank by [`Scored`]'s order, as [`TopK`]
//! does.

use std::collections::HashSet;
use std::path::Path;

use crate::hnsw::{AnnIndex, IndexError};
use crate::math::{unit, unit_cosine};
use crate::top_k::{Scored, TopK};

/// Query × tail comparisons below which the exact search stays on the calling thread: starting
/// threads costs more than a few hundred microseconds of dot products.
const PARALLEL_FROM: usize = 1 << 16;

/// Tail vectors compared with each query in turn before moving on to the next block, so that a
/// block stays in cache while every query of a thread passes over it.
const TAIL_BLOCK: usize = 128;

/// An approximate index (the graph) and an exact tail of recent vectors, searched as one.
#[derive(Debug)]
pub struct TieredIndex {
    graph: AnnIndex,
    /// Unit vectors not yet in the graph, in the order they were added.
    recent: Vec<(u64, Vec<f32>)>,
    /// The keys of `recent`.
    recent_keys: HashSet<u64>,
}

impl TieredIndex {
    /// An index whose graph is `graph` (new or loaded from a snapshot) and whose tail is empty.
    pub fn new(graph: AnnIndex) -> TieredIndex {
        TieredIndex { graph, recent: Vec::new(), recent_keys: HashSet::new() }
    }

    /// The dimension count of every vector in the index.
    pub fn dimensions(&self) -> usize {
        self.graph.dimensions()
    }

    /// How many vectors the index holds, in the graph and in the tail.
    pub fn len(&self) -> usize {
        self.graph.len() + self.recent.len()
    }

    /// Whether the index holds no vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many vectors wait in the tail to be folded into the graph.
    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }

    /// How many vectors the graph holds.
    pub fn graph_len(&self) -> usize {
        self.graph.len()
    }

    /// Whether a vector is stored under `key`, in the graph or in the tail.
    pub fn contains(&self, key: u64) -> bool {
        self.recent_keys.contains(&key) || self.graph.contains(key)
    }

    /// Adds vectors to the tail under their keys; returns how many were added. As with
    /// [`AnnIndex::add_batch`]: a vector of the wrong length refuses the whole batch, keys already
    /// held (in the graph or the tail) are skipped, a key named twice keeps its first vector, and
    /// zero or non-finite vectors are skipped.
    pub fn add_recent(&mut self, entries: &[(u64, Vec<f32>)]) -> Result<usize, IndexError> {
        let expected = self.dimensions();
        if let Some((_, vector)) = entries.iter().find(|(_, vector)| vector.len() != expected) {
            return Err(IndexError::Dimensions { expected, found: vector.len() });
        }
        let before = self.recent.len();
        for (key, vector) in entries {
            if self.contains(*key) {
                continue;
            }
            if let Some(normalized) = unit(vector) {
                self.recent_keys.insert(*key);
                self.recent.push((*key, normalized));
            }
        }
        Ok(self.recent.len() - before)
    }

    /// Moves the tail into the graph; returns how many vectors the graph gained. On an error the
    /// tail stays as it was (some of it may be in the graph as well; searches count each key once).
    pub fn fold(&mut self) -> Result<usize, IndexError> {
        self.fold_on(self.graph.threads())
    }

    /// [`fold`](Self::fold) on at most `threads` threads.
    pub fn fold_on(&mut self, threads: usize) -> Result<usize, IndexError> {
        if self.recent.is_empty() {
            return Ok(0);
        }
        let added = self.graph.add_batch_on(&self.recent, threads)?;
        self.recent.clear();
        self.recent_keys.clear();
        Ok(added)
    }

    /// The `count` nearest keys of each query, highest cosine similarity first: the graph's
    /// approximate answer merged with an exact search of the tail. A zero or non-finite query
    /// finds nothing.
    pub fn search_batch(&self, queries: &[Vec<f32>], count: usize) -> Result<Vec<Vec<Scored>>, IndexError> {
        let expected = self.dimensions();
        if let Some(query) = queries.iter().find(|q| q.len() != expected) {
            return Err(IndexError::Dimensions { expected, found: query.len() });
        }
        let from_graph = self.graph.search_batch(queries, count)?;
        if self.recent.is_empty() || count == 0 {
            return Ok(from_graph);
        }
        let from_tail = self.search_tail(queries, count)?;
        Ok(from_graph.into_iter().zip(from_tail).map(|(graph, tail)| merge(graph, tail, count)).collect())
    }

    /// Writes the graph to `path` (see [`AnnIndex::save`]). Refused while the tail holds vectors:
    /// a snapshot would silently leave them out.
    pub fn save(&self, path: &Path) -> Result<(), IndexError> {
        if !self.recent.is_empty() {
            return Err(IndexError::Engine(format!(
                "{} vectors are not folded into the graph yet; fold before saving",
                self.recent.len()
            )));
        }
        self.graph.save(path)
    }

    /// The exact best `count` of the tail for each query, on up to [`AnnIndex::threads`] threads.
    fn search_tail(&self, queries: &[Vec<f32>], count: usize) -> Result<Vec<Vec<Scored>>, IndexError> {
        let units: Vec<Option<Vec<f32>>> = queries.iter().map(|q| unit(q)).collect();
        let threads = self.graph.threads().max(1);
        if threads == 1 || queries.len() < 2 || queries.len() * self.recent.len() < PARALLEL_FROM {
            return Ok(exact(&self.recent, &units, count));
        }
        let per_thread = units.len().div_ceil(threads);
        let recent = &self.recent;
        std::thread::scope(|scope| {
            let workers: Vec<_> =
                units.chunks(per_thread).map(|part| scope.spawn(move || exact(recent, part, count))).collect();
            let mut results = Vec::with_capacity(queries.len());
            for worker in workers {
                results.extend(worker.join().map_err(|_| IndexError::Engine("a search thread panicked".to_owned()))?);
            }
            Ok(results)
        })
    }
}

/// The exact best `count` of `recent` for each unit query (none for a query that is `None`).
fn exact(recent: &[(u64, Vec<f32>)], queries: &[Option<Vec<f32>>], count: usize) -> Vec<Vec<Scored>> {
    let mut best: Vec<TopK> = queries.iter().map(|_| TopK::new(count)).collect();
    for block in recent.chunks(TAIL_BLOCK) {
        for (query, top) in queries.iter().zip(best.iter_mut()) {
            let Some(query) = query else { continue };
            for (key, vector) in block {
                top.offer(Scored { score: unit_cosine(query, vector), key: *key });
            }
        }
    }
    best.into_iter().map(TopK::into_sorted).collect()
}

/// One query's answers from both tiers, best first, each key once (the tail's exact score wins
/// if a failed fold left a key in both), at most `count`.
fn merge(graph: Vec<Scored>, tail: Vec<Scored>, count: usize) -> Vec<Scored> {
    let tail_keys: HashSet<u64> = tail.iter().map(|s| s.key).collect();
    let mut merged: Vec<Scored> = tail;
    merged.extend(graph.into_iter().filter(|s| !tail_keys.contains(&s.key)));
    merged.sort_by(|a, b| b.cmp(a));
    merged.truncate(count);
    merged
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::hnsw::Quantization;
    use crate::hnsw::tests::vectors;

    fn keyed(vectors: &[Vec<f32>], first_key: u64) -> Vec<(u64, Vec<f32>)> {
        vectors.iter().cloned().enumerate().map(|(i, v)| (first_key + i as u64, v)).collect()
    }

    fn empty(dimensions: usize) -> TieredIndex {
        TieredIndex::new(AnnIndex::new(dimensions, Quantization::F32).unwrap())
    }

    /// Exact search the slow way: every entry scored, a key's first vector kept, all sorted.
    fn brute_force(entries: &[(u64, Vec<f32>)], query: &[f32], count: usize) -> Vec<Scored> {
        let Some(query) = unit(query) else { return Vec::new() };
        let mut seen = HashSet::new();
        let mut scored: Vec<Scored> = entries
            .iter()
            .filter(|(key, _)| seen.insert(*key))
            .filter_map(|(key, v)| Some(Scored { score: unit_cosine(&query, &unit(v)?), key: *key }))
            .collect();
        scored.sort_by(|a, b| b.cmp(a));
        scored.truncate(count);
        scored
    }

    fn keys(found: &[Scored]) -> Vec<u64> {
        found.iter().map(|s| s.key).collect()
    }

    #[test]
    fn with_everything_in_the_tail_a_search_is_exact() {
        let data = keyed(&vectors(500, 16, 5), 100);
        let mut index = empty(16);
        assert_eq!(index.add_recent(&data).unwrap(), 500);
        assert_eq!((index.len(), index.recent_len(), index.graph_len()), (500, 500, 0));
        // Enough queries for the threaded path as well as the inline one.
        for queries in [vectors(3, 16, 9), vectors(200, 16, 11)] {
            let found = index.search_batch(&queries, 7).unwrap();
            for (query, found) in queries.iter().zip(&found) {
                assert_eq!(found, &brute_force(&data, query, 7));
            }
        }
    }

    #[test]
    fn a_tail_vector_is_found_with_its_exact_score_beside_the_graph() {
        let graph_data = keyed(&vectors(1_000, 16, 21), 0);
        let mut index = empty(16);
        index.add_recent(&graph_data).unwrap();
        assert_eq!(index.fold().unwrap(), 1_000);
        let probe = vectors(1, 16, 777).remove(0);
        assert_eq!(index.add_recent(&[(5_000, probe.clone())]).unwrap(), 1);
        assert!(index.contains(5_000) && index.contains(3) && !index.contains(4_999));

        let found = index.search_batch(std::slice::from_ref(&probe), 5).unwrap();
        assert_eq!(found[0][0].key, 5_000);
        assert_eq!(found[0][0].score, unit_cosine(&unit(&probe).unwrap(), &unit(&probe).unwrap()));
        assert_eq!(found[0].len(), 5);
        // The rest come from the graph, best first, each key once.
        assert!(found[0].windows(2).all(|pair| pair[0] >= pair[1]));
        let mut distinct = keys(&found[0]);
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 5);
    }

    #[test]
    fn folding_keeps_what_a_search_finds() {
        let data = keyed(&vectors(300, 8, 3), 1);
        let mut index = empty(8);
        index.add_recent(&data).unwrap();
        let queries = vectors(20, 8, 4);
        let before = index.search_batch(&queries, 3).unwrap();
        assert_eq!(index.fold().unwrap(), 300);
        assert_eq!((index.len(), index.recent_len(), index.graph_len()), (300, 0, 300));
        assert_eq!(index.fold().unwrap(), 0);
        let after = index.search_batch(&queries, 3).unwrap();
        // The graph is approximate and scores through usearch: compare the keys, allowing a miss.
        let same = before.iter().zip(&after).map(|(b, a)| keys(b).iter().filter(|k| keys(a).contains(k)).count());
        assert!(same.sum::<usize>() * 100 >= 60 * 95, "{before:?} against {after:?}");
        for (b, a) in before.iter().zip(&after) {
            assert!((b[0].score - a[0].score).abs() < 1e-3);
        }
    }

    #[test]
    fn known_keys_duplicates_and_degenerate_vectors_are_skipped() {
        let mut index = empty(3);
        index.add_recent(&[(1, vec![1.0, 0.0, 0.0])]).unwrap();
        index.fold().unwrap();
        let added = index.add_recent(&[
            (1, vec![0.0, 1.0, 0.0]), // in the graph already
            (2, vec![0.0, 1.0, 0.0]), // new
            (2, vec![0.0, 0.0, 1.0]), // the same key again: the first vector wins
            (3, vec![0.0, 0.0, 0.0]), // no direction
            (4, vec![f32::NAN, 1.0, 0.0]),
        ]);
        assert_eq!(added.unwrap(), 1);
        assert_eq!(index.add_recent(&[(2, vec![1.0, 1.0, 1.0])]).unwrap(), 0, "in the tail already");
        assert_eq!((index.len(), index.recent_len()), (2, 1));
        assert!(!index.contains(3) && !index.contains(4));

        let found = index.search_batch(&[vec![0.0, 1.0, 0.0], vec![0.0, 0.0, 1.0], vec![0.0; 3]], 1).unwrap();
        assert_eq!(keys(&found[0]), [2]);
        assert_ne!(keys(&found[1]), [2], "key 2 kept its first vector");
        assert!(found[2].is_empty(), "a zero query finds nothing");
        assert_eq!(index.search_batch(&[vec![0.0, 1.0, 0.0]], 0).unwrap(), [Vec::new()]);
    }

    #[test]
    fn wrong_dimensions_are_refused_and_nothing_is_added() {
        let mut index = empty(3);
        let refused = index.add_recent(&[(1, vec![1.0, 0.0, 0.0]), (2, vec![1.0, 0.0])]);
        assert!(matches!(refused, Err(IndexError::Dimensions { expected: 3, found: 2 })));
        assert!(index.is_empty());
        index.add_recent(&[(1, vec![1.0, 0.0, 0.0])]).unwrap();
        assert!(matches!(index.search_batch(&[vec![1.0]], 1), Err(IndexError::Dimensions { expected: 3, found: 1 })));
    }

    #[test]
    fn a_snapshot_is_refused_until_the_tail_is_folded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.usearch");
        let mut index = empty(4);
        index.add_recent(&keyed(&vectors(10, 4, 8), 0)).unwrap();
        assert!(index.save(&path).is_err());
        assert!(!path.exists());
        index.fold().unwrap();
        index.save(&path).unwrap();
        assert_eq!(AnnIndex::load(&path, 4, Quantization::F32).unwrap().len(), 10);
    }

    proptest! {
        /// With every vector in the tail, a search is brute force, whatever the keys, duplicates,
        /// degenerate vectors or count.
        #[test]
        fn a_tail_search_is_brute_force(
            entries in prop::collection::vec((0u64..40, prop::collection::vec(-1.0f32..1.0, 4)), 0..80),
            zeros in prop::collection::vec(0u64..40, 0..4),
            queries in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 4), 1..6),
            count in 0usize..12,
        ) {
            let mut entries = entries;
            entries.extend(zeros.into_iter().map(|key| (key, vec![0.0; 4])));
            let mut index = empty(4);
            index.add_recent(&entries).unwrap();
            let found = index.search_batch(&queries, count).unwrap();
            // A zero vector never takes its key: the key's first usable vector does.
            let usable: Vec<(u64, Vec<f32>)> = entries.iter().filter(|(_, v)| unit(v).is_some()).cloned().collect();
            for (query, found) in queries.iter().zip(&found) {
                prop_assert_eq!(found, &brute_force(&usable, query, count));
            }
        }
    }
}
