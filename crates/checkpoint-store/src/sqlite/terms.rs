//! The term index on SQLite: a contentless FTS5 table under the chunks' rowids and a table of
//! document frequencies, both kept by triggers from each chunk's stored term vector.

use async_trait::async_trait;
use sqlx::{Sqlite, Transaction};

use super::{SqliteStore, sql};
use crate::error::{StoreError, StoreResult};
use crate::term_cache::{SettledMarks, TermChangeSink, TermRows};
use crate::term_index::{
    self, ChunkTerms, IndexedChunk, LOOKUP_BATCH, REBUILD_BATCH, TermCounts, TermIndex, TermPostings, TermTable,
    WeightedTerms,
};

/// Terms per statement that reads postings: one part of a compound statement each, within
/// SQLite's limit of 500 parts (measured: 200 per statement reads as fast as 500).
const TERMS_PER_STATEMENT: usize = 200;

/// Stores chunks' term vectors, computed from their text, inside the transaction that inserted
/// the chunks (or rebuilds the index); the triggers of migration 0006 index them.
pub(super) async fn index_chunks<'a>(
    tx: &mut Transaction<'static, Sqlite>,
    chunks: impl Iterator<Item = (&'a str, &'a str)>,
) -> StoreResult<()> {
    let pairs: Vec<(&str, String)> = chunks.map(|(id, text)| (id, IndexedChunk::of(text).term_vector)).collect();
    for slice in pairs.chunks(REBUILD_BATCH) {
        let json = serde_json::to_string(slice).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(sql::INSERT_TERM_VECTORS).bind(json).execute(&mut **tx).await?;
    }
    Ok(())
}

impl SqliteStore {
    /// Rebuilds the term index from the chunks' text if it was built under another edition of the
    /// term rules than this binary's, or never: in one write transaction, so another process
    /// opening the same file at once waits and then finds the index current.
    pub(super) async fn bring_term_index_up_to_date(&self) -> StoreResult<()> {
        let current: Option<String> = sqlx::query_scalar(sql::TERM_INDEX_EDITION).fetch_optional(&self.writer).await?;
        if current.as_deref() == Some(term_index::index_edition().as_str()) {
            return Ok(());
        }
        let mut tx = self.begin_immediate().await?;
        let current: Option<String> = sqlx::query_scalar(sql::TERM_INDEX_EDITION).fetch_optional(&mut *tx).await?;
        if term_index::edition_is_current(current.as_deref()) {
            return Ok(());
        }
        // The vectors first, so that their triggers remove what they indexed; then whatever an
        // index without vectors (an older layout) left.
        sqlx::query(sql::CLEAR_TERM_VECTORS).execute(&mut *tx).await?;
        sqlx::query(sql::CLEAR_TERM_INDEX).execute(&mut *tx).await?;
        sqlx::query(sql::CLEAR_TERM_COUNTS).execute(&mut *tx).await?;
        let mut after = 0_i64;
        let mut indexed = 0_usize;
        loop {
            let rows: Vec<(i64, String, String)> = sqlx::query_as(sql::CHUNK_TEXTS_AFTER)
                .bind(after)
                .bind(REBUILD_BATCH as i64)
                .fetch_all(&mut *tx)
                .await?;
            let Some(&(last, _, _)) = rows.last() else {
                break;
            };
            after = last;
            indexed += rows.len();
            index_chunks(&mut tx, rows.iter().map(|(_, id, text)| (id.as_str(), text.as_str()))).await?;
        }
        sqlx::query(sql::CLEAR_TERM_INDEX_EDITION).execute(&mut *tx).await?;
        sqlx::query(sql::SET_TERM_INDEX_EDITION).bind(term_index::index_edition()).execute(&mut *tx).await?;
        tx.commit().await?;
        term_index::rebuilt(indexed);
        Ok(())
    }
}

/// The term index as the in-process cache reads it: departures and indexed chunks, in one read
/// transaction.
#[async_trait]
impl TermRows for SqliteStore {
    async fn read_term_changes(&self, sink: &mut (dyn TermChangeSink + Send)) -> StoreResult<()> {
        let mut tx = self.reader.begin().await?;
        let departures: Vec<(i64, i64)> =
            sqlx::query_as(sql::TERM_DEPARTURES_AFTER).bind(sink.departures_above()).fetch_all(&mut *tx).await?;
        for (number, key) in departures {
            sink.departed(number, key);
        }
        let keys: Vec<i64> =
            sqlx::query_scalar(sql::TERM_KEYS_AFTER).bind(sink.keys_above()).fetch_all(&mut *tx).await?;
        for page in sink.listed(keys).chunks(REBUILD_BATCH) {
            let json = serde_json::to_string(page).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let rows: Vec<(i64, String, String)> =
                sqlx::query_as(sql::TERM_VECTORS_BY_KEY).bind(json).fetch_all(&mut *tx).await?;
            for (key, id, vector) in &rows {
                sink.entered(*key, id, vector)?;
            }
        }
        if sink.wants_totals() {
            let (indexed, last_departure): (i64, i64) =
                sqlx::query_as(sql::TERM_INDEX_TOTALS).fetch_one(&mut *tx).await?;
            sink.totals(crate::codec::unsigned("indexed chunks", indexed)?, last_departure);
        }
        tx.commit().await?;
        Ok(())
    }

    fn keys_follow_commits(&self) -> bool {
        true
    }

    async fn settled_marks(&self, _: std::time::Duration) -> StoreResult<SettledMarks> {
        // Never asked: with one writer, everything committed is settled.
        Ok(SettledMarks::default())
    }
}

/// Answered from the in-process term cache, caught up with the database first.
#[async_trait]
impl TermIndex for SqliteStore {
    async fn term_counts(&self, terms: &[String]) -> StoreResult<TermCounts> {
        self.term_cache.term_counts(self, terms).await
    }

    async fn chunks_sharing_terms(&self, queries: &[WeightedTerms], limit: usize) -> StoreResult<Vec<Vec<String>>> {
        self.term_cache.chunks_sharing_terms(self, queries, limit).await
    }

    async fn chunk_terms(&self, ids: &[String]) -> StoreResult<Vec<ChunkTerms>> {
        let (mut found, missing) = self.term_cache.chunk_terms(self, ids).await?;
        if !missing.is_empty() {
            found.extend(self.chunk_terms_in_database(&missing).await?);
        }
        Ok(found)
    }

    async fn warm_term_index(&self) -> StoreResult<()> {
        self.term_cache.caught_up(self).await.map(drop)
    }

    async fn term_table(&self, ids: &[String]) -> StoreResult<TermTable> {
        match self.term_cache.term_table(self, ids).await? {
            Some(table) => Ok(table),
            // Some chunk is not cached: the rare case, answered from what `chunk_terms` finds.
            None => term_index::term_table_of(self, ids).await,
        }
    }
}

impl SqliteStore {
    /// [`TermIndex::term_counts`] read from the database, not the cache.
    pub async fn term_counts_in_database(&self, terms: &[String]) -> StoreResult<TermCounts> {
        // One connection, so the count and the frequencies come from one snapshot.
        let mut tx = self.reader.begin().await?;
        let chunk_count: i64 = sqlx::query_scalar(sql::LIBRARY_CHUNK_COUNT).fetch_one(&mut *tx).await?;
        let mut rows: Vec<(String, i64)> = Vec::new();
        for slice in terms.chunks(LOOKUP_BATCH) {
            let json = serde_json::to_string(slice).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let pairs: String = sqlx::query_scalar(sql::TERM_FREQUENCIES).bind(json).fetch_one(&mut *tx).await?;
            let pairs: Vec<(String, i64)> =
                serde_json::from_str(&pairs).map_err(|e| StoreError::Corrupt(format!("term frequencies: {e}")))?;
            rows.extend(pairs);
        }
        tx.commit().await?;
        TermCounts::from_rows(chunk_count, rows)
    }

    /// [`TermIndex::chunks_sharing_terms`] read from the database's full-text index, not the cache.
    pub async fn chunks_sharing_terms_in_database(
        &self,
        queries: &[WeightedTerms],
        limit: usize,
    ) -> StoreResult<Vec<Vec<String>>> {
        term_index::chunks_sharing_terms(self, queries, limit).await
    }

    /// [`TermIndex::chunk_terms`] read from the database, not the cache.
    pub async fn chunk_terms_in_database(&self, ids: &[String]) -> StoreResult<Vec<ChunkTerms>> {
        let mut found = Vec::with_capacity(ids.len());
        for slice in ids.chunks(LOOKUP_BATCH) {
            let json = serde_json::to_string(slice).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let rows: Vec<(String, Option<String>, Option<String>)> =
                sqlx::query_as(sql::CHUNK_TERM_VECTORS).bind(json).fetch_all(&self.reader).await?;
            for (id, vector, text) in rows {
                found.push(ChunkTerms::from_row(id, vector, text)?);
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl TermPostings for SqliteStore {
    async fn postings(&self, terms: &[&str]) -> StoreResult<Vec<(String, Vec<i64>)>> {
        let mut postings = Vec::new();
        for slice in terms.chunks(TERMS_PER_STATEMENT) {
            let statement = sqlx::AssertSqlSafe(sql::term_postings(slice.len()));
            let query = slice
                .iter()
                .fold(sqlx::query_as(statement), |query, term| query.bind(*term).bind(sql::fts5_term_query(term)));
            let rows: Vec<(String, Option<String>)> = query.fetch_all(&self.reader).await?;
            for (term, keys) in rows {
                let Some(keys) = keys else { continue };
                let keys = keys.split(',').map(str::parse).collect::<Result<Vec<i64>, _>>();
                let keys = keys.map_err(|e| StoreError::Corrupt(format!("postings of {term:?}: {e}")))?;
                postings.push((term, keys));
            }
        }
        Ok(postings)
    }

    async fn chunk_ids(&self, keys: &[i64]) -> StoreResult<Vec<(i64, String)>> {
        let json = serde_json::to_string(keys).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let pairs: String = sqlx::query_scalar(sql::CHUNK_IDS_BY_ROWID).bind(json).fetch_one(&self.reader).await?;
        serde_json::from_str(&pairs).map_err(|e| StoreError::Corrupt(format!("chunk ids by key: {e}")))
    }
}
