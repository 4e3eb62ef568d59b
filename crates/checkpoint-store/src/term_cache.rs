//! The in-process term cache: the term index's postings, document frequencies and term vectors
//! held in memory, a cache of the database's term index that catches up with it before every
//! use, so the lexical engine reads no postings from the database after start-up.
//!
//! **Why.** At a library of 100k chunks a book's lexical half read 2.4 million postings through
//! FTS5 and 30k candidates' term vectors through SQL, most of its time (BENCHMARKS.md, "Library
//! scale"). Held here, the same answers cost an array walk.
//!
//! **Catching up.** Chunks enter the index under their key (SQLite's chunk rowid, PostgreSQL's
//! `chunks.seq`) and leave it through a numbered log of departures (`chunk_term_departures`,
//! written by triggers: on SQLite when a chunk's term vector row goes, on PostgreSQL when a chunk
//! is deleted or its term vector rewritten by a rebuild). A catch-up reads, in one read
//! transaction of the database (REPEATABLE READ on PostgreSQL), so that the cache is afterwards
//! exactly the database's term index at one moment:
//! 1. the departures numbered above the departures' safe low; each one not applied before drops
//!    its key, and the key is read again (below), since it may be indexed again: a rewritten
//!    vector, or on SQLite a rowid given to a new chunk;
//! 2. the keys (not the vectors) of the indexed chunks above the keys' safe low; a cached key in
//!    that range that is not listed is dropped;
//! 3. the chunks of the listed keys the cache lacks, and of the departed keys, by key in pages.
//!
//! The safe lows follow the rule in `catch_up.rs`, which the vector index follows too. SQLite's
//! one writer gives out keys and departure numbers in commit order, so there the departures' safe
//! low is the last departure applied and the keys' the highest key still cached once this
//! catch-up's departures are applied: SQLite gives a new chunk a rowid above every rowid in use,
//! so a key given out since lies above it, or is one that departed. On PostgreSQL both come from
//! sequences, and a transaction that took a lower number may commit after a catch-up saw a
//! higher one: there a safe low is what the cache had seen a window ago (two minutes), so a late
//! commit is found by a later catch-up, and a new cache starts at what the database says was
//! stored a window ago (`TermRows::settled_marks`). Departures above the safe low are read again
//! until they settle but applied once (the cache remembers their numbers); PostgreSQL never gives
//! a key out twice, so a key dropped twice would be harmless anyway. Re-listing keys costs a
//! list of integers; vectors are read only for keys the cache lacks.
//!
//! **Snapshots** in the data directory (`terms.snapshot`) are a start-up shortcut, never trusted:
//! a file that does not parse, whose checksum or term rules differ, or that disagrees with the
//! database (more departures applied than the database has, or another number of indexed chunks
//! once caught up) is rebuilt from the database with a warning. A snapshot records the safe lows,
//! not the highest numbers seen, so a process that loads one on PostgreSQL still finds what
//! committed late below them. The file is written whole to a temporary name, synced and renamed,
//! in the background after enough changes.
//!
//! **Memory** is the index itself: per chunk its key, id and (term, count) pairs, per term its
//! postings; about 12 bytes per (chunk, term) pair. Nothing is held per query beyond its answer.
//!
//! One file past 500 lines: the catch-up, the snapshot's format and its checks belong together
//! (a change to one is a change to the others), and its tests drive them through a fake database.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, OwnedRwLockReadGuard, RwLock};
use tokio::time::Instant;

use crate::catch_up::{IN_FLIGHT_WINDOW, NumberOrder, SafeLow};
use crate::codec::decode_term_vector;
use crate::error::{StoreError, StoreResult};
use crate::term_index::{self, ChunkTerms, NumberedChunk, TermCounts, TermTable, WeightedTerms, index_edition};

/// Chunks changed since the last snapshot that make it worth writing a new one.
const SNAPSHOT_EVERY: usize = 4_096;

/// The snapshot file's first bytes and format; a new format makes old snapshots rebuild.
const SNAPSHOT_MAGIC: &[u8; 8] = b"QTERMS03";

/// The snapshot's file name in the snapshot directory.
const SNAPSHOT_FILE: &str = "terms.snapshot";

/// What a backend offers the cache: its term index's changes, read in one consistent view.
#[async_trait]
pub(crate) trait TermRows: Send + Sync {
    /// In one read transaction (one snapshot of the database): every departure numbered above
    /// `sink.departures_above()`, in order; then the keys of every indexed chunk above
    /// `sink.keys_above()` (asked after the departures), in key order, to `sink.listed`; then each
    /// chunk `listed` returned that is still indexed, in pages, to `sink.entered`; then, if
    /// `sink.wants_totals()`, the number of indexed chunks and the last departure's number.
    async fn read_term_changes(&self, sink: &mut (dyn TermChangeSink + Send)) -> StoreResult<()>;

    /// Whether chunk keys and departure numbers are given out in commit order (SQLite's one
    /// writer), so nothing appears later below the highest seen; false on PostgreSQL.
    fn keys_follow_commits(&self) -> bool;

    /// The highest chunk key and departure number stored at least `age` ago: where a cache just
    /// built or loaded may start its safe lows. Only asked where keys do not follow commits.
    async fn settled_marks(&self, age: Duration) -> StoreResult<SettledMarks>;
}

/// What [`TermRows::settled_marks`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SettledMarks {
    /// The highest key of a chunk stored at least the window ago.
    pub key: i64,
    /// The highest number of a departure logged at least the window ago.
    pub departure: i64,
}

/// Where [`TermRows::read_term_changes`] delivers what it reads.
pub(crate) trait TermChangeSink {
    /// Departures numbered above this one are read (some of them may have been applied already).
    fn departures_above(&self) -> i64;
    /// A chunk left the index, or had its term vector rewritten.
    fn departed(&mut self, number: i64, key: i64);
    /// The keys of indexed chunks above this one are listed.
    fn keys_above(&mut self) -> i64;
    /// The keys of every indexed chunk above [`keys_above`](Self::keys_above), ascending; returns
    /// the keys whose chunks are to be read, ascending.
    fn listed(&mut self, keys: Vec<i64>) -> Vec<i64>;
    /// An indexed chunk: its key, id and stored term vector.
    fn entered(&mut self, key: i64, chunk_id: &str, term_vector: &str) -> StoreResult<()>;
    /// Whether the totals are wanted.
    fn wants_totals(&self) -> bool;
    /// How many chunks are indexed, and the number of the last departure ever.
    fn totals(&mut self, indexed: u64, last_departure: i64);
}

/// The cache of one store, shared by its clones.
pub(crate) struct InProcessTerms {
    snapshot_dir: Option<PathBuf>,
    state: Arc<RwLock<Option<TermCache>>>,
    /// Serialises catch-ups; readers keep reading meanwhile.
    catching_up: Mutex<()>,
    /// The snapshot being written in the background, if any.
    writing: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for InProcessTerms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessTerms").field("snapshot_dir", &self.snapshot_dir).finish_non_exhaustive()
    }
}

/// A caught-up cache, readable while the guard lives.
pub(crate) type CaughtUp = OwnedRwLockReadGuard<Option<TermCache>, TermCache>;

impl InProcessTerms {
    /// A cache that keeps its snapshot in `snapshot_dir`, if given.
    pub(crate) fn new(snapshot_dir: Option<PathBuf>) -> InProcessTerms {
        InProcessTerms {
            snapshot_dir,
            state: Arc::new(RwLock::new(None)),
            catching_up: Mutex::new(()),
            writing: std::sync::Mutex::new(None),
        }
    }

    /// [`crate::TermIndex::term_counts`], caught up first.
    pub(crate) async fn term_counts<R: TermRows + ?Sized>(
        &self,
        rows: &R,
        terms: &[String],
    ) -> StoreResult<TermCounts> {
        Ok(self.caught_up(rows).await?.term_counts(terms))
    }

    /// [`crate::TermIndex::chunks_sharing_terms`], caught up first.
    pub(crate) async fn chunks_sharing_terms<R: TermRows + ?Sized>(
        &self,
        rows: &R,
        queries: &[WeightedTerms],
        limit: usize,
    ) -> StoreResult<Vec<Vec<String>>> {
        let started = std::time::Instant::now();
        let cache = self.caught_up(rows).await?;
        let caught_up_ms = started.elapsed().as_millis() as u64;
        let queries = queries.to_vec();
        let found = blocking(move || cache.chunks_sharing_terms(&queries, limit)).await;
        tracing::debug!(caught_up_ms, ranked_ms = started.elapsed().as_millis() as u64, "term search over the cache");
        found
    }

    /// [`crate::TermIndex::chunk_terms`] of the chunks cached, caught up first, and the ids of
    /// those it lacks (stored without a term vector, or gone), for the database to read.
    pub(crate) async fn chunk_terms<R: TermRows + ?Sized>(
        &self,
        rows: &R,
        ids: &[String],
    ) -> StoreResult<(Vec<ChunkTerms>, Vec<String>)> {
        let found = self.caught_up(rows).await?.chunk_terms(ids);
        let missing = term_index::uncached(&found, ids);
        Ok((found, missing))
    }

    /// [`crate::TermIndex::term_table`], caught up first; `None` if the cache lacks one of `ids`.
    pub(crate) async fn term_table<R: TermRows + ?Sized>(
        &self,
        rows: &R,
        ids: &[String],
    ) -> StoreResult<Option<TermTable>> {
        let cache = self.caught_up(rows).await?;
        let wanted = ids.to_vec();
        blocking(move || cache.term_table(&wanted)).await
    }

    /// The cache, caught up with the database.
    pub(crate) async fn caught_up<R: TermRows + ?Sized>(&self, rows: &R) -> StoreResult<CaughtUp> {
        let serialised = self.catching_up.lock().await;
        let order = NumberOrder::of(rows.keys_follow_commits());
        let loaded = self.state.read().await.is_some();
        if !loaded {
            let cache = self.open(rows, order).await?;
            *self.state.write().await = Some(cache);
        } else {
            // Read under a read lock, so answers go on meanwhile; applied under the write lock, only
            // when something changed (the marks move with time alone, on PostgreSQL).
            let pending = {
                let guard = self.state.read().await;
                let cache = guard.as_ref().ok_or_else(|| StoreError::Corrupt("term cache vanished".into()))?;
                let mut changes = Changes::after(cache, order);
                rows.read_term_changes(&mut changes).await?;
                let pending = changes.finish();
                let changes_anything = pending.changes_anything_in(cache);
                (pending, changes_anything)
            };
            if let (pending, true) = pending {
                let mut guard = self.state.write().await;
                let cache = guard.as_mut().ok_or_else(|| StoreError::Corrupt("term cache vanished".into()))?;
                pending.apply_to(cache);
            }
        }
        self.maybe_snapshot().await;
        drop(serialised);
        let guard = self.state.clone().read_owned().await;
        OwnedRwLockReadGuard::try_map(guard, Option::as_ref)
            .map_err(|_| StoreError::Corrupt("the term cache is not loaded".into()))
    }

    /// The snapshot if it is usable, else the cache built from the database; caught up either way.
    async fn open<R: TermRows + ?Sized>(&self, rows: &R, order: NumberOrder) -> StoreResult<TermCache> {
        // Asked before catching up, so that everything settled is among what the catch-up reads.
        let settled = match order {
            NumberOrder::FollowsCommits => None,
            NumberOrder::Unordered => Some(rows.settled_marks(IN_FLIGHT_WINDOW).await?),
        };
        let mut cache = self.load_or_build(rows, order).await?;
        if let Some(settled) = settled {
            cache.marks.settle(settled, cache.highest_key());
        }
        Ok(cache)
    }

    async fn load_or_build<R: TermRows + ?Sized>(&self, rows: &R, order: NumberOrder) -> StoreResult<TermCache> {
        if let Some(dir) = &self.snapshot_dir {
            let path = dir.join(SNAPSHOT_FILE);
            if path.exists() {
                let loaded = {
                    let path = path.clone();
                    blocking(move || TermCache::load(&path)).await?
                };
                let reason = match loaded {
                    Ok(mut cache) => {
                        let mut changes = Changes::after(&cache, order);
                        changes.totals_wanted = true;
                        rows.read_term_changes(&mut changes).await?;
                        let (indexed, last_departure) = (changes.indexed, changes.last_departure);
                        let pending = changes.finish();
                        let replaced = last_departure.is_some_and(|last| last < cache.marks.last_departure);
                        pending.apply_to(&mut cache);
                        match indexed {
                            Some(indexed) if !replaced && indexed == cache.live as u64 => {
                                tracing::info!(chunks = cache.live, "term cache loaded from its snapshot");
                                return Ok(cache);
                            }
                            Some(indexed) => format!(
                                "once caught up it holds {} chunks where the database indexes {indexed}{}",
                                cache.live,
                                if replaced { ", and more departures than the database has seen" } else { "" }
                            ),
                            None => "the database did not report its totals".to_owned(),
                        }
                    }
                    Err(reason) => reason,
                };
                tracing::warn!(snapshot = %path.display(), %reason, "term cache snapshot not usable; rebuilding it from the database");
            }
        }
        let started = std::time::Instant::now();
        let mut cache = TermCache::empty();
        // Built in place: the whole index is read once, page by page, into the cache's own form.
        let mut building = Changes::building(&mut cache);
        rows.read_term_changes(&mut building).await?;
        let (began, departures) = (building.pending.began, std::mem::take(&mut building.pending.departures));
        let highest_key = cache.highest_key();
        cache.marks.advance(began, highest_key, departures.iter().map(|(number, _)| *number), order);
        cache.changed_since_snapshot = cache.changed_since_snapshot.max(SNAPSHOT_EVERY);
        tracing::info!(
            chunks = cache.live,
            terms = cache.terms.len(),
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "term cache built from the database"
        );
        Ok(cache)
    }

    /// Writes a snapshot in the background when enough changed since the last one. A failure is
    /// logged and changes nothing: the snapshot is only a shortcut.
    async fn maybe_snapshot(&self) {
        let Some(dir) = self.snapshot_dir.clone() else { return };
        {
            let mut guard = self.state.write().await;
            match guard.as_mut() {
                Some(cache) if cache.changed_since_snapshot >= SNAPSHOT_EVERY => cache.changed_since_snapshot = 0,
                _ => return,
            }
        }
        let guard = self.state.clone().read_owned().await;
        // Runs on a blocking thread, which a runtime shutting down waits for: a one-shot process
        // still leaves its snapshot behind.
        let writing = tokio::task::spawn_blocking(move || {
            let Some(cache) = guard.as_ref() else { return };
            if let Err(error) = cache.save(&dir.join(SNAPSHOT_FILE)) {
                tracing::warn!(%error, "could not write the term cache snapshot");
            }
        });
        *self.writing.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(writing);
    }

    /// Waits for the snapshot being written, if any.
    #[cfg(test)]
    async fn snapshot_written(&self) {
        let writing = self.writing.lock().unwrap().take();
        if let Some(writing) = writing {
            writing.await.unwrap();
        }
    }
}

/// Runs blocking work off the async threads: loading a snapshot, or an answer over the cache
/// (ranking a book's shortlists or numbering a round's terms takes tens of milliseconds of CPU).
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> StoreResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| StoreError::Corrupt(format!("term cache work failed: {e}")))
}

/// The term index in memory.
#[derive(Debug, Default)]
pub(crate) struct TermCache {
    /// Term id → term.
    terms: Vec<Box<str>>,
    /// Term → term id.
    term_ids: HashMap<Box<str>, u32>,
    /// Term id → how many cached chunks contain it.
    document_frequency: Vec<u32>,
    /// Term id → the slots of the chunks containing it, in no particular order.
    postings: Vec<Vec<u32>>,
    /// Slot → chunk (none: a free slot).
    chunks: Vec<Option<CachedChunk>>,
    free_slots: Vec<u32>,
    /// Key → slot, ordered: a catch-up looks for the highest key still cached.
    slot_of_key: BTreeMap<i64, u32>,
    slot_of_id: HashMap<Arc<str>, u32>,
    /// How many chunks are cached.
    live: usize,
    /// How far the cache has caught up.
    marks: Marks,
    changed_since_snapshot: usize,
}

#[derive(Debug)]
struct CachedChunk {
    key: i64,
    id: Arc<str>,
    /// (term id, count), in the order of the stored vector (by term).
    terms: Box<[(u32, u32)]>,
}

impl TermCache {
    fn empty() -> TermCache {
        TermCache::default()
    }

    /// [`crate::TermIndex::term_counts`] from the cache.
    pub(crate) fn term_counts(&self, terms: &[String]) -> TermCounts {
        let document_frequency = terms
            .iter()
            .filter_map(|term| {
                let df = self.document_frequency[*self.term_ids.get(term.as_str())? as usize];
                (df > 0).then(|| (term.clone(), u64::from(df)))
            })
            .collect();
        TermCounts { chunk_count: self.live as u64, document_frequency }
    }

    /// [`crate::TermIndex::chunk_terms`] from the cache.
    pub(crate) fn chunk_terms(&self, ids: &[String]) -> Vec<ChunkTerms> {
        let mut seen = HashSet::new();
        ids.iter()
            .filter(|id| seen.insert(id.as_str()))
            .filter_map(|id| {
                let chunk = self.chunks[*self.slot_of_id.get(id.as_str())? as usize].as_ref()?;
                let terms =
                    chunk.terms.iter().map(|&(term, count)| (self.terms[term as usize].to_string(), count)).collect();
                Some(ChunkTerms { chunk_id: chunk.id.to_string(), terms })
            })
            .collect()
    }

    /// [`crate::TermIndex::term_table`] from the cache, or `None` if it lacks one of `ids` (a
    /// chunk gone, or stored without a term vector): the caller asks the database then. The
    /// cache's own term ids become the table's by a sort of the distinct terms the chunks hold;
    /// each chunk's pairs stay in order, since both numberings follow the terms' order.
    pub(crate) fn term_table(&self, ids: &[String]) -> Option<TermTable> {
        let mut seen = HashSet::with_capacity(ids.len());
        let mut chunks: Vec<&CachedChunk> = Vec::with_capacity(ids.len());
        for id in ids {
            if seen.insert(id.as_str()) {
                chunks.push(self.chunks[*self.slot_of_id.get(id.as_str())? as usize].as_ref()?);
            }
        }
        const UNNUMBERED: u32 = u32::MAX;
        let mut table_id = vec![UNNUMBERED; self.terms.len()];
        let mut distinct: Vec<u32> = Vec::new();
        for chunk in &chunks {
            for &(term, _) in chunk.terms.iter() {
                let slot = &mut table_id[term as usize];
                if *slot == UNNUMBERED {
                    *slot = 0;
                    distinct.push(term);
                }
            }
        }
        distinct.sort_unstable_by(|&a, &b| self.terms[a as usize].cmp(&self.terms[b as usize]));
        for (number, &term) in distinct.iter().enumerate() {
            table_id[term as usize] = u32::try_from(number).unwrap_or(UNNUMBERED);
        }
        let chunks = chunks
            .into_iter()
            .map(|chunk| {
                let mut terms: Vec<(u32, u32)> =
                    chunk.terms.iter().map(|&(term, count)| (table_id[term as usize], count)).collect();
                if !terms.is_sorted() {
                    terms.sort_unstable();
                }
                NumberedChunk { chunk_id: chunk.id.to_string(), terms }
            })
            .collect();
        Some(TermTable {
            chunk_count: self.live as u64,
            document_frequency: distinct
                .iter()
                .map(|&term| u64::from(self.document_frequency[term as usize]))
                .collect(),
            terms: distinct.iter().map(|&term| self.terms[term as usize].to_string()).collect(),
            chunks,
        })
    }

    /// [`crate::TermIndex::chunks_sharing_terms`] over the cache's own postings: each query's
    /// weights summed per chunk slot in one array reused by every query, ranked as the database's
    /// postings are ([`term_index::keep_best`]), without copying a posting or naming a chunk
    /// that is not among the best.
    pub(crate) fn chunks_sharing_terms(&self, queries: &[WeightedTerms], limit: usize) -> Vec<Vec<String>> {
        let mut sums = vec![0f32; self.chunks.len()];
        let mut touched: Vec<u32> = Vec::new();
        let mut scored: Vec<(f32, i64, u32)> = Vec::new();
        queries
            .iter()
            .map(|query| {
                for (term, weight) in term_index::weighted_query_terms(query) {
                    let Some(&term) = self.term_ids.get(term) else { continue };
                    for &slot in &self.postings[term as usize] {
                        let sum = &mut sums[slot as usize];
                        if *sum == 0.0 {
                            touched.push(slot);
                        }
                        *sum += term_index::shared_weight(weight);
                    }
                }
                scored.clear();
                for slot in touched.drain(..) {
                    let sum = std::mem::take(&mut sums[slot as usize]);
                    if let Some(chunk) = &self.chunks[slot as usize] {
                        scored.push((sum, chunk.key, slot));
                    }
                }
                term_index::keep_best(&mut scored, limit);
                scored
                    .iter()
                    .filter_map(|&(_, _, slot)| Some(self.chunks[slot as usize].as_ref()?.id.to_string()))
                    .collect()
            })
            .collect()
    }

    /// The highest key cached (0: none).
    fn highest_key(&self) -> i64 {
        self.slot_of_key.last_key_value().map_or(0, |(key, _)| *key)
    }

    fn intern(&mut self, term: &str) -> u32 {
        if let Some(&id) = self.term_ids.get(term) {
            return id;
        }
        let id = u32::try_from(self.terms.len()).unwrap_or(u32::MAX);
        self.terms.push(term.into());
        self.term_ids.insert(term.into(), id);
        self.document_frequency.push(0);
        self.postings.push(Vec::new());
        id
    }

    /// Caches a chunk under `key`, replacing whatever was cached under that key or id.
    fn insert(&mut self, key: i64, chunk_id: &str, vector: &[(String, u32)]) {
        if let Some(&slot) = self.slot_of_key.get(&key) {
            self.remove_slots(&[slot]);
        }
        if let Some(&slot) = self.slot_of_id.get(chunk_id) {
            self.remove_slots(&[slot]);
        }
        let terms: Box<[(u32, u32)]> = vector.iter().map(|(term, count)| (self.intern(term), *count)).collect();
        self.insert_ids(key, chunk_id.into(), terms);
    }

    /// Caches a chunk whose terms are interned already, under a key and id not cached.
    fn insert_ids(&mut self, key: i64, id: Arc<str>, terms: Box<[(u32, u32)]>) {
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.chunks.push(None);
                u32::try_from(self.chunks.len() - 1).unwrap_or(u32::MAX)
            }
        };
        for &(term, _) in terms.iter() {
            self.document_frequency[term as usize] += 1;
            self.postings[term as usize].push(slot);
        }
        self.slot_of_key.insert(key, slot);
        self.slot_of_id.insert(id.clone(), slot);
        self.chunks[slot as usize] = Some(CachedChunk { key, id, terms });
        self.live += 1;
        self.changed_since_snapshot += 1;
    }

    /// Drops the chunks cached under these keys (keys not cached are ignored).
    fn remove_keys(&mut self, keys: &[i64]) {
        let slots: Vec<u32> = keys.iter().filter_map(|key| self.slot_of_key.get(key).copied()).collect();
        self.remove_slots(&slots);
    }

    fn remove_slots(&mut self, slots: &[u32]) {
        let mut removed = HashSet::new();
        let mut touched = HashSet::new();
        for &slot in slots {
            let Some(chunk) = self.chunks.get_mut(slot as usize).and_then(Option::take) else { continue };
            self.slot_of_key.remove(&chunk.key);
            self.slot_of_id.remove(&chunk.id);
            for &(term, _) in chunk.terms.iter() {
                self.document_frequency[term as usize] -= 1;
                touched.insert(term);
            }
            removed.insert(slot);
            self.live -= 1;
            self.changed_since_snapshot += 1;
        }
        // Postings are cleaned before a slot is handed out again, so a reused slot is never
        // mistaken for the chunk that left it.
        for term in touched {
            self.postings[term as usize].retain(|slot| !removed.contains(slot));
        }
        self.free_slots.extend(removed);
    }
}

/// How far the cache has caught up: what the next catch-up need not read again (see the module
/// docs and `catch_up.rs`).
#[derive(Debug, Default)]
struct Marks {
    /// Keys at or below this one need no listing: their chunks are cached, or gone.
    keys: SafeLow,
    /// The highest departure number applied.
    last_departure: i64,
    /// Departures numbered at or below this one are applied (or will never exist).
    departures: SafeLow,
    /// Departures numbered above that safe low that were applied: read again until they settle,
    /// applied once.
    departures_applied: BTreeSet<i64>,
}

impl Marks {
    /// Moves the marks after a catch-up that began at `began`, applied the departures numbered
    /// `applied`, and left `highest_key` the highest key cached.
    fn advance(&mut self, began: Instant, highest_key: i64, applied: impl Iterator<Item = i64>, order: NumberOrder) {
        for number in applied {
            self.departures_applied.insert(number);
            self.last_departure = self.last_departure.max(number);
        }
        self.keys.caught_up(began, highest_key, order);
        self.departures.caught_up(began, self.last_departure, order);
        self.forget_settled_departures();
    }

    /// Whether a catch-up that applied no departure would move the safe lows: time alone moves
    /// them on PostgreSQL.
    fn would_move(&self, began: Instant, highest_key: i64, order: NumberOrder) -> bool {
        let (mut keys, mut departures) = (self.keys.clone(), self.departures.clone());
        keys.caught_up(began, highest_key, order);
        departures.caught_up(began, self.last_departure, order);
        keys != self.keys || departures != self.departures
    }

    /// Raises the safe lows to what the database says is settled, within what the cache has seen.
    fn settle(&mut self, settled: SettledMarks, highest_key: i64) {
        self.keys.raise_to(settled.key.min(highest_key));
        self.departures.raise_to(settled.departure.min(self.last_departure));
        self.forget_settled_departures();
    }

    fn forget_settled_departures(&mut self) {
        let low = self.departures.get();
        self.departures_applied = self.departures_applied.split_off(&low.saturating_add(1));
    }

    fn applied(&self, departure: i64) -> bool {
        departure <= self.departures.get() || self.departures_applied.contains(&departure)
    }
}

/// A catch-up's reading: into `pending` for a cache being caught up (applied afterwards, under the
/// write lock, only when something changed), or straight into a cache being built.
struct Changes<'a> {
    /// The cache being caught up, read while the database is.
    cache: Option<&'a TermCache>,
    building: Option<&'a mut TermCache>,
    order: NumberOrder,
    /// Where the listing of keys began, once asked.
    listed_above: i64,
    pending: Pending,
    totals_wanted: bool,
    indexed: Option<u64>,
    last_departure: Option<i64>,
}

/// What a catch-up read and has yet to apply.
struct Pending {
    /// Departures not applied before: (number, key).
    departures: Vec<(i64, i64)>,
    /// Cached keys the database no longer lists.
    unlisted: Vec<i64>,
    /// Chunks read (key, id, term vector), decoded but not interned.
    entered: Vec<(i64, String, terms::TermVector)>,
    /// When the reading began, the highest key cached once applied, and the order of numbers:
    /// what moves the marks.
    began: Instant,
    highest_key: i64,
    order: NumberOrder,
}

impl<'a> Changes<'a> {
    fn after(cache: &'a TermCache, order: NumberOrder) -> Changes<'a> {
        Changes { cache: Some(cache), ..Changes::new(None, order) }
    }

    fn building(cache: &'a mut TermCache) -> Changes<'a> {
        // The order matters only to the marks, which the builder sets once built.
        Changes::new(Some(cache), NumberOrder::FollowsCommits)
    }

    fn new(building: Option<&'a mut TermCache>, order: NumberOrder) -> Changes<'a> {
        Changes {
            cache: None,
            building,
            order,
            listed_above: 0,
            pending: Pending {
                departures: Vec::new(),
                unlisted: Vec::new(),
                entered: Vec::new(),
                began: Instant::now(),
                highest_key: 0,
                order,
            },
            totals_wanted: false,
            indexed: None,
            last_departure: None,
        }
    }

    /// What to apply to the cache being caught up.
    fn finish(mut self) -> Pending {
        if let Some(cache) = self.cache {
            let gone: HashSet<i64> = self.pending.removed_keys().collect();
            let still_cached = cache.slot_of_key.keys().rev().copied().find(|key| !gone.contains(key)).unwrap_or(0);
            self.pending.highest_key = self.pending.entered.iter().map(|(key, _, _)| *key).fold(still_cached, i64::max);
        }
        self.pending
    }
}

impl Pending {
    fn removed_keys(&self) -> impl Iterator<Item = i64> + '_ {
        self.departures.iter().map(|(_, key)| *key).chain(self.unlisted.iter().copied())
    }

    /// Whether applying changes the cache or its marks.
    fn changes_anything_in(&self, cache: &TermCache) -> bool {
        !self.departures.is_empty()
            || !self.unlisted.is_empty()
            || !self.entered.is_empty()
            || cache.marks.would_move(self.began, self.highest_key, self.order)
    }

    fn apply_to(self, cache: &mut TermCache) {
        let removed: Vec<i64> = self.removed_keys().collect();
        cache.remove_keys(&removed);
        // What was read is the database's truth for those keys, whatever the cache held under
        // them or under their ids.
        for (key, id, vector) in &self.entered {
            cache.insert(*key, id, vector);
        }
        let applied = self.departures.iter().map(|(number, _)| *number);
        cache.marks.advance(self.began, self.highest_key, applied, self.order);
    }
}

impl TermChangeSink for Changes<'_> {
    fn departures_above(&self) -> i64 {
        match (&self.building, self.cache) {
            (Some(cache), _) => cache.marks.departures.get(),
            (None, Some(cache)) => cache.marks.departures.get(),
            (None, None) => 0,
        }
    }

    fn departed(&mut self, number: i64, key: i64) {
        match (self.building.as_deref_mut(), self.cache) {
            // A new cache holds nothing that could have left: only the number matters.
            (Some(_), _) => self.pending.departures.push((number, key)),
            (None, Some(cache)) if !cache.marks.applied(number) => self.pending.departures.push((number, key)),
            _ => {}
        }
    }

    /// Where keys follow commits, the highest key still cached once the departures are applied:
    /// SQLite gives a new chunk a rowid above every rowid in use, and every key still cached was
    /// in use since the last catch-up, so a key given out since (new, or reused after a
    /// departure) lies above it. Otherwise the keys' safe low.
    fn keys_above(&mut self) -> i64 {
        let Some(cache) = self.cache else { return 0 };
        self.listed_above = match self.order {
            NumberOrder::FollowsCommits => {
                let departed: HashSet<i64> = self.pending.departures.iter().map(|(_, key)| *key).collect();
                let remaining = cache.slot_of_key.range(..=cache.marks.keys.get()).rev().map(|(key, _)| *key);
                remaining.into_iter().find(|key| !departed.contains(key)).unwrap_or(0)
            }
            NumberOrder::Unordered => cache.marks.keys.get(),
        };
        self.listed_above
    }

    /// Reads what the cache lacks among the listed keys, and every key that departed in this
    /// catch-up: a departed key may be indexed again (its term vector rewritten by a rebuild
    /// under new term rules, or, on SQLite, its rowid given to a new chunk), and may lie below the
    /// keys listed. A cached key above the listed range's start that the database no longer
    /// lists is gone.
    fn listed(&mut self, keys: Vec<i64>) -> Vec<i64> {
        let Some(cache) = self.cache else {
            // Building: everything listed is read.
            return keys;
        };
        let departed: HashSet<i64> = self.pending.departures.iter().map(|(_, key)| *key).collect();
        let listed: HashSet<i64> = keys.iter().copied().collect();
        self.pending.unlisted = cache
            .slot_of_key
            .range(self.listed_above.saturating_add(1)..)
            .map(|(key, _)| *key)
            .filter(|key| !listed.contains(key) && !departed.contains(key))
            .collect();
        let mut wanted: Vec<i64> = keys
            .into_iter()
            .filter(|key| departed.contains(key) || !cache.slot_of_key.contains_key(key))
            .chain(departed.iter().copied())
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    fn entered(&mut self, key: i64, chunk_id: &str, term_vector: &str) -> StoreResult<()> {
        let vector = decode_term_vector(term_vector)?;
        match self.building.as_deref_mut() {
            Some(cache) => cache.insert(key, chunk_id, &vector),
            None => self.pending.entered.push((key, chunk_id.to_owned(), vector)),
        }
        Ok(())
    }

    fn wants_totals(&self) -> bool {
        self.totals_wanted
    }

    fn totals(&mut self, indexed: u64, last_departure: i64) {
        self.indexed = Some(indexed);
        self.last_departure = Some(last_departure);
    }
}

/// The snapshot's layout, all integers little-endian, in columns so that loading is a few large
/// reads: the magic; the term rules' edition; the marks (the keys' safe low, the last departure
/// applied, the departures' safe low: safe lows, not high waters, so that a process loading it
/// on PostgreSQL looks again where late commits may still land);
/// the terms (count, byte length, each term's end offset, the bytes); the chunks (count, their
/// keys, their ids as end offsets and bytes, each chunk's end offset in the pairs); the pairs
/// (count, term ids, counts); and a CRC-32 of everything before it.
impl TermCache {
    fn save(&self, path: &Path) -> Result<(), String> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let temp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
        let mut out =
            Checksummed { inner: BufWriter::with_capacity(1 << 20, temp.as_file()), hasher: crc32fast::Hasher::new() };
        let chunks: Vec<&CachedChunk> = self.chunks.iter().flatten().collect();
        let written: std::io::Result<()> = (|| {
            out.write_all(SNAPSHOT_MAGIC)?;
            write_bytes(&mut out, index_edition().as_bytes())?;
            let marks = &self.marks;
            write_u64s(
                &mut out,
                [marks.keys.get(), marks.last_departure, marks.departures.get()].map(|mark| mark as u64),
            )?;
            write_strings(&mut out, self.terms.iter().map(|term| term.as_bytes()), self.terms.len())?;
            write_u64s(&mut out, [chunks.len() as u64])?;
            write_u64s(&mut out, chunks.iter().map(|chunk| chunk.key as u64))?;
            write_strings(&mut out, chunks.iter().map(|chunk| chunk.id.as_bytes()), chunks.len())?;
            let mut end = 0u64;
            write_u64s(
                &mut out,
                chunks.iter().map(|chunk| {
                    end += chunk.terms.len() as u64;
                    end
                }),
            )?;
            write_u64s(&mut out, [end])?;
            write_u32s(&mut out, chunks.iter().flat_map(|chunk| chunk.terms.iter().map(|&(term, _)| term)))?;
            write_u32s(&mut out, chunks.iter().flat_map(|chunk| chunk.terms.iter().map(|&(_, count)| count)))?;
            let checksum = out.hasher.clone().finalize();
            out.inner.write_all(&checksum.to_le_bytes())?;
            out.inner.flush()
        })();
        written.map_err(|e| e.to_string())?;
        drop(out);
        temp.as_file().sync_all().map_err(|e| e.to_string())?;
        temp.persist(path).map_err(|e| e.error.to_string())?;
        Ok(())
    }

    /// The cache a snapshot holds; why not, if it is unusable.
    fn load(path: &Path) -> Result<TermCache, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("it cannot be read: {e}"))?;
        let size = file.metadata().map_err(|e| format!("it cannot be read: {e}"))?.len();
        let mut input =
            Checksummed { inner: BufReader::with_capacity(1 << 20, file), hasher: crc32fast::Hasher::new() };
        let parsed: std::io::Result<Result<TermCache, String>> = (|| {
            let mut magic = [0u8; 8];
            input.read_exact(&mut magic)?;
            if &magic != SNAPSHOT_MAGIC {
                return Ok(Err("it was written in another format".to_owned()));
            }
            if read_bytes(&mut input, size)? != index_edition().as_bytes() {
                return Ok(Err("it was built under other term rules".to_owned()));
            }
            let marks = read_u64s(&mut input, 3, size)?;
            let terms = read_strings(&mut input, size)?;
            let chunk_count = read_len(&mut input, size)?;
            let keys = read_u64s(&mut input, chunk_count, size)?;
            let ids = read_strings(&mut input, size)?;
            let ends = read_u64s(&mut input, chunk_count, size)?;
            let pair_count = read_len(&mut input, size)?;
            let term_ids = read_u32s(&mut input, pair_count, size)?;
            let counts = read_u32s(&mut input, pair_count, size)?;
            let expected = input.hasher.clone().finalize();
            let mut stored = [0u8; 4];
            input.inner.read_exact(&mut stored)?;
            if u32::from_le_bytes(stored) != expected {
                return Ok(Err("its checksum does not match".to_owned()));
            }
            if input.inner.read(&mut [0u8; 1])? != 0 {
                return Ok(Err("it has bytes past its end".to_owned()));
            }
            let marks = Marks {
                keys: SafeLow::at(marks[0] as i64),
                last_departure: marks[1] as i64,
                departures: SafeLow::at(marks[2] as i64),
                departures_applied: BTreeSet::new(),
            };
            Ok(TermCache::from_columns(marks, terms, keys, ids, &ends, &term_ids, &counts))
        })();
        match parsed {
            Ok(loaded) => loaded,
            Err(error) => Err(format!("it is cut short or unreadable: {error}")),
        }
    }

    /// The cache from a snapshot's columns, checked as it is built.
    #[allow(clippy::too_many_arguments)]
    fn from_columns(
        marks: Marks,
        terms: Vec<String>,
        keys: Vec<u64>,
        ids: Vec<String>,
        ends: &[u64],
        term_ids: &[u32],
        counts: &[u32],
    ) -> Result<TermCache, String> {
        if ids.len() != keys.len() || ends.len() != keys.len() || term_ids.len() != counts.len() {
            return Err("its columns disagree in length".to_owned());
        }
        let mut cache = TermCache { marks, ..TermCache::default() };
        cache.term_ids.reserve(terms.len());
        for term in terms {
            let term: Box<str> = term.into();
            let id = u32::try_from(cache.terms.len()).map_err(|_| "too many terms".to_owned())?;
            if cache.term_ids.insert(term.clone(), id).is_some() {
                return Err(format!("it names the term {term:?} twice"));
            }
            cache.terms.push(term);
        }
        if term_ids.iter().any(|&term| term as usize >= cache.terms.len()) {
            return Err("a chunk names a term it does not list".to_owned());
        }
        // Postings allocated at their final size: one pass counts, the next fills.
        let mut document_frequency = vec![0u32; cache.terms.len()];
        for &term in term_ids {
            document_frequency[term as usize] += 1;
        }
        cache.postings = document_frequency.iter().map(|&df| Vec::with_capacity(df as usize)).collect();
        cache.document_frequency = document_frequency;
        cache.chunks.reserve(keys.len());
        let mut start = 0usize;
        for (slot, ((key, id), &end)) in keys.into_iter().zip(ids).zip(ends).enumerate() {
            let end = usize::try_from(end).map_err(|_| "a chunk's pairs end out of range".to_owned())?;
            if end < start || end > term_ids.len() {
                return Err("a chunk's pairs end out of range".to_owned());
            }
            let slot = u32::try_from(slot).map_err(|_| "too many chunks".to_owned())?;
            let terms: Box<[(u32, u32)]> =
                term_ids[start..end].iter().copied().zip(counts[start..end].iter().copied()).collect();
            for &(term, _) in terms.iter() {
                cache.postings[term as usize].push(slot);
            }
            let id: Arc<str> = id.into();
            let key = key as i64;
            if cache.slot_of_key.insert(key, slot).is_some() || cache.slot_of_id.insert(id.clone(), slot).is_some() {
                return Err(format!("it holds the chunk {id} (key {key}) twice"));
            }
            cache.chunks.push(Some(CachedChunk { key, id, terms }));
            start = end;
        }
        if start != term_ids.len() {
            return Err("it holds pairs no chunk owns".to_owned());
        }
        cache.live = cache.chunks.len();
        Ok(cache)
    }
}

/// A reader or writer that keeps a CRC-32 of the bytes through it.
struct Checksummed<T> {
    inner: T,
    hasher: crc32fast::Hasher,
}

impl<T: Write> Write for Checksummed<T> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read> Read for Checksummed<T> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

/// Values written through a buffer of this many bytes at a time.
const COLUMN_BUFFER: usize = 1 << 16;

fn write_u64s(out: &mut impl Write, values: impl IntoIterator<Item = u64>) -> std::io::Result<()> {
    write_column(out, values.into_iter().map(u64::to_le_bytes))
}

fn write_u32s(out: &mut impl Write, values: impl IntoIterator<Item = u32>) -> std::io::Result<()> {
    write_column(out, values.into_iter().map(u32::to_le_bytes))
}

/// Values' bytes, written a buffer at a time.
fn write_column<const N: usize>(out: &mut impl Write, values: impl Iterator<Item = [u8; N]>) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(COLUMN_BUFFER);
    for bytes in values {
        buffer.extend_from_slice(&bytes);
        if buffer.len() >= COLUMN_BUFFER {
            out.write_all(&buffer)?;
            buffer.clear();
        }
    }
    out.write_all(&buffer)
}

fn write_bytes(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    write_u64s(out, [bytes.len() as u64])?;
    out.write_all(bytes)
}

/// Strings as a count, a byte length, each one's end offset and the bytes.
fn write_strings<'a>(
    out: &mut impl Write,
    strings: impl Iterator<Item = &'a [u8]> + Clone,
    count: usize,
) -> std::io::Result<()> {
    let total: usize = strings.clone().map(<[u8]>::len).sum();
    write_u64s(out, [count as u64, total as u64])?;
    let mut end = 0u64;
    write_u64s(
        out,
        strings.clone().map(|bytes| {
            end += bytes.len() as u64;
            end
        }),
    )?;
    for bytes in strings {
        out.write_all(bytes)?;
    }
    Ok(())
}

/// A length, refused if it exceeds the file's size: a corrupt length never allocates beyond it.
fn read_len(input: &mut impl Read, file_size: u64) -> std::io::Result<usize> {
    let len = read_u64s(input, 1, file_size)?[0];
    if len > file_size {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a length beyond the file"));
    }
    usize::try_from(len).map_err(std::io::Error::other)
}

/// `count` values, refused if they could not fit in the file.
fn read_u64s(input: &mut impl Read, count: usize, file_size: u64) -> std::io::Result<Vec<u64>> {
    let bytes = read_exactly(input, count.saturating_mul(8), file_size)?;
    Ok(bytes.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default())).collect())
}

fn read_u32s(input: &mut impl Read, count: usize, file_size: u64) -> std::io::Result<Vec<u32>> {
    let mut values = Vec::with_capacity(count.min(usize::try_from(file_size / 4).unwrap_or(0)));
    let mut buffer = vec![0u8; COLUMN_BUFFER];
    let mut left = count.checked_mul(4).filter(|&bytes| bytes as u64 <= file_size).ok_or_else(beyond_file)?;
    while left > 0 {
        let part = &mut buffer[..left.min(COLUMN_BUFFER)];
        input.read_exact(part)?;
        values.extend(part.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default())));
        left -= part.len();
    }
    Ok(values)
}

fn read_bytes(input: &mut impl Read, file_size: u64) -> std::io::Result<Vec<u8>> {
    let len = read_len(input, file_size)?;
    read_exactly(input, len, file_size)
}

fn read_exactly(input: &mut impl Read, len: usize, file_size: u64) -> std::io::Result<Vec<u8>> {
    if len as u64 > file_size {
        return Err(beyond_file());
    }
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn beyond_file() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "a length beyond the file")
}

/// Strings written by [`write_strings`].
fn read_strings(input: &mut impl Read, file_size: u64) -> std::io::Result<Vec<String>> {
    let count = read_len(input, file_size)?;
    let total = read_len(input, file_size)?;
    let ends = read_u64s(input, count, file_size)?;
    let bytes = read_exactly(input, total, file_size)?;
    let mut strings = Vec::with_capacity(count);
    let mut start = 0usize;
    for end in ends {
        let end =
            usize::try_from(end).ok().filter(|&end| end >= start && end <= bytes.len()).ok_or_else(beyond_file)?;
        let text = std::str::from_utf8(&bytes[start..end]).map_err(std::io::Error::other)?;
        strings.push(text.to_owned());
        start = end;
    }
    Ok(strings)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex as StdMutex;

    use super::*;
    use crate::codec::encode_term_vector;

    /// A database's term index in memory: departures and indexed chunks, changed by the test. In
    /// SQLite's order (`ordered`) every change is visible at once; in PostgreSQL's, a change made
    /// `uncommitted` holds its key or number but is visible only once the test commits it.
    #[derive(Default)]
    struct FakeRows {
        state: StdMutex<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        unordered: bool,
        /// (number, key, visible).
        departures: Vec<(i64, i64, bool)>,
        /// Key → (id, term vector, visible).
        chunks: BTreeMap<i64, (String, String, bool)>,
        settled: SettledMarks,
        /// Chunks delivered to caches so far: what a catch-up cost.
        delivered: usize,
        /// Where each catch-up listed keys from.
        listed_above: Vec<i64>,
    }

    impl FakeRows {
        /// PostgreSQL's order: keys and numbers taken by one transaction may become visible after
        /// higher ones.
        fn unordered() -> FakeRows {
            FakeRows { state: StdMutex::new(FakeState { unordered: true, ..FakeState::default() }) }
        }

        fn add(&self, key: i64, id: &str, text: &str) {
            self.put(key, id, text, true);
        }

        fn add_uncommitted(&self, key: i64, id: &str, text: &str) {
            self.put(key, id, text, false);
        }

        fn put(&self, key: i64, id: &str, text: &str, visible: bool) {
            let vector = encode_term_vector(&terms::term_vector(text));
            self.state.lock().unwrap().chunks.insert(key, (id.to_owned(), vector, visible));
        }

        fn remove(&self, key: i64) {
            let number = self.state.lock().unwrap().departures.len() as i64 + 1;
            self.remove_numbered(key, number, true);
        }

        /// Removes a chunk in a transaction that took departure `number` and has not committed.
        fn remove_numbered(&self, key: i64, number: i64, visible: bool) {
            let mut state = self.state.lock().unwrap();
            if visible {
                state.chunks.remove(&key);
            }
            state.departures.push((number, key, visible));
        }

        /// Commits the chunk added under `key`.
        fn commit_chunk(&self, key: i64) {
            self.state.lock().unwrap().chunks.get_mut(&key).expect("an added chunk").2 = true;
        }

        /// Commits the departure numbered `number`: its chunk is gone from then on.
        fn commit_departure(&self, number: i64) {
            let mut state = self.state.lock().unwrap();
            let departure = state.departures.iter_mut().find(|d| d.0 == number).expect("a departure");
            departure.2 = true;
            let key = departure.1;
            state.chunks.remove(&key);
        }

        /// Rewrites a chunk's term vector, as a rebuild under new term rules does: a departure of
        /// its key, which stays indexed.
        fn rewrite(&self, key: i64, text: &str) {
            let id = self.state.lock().unwrap().chunks[&key].0.clone();
            let number = self.state.lock().unwrap().departures.len() as i64 + 1;
            self.state.lock().unwrap().departures.push((number, key, true));
            self.add(key, &id, text);
        }

        fn delivered(&self) -> usize {
            std::mem::take(&mut self.state.lock().unwrap().delivered)
        }

        fn listed_above(&self) -> Vec<i64> {
            std::mem::take(&mut self.state.lock().unwrap().listed_above)
        }
    }

    #[async_trait]
    impl TermRows for FakeRows {
        async fn read_term_changes(&self, sink: &mut (dyn TermChangeSink + Send)) -> StoreResult<()> {
            let mut state = self.state.lock().unwrap();
            let above = sink.departures_above();
            let mut departures: Vec<(i64, i64)> =
                state.departures.iter().filter(|d| d.0 > above && d.2).map(|d| (d.0, d.1)).collect();
            departures.sort_unstable();
            for (number, key) in departures {
                sink.departed(number, key);
            }
            let above = sink.keys_above();
            state.listed_above.push(above);
            let keys: Vec<i64> = state.chunks.range(above + 1..).filter(|(_, c)| c.2).map(|(key, _)| *key).collect();
            let mut delivered = 0;
            for key in sink.listed(keys) {
                if let Some((id, vector, true)) = state.chunks.get(&key) {
                    sink.entered(key, id, vector)?;
                    delivered += 1;
                }
            }
            state.delivered += delivered;
            if sink.wants_totals() {
                let indexed = state.chunks.values().filter(|c| c.2).count() as u64;
                let last = state.departures.iter().filter(|d| d.2).map(|d| d.0).max().unwrap_or(0);
                sink.totals(indexed, last);
            }
            Ok(())
        }

        fn keys_follow_commits(&self) -> bool {
            !self.state.lock().unwrap().unordered
        }

        async fn settled_marks(&self, age: Duration) -> StoreResult<SettledMarks> {
            assert_eq!(age, IN_FLIGHT_WINDOW);
            Ok(self.state.lock().unwrap().settled)
        }
    }

    const TEXTS: &[&str] = &[
        "the whale breached beside the harpoon boat",
        "a lantern swung over the quarterdeck",
        "tea and biscuits in the drawing room",
        "the harpoon struck the white whale",
        "granite cliffs above the harbour",
    ];

    /// What the fake database holds, counted here: term → chunks containing it.
    fn truth(rows: &FakeRows) -> (u64, HashMap<String, u64>, Vec<(String, terms::TermVector)>) {
        let state = rows.state.lock().unwrap();
        let mut frequencies = HashMap::new();
        let mut vectors = Vec::new();
        let visible: Vec<_> = state.chunks.values().filter(|c| c.2).collect();
        for (id, vector, _) in &visible {
            let vector = decode_term_vector(vector).unwrap();
            for (term, _) in &vector {
                *frequencies.entry(term.clone()).or_default() += 1;
            }
            vectors.push((id.clone(), vector));
        }
        vectors.sort();
        (visible.len() as u64, frequencies, vectors)
    }

    async fn assert_matches(terms: &InProcessTerms, rows: &FakeRows) {
        let (count, frequencies, vectors) = truth(rows);
        let cache = terms.caught_up(rows).await.unwrap();
        let asked: Vec<String> = frequencies.keys().cloned().chain(["nowhere".to_owned()]).collect();
        let counts = cache.term_counts(&asked);
        assert_eq!(counts.chunk_count, count);
        assert_eq!(counts.document_frequency, frequencies);
        let ids: Vec<String> = vectors.iter().map(|(id, _)| id.clone()).collect();
        let mut cached: Vec<(String, terms::TermVector)> =
            cache.chunk_terms(&ids).into_iter().map(|chunk| (chunk.chunk_id, chunk.terms)).collect();
        cached.sort();
        assert_eq!(cached, vectors);
        // Every chunk containing "whale" is found by a search for it, and nothing else.
        let whales: BTreeSet<String> =
            vectors.iter().filter(|(_, v)| v.iter().any(|(t, _)| t == "whale")).map(|(id, _)| id.clone()).collect();
        let found = cache.chunks_sharing_terms(&[vec![("whale".into(), 1.0)]], vectors.len() + 1);
        assert_eq!(found[0].iter().cloned().collect::<BTreeSet<_>>(), whales);
    }

    use std::collections::BTreeSet;

    #[tokio::test]
    async fn departures_and_reused_keys_are_followed() {
        let rows = FakeRows::default();
        for (key, text) in TEXTS.iter().enumerate() {
            rows.add(key as i64 + 1, &format!("c{key}"), text);
        }
        let terms = InProcessTerms::new(None);
        assert_matches(&terms, &rows).await;
        // The newest chunks leave and their keys go to new chunks, one of them under an old id.
        rows.remove(5);
        rows.remove(4);
        rows.add(4, "c9", "a white whale in the harbour");
        rows.add(5, "c3", "granite and lantern");
        assert_matches(&terms, &rows).await;
        // An old chunk leaves; nothing reuses its key.
        rows.remove(1);
        rows.add(6, "c10", "whale whale whale");
        assert_matches(&terms, &rows).await;
        assert_eq!(rows.delivered(), 5 + 2 + 1, "a catch-up reads above the highest key still cached");
    }

    fn many(rows: &FakeRows, count: usize) {
        for key in 1..=count {
            rows.add(key as i64, &format!("c{key}"), TEXTS[key % TEXTS.len()]);
        }
    }

    #[tokio::test]
    async fn a_snapshot_is_loaded_and_a_corrupt_cut_or_foreign_one_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let rows = FakeRows::default();
        many(&rows, SNAPSHOT_EVERY + 10);
        let first = InProcessTerms::new(Some(dir.path().to_owned()));
        assert_matches(&first, &rows).await;
        first.snapshot_written().await;
        let path = dir.path().join(SNAPSHOT_FILE);
        assert!(path.exists());
        rows.delivered();

        // Loaded: only what changed since is read.
        rows.remove(3);
        rows.add(SNAPSHOT_EVERY as i64 + 11, "late", "a late whale");
        let loaded = InProcessTerms::new(Some(dir.path().to_owned()));
        assert_matches(&loaded, &rows).await;
        assert_eq!(rows.delivered(), 1);
        // A cache writes its snapshot in the background: done before the file is damaged by
        // hand, or it could replace the damage with a good snapshot.
        loaded.snapshot_written().await;

        // A flipped byte, a cut file: rebuilt from the database, with the same answers.
        let bytes = std::fs::read(&path).unwrap();
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 0x40;
        for damaged in [flipped, bytes[..bytes.len() / 3].to_vec(), b"QTERMS03".to_vec()] {
            std::fs::write(&path, &damaged).unwrap();
            let rebuilt = InProcessTerms::new(Some(dir.path().to_owned()));
            assert_matches(&rebuilt, &rows).await;
            assert_eq!(rows.delivered(), SNAPSHOT_EVERY + 10, "rebuilt from every chunk");
            rebuilt.snapshot_written().await;
        }

        // A snapshot of another database (more departures applied than this one has seen).
        std::fs::write(&path, &bytes).unwrap();
        let other = FakeRows::default();
        many(&other, 3);
        let foreign = InProcessTerms::new(Some(dir.path().to_owned()));
        assert_matches(&foreign, &other).await;
        // And one whose chunk count disagrees once caught up.
        let fewer = FakeRows::default();
        many(&fewer, SNAPSHOT_EVERY + 10);
        fewer.state.lock().unwrap().chunks.remove(&2);
        let disagreeing = InProcessTerms::new(Some(dir.path().to_owned()));
        assert_matches(&disagreeing, &fewer).await;
    }

    /// On PostgreSQL's terms a chunk whose key lies below the highest seen, committed after a
    /// catch-up, is found by the next one within the window; the keys' safe low moves up only
    /// once a catch-up that saw them is a window old.
    #[tokio::test(start_paused = true)]
    async fn a_chunk_committed_late_below_the_high_water_is_found_within_the_window() {
        let rows = FakeRows::unordered();
        rows.add(1, "c1", TEXTS[0]);
        rows.add_uncommitted(2, "late", TEXTS[3]);
        rows.add(3, "c3", TEXTS[1]);
        let terms = InProcessTerms::new(None);
        assert_matches(&terms, &rows).await;
        assert_eq!(terms.caught_up(&rows).await.unwrap().chunk_terms(&["late".to_owned()]), []);
        rows.commit_chunk(2);
        tokio::time::advance(IN_FLIGHT_WINDOW - Duration::from_secs(1)).await;
        assert_matches(&terms, &rows).await;
        assert_eq!(terms.caught_up(&rows).await.unwrap().chunk_terms(&["late".to_owned()]).len(), 1);
        assert_eq!(rows.delivered(), 3, "the late chunk is read once, the others never again");
        assert_eq!(rows.listed_above(), [0, 0, 0, 0], "nothing a window old yet");

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_matches(&terms, &rows).await;
        assert_matches(&terms, &rows).await;
        // The first catch-up a window after the build, which saw key 3, still lists from 0, and
        // moves the safe low for the next.
        assert_eq!(rows.listed_above(), [0, 3]);
        assert_eq!(rows.delivered(), 0);
    }

    /// A departure numbered below one already applied, committed later, is applied; one read
    /// again within the window is applied once (a rewritten chunk is not read again).
    #[tokio::test(start_paused = true)]
    async fn a_departure_committed_late_is_applied_and_each_departure_once() {
        let rows = FakeRows::unordered();
        for key in 1..=4 {
            rows.add(key, &format!("c{key}"), TEXTS[key as usize]);
        }
        let terms = InProcessTerms::new(None);
        assert_matches(&terms, &rows).await;
        rows.remove_numbered(1, 1, false);
        rows.remove_numbered(3, 2, true);
        assert_matches(&terms, &rows).await;
        rows.commit_departure(1);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_matches(&terms, &rows).await;
        assert_eq!(terms.caught_up(&rows).await.unwrap().chunk_terms(&["c1".to_owned()]), []);
        rows.delivered();

        rows.rewrite(2, "a rewritten whale of a chunk");
        assert_matches(&terms, &rows).await;
        assert_eq!(rows.delivered(), 1, "the rewritten chunk is read again");
        assert_matches(&terms, &rows).await;
        assert_eq!(rows.delivered(), 0, "its departure, read again, is applied once");
    }

    /// The snapshot holds safe lows, not high waters: a chunk committed late below the highest
    /// key it holds is found by the process that loads it.
    #[tokio::test]
    async fn a_snapshot_on_postgresql_s_terms_keeps_looking_below_its_newest_keys() {
        let dir = tempfile::tempdir().unwrap();
        let rows = FakeRows::unordered();
        many(&rows, SNAPSHOT_EVERY + 10);
        rows.state.lock().unwrap().chunks.get_mut(&7).unwrap().2 = false;
        let first = InProcessTerms::new(Some(dir.path().to_owned()));
        assert_matches(&first, &rows).await;
        first.snapshot_written().await;
        rows.delivered();

        rows.commit_chunk(7);
        // Settled by now, as far as the database can tell: raised only after the catch-up.
        rows.state.lock().unwrap().settled = SettledMarks { key: SNAPSHOT_EVERY as i64, departure: 0 };
        let loaded = InProcessTerms::new(Some(dir.path().to_owned()));
        assert_matches(&loaded, &rows).await;
        assert_eq!(rows.delivered(), 1, "loaded, and the late chunk found");
        rows.listed_above();
        assert_matches(&loaded, &rows).await;
        assert_eq!(rows.listed_above(), [SNAPSHOT_EVERY as i64], "then the settled key is the safe low");
    }
}
