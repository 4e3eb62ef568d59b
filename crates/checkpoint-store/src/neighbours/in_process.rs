//! The in-process HNSW index: one [`AnnIndex`] per (model, dimension count), a cache of
//! `embedding_cache` that catches up with the database before every query and may keep a
//! snapshot on disk for a fast start.
//!
//! **Catching up.** Keys of stored vectors only grow. On SQLite one writer assigns them in commit
//! order, so everything above the highest key seen is new. On PostgreSQL a transaction that took
//! a key earlier can commit later, so the index re-lists the keys (keys only, not vectors) above a
//! *safe low* — the highest key it saw at least [`IN_FLIGHT_WINDOW`] ago — and fetches the vectors
//! of the ones it lacks. A key names one immutable vector, so adding is idempotent.
//!
//! **Snapshots** are a start-up shortcut, never trusted: a snapshot whose metadata does not match,
//! whose file does not load, or that holds more vectors than the database has up to its high
//! water mark (a replaced database) is rebuilt from the database with a warning. The index file is
//! written before its metadata, each atomically, and the metadata records the index's size, so a
//! crash between the two is noticed too.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vector_index::{AnnIndex, Quantization, Scored};

use super::VectorRows;
use crate::error::{StoreError, StoreResult};

/// How long a PostgreSQL transaction may take between taking a key and committing before the
/// index stops looking below that key for late arrivals.
const IN_FLIGHT_WINDOW: Duration = Duration::from_secs(120);

/// Vectors fetched per statement while catching up.
const FETCH_PAGE: usize = 2048;

/// Vectors added since the last snapshot that make it worth writing a new one.
const SNAPSHOT_EVERY: usize = 2048;

/// The snapshot format; bumped when the file layout changes, which makes old snapshots rebuild.
const SNAPSHOT_FORMAT: u32 = 1;

/// Where the in-process indexes keep their snapshots (for example the data directory's
/// `index/` folder); none means every process builds its indexes from the database.
pub type VectorSnapshots = Option<PathBuf>;

/// The in-process indexes of one store, one per (model, dimension count).
pub struct InProcessIndexes {
    snapshot_dir: VectorSnapshots,
    quantization: Quantization,
    slots: std::sync::Mutex<HashMap<(String, usize), Slot>>,
}

/// One (model, dimensions) index, empty until its first query builds or loads it, and empty
/// again if work on it failed (the next query rebuilds it).
type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

impl std::fmt::Debug for InProcessIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessIndexes").field("snapshot_dir", &self.snapshot_dir).finish_non_exhaustive()
    }
}

/// One index and how far it has caught up.
struct Cached {
    index: AnnIndex,
    /// The highest key in the index.
    high_water: i64,
    /// Every key at or below this one is in the index (or never will exist).
    safe_low: i64,
    /// (when, high water then): the safe low advances to entries older than the window.
    history: VecDeque<(Instant, i64)>,
    added_since_snapshot: usize,
}

/// What a snapshot's metadata file says.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct SnapshotMeta {
    format: u32,
    model: String,
    dimensions: usize,
    quantization: Quantization,
    high_water: i64,
    safe_low: i64,
    count: usize,
}

impl InProcessIndexes {
    /// Indexes that keep snapshots in `snapshot_dir`, if given.
    pub fn new(snapshot_dir: VectorSnapshots) -> InProcessIndexes {
        InProcessIndexes { snapshot_dir, quantization: Quantization::default(), slots: Default::default() }
    }

    /// The best `count` keys for each query, after catching the index up with the database.
    pub(crate) async fn nearest_keys<R: VectorRows + ?Sized>(
        &self,
        rows: &R,
        model: &str,
        dimensions: usize,
        queries: Vec<Vec<f32>>,
        count: usize,
    ) -> StoreResult<Vec<Vec<Scored>>> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slots.entry((model.to_owned(), dimensions)).or_default().clone()
        };
        let mut guard = slot.lock().await;
        let (cached, opened) = match guard.take() {
            Some(cached) => (cached, false),
            None => (self.open(rows, model, dimensions).await?, true),
        };
        // What was stored longer ago than the window is settled, as far as the window promises:
        // once caught up, a new index starts its safe low there. Without this, a new process would
        // re-list every key on each query until its own history covered the window. Asked before
        // catching up, so every settled key is among those the catch-up lists.
        let settled = if opened && !rows.keys_follow_commits() {
            Some(rows.settled_key(model, dimensions, IN_FLIGHT_WINDOW).await?)
        } else {
            None
        };
        let mut cached = self.catch_up(rows, model, dimensions, cached).await?;
        if let Some(settled) = settled {
            cached.safe_low = cached.safe_low.max(settled.min(cached.high_water));
        }
        let cached = self.maybe_snapshot(model, dimensions, cached).await?;
        let (cached, found) = blocking(move || {
            let found = cached.index.search_batch(&queries, count);
            (cached, found)
        })
        .await?;
        *guard = Some(cached);
        found.map_err(|e| StoreError::VectorIndex(e.to_string()))
    }

    /// The snapshot if it is usable, else an empty index.
    async fn open<R: VectorRows + ?Sized>(&self, rows: &R, model: &str, dimensions: usize) -> StoreResult<Cached> {
        let empty = || -> StoreResult<Cached> {
            let index =
                AnnIndex::new(dimensions, self.quantization).map_err(|e| StoreError::VectorIndex(e.to_string()))?;
            Ok(Cached { index, high_water: 0, safe_low: 0, history: VecDeque::new(), added_since_snapshot: 0 })
        };
        let Some(dir) = &self.snapshot_dir else { return empty() };
        let (index_path, meta_path) = snapshot_paths(dir, model, dimensions);
        if !meta_path.exists() && !index_path.exists() {
            return empty();
        }
        let quantization = self.quantization;
        let loaded = {
            let (index_path, meta_path) = (index_path.clone(), meta_path.clone());
            blocking(move || load_snapshot(&index_path, &meta_path, dimensions, quantization)).await?
        };
        let reason = match loaded {
            Ok((meta, _)) if meta.model != model || meta.dimensions != dimensions => {
                "it belongs to another model".to_owned()
            }
            Ok((meta, index)) => {
                let stored = rows.count_vectors_up_to(model, dimensions, meta.high_water).await?;
                if (index.len() as u64) > stored || (rows.keys_follow_commits() && index.len() as u64 != stored) {
                    format!(
                        "it holds {} vectors but the database has {stored} up to its mark (a replaced database?)",
                        index.len()
                    )
                } else {
                    tracing::info!(model, dimensions, vectors = index.len(), "vector index loaded from its snapshot");
                    return Ok(Cached {
                        index,
                        high_water: meta.high_water,
                        safe_low: meta.safe_low,
                        history: VecDeque::new(),
                        added_since_snapshot: 0,
                    });
                }
            }
            Err(error) => error,
        };
        tracing::warn!(model, dimensions, snapshot = %index_path.display(), %reason, "vector index snapshot not usable; rebuilding it from the database");
        empty()
    }

    /// Adds every stored vector the index lacks.
    async fn catch_up<R: VectorRows + ?Sized>(
        &self,
        rows: &R,
        model: &str,
        dimensions: usize,
        mut cached: Cached,
    ) -> StoreResult<Cached> {
        let ordered = rows.keys_follow_commits();
        let low = if ordered { cached.high_water } else { cached.safe_low };
        let keys = rows.vector_keys_after(model, dimensions, low).await?;
        let missing: Vec<i64> =
            keys.iter().copied().filter(|&key| u64::try_from(key).is_ok_and(|k| !cached.index.contains(k))).collect();
        let started = Instant::now();
        for page in missing.chunks(FETCH_PAGE) {
            let vectors = rows.vectors_by_key(page).await?;
            let entries: Vec<(u64, Vec<f32>)> =
                vectors.into_iter().filter_map(|(key, v)| Some((u64::try_from(key).ok()?, v))).collect();
            let (back, added) = blocking(move || {
                let added = cached.index.add_batch(&entries);
                (cached, added)
            })
            .await?;
            cached = back;
            cached.added_since_snapshot += added.map_err(|e| StoreError::VectorIndex(e.to_string()))?;
        }
        if missing.len() > FETCH_PAGE {
            tracing::info!(
                model,
                dimensions,
                added = missing.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "vector index caught up"
            );
        }
        if let Some(&highest) = keys.last() {
            cached.high_water = cached.high_water.max(highest);
        }
        if ordered {
            cached.safe_low = cached.high_water;
        } else {
            let now = Instant::now();
            cached.history.push_back((now, cached.high_water));
            while let Some(&(at, mark)) = cached.history.front()
                && now.duration_since(at) >= IN_FLIGHT_WINDOW
            {
                cached.safe_low = cached.safe_low.max(mark);
                cached.history.pop_front();
            }
        }
        Ok(cached)
    }

    /// Writes a snapshot when enough was added since the last one. A failure is logged and
    /// changes nothing: the snapshot is only a shortcut.
    async fn maybe_snapshot(&self, model: &str, dimensions: usize, cached: Cached) -> StoreResult<Cached> {
        let Some(dir) = &self.snapshot_dir else { return Ok(cached) };
        if cached.added_since_snapshot < SNAPSHOT_EVERY {
            return Ok(cached);
        }
        let (index_path, meta_path) = snapshot_paths(dir, model, dimensions);
        let meta = SnapshotMeta {
            format: SNAPSHOT_FORMAT,
            model: model.to_owned(),
            dimensions,
            quantization: self.quantization,
            high_water: cached.high_water,
            safe_low: cached.safe_low,
            count: cached.index.len(),
        };
        let result = blocking(move || {
            let saved = save_snapshot(&cached.index, &meta, &index_path, &meta_path);
            (cached, saved)
        })
        .await;
        match result {
            Ok((mut cached, Ok(()))) => {
                cached.added_since_snapshot = 0;
                Ok(cached)
            }
            Ok((cached, Err(error))) => {
                tracing::warn!(%error, "could not write the vector index snapshot");
                Ok(cached)
            }
            // The index went down with the failed task: the slot stays empty and the next query
            // rebuilds it.
            Err(error) => Err(error),
        }
    }
}

/// Runs CPU-bound or blocking work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> StoreResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| StoreError::VectorIndex(format!("index work failed: {e}")))
}

/// The snapshot's two files: `<dir>/<model hash>-<dimensions>.usearch` and `.json`.
fn snapshot_paths(dir: &Path, model: &str, dimensions: usize) -> (PathBuf, PathBuf) {
    // FNV-1a: a stable file name for any model string, without path characters.
    let hash = model.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let stem = format!("{hash:016x}-{dimensions}");
    (dir.join(format!("{stem}.usearch")), dir.join(format!("{stem}.json")))
}

fn load_snapshot(
    index_path: &Path,
    meta_path: &Path,
    dimensions: usize,
    quantization: Quantization,
) -> Result<(SnapshotMeta, AnnIndex), String> {
    let meta: SnapshotMeta = std::fs::read(meta_path)
        .map_err(|e| format!("its metadata cannot be read: {e}"))
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| format!("its metadata is corrupt: {e}")))?;
    if meta.format != SNAPSHOT_FORMAT || meta.quantization != quantization {
        return Err("it was written in another format".to_owned());
    }
    let index = AnnIndex::load(index_path, dimensions, quantization).map_err(|e| e.to_string())?;
    if index.len() != meta.count {
        return Err(format!("it holds {} vectors but its metadata says {}", index.len(), meta.count));
    }
    Ok((meta, index))
}

fn save_snapshot(index: &AnnIndex, meta: &SnapshotMeta, index_path: &Path, meta_path: &Path) -> Result<(), String> {
    index.save(index_path).map_err(|e| e.to_string())?;
    let dir = meta_path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    serde_json::to_writer(&mut temp, meta).map_err(|e| e.to_string())?;
    temp.as_file().sync_all().map_err(|e| e.to_string())?;
    temp.persist(meta_path).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::neighbours::KeyedChunk;

    /// Stored vectors whose keys do not follow commits, as on PostgreSQL; records where each
    /// catch-up started listing keys.
    struct UnorderedRows {
        vectors: Vec<(i64, Vec<f32>)>,
        settled: i64,
        listed_after: Mutex<Vec<i64>>,
    }

    #[async_trait]
    impl VectorRows for UnorderedRows {
        async fn vector_keys_after(&self, _: &str, _: usize, after: i64) -> StoreResult<Vec<i64>> {
            self.listed_after.lock().unwrap().push(after);
            Ok(self.vectors.iter().map(|(key, _)| *key).filter(|&key| key > after).collect())
        }
        async fn vectors_after(&self, _: &str, _: usize, _: i64, _: usize) -> StoreResult<Vec<(i64, Vec<f32>)>> {
            unreachable!("the in-process index fetches by key")
        }
        async fn vectors_by_key(&self, keys: &[i64]) -> StoreResult<Vec<(i64, Vec<f32>)>> {
            Ok(self.vectors.iter().filter(|(key, _)| keys.contains(key)).cloned().collect())
        }
        async fn count_vectors_up_to(&self, _: &str, _: usize, key: i64) -> StoreResult<u64> {
            Ok(self.vectors.iter().filter(|(k, _)| *k <= key).count() as u64)
        }
        async fn chunks_for_keys(&self, _: &[i64]) -> StoreResult<Vec<KeyedChunk>> {
            unreachable!("keys are resolved by the search, not the index")
        }
        fn keys_follow_commits(&self) -> bool {
            false
        }
        async fn settled_key(&self, _: &str, _: usize, age: Duration) -> StoreResult<i64> {
            assert_eq!(age, IN_FLIGHT_WINDOW);
            Ok(self.settled)
        }
    }

    fn rows(count: i64, settled: i64) -> UnorderedRows {
        let vectors = (1..=count).map(|key| (key, vec![1.0, key as f32, (key % 7) as f32, 0.5])).collect();
        UnorderedRows { vectors, settled, listed_after: Mutex::new(Vec::new()) }
    }

    async fn query_twice(rows: &UnorderedRows) -> Vec<i64> {
        let indexes = InProcessIndexes::new(None);
        for _ in 0..2 {
            let found = indexes.nearest_keys(rows, "m", 4, vec![vec![1.0, 3.0, 3.0, 0.5]], 3).await.unwrap();
            assert_eq!(found[0].len(), 3);
        }
        rows.listed_after.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_new_index_starts_its_safe_low_at_the_settled_key_once_caught_up() {
        let rows = rows(200, 150);
        // The first catch-up lists everything; the next ones only what may still arrive late.
        assert_eq!(query_twice(&rows).await, [0, 150]);
    }

    #[tokio::test]
    async fn a_settled_key_beyond_what_the_index_holds_is_not_trusted() {
        let rows = rows(40, 1_000);
        assert_eq!(query_twice(&rows).await, [0, 40]);
    }
}
