//! The in-process HNSW index: one [`TieredIndex`] per (model, dimension count), a cache of
//! `embedding_cache` that catches up with the database before every query and may keep a
//! snapshot on disk for a fast start.
//!
//! **Catching up.** Keys of stored vectors only grow. On SQLite one writer assigns them in commit
//! order, so everything above the highest key seen is new. On PostgreSQL a transaction that took
//! a key earlier can commit later, so the index re-lists the keys (keys only, not vectors) above a
//! *safe low* — the highest key it saw at least [`IN_FLIGHT_WINDOW`] ago, by the rule in
//! `catch_up.rs` that the term cache follows too — and fetches the vectors of the ones it lacks.
//! A key names one immutable vector, so adding is idempotent.
//!
//! **The fresh tail.** What a catch-up fetches goes into the index's exact tail, not its graph,
//! while the tail stays under [`RECENT_LIMIT`] vectors: the query that follows compares with
//! them one by one instead of waiting for them to be inserted into the graph (a new book's
//! chunks, asked for their neighbours right after they were stored, would otherwise pay for
//! their own inserts first). A vector in the tail is in the index for catch-up purposes, so it is
//! never fetched twice. A catch-up that would overflow the tail (the first build of an index, a
//! snapshot far behind) inserts into the graph directly, as it must sooner or later anyway.
//!
//! **Folding when idle.** The tail is folded into the graph (and a due snapshot written) once
//! the index has had no query for [`FOLD_WHEN_IDLE_FOR`], by a task that each query re-arms and
//! that holds the index's lock only while it folds: the caller's remaining work (a connections
//! job's lexical half) keeps the cores, and a query never waits for an idle timer, only for a
//! fold that has begun. [`InProcessIndexes::settle`] folds every tail at once, for a process
//! about to exit: the tail lives in memory only, and a snapshot written now is one the next
//! process need not catch up to.
//!
//! **Snapshots** are a start-up shortcut, never trusted: a snapshot whose metadata does not match,
//! whose file does not load, or that holds more vectors than the database has up to its high
//! water mark (a replaced database) is rebuilt from the database with a warning. A snapshot holds
//! the graph only, so it is written only when the tail is empty, right after a fold: its
//! metadata's marks and count then describe exactly what the file holds. The index file is
//! written before its metadata, each atomically, and the metadata records the index's size, so a
//! crash between the two is noticed too.
//!
//! The file runs past 500 lines because its tests (fake stores with either key order, paused
//! time for the idle fold) sit beside the catch-up, fold and snapshot rules they pin down.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vector_index::{AnnIndex, Quantization, Scored, TieredIndex};

use super::VectorRows;
use crate::catch_up::{IN_FLIGHT_WINDOW, NumberOrder, SafeLow};
use crate::error::{StoreError, StoreResult};

/// Vectors fetched per statement while catching up.
const FETCH_PAGE: usize = 2048;

/// Vectors added since the last snapshot that make it worth writing a new one.
const SNAPSHOT_EVERY: usize = 2048;

/// The most vectors a catch-up keeps in an index's exact tail instead of inserting them into its
/// graph before the query.
///
/// Inserting a vector costs about a graph search at efConstruction (128): some 0.6 ms of a core
/// at 100k vectors (BENCHMARKS.md). Comparing a query with a tail vector costs one dot product,
/// about 0.1 µs at 384 dimensions. Both grow with the tail, so for any batch of fewer than a few
/// thousand queries scanning the tail is cheaper than inserting it first: a 1,213-chunk book
/// against its own vectors is 1.5 million comparisons, about 0.15 s of a core, against about
/// 0.8 s of inserts. The limit bounds what one query can pay: at 16,384 vectors a single query
/// scans the tail in under 2 ms, and the tail holds 25 MiB at 384 dimensions (f32, where the
/// graph stores f16). A larger catch-up goes into the graph, which it must reach anyway.
const RECENT_LIMIT: usize = 16_384;

/// How long an index must have had no query before its tail is folded into the graph.
///
/// A fold of a new book's 1,211 vectors takes about 2 s of a core at 100k vectors. Right after
/// the answer it would run beside the rest of the job that asked (a connections job asks the
/// index once, then ranks lexically) and take one of its cores. Between jobs a worker extracts
/// and embeds other books, which never touches the index, so a second without a query is a
/// good sign that nobody waits for the cores the fold takes; a query that does arrive finds the
/// tail searched exactly, as before the fold, and re-arms the timer.
const FOLD_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Threads an idle fold uses: it runs beside whatever else the process does.
const IDLE_FOLD_THREADS: usize = 1;

/// Threads [`InProcessIndexes::settle`] folds on: as many as the graph has
/// ([`TieredIndex::fold_on`] clamps to them), since its caller waits for nothing else.
const SETTLE_THREADS: usize = usize::MAX;

/// The snapshot format; bumped when the file layout changes, which makes old snapshots rebuild.
const SNAPSHOT_FORMAT: u32 = 1;

/// Where the in-process indexes keep their snapshots (for example the data directory's
/// `index/` folder); none means every process builds its indexes from the database.
pub type VectorSnapshots = Option<PathBuf>;

/// The in-process indexes of one store, one per (model, dimension count).
pub struct InProcessIndexes {
    snapshot_dir: VectorSnapshots,
    quantization: Quantization,
    /// The most vectors an index's tail takes in one catch-up ([`RECENT_LIMIT`]; smaller in tests).
    recent_limit: usize,
    /// How many folds (with or without a snapshot, or a snapshot alone) have finished, well or
    /// not, whether an idle timer or [`settle`](Self::settle) ran them.
    folds_done: Arc<tokio::sync::watch::Sender<u64>>,
    slots: std::sync::Mutex<HashMap<(String, usize), Arc<Slot>>>,
}

/// One (model, dimensions) index and the count of queries it was asked.
#[derive(Default)]
struct Slot {
    /// The index, empty until its first query builds or loads it, and empty again if work on it
    /// failed (the next query rebuilds it).
    index: tokio::sync::Mutex<Option<Cached>>,
    /// Bumped by every query before it waits for the index: an idle fold armed by one query
    /// folds only if no query came after it.
    queries: AtomicU64,
}

impl std::fmt::Debug for InProcessIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessIndexes").field("snapshot_dir", &self.snapshot_dir).finish_non_exhaustive()
    }
}

/// One index and how far it has caught up. The marks cover the graph and the tail together; once
/// the tail is folded, the graph alone.
struct Cached {
    index: TieredIndex,
    /// The highest key in the index.
    high_water: i64,
    /// Every key at or below this one is in the index (or never will exist).
    safe_low: SafeLow,
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

/// Where one index's snapshot goes, and what it is of.
struct SnapshotTarget {
    index_path: PathBuf,
    meta_path: PathBuf,
    model: String,
    dimensions: usize,
    quantization: Quantization,
}

impl InProcessIndexes {
    /// Indexes that keep snapshots in `snapshot_dir`, if given.
    pub fn new(snapshot_dir: VectorSnapshots) -> InProcessIndexes {
        InProcessIndexes {
            snapshot_dir,
            quantization: Quantization::default(),
            recent_limit: RECENT_LIMIT,
            folds_done: Arc::new(tokio::sync::watch::Sender::new(0)),
            slots: Default::default(),
        }
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
        // Counted before waiting for the lock, so that a pending idle fold gives way to this
        // query rather than making it wait. (A query dropped before its answer re-arms nothing:
        // its tail waits for the next query or `settle`.)
        let query = slot.queries.fetch_add(1, Ordering::SeqCst) + 1;
        let mut guard = slot.index.lock().await;
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
        let started = Instant::now();
        let mut cached = self.catch_up(rows, model, dimensions, cached).await?;
        if let Some(settled) = settled {
            cached.safe_low.raise_to(settled.min(cached.high_water));
        }
        let caught_up_ms = started.elapsed().as_millis() as u64;
        let (cached, found) = blocking(move || {
            let found = cached.index.search_batch(&queries, count);
            (cached, found)
        })
        .await?;
        tracing::debug!(
            caught_up_ms,
            searched_ms = started.elapsed().as_millis() as u64,
            tail = cached.index.recent_len(),
            "vector index: caught up and searched"
        );
        let target = self.snapshot_target(model, dimensions);
        let upkeep_due = upkeep_due(&cached, target.as_ref());
        *guard = Some(cached);
        drop(guard);
        if upkeep_due {
            self.fold_when_idle(slot, query, model, dimensions, target);
        }
        found.map_err(|e| StoreError::VectorIndex(e.to_string()))
    }

    /// Loads the model's index and catches it up, without a query
    /// ([`crate::NeighbourSearch::warm_indexes`]).
    pub(crate) async fn warm<R: VectorRows + ?Sized>(
        &self,
        rows: &R,
        model: &str,
        dimensions: usize,
    ) -> StoreResult<()> {
        self.nearest_keys(rows, model, dimensions, Vec::new(), 1).await.map(drop)
    }

    /// Folds every index's tail into its graph and writes the snapshots that are due, now, on
    /// all the graph's threads; returns once done. For a process about to exit (the tails live
    /// in memory only) or anyone who wants the indexes as a snapshot would hold them. An index
    /// whose fold fails is dropped (the next query rebuilds it) and the first such failure is
    /// returned, after the other indexes were settled.
    pub async fn settle(&self) -> StoreResult<()> {
        let slots: Vec<((String, usize), Arc<Slot>)> = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(key, slot)| (key.clone(), slot.clone()))
            .collect();
        let mut first_error = None;
        for ((model, dimensions), slot) in slots {
            let target = self.snapshot_target(&model, dimensions);
            let mut index = slot.index.lock().await;
            let Some(cached) = index.take() else { continue };
            if !upkeep_due(&cached, target.as_ref()) {
                *index = Some(cached);
                continue;
            }
            match fold_and_snapshot(cached, &model, dimensions, target.as_ref(), SETTLE_THREADS).await {
                Ok(cached) => *index = Some(cached),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
            drop(index);
            self.folds_done.send_modify(|done| *done += 1);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Folds the index's tail into its graph and writes a due snapshot once the index has had no
    /// query for [`FOLD_WHEN_IDLE_FOR`] since `query`. The task waits without the index's lock,
    /// so queries never wait for the timer; one that comes meanwhile re-arms it (bumping the
    /// count makes this task give up, and the query spawns its own). If the fold fails the slot
    /// stays empty and the next query rebuilds the index.
    fn fold_when_idle(
        &self,
        slot: Arc<Slot>,
        query: u64,
        model: &str,
        dimensions: usize,
        target: Option<SnapshotTarget>,
    ) {
        let folds_done = self.folds_done.clone();
        let model = model.to_owned();
        // From the answer, not from whenever the task first runs.
        let idle_at = tokio::time::Instant::now() + FOLD_WHEN_IDLE_FOR;
        tokio::spawn(async move {
            tokio::time::sleep_until(idle_at).await;
            // Checked under the lock: a query counts itself before it waits for the lock, so one
            // that is waiting for it now is seen too, and gets the index unchanged.
            let mut index = slot.index.lock().await;
            if slot.queries.load(Ordering::SeqCst) != query {
                return;
            }
            let Some(cached) = index.take() else { return };
            if !upkeep_due(&cached, target.as_ref()) {
                *index = Some(cached);
                return;
            }
            *index = fold_and_snapshot(cached, &model, dimensions, target.as_ref(), IDLE_FOLD_THREADS)
                .await
                .inspect_err(|error| tracing::warn!(%error, "the next query rebuilds the vector index"))
                .ok();
            drop(index);
            folds_done.send_modify(|done| *done += 1);
        });
    }

    /// Where the snapshot of (model, dimensions) goes, if snapshots are kept.
    fn snapshot_target(&self, model: &str, dimensions: usize) -> Option<SnapshotTarget> {
        let (index_path, meta_path) = snapshot_paths(self.snapshot_dir.as_ref()?, model, dimensions);
        Some(SnapshotTarget {
            index_path,
            meta_path,
            model: model.to_owned(),
            dimensions,
            quantization: self.quantization,
        })
    }

    /// The snapshot if it is usable, else an empty index.
    async fn open<R: VectorRows + ?Sized>(&self, rows: &R, model: &str, dimensions: usize) -> StoreResult<Cached> {
        let cached = |index, high_water, safe_low| Cached {
            index: TieredIndex::new(index),
            high_water,
            safe_low: SafeLow::at(safe_low),
            added_since_snapshot: 0,
        };
        let empty = || -> StoreResult<Cached> {
            let index =
                AnnIndex::new(dimensions, self.quantization).map_err(|e| StoreError::VectorIndex(e.to_string()))?;
            Ok(cached(index, 0, 0))
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
                    return Ok(cached(index, meta.high_water, meta.safe_low));
                }
            }
            Err(error) => error,
        };
        tracing::warn!(model, dimensions, snapshot = %index_path.display(), %reason, "vector index snapshot not usable; rebuilding it from the database");
        empty()
    }

    /// Adds every stored vector the index lacks: to its tail while the tail stays within
    /// [`RECENT_LIMIT`], else to its graph (the tail with them).
    async fn catch_up<R: VectorRows + ?Sized>(
        &self,
        rows: &R,
        model: &str,
        dimensions: usize,
        mut cached: Cached,
    ) -> StoreResult<Cached> {
        let ordered = rows.keys_follow_commits();
        let low = if ordered { cached.high_water } else { cached.safe_low.get() };
        // Before the keys are listed: what they show was committed by then.
        let began = tokio::time::Instant::now();
        let keys = rows.vector_keys_after(model, dimensions, low).await?;
        // The tail counts as held: a vector waiting there is never fetched again.
        let missing: Vec<i64> =
            keys.iter().copied().filter(|&key| u64::try_from(key).is_ok_and(|k| !cached.index.contains(k))).collect();
        let into_tail = cached.index.recent_len() + missing.len() <= self.recent_limit;
        let started = Instant::now();
        for page in missing.chunks(FETCH_PAGE) {
            let vectors = rows.vectors_by_key(page).await?;
            let entries: Vec<(u64, Vec<f32>)> =
                vectors.into_iter().filter_map(|(key, v)| Some((u64::try_from(key).ok()?, v))).collect();
            let (back, added) = blocking(move || {
                let added = cached.index.add_recent(&entries).and_then(|added| {
                    if !into_tail {
                        cached.index.fold()?;
                    }
                    Ok(added)
                });
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
                into_tail,
                took_ms = started.elapsed().as_millis() as u64,
                "vector index caught up"
            );
        }
        if let Some(&highest) = keys.last() {
            cached.high_water = cached.high_water.max(highest);
        }
        cached.safe_low.caught_up(began, cached.high_water, NumberOrder::of(ordered));
        Ok(cached)
    }
}

/// Whether the index has a tail to fold or a snapshot to write.
fn upkeep_due(cached: &Cached, target: Option<&SnapshotTarget>) -> bool {
    cached.index.recent_len() > 0 || (target.is_some() && cached.added_since_snapshot >= SNAPSHOT_EVERY)
}

/// Folds the index's tail into its graph on at most `threads` threads, then writes a snapshot if
/// one is due. An error means the index is lost (a failed fold may leave the graph and the tail
/// overlapping; a failed task took the index with it).
async fn fold_and_snapshot(
    cached: Cached,
    model: &str,
    dimensions: usize,
    target: Option<&SnapshotTarget>,
    threads: usize,
) -> StoreResult<Cached> {
    let recent = cached.index.recent_len();
    let started = Instant::now();
    let folded = blocking(move || {
        let mut cached = cached;
        let folded = cached.index.fold_on(threads);
        (cached, folded)
    })
    .await
    .map_err(|error| StoreError::VectorIndex(format!("vector index of {model} lost while folding: {error}")))?;
    let cached = match folded {
        (cached, Ok(_)) => cached,
        (_, Err(error)) => {
            return Err(StoreError::VectorIndex(format!(
                "could not fold recent vectors into the vector index of {model}: {error}"
            )));
        }
    };
    if recent > 0 {
        tracing::debug!(
            model,
            dimensions,
            folded = recent,
            took_ms = started.elapsed().as_millis() as u64,
            "vector index folded its recent vectors into the graph"
        );
    }
    maybe_snapshot(target, cached).await.map_err(|error| {
        StoreError::VectorIndex(format!("vector index of {model} lost while writing its snapshot: {error}"))
    })
}

/// Writes a snapshot when enough was added since the last one and the tail is empty (a snapshot
/// holds the graph only, and its metadata's marks cover the tail too). A failure to write is
/// logged and changes nothing: the snapshot is only a shortcut.
async fn maybe_snapshot(target: Option<&SnapshotTarget>, cached: Cached) -> StoreResult<Cached> {
    let Some(target) = target else { return Ok(cached) };
    if cached.added_since_snapshot < SNAPSHOT_EVERY || cached.index.recent_len() > 0 {
        return Ok(cached);
    }
    let meta = SnapshotMeta {
        format: SNAPSHOT_FORMAT,
        model: target.model.clone(),
        dimensions: target.dimensions,
        quantization: target.quantization,
        high_water: cached.high_water,
        safe_low: cached.safe_low.get(),
        count: cached.index.len(),
    };
    let (index_path, meta_path) = (target.index_path.clone(), target.meta_path.clone());
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

#[cfg(test)]
impl InProcessIndexes {
    /// Indexes whose tails take at most `recent_limit` vectors per catch-up.
    fn with_recent_limit(snapshot_dir: VectorSnapshots, recent_limit: usize) -> InProcessIndexes {
        InProcessIndexes { recent_limit, ..InProcessIndexes::new(snapshot_dir) }
    }

    /// Returns once `count` folds have finished (see `folds_done`).
    async fn wait_for_folds(&self, count: u64) {
        let mut done = self.folds_done.subscribe();
        done.wait_for(|&done| done >= count).await.expect("the sender lives in self");
    }

    fn folds_done(&self) -> u64 {
        *self.folds_done.borrow()
    }

    /// How many vectors wait in the tail of the (model, dimensions) index; waits for a fold that
    /// has begun.
    async fn recent_len(&self, model: &str, dimensions: usize) -> usize {
        let slot = self.slots.lock().unwrap().get(&(model.to_owned(), dimensions)).cloned().expect("a queried index");
        let index = slot.index.lock().await;
        index.as_ref().map_or(0, |cached| cached.index.recent_len())
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

/// Writes the index's graph and then its metadata; refused (by [`TieredIndex::save`]) while its
/// tail holds vectors.
fn save_snapshot(index: &TieredIndex, meta: &SnapshotMeta, index_path: &Path, meta_path: &Path) -> Result<(), String> {
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

    /// Stored vectors, as SQLite (keys follow commits) or PostgreSQL (they do not) would hand them
    /// out; records where each catch-up started listing keys and which vectors were fetched.
    struct StoredRows {
        vectors: Mutex<Vec<(i64, Vec<f32>)>>,
        ordered: bool,
        settled: i64,
        listed_after: Mutex<Vec<i64>>,
        fetched: Mutex<Vec<i64>>,
    }

    #[async_trait]
    impl VectorRows for StoredRows {
        async fn vector_keys_after(&self, _: &str, _: usize, after: i64) -> StoreResult<Vec<i64>> {
            self.listed_after.lock().unwrap().push(after);
            Ok(self.vectors.lock().unwrap().iter().map(|(key, _)| *key).filter(|&key| key > after).collect())
        }
        async fn vectors_after(&self, _: &str, _: usize, _: i64, _: usize) -> StoreResult<Vec<(i64, Vec<f32>)>> {
            unreachable!("the in-process index fetches by key")
        }
        async fn vectors_by_key(&self, keys: &[i64]) -> StoreResult<Vec<(i64, Vec<f32>)>> {
            self.fetched.lock().unwrap().extend_from_slice(keys);
            Ok(self.vectors.lock().unwrap().iter().filter(|(key, _)| keys.contains(key)).cloned().collect())
        }
        async fn count_vectors_up_to(&self, _: &str, _: usize, key: i64) -> StoreResult<u64> {
            Ok(self.vectors.lock().unwrap().iter().filter(|(k, _)| *k <= key).count() as u64)
        }
        async fn chunks_for_keys(&self, _: &[i64]) -> StoreResult<Vec<KeyedChunk>> {
            unreachable!("keys are resolved by the search, not the index")
        }
        fn keys_follow_commits(&self) -> bool {
            self.ordered
        }
        async fn settled_key(&self, _: &str, _: usize, age: Duration) -> StoreResult<i64> {
            assert!(!self.ordered, "only asked where keys do not follow commits");
            assert_eq!(age, IN_FLIGHT_WINDOW);
            Ok(self.settled)
        }
    }

    impl StoredRows {
        fn new(vectors: Vec<(i64, Vec<f32>)>, ordered: bool, settled: i64) -> StoredRows {
            StoredRows {
                vectors: Mutex::new(vectors),
                ordered,
                settled,
                listed_after: Mutex::new(Vec::new()),
                fetched: Mutex::new(Vec::new()),
            }
        }

        fn store(&self, key: i64, vector: Vec<f32>) {
            self.vectors.lock().unwrap().push((key, vector));
        }

        fn vector(&self, key: i64) -> Vec<f32> {
            self.vectors.lock().unwrap().iter().find(|(k, _)| *k == key).unwrap().1.clone()
        }

        /// The keys fetched since the last call.
        fn take_fetched(&self) -> Vec<i64> {
            std::mem::take(&mut *self.fetched.lock().unwrap())
        }
    }

    fn rows(count: i64, settled: i64) -> StoredRows {
        let vectors = (1..=count).map(|key| (key, vec![1.0, key as f32, (key % 7) as f32, 0.5])).collect();
        StoredRows::new(vectors, false, settled)
    }

    const DIMENSIONS: usize = 16;

    /// A deterministic pseudo-random vector (xorshift) per seed: distinct seeds are far apart in
    /// 16 dimensions, so each vector's nearest is itself even in the f16 graph.
    fn random_vector(seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).max(1);
        (0..DIMENSIONS)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn random_rows(count: i64, ordered: bool) -> StoredRows {
        StoredRows::new((1..=count).map(|key| (key, random_vector(key as u64))).collect(), ordered, count)
    }

    async fn nearest(indexes: &InProcessIndexes, rows: &StoredRows, queries: Vec<Vec<f32>>) -> Vec<Vec<Scored>> {
        indexes.nearest_keys(rows, "m", DIMENSIONS, queries, 3).await.unwrap()
    }

    fn exact_score(a: &[f32], b: &[f32]) -> f32 {
        vector_index::unit_cosine(&vector_index::unit(a).unwrap(), &vector_index::unit(b).unwrap())
    }

    fn snapshot_meta(dir: &Path) -> Option<SnapshotMeta> {
        let (_, meta_path) = snapshot_paths(dir, "m", DIMENSIONS);
        Some(serde_json::from_slice(&std::fs::read(meta_path).ok()?).unwrap())
    }

    async fn query_twice(rows: &StoredRows) -> Vec<i64> {
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

    /// Lets every task that can run now run (a fold spawned at once, say), without moving the
    /// paused clock.
    async fn let_tasks_run() {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    }

    /// Lets the indexes sit idle until their timers fire, and waits for the `count`th fold.
    async fn idle_until_fold(indexes: &InProcessIndexes, count: u64) {
        tokio::time::advance(FOLD_WHEN_IDLE_FOR).await;
        indexes.wait_for_folds(count).await;
    }

    /// A vector stored after the index was built is answered from the tail, with its exact score,
    /// before any fold; on PostgreSQL's terms (keys re-listed below the newest) nothing is fetched
    /// twice.
    #[tokio::test(start_paused = true)]
    async fn a_vector_stored_after_the_index_was_built_is_found_exactly_before_it_is_folded() {
        for ordered in [true, false] {
            let rows = random_rows(300, ordered);
            let indexes = InProcessIndexes::new(None);
            nearest(&indexes, &rows, vec![random_vector(1)]).await;
            idle_until_fold(&indexes, 1).await;
            assert_eq!(rows.take_fetched().len(), 300);

            let probe = random_vector(1_000_000);
            rows.store(301, probe.clone());
            let query = probe.iter().map(|x| x + 0.01).collect::<Vec<f32>>();
            let found = nearest(&indexes, &rows, vec![query.clone()]).await;
            let_tasks_run().await;
            assert_eq!((indexes.folds_done(), indexes.recent_len("m", DIMENSIONS).await), (1, 1));
            assert_eq!(found[0][0], Scored { key: 301, score: exact_score(&query, &probe) });
            assert_eq!(rows.take_fetched(), [301]);

            idle_until_fold(&indexes, 2).await;
            assert_eq!(indexes.recent_len("m", DIMENSIONS).await, 0);
            let found = nearest(&indexes, &rows, vec![query]).await;
            assert_eq!(found[0][0].key, 301, "the fold kept it");
            assert!(rows.take_fetched().is_empty(), "ordered: {ordered}");
        }
    }

    /// Warming loads and catches up the index without a query: the first query after it reads
    /// no vector from the database, and finds what was stored before the warming.
    #[tokio::test(start_paused = true)]
    async fn a_warmed_index_answers_its_first_query_without_reading_vectors() {
        let rows = random_rows(300, true);
        let indexes = InProcessIndexes::new(None);
        indexes.warm(&rows, "m", DIMENSIONS).await.unwrap();
        assert_eq!(rows.take_fetched().len(), 300);
        let found = nearest(&indexes, &rows, vec![random_vector(7)]).await;
        assert_eq!(found[0][0].key, 7);
        assert!(rows.take_fetched().is_empty());
    }

    /// The tail waits for the index to be idle: no fold right after the answer, nor a moment
    /// before [`FOLD_WHEN_IDLE_FOR`] has passed; one once it has.
    #[tokio::test(start_paused = true)]
    async fn the_tail_is_folded_once_the_index_has_been_idle() {
        let rows = random_rows(300, true);
        let indexes = InProcessIndexes::new(None);
        nearest(&indexes, &rows, vec![random_vector(1)]).await;
        let_tasks_run().await;
        assert_eq!((indexes.folds_done(), indexes.recent_len("m", DIMENSIONS).await), (0, 300));

        tokio::time::advance(FOLD_WHEN_IDLE_FOR - Duration::from_millis(10)).await;
        let_tasks_run().await;
        assert_eq!((indexes.folds_done(), indexes.recent_len("m", DIMENSIONS).await), (0, 300));

        tokio::time::advance(Duration::from_millis(20)).await;
        indexes.wait_for_folds(1).await;
        assert_eq!(indexes.recent_len("m", DIMENSIONS).await, 0);
    }

    /// A query before the index has been idle long enough starts the wait over: the first
    /// query's timer passes without a fold, the second one's folds once.
    #[tokio::test(start_paused = true)]
    async fn a_query_re_arms_the_idle_timer() {
        let rows = random_rows(300, true);
        let indexes = InProcessIndexes::new(None);
        let step = FOLD_WHEN_IDLE_FOR * 6 / 10;
        nearest(&indexes, &rows, vec![random_vector(1)]).await;
        tokio::time::advance(step).await;
        rows.store(301, random_vector(301));
        nearest(&indexes, &rows, vec![random_vector(2)]).await;

        // Past the first query's deadline, not the second's.
        tokio::time::advance(step).await;
        let_tasks_run().await;
        assert_eq!((indexes.folds_done(), indexes.recent_len("m", DIMENSIONS).await), (0, 301));

        tokio::time::advance(step).await;
        indexes.wait_for_folds(1).await;
        assert_eq!(indexes.recent_len("m", DIMENSIONS).await, 0);
        tokio::time::advance(FOLD_WHEN_IDLE_FOR * 2).await;
        let_tasks_run().await;
        assert_eq!(indexes.folds_done(), 1, "one fold for two queries");
    }

    /// `settle` folds at once and writes the snapshot that is due; the idle timer then finds
    /// nothing left to do.
    #[tokio::test(start_paused = true)]
    async fn settle_folds_every_tail_at_once_and_writes_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let count = SNAPSHOT_EVERY as i64 + 100;
        let rows = random_rows(count, true);
        let indexes = InProcessIndexes::new(Some(dir.path().to_path_buf()));
        nearest(&indexes, &rows, vec![random_vector(1)]).await;
        assert_eq!(indexes.recent_len("m", DIMENSIONS).await, count as usize);
        assert!(snapshot_meta(dir.path()).is_none());

        indexes.settle().await.unwrap();
        assert_eq!((indexes.folds_done(), indexes.recent_len("m", DIMENSIONS).await), (1, 0));
        let meta = snapshot_meta(dir.path()).expect("a snapshot once settled");
        assert_eq!((meta.count, meta.high_water), (count as usize, count));

        tokio::time::advance(FOLD_WHEN_IDLE_FOR * 2).await;
        let_tasks_run().await;
        assert_eq!(indexes.folds_done(), 1);
        indexes.settle().await.unwrap();
        assert_eq!(indexes.folds_done(), 1, "nothing left to settle");
    }

    /// The snapshot is written by the fold, never while the tail holds vectors, and describes
    /// exactly what it holds: a fresh process loading it fetches nothing it already has.
    #[tokio::test(start_paused = true)]
    async fn the_idle_fold_writes_a_snapshot_that_a_fresh_process_loads() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = Some(dir.path().to_path_buf());
        let count = SNAPSHOT_EVERY as i64 + 100;
        let rows = random_rows(count, true);
        let indexes = InProcessIndexes::new(snapshots.clone());
        let samples = [1, 777, count];
        let own = |found: &[Vec<Scored>]| found.iter().map(|list| list[0].key as i64).collect::<Vec<i64>>();

        let found = nearest(&indexes, &rows, samples.iter().map(|&key| rows.vector(key)).collect()).await;
        assert_eq!(own(&found), samples);
        // Everything is in the tail: no snapshot yet, though enough was added for one.
        assert!(snapshot_meta(dir.path()).is_none());
        idle_until_fold(&indexes, 1).await;
        let meta = snapshot_meta(dir.path()).expect("a snapshot after the fold");
        assert_eq!((meta.count, meta.high_water, meta.safe_low), (count as usize, count, count));

        rows.take_fetched();
        let reopened = InProcessIndexes::new(snapshots);
        let found = nearest(&reopened, &rows, samples.iter().map(|&key| rows.vector(key)).collect()).await;
        assert_eq!(own(&found), samples);
        assert!(rows.take_fetched().is_empty(), "the snapshot held everything");
    }

    /// A catch-up larger than the tail goes into the graph before the answer, and the snapshot
    /// due then is written when idle; a later tail is found, folded, and left out of a snapshot
    /// whose marks therefore stay true.
    #[tokio::test(start_paused = true)]
    async fn a_catch_up_beyond_the_tail_goes_into_the_graph_and_snapshots_stay_true() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = Some(dir.path().to_path_buf());
        let count = SNAPSHOT_EVERY as i64 + 100;
        let rows = random_rows(count, true);
        let indexes = InProcessIndexes::with_recent_limit(snapshots.clone(), 64);
        nearest(&indexes, &rows, vec![random_vector(5)]).await;
        assert_eq!(indexes.recent_len("m", DIMENSIONS).await, 0, "all in the graph already");
        idle_until_fold(&indexes, 1).await;
        let meta = snapshot_meta(dir.path()).expect("a snapshot of the graph");
        assert_eq!((meta.count, meta.high_water), (count as usize, count));

        for key in count + 1..=count + 50 {
            rows.store(key, random_vector(key as u64));
        }
        let found = nearest(&indexes, &rows, vec![rows.vector(count + 20)]).await;
        assert_eq!(found[0][0].key as i64, count + 20);
        idle_until_fold(&indexes, 2).await;
        // Too few additions for a new snapshot: the old one still says what it holds.
        assert_eq!(snapshot_meta(dir.path()), Some(meta));

        rows.take_fetched();
        let reopened = InProcessIndexes::new(snapshots);
        let found = nearest(&reopened, &rows, vec![rows.vector(count + 20), rows.vector(3)]).await;
        assert_eq!(found.iter().map(|list| list[0].key as i64).collect::<Vec<_>>(), [count + 20, 3]);
        assert_eq!(rows.take_fetched(), (count + 1..=count + 50).collect::<Vec<_>>());
    }
}
