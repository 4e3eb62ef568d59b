//! The term index on PostgreSQL: a `tsvector` column with a GIN index, postings, and a table of
//! document frequencies kept in the transactions that add or remove chunks; answered from the
//! in-process term cache (`term_cache.rs`), which catches up through `chunk_term_departures` and
//! the chunks' keys.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Postgres, Transaction};

use super::{PgStore, sql};
use crate::error::StoreResult;
use crate::term_cache::{SettledMarks, TermChangeSink, TermRows};
use crate::term_index::{
    self, ChunkTerms, IndexedChunk, LOOKUP_BATCH, REBUILD_BATCH, TermCounts, TermIndex, TermPostings, TermTable,
    WeightedTerms,
};

/// Changes in the number of chunks containing each term, applied at once and in term order.
#[derive(Debug, Default)]
pub(super) struct TermCountChanges(BTreeMap<String, i64>);

impl TermCountChanges {
    /// Counts the terms of chunks about to be removed: the document's current chunks.
    pub async fn remove_document(&mut self, tx: &mut Transaction<'static, Postgres>, id: &str) -> StoreResult<()> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as(sql::TERM_COUNTS_OF_DOCUMENT).bind(id).fetch_all(&mut **tx).await?;
        for (term, chunks) in rows {
            *self.0.entry(term).or_default() -= chunks;
        }
        Ok(())
    }

    /// Counts the terms of a chunk about to be added.
    pub fn add(&mut self, terms: &[String]) {
        for term in terms {
            *self.0.entry(term.clone()).or_default() += 1;
        }
    }

    /// Applies the changes, inside the transaction that changed the chunks.
    pub async fn apply(self, tx: &mut Transaction<'static, Postgres>) -> StoreResult<()> {
        let (terms, changes): (Vec<String>, Vec<i64>) = self.0.into_iter().filter(|(_, change)| *change != 0).unzip();
        if !terms.is_empty() {
            sqlx::query(sql::CHANGE_TERM_COUNTS).bind(terms).bind(changes).execute(&mut **tx).await?;
        }
        Ok(())
    }
}

impl PgStore {
    /// Rebuilds the term index from the chunks' text if it was built under another edition of the
    /// term rules than this binary's, or never: in one transaction that holds off chunk writes, so
    /// another process starting at once waits and then finds the index current.
    pub(super) async fn bring_term_index_up_to_date(&self) -> StoreResult<()> {
        let current: Option<String> = sqlx::query_scalar(sql::TERM_INDEX_EDITION).fetch_optional(&self.pool).await?;
        if current.as_deref() == Some(term_index::index_edition().as_str()) {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql::LOCK_TERM_INDEX).execute(&mut *tx).await?;
        let current: Option<String> = sqlx::query_scalar(sql::TERM_INDEX_EDITION).fetch_optional(&mut *tx).await?;
        if term_index::edition_is_current(current.as_deref()) {
            return Ok(());
        }
        sqlx::query(sql::LOCK_CHUNKS_FOR_REBUILD).execute(&mut *tx).await?;
        let mut after = String::new();
        let mut indexed = 0_usize;
        loop {
            let rows: Vec<(String, String)> = sqlx::query_as(sql::CHUNK_TEXTS_AFTER)
                .bind(&after)
                .bind(REBUILD_BATCH as i64)
                .fetch_all(&mut *tx)
                .await?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            after = last.clone();
            indexed += rows.len();
            let indexed: Vec<IndexedChunk> = rows.iter().map(|(_, text)| IndexedChunk::of(text)).collect();
            sqlx::query(sql::SET_CHUNK_TERMS)
                .bind(rows.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
                .bind(indexed.iter().map(IndexedChunk::indexed_terms).collect::<Vec<_>>())
                .bind(indexed.into_iter().map(|chunk| chunk.term_vector).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(sql::CLEAR_TERM_COUNTS).execute(&mut *tx).await?;
        sqlx::query(sql::RECOUNT_TERMS).execute(&mut *tx).await?;
        sqlx::query(sql::CLEAR_POSTINGS).execute(&mut *tx).await?;
        sqlx::query(sql::REBUILD_POSTINGS).execute(&mut *tx).await?;
        sqlx::query(sql::CLEAR_TERM_INDEX_EDITION).execute(&mut *tx).await?;
        sqlx::query(sql::SET_TERM_INDEX_EDITION).bind(term_index::index_edition()).execute(&mut *tx).await?;
        tx.commit().await?;
        term_index::rebuilt(indexed);
        Ok(())
    }
}

/// The term index as the in-process cache reads it: departures and indexed chunks, in one
/// REPEATABLE READ transaction, so that everything read comes from one snapshot.
#[async_trait]
impl TermRows for PgStore {
    async fn read_term_changes(&self, sink: &mut (dyn TermChangeSink + Send)) -> StoreResult<()> {
        let mut tx = self.pool.begin_with(sql::BEGIN_ONE_SNAPSHOT).await?;
        let departures: Vec<(i64, i64)> =
            sqlx::query_as(sql::TERM_DEPARTURES_AFTER).bind(sink.departures_above()).fetch_all(&mut *tx).await?;
        for (number, key) in departures {
            sink.departed(number, key);
        }
        let keys: Vec<i64> =
            sqlx::query_scalar(sql::TERM_KEYS_AFTER).bind(sink.keys_above()).fetch_all(&mut *tx).await?;
        for page in sink.listed(keys).chunks(REBUILD_BATCH) {
            let rows: Vec<(i64, String, String)> =
                sqlx::query_as(sql::TERM_VECTORS_BY_KEY).bind(page).fetch_all(&mut *tx).await?;
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
        false
    }

    async fn settled_marks(&self, age: Duration) -> StoreResult<SettledMarks> {
        let (key, departure): (i64, i64) = sqlx::query_as(sql::SETTLED_TERM_MARKS)
            .bind(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
            .bind(self.bound_now())
            .fetch_one(&self.pool)
            .await?;
        Ok(SettledMarks { key, departure })
    }
}

/// Answered from the in-process term cache, caught up with the database first.
#[async_trait]
impl TermIndex for PgStore {
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

impl PgStore {
    /// [`TermIndex::term_counts`] read from the database, not the cache.
    pub async fn term_counts_in_database(&self, terms: &[String]) -> StoreResult<TermCounts> {
        let mut tx = self.pool.begin().await?;
        let chunk_count: i64 = sqlx::query_scalar(sql::LIBRARY_CHUNK_COUNT).fetch_one(&mut *tx).await?;
        let rows: Vec<(String, i64)> = sqlx::query_as(sql::TERM_FREQUENCIES).bind(terms).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        TermCounts::from_rows(chunk_count, rows)
    }

    /// [`TermIndex::chunks_sharing_terms`] read from the database's postings, not the cache.
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
            let rows: Vec<(String, Option<String>, Option<String>)> =
                sqlx::query_as(sql::CHUNK_TERM_VECTORS).bind(slice).fetch_all(&self.pool).await?;
            for (id, vector, text) in rows {
                found.push(ChunkTerms::from_row(id, vector, text)?);
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl TermPostings for PgStore {
    async fn postings(&self, terms: &[&str]) -> StoreResult<Vec<(String, Vec<i64>)>> {
        Ok(sqlx::query_as(sql::TERM_POSTINGS).bind(terms).fetch_all(&self.pool).await?)
    }

    async fn chunk_ids(&self, keys: &[i64]) -> StoreResult<Vec<(i64, String)>> {
        Ok(sqlx::query_as(sql::CHUNK_IDS_BY_SEQ).bind(keys).fetch_all(&self.pool).await?)
    }
}
