//! [`AnnIndex`]: an approximate nearest-neighbour index (HNSW, by `usearch`) over unit vectors of
//! one dimension count, with keys chosen by the caller and snapshots on disk.
//!
//! usearch is maintained, stores f16 or i8 as well as f32, saves and loads snapshots and removes
//! keys; `quire-library-bench ann` compares it with `hnsw_rs` and exact search on the same
//! vectors (BENCHMARKS.md, "Library scale"). It hands out a fixed number of per-thread search
//! contexts, so this wrapper owns the threading: batches of queries and of additions run on at
//! most [`AnnIndex::threads`] scoped threads, and `&mut self` for additions keeps them apart from
//! searches.

use std::path::Path;

use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::math::unit;
use crate::top_k::Scored;

/// How the index stores vectors. Lower precision halves or quarters the memory; recall is
/// measured in BENCHMARKS.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Quantization {
    /// 4 bytes per component.
    F32,
    /// 2 bytes per component, IEEE half precision.
    #[default]
    F16,
    /// 1 byte per component.
    I8,
}

impl Quantization {
    fn scalar_kind(self) -> ScalarKind {
        match self {
            Quantization::F32 => ScalarKind::F32,
            Quantization::F16 => ScalarKind::F16,
            Quantization::I8 => ScalarKind::I8,
        }
    }
}

/// Why the index refused an operation.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A vector whose length is not the index's dimension count.
    #[error("a vector has {found} dimensions, but the index holds vectors of {expected}")]
    Dimensions {
        /// The index's dimension count.
        expected: usize,
        /// The offending vector's length.
        found: usize,
    },
    /// The index library reported an error (out of memory, a corrupt snapshot, …).
    #[error("vector index: {0}")]
    Engine(String),
    /// Reading or writing a snapshot failed.
    #[error("vector index snapshot {path}: {source}")]
    Snapshot {
        /// The snapshot file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

fn engine(error: impl std::fmt::Display) -> IndexError {
    IndexError::Engine(error.to_string())
}

/// An approximate nearest-neighbour index by cosine similarity.
pub struct AnnIndex {
    index: Index,
    dimensions: usize,
    quantization: Quantization,
    threads: usize,
    /// The search breadth set by [`AnnIndex::set_search_breadth`], if any; else it follows the
    /// index's size ([`search_breadth`]).
    search_breadth: Option<usize>,
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex")
            .field("dimensions", &self.dimensions)
            .field("quantization", &self.quantization)
            .field("len", &self.len())
            .finish()
    }
}

/// Connections per node (HNSW's M). usearch's default (16) measured best for recall per byte.
const CONNECTIVITY: usize = 16;
/// Candidate list while building (efConstruction).
const EXPANSION_ADD: usize = 128;
/// Candidate list while searching (ef) in an index of up to [`NARROW_SEARCH_UP_TO`] vectors.
/// Measured on 100k text-like vectors (BENCHMARKS.md, "The search breadth"): recall@5 against
/// exact search 0.998 at 32 as at 48 (1.000 at 96), in a third of the time of 96. A connections
/// job asks each chunk's top 6.
const NARROW_SEARCH: usize = 32;
/// The largest index searched with [`NARROW_SEARCH`]: recall falls as the graph grows, and the
/// narrow breadth is measured up to 100k vectors only.
const NARROW_SEARCH_UP_TO: usize = 200_000;
/// Candidate list while searching a larger index: recall@5 0.962 at 1M vectors (BENCHMARKS.md).
const WIDE_SEARCH: usize = 96;

/// The search breadth (ef) for an index of `len` vectors: measured breadths only.
fn search_breadth(len: usize) -> usize {
    if len <= NARROW_SEARCH_UP_TO { NARROW_SEARCH } else { WIDE_SEARCH }
}

impl AnnIndex {
    /// An empty index for vectors of `dimensions` components.
    pub fn new(dimensions: usize, quantization: Quantization) -> Result<AnnIndex, IndexError> {
        let options = IndexOptions {
            dimensions,
            metric: MetricKind::Cos,
            quantization: quantization.scalar_kind(),
            connectivity: CONNECTIVITY,
            expansion_add: EXPANSION_ADD,
            expansion_search: WIDE_SEARCH,
            multi: false,
        };
        let index = Index::new(&options).map_err(engine)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 16);
        index.reserve_capacity_and_threads(64, threads).map_err(engine)?;
        Ok(AnnIndex { index, dimensions, quantization, threads, search_breadth: None })
    }

    /// The dimension count of every vector in the index.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// How many vectors the index holds.
    pub fn len(&self) -> usize {
        self.index.size()
    }

    /// Whether the index holds no vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a vector is stored under `key`.
    pub fn contains(&self, key: u64) -> bool {
        self.index.contains(key)
    }

    /// Bytes of memory the index uses.
    pub fn memory_usage(&self) -> usize {
        self.index.memory_usage()
    }

    /// Sets how many candidates a search keeps while it walks the graph (HNSW's ef; by the
    /// index's size unless set): fewer answer faster and miss more of the true nearest. For
    /// measuring that trade; a loaded snapshot follows its size again.
    pub fn set_search_breadth(&mut self, breadth: usize) {
        self.search_breadth = Some(breadth.max(1));
    }

    /// How many threads batch operations use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Adds vectors under their keys; returns how many were added. Keys already present are
    /// skipped (a key names one immutable vector), and so are zero or non-finite vectors, which
    /// have no direction to compare.
    pub fn add_batch(&mut self, entries: &[(u64, Vec<f32>)]) -> Result<usize, IndexError> {
        self.add_batch_on(entries, self.threads)
    }

    /// [`add_batch`](Self::add_batch) on at most `threads` threads (at least one, at most
    /// [`threads`](Self::threads)): work done beside other work leaves it the other cores.
    pub fn add_batch_on(&mut self, entries: &[(u64, Vec<f32>)], threads: usize) -> Result<usize, IndexError> {
        let threads = threads.clamp(1, self.threads);
        let mut fresh: Vec<(u64, Vec<f32>)> = Vec::with_capacity(entries.len());
        for (key, vector) in entries {
            if vector.len() != self.dimensions {
                return Err(IndexError::Dimensions { expected: self.dimensions, found: vector.len() });
            }
            if self.index.contains(*key) {
                continue;
            }
            if let Some(normalized) = unit(vector) {
                fresh.push((*key, normalized));
            }
        }
        // A batch may name a key twice; keep its first vector.
        fresh.sort_by_key(|(key, _)| *key);
        fresh.dedup_by_key(|(key, _)| *key);
        if fresh.is_empty() {
            return Ok(0);
        }
        let needed = self.len() + fresh.len();
        if needed > self.index.capacity() {
            let capacity = needed.max(self.index.capacity() * 2);
            self.index.reserve_capacity_and_threads(capacity, self.threads).map_err(engine)?;
        }
        let index = &self.index;
        let per_thread = fresh.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = fresh
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || -> Result<(), IndexError> {
                        for (key, vector) in part {
                            index.add(*key, vector).map_err(engine)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|worker| worker.join().map_err(|_| engine("an insert thread panicked"))?)
        })?;
        Ok(fresh.len())
    }

    /// The `count` nearest keys of each query, highest cosine similarity first. A zero or
    /// non-finite query finds nothing.
    pub fn search_batch(&self, queries: &[Vec<f32>], count: usize) -> Result<Vec<Vec<Scored>>, IndexError> {
        if let Some(query) = queries.iter().find(|q| q.len() != self.dimensions) {
            return Err(IndexError::Dimensions { expected: self.dimensions, found: query.len() });
        }
        if count == 0 || self.is_empty() || queries.is_empty() {
            return Ok(vec![Vec::new(); queries.len()]);
        }
        let breadth = self.search_breadth.unwrap_or_else(|| search_breadth(self.len()));
        if self.index.expansion_search() != breadth {
            self.index.change_expansion_search(breadth);
        }
        let index = &self.index;
        let per_thread = queries.len().div_ceil(self.threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = queries
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || -> Result<Vec<Vec<Scored>>, IndexError> {
                        part.iter().map(|query| search_one(index, query, count)).collect()
                    })
                })
                .collect();
            let mut results = Vec::with_capacity(queries.len());
            for worker in workers {
                results.extend(worker.join().map_err(|_| engine("a search thread panicked"))??);
            }
            Ok(results)
        })
    }

    /// Writes the index to `path` atomically: a crash mid-write leaves the previous snapshot (or
    /// none), never half a file under that name.
    pub fn save(&self, path: &Path) -> Result<(), IndexError> {
        let snapshot_error = |source| IndexError::Snapshot { path: path.display().to_string(), source };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(snapshot_error)?;
        let temp = tempfile::NamedTempFile::new_in(dir).map_err(snapshot_error)?;
        let temp_path = temp.path().to_str().ok_or_else(|| engine("the snapshot path is not UTF-8"))?;
        self.index.save(temp_path).map_err(engine)?;
        temp.as_file().sync_all().map_err(snapshot_error)?;
        temp.persist(path).map_err(|e| snapshot_error(e.error))?;
        Ok(())
    }

    /// Reads a snapshot written by [`save`](Self::save), checking that it holds vectors of
    /// `dimensions` components stored as `quantization` by cosine.
    pub fn load(path: &Path, dimensions: usize, quantization: Quantization) -> Result<AnnIndex, IndexError> {
        let name = path.to_str().ok_or_else(|| engine("the snapshot path is not UTF-8"))?;
        if !path.is_file() {
            return Err(IndexError::Snapshot {
                path: name.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such snapshot"),
            });
        }
        let metadata = Index::metadata(name).map_err(engine)?;
        if metadata.dimensions != dimensions as u64
            || metadata.metric != MetricKind::Cos
            || metadata.quantization != quantization.scalar_kind()
            || metadata.multi
        {
            return Err(engine(format!(
                "the snapshot holds {}-dimension vectors ({:?}, {:?}), not {dimensions} ({quantization:?}) by cosine",
                metadata.dimensions, metadata.quantization, metadata.metric
            )));
        }
        let index = AnnIndex::new(dimensions, quantization)?;
        index.index.load(name).map_err(engine)?;
        // Loading replaces the reserved contexts: reserve them again for our threads.
        let capacity = index.index.capacity().max(index.len());
        index.index.reserve_capacity_and_threads(capacity, index.threads).map_err(engine)?;
        Ok(index)
    }
}

fn search_one(index: &Index, query: &[f32], count: usize) -> Result<Vec<Scored>, IndexError> {
    let Some(query) = unit(query) else { return Ok(Vec::new()) };
    let matches = index.search(&query, count).map_err(engine)?;
    Ok(matches
        .keys
        .iter()
        .zip(&matches.distances)
        // usearch's cosine distance is 1 − similarity.
        .map(|(&key, &distance)| Scored { key, score: (1.0 - distance).clamp(-1.0, 1.0) })
        .filter(|scored| scored.score.is_finite())
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::math::cosine;

    /// Deterministic pseudo-random vectors (xorshift), so tests need no RNG crate.
    pub(crate) fn vectors(count: usize, dimensions: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed.max(1);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f32 / 1000.0 - 1.0
        };
        (0..count).map(|_| (0..dimensions).map(|_| next()).collect()).collect()
    }

    fn exact(vectors: &[Vec<f32>], query: &[f32], count: usize) -> Vec<u64> {
        let mut scored: Vec<(f32, u64)> =
            vectors.iter().enumerate().map(|(i, v)| (cosine(query, v).unwrap(), i as u64)).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(count).map(|(_, key)| key).collect()
    }

    #[test]
    fn finds_what_exact_search_finds() {
        let data = vectors(2_000, 32, 7);
        let mut index = AnnIndex::new(32, Quantization::F32).unwrap();
        let entries: Vec<(u64, Vec<f32>)> = data.iter().cloned().enumerate().map(|(i, v)| (i as u64, v)).collect();
        assert_eq!(index.add_batch(&entries).unwrap(), 2_000);
        let queries = vectors(50, 32, 99);
        let found = index.search_batch(&queries, 5).unwrap();
        let mut hits = 0;
        for (query, found) in queries.iter().zip(&found) {
            let truth = exact(&data, query, 5);
            hits += found.iter().filter(|s| truth.contains(&s.key)).count();
            // Scores are cosine similarities, best first.
            for pair in found.windows(2) {
                assert!(pair[0].score >= pair[1].score);
            }
            let best = &found[0];
            let real = cosine(query, &data[best.key as usize]).unwrap();
            assert!((best.score - real).abs() < 1e-3, "{} vs {real}", best.score);
        }
        let recall = hits as f64 / (queries.len() * 5) as f64;
        assert!(recall >= 0.95, "recall@5 {recall}");
    }

    #[test]
    fn skips_known_keys_and_degenerate_vectors_and_refuses_wrong_dimensions() {
        let mut index = AnnIndex::new(3, Quantization::F16).unwrap();
        let added =
            index.add_batch(&[(1, vec![1.0, 0.0, 0.0]), (2, vec![0.0, 0.0, 0.0]), (3, vec![f32::NAN, 1.0, 0.0])]);
        assert_eq!(added.unwrap(), 1);
        assert_eq!(index.add_batch(&[(1, vec![0.0, 1.0, 0.0]), (4, vec![0.0, 1.0, 0.0])]).unwrap(), 1);
        assert_eq!(index.len(), 2);
        assert!(matches!(
            index.add_batch(&[(5, vec![1.0, 2.0])]),
            Err(IndexError::Dimensions { expected: 3, found: 2 })
        ));
        assert!(matches!(index.search_batch(&[vec![1.0]], 3), Err(IndexError::Dimensions { .. })));
        // The key 1 kept its first vector.
        let found = index.search_batch(&[vec![1.0, 0.0, 0.0], vec![0.0, 0.0, 0.0]], 1).unwrap();
        assert_eq!(found[0][0].key, 1);
        assert!(found[1].is_empty());
    }

    #[test]
    fn a_snapshot_round_trips_and_a_mismatched_or_corrupt_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.usearch");
        let data = vectors(300, 16, 3);
        let mut index = AnnIndex::new(16, Quantization::F16).unwrap();
        let entries: Vec<(u64, Vec<f32>)> = data.iter().cloned().enumerate().map(|(i, v)| (i as u64 + 10, v)).collect();
        index.add_batch(&entries).unwrap();
        index.save(&path).unwrap();

        let loaded = AnnIndex::load(&path, 16, Quantization::F16).unwrap();
        assert_eq!(loaded.len(), 300);
        assert!(loaded.contains(10) && !loaded.contains(9));
        let query = vec![data[42].clone()];
        assert_eq!(loaded.search_batch(&query, 1).unwrap()[0][0].key, 52);

        assert!(AnnIndex::load(&path, 8, Quantization::F16).is_err());
        assert!(AnnIndex::load(&path, 16, Quantization::F32).is_err());
        assert!(AnnIndex::load(&dir.path().join("missing"), 16, Quantization::F16).is_err());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
        assert!(AnnIndex::load(&path, 16, Quantization::F16).is_err());
        std::fs::write(&path, b"not an index").unwrap();
        assert!(AnnIndex::load(&path, 16, Quantization::F16).is_err());
    }
}
