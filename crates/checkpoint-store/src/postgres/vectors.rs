//! Nearest-neighbour search on PostgreSQL: pgvector's HNSW index when the extension is there,
//! the in-process index otherwise.
//!
//! **With pgvector**, `embedding_cache` gets a `vector` column beside the BYTEA one (both
//! backends keep BYTEA as the encoding of record). The column is filled from BYTEA before a
//! query, for rows that lack it, so writers need not know whether pgvector is in use. Each
//! (model, dimension count) gets its own partial HNSW index over `embedding::vector(N)` with
//! cosine ops: dimensions never mix, and no filter runs after the index scan, which would
//! silently return fewer than k rows. The model name is written into the index's predicate and
//! the query as a quoted literal, because a partial index is only used when the planner can prove
//! the query's condition implies it, which a bind parameter never does.
//!
//! pgvector indexes up to 2,000 dimensions; larger embeddings use the in-process index.

use std::collections::HashSet;
use std::fmt::Write as _;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};
use vector_index::Scored;

use super::{PgStore, sql};
use crate::codec::decode_vector;
use crate::error::{StoreError, StoreResult};
use crate::neighbours::{
    self, KeyedChunk, Neighbour, NeighbourQuery, NeighbourSearch, SearchMode, VectorIndexKind, VectorRows,
};
use crate::rows::{KeyedChunkRow, KeyedVectorRow, convert_all};

/// The most dimensions pgvector's HNSW index takes for `vector`.
const PGVECTOR_MAX_DIMENSIONS: usize = 2000;

/// Rows whose `vector` column is filled per statement.
const SYNC_PAGE: i64 = 2048;

/// pgvector as this store uses it: the schema the extension lives in, and the (model, dimension)
/// pairs whose index this process has made sure of.
#[derive(Debug, Default)]
pub(crate) struct Pgvector {
    /// The extension's schema (a plain identifier, checked).
    pub schema: String,
    indexed: std::sync::Mutex<HashSet<(String, usize)>>,
}

impl Pgvector {
    pub fn new(schema: String) -> Pgvector {
        Pgvector { schema, indexed: Default::default() }
    }
}

fn dimension_count(dimensions: usize) -> i64 {
    i64::try_from(dimensions).unwrap_or(i64::MAX)
}

/// A SQL string literal: single quotes doubled. With `standard_conforming_strings` (on since
/// PostgreSQL 9.1 and required by this store) backslashes are plain characters.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A stable index name for a (model, dimensions) pair.
fn index_name(model: &str, dimensions: usize) -> String {
    let hash = model.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("embedding_cache_hnsw_{hash:016x}_{dimensions}")
}

/// pgvector's text form of a vector, `[1,2.5,…]`.
fn vector_text(vector: &[f32]) -> String {
    let mut text = String::with_capacity(vector.len() * 12 + 2);
    text.push('[');
    for (i, value) in vector.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let _ = write!(text, "{value}");
    }
    text.push(']');
    text
}

impl PgStore {
    /// Installs pgvector (if the server offers it and it is not there yet) and adds the
    /// `vector` column. Returns the extension's schema, or `None` when it cannot be used, which
    /// is logged: similarity search then runs on the in-process index.
    pub(crate) async fn enable_pgvector(&self) -> StoreResult<Option<String>> {
        if !self.pgvector_available {
            tracing::info!(schema = %self.schema, "pgvector is not available on the server: similarity search uses an in-process HNSW index");
            return Ok(None);
        }
        // Several processes may start at once: the loser of a race sees the winner's result.
        for _ in 0..2 {
            let attempt: StoreResult<String> = async {
                sqlx::query(sql::CREATE_PGVECTOR).execute(&self.pool).await?;
                let schema: String = sqlx::query_scalar(sql::PGVECTOR_SCHEMA).fetch_one(&self.pool).await?;
                super::check_schema_name(&schema)?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "ALTER TABLE embedding_cache ADD COLUMN IF NOT EXISTS embedding {schema}.vector; \
                     CREATE INDEX IF NOT EXISTS embedding_cache_unsynced ON embedding_cache (model, dimensions, seq) \
                     WHERE embedding IS NULL"
                )))
                .execute(&self.pool)
                .await?;
                Ok(schema)
            }
            .await;
            match attempt {
                Ok(schema) => {
                    tracing::info!(schema = %self.schema, extension_schema = %schema, "similarity search uses pgvector's HNSW index");
                    return Ok(Some(schema));
                }
                Err(error) => tracing::debug!(%error, "enabling pgvector failed; trying once more"),
            }
        }
        let error = sqlx::query(sql::CREATE_PGVECTOR).execute(&self.pool).await.err();
        tracing::warn!(error = ?error.map(|e| e.to_string()), schema = %self.schema, "pgvector is available but cannot be enabled: similarity search uses an in-process HNSW index");
        Ok(None)
    }

    /// Fills the `vector` column of the model's rows that lack it.
    async fn sync_pgvector(&self, pgvector: &Pgvector, model: &str, dimensions: usize) -> StoreResult<()> {
        let update = format!(
            "UPDATE embedding_cache e SET embedding = v.text::{}.vector \
             FROM UNNEST($1::bigint[], $2::text[]) AS v(seq, text) \
             WHERE e.seq = v.seq AND e.embedding IS NULL",
            pgvector.schema
        );
        loop {
            let rows = sqlx::query(sql::UNSYNCED_VECTORS)
                .bind(model)
                .bind(dimension_count(dimensions))
                .bind(SYNC_PAGE)
                .fetch_all(&self.pool)
                .await?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut keys = Vec::with_capacity(rows.len());
            let mut texts = Vec::with_capacity(rows.len());
            for row in &rows {
                keys.push(row.try_get::<i64, _>(0)?);
                texts.push(vector_text(&decode_vector(row.try_get(1)?)?));
            }
            sqlx::query(AssertSqlSafe(update.clone())).bind(&keys).bind(&texts).execute(&self.pool).await?;
            if rows.len() < SYNC_PAGE as usize {
                return Ok(());
            }
        }
    }

    /// Creates the (model, dimensions) pair's HNSW index unless this process already did.
    async fn ensure_pgvector_index(&self, pgvector: &Pgvector, model: &str, dimensions: usize) -> StoreResult<()> {
        let pair = (model.to_owned(), dimensions);
        if pgvector.indexed.lock().unwrap_or_else(|p| p.into_inner()).contains(&pair) {
            return Ok(());
        }
        let ext = &pgvector.schema;
        let statement = format!(
            "CREATE INDEX IF NOT EXISTS {name} ON embedding_cache \
             USING hnsw ((embedding::{ext}.vector({dimensions})) {ext}.vector_cosine_ops) \
             WHERE model = {model} AND dimensions = {dimensions}",
            name = index_name(model, dimensions),
            model = literal(model),
        );
        if let Err(error) = sqlx::raw_sql(AssertSqlSafe(statement.clone())).execute(&self.pool).await {
            // Two processes creating the same index: the loser fails on the catalog's unique
            // name; the index exists either way, which a second try confirms.
            tracing::debug!(%error, "creating the HNSW index failed; trying once more");
            sqlx::raw_sql(AssertSqlSafe(statement)).execute(&self.pool).await?;
        }
        pgvector.indexed.lock().unwrap_or_else(|p| p.into_inner()).insert(pair);
        Ok(())
    }

    /// The best `count` keys per query through pgvector's index. A large batch is cut into
    /// slices searched at once on their own connections: one statement runs in one server
    /// process, and an HNSW search is CPU work, so a book's thousand queries in one statement
    /// would use one of the server's cores.
    async fn pgvector_keys(
        &self,
        pgvector: &Pgvector,
        model: &str,
        dimensions: usize,
        queries: &[Vec<f32>],
        count: usize,
    ) -> StoreResult<Vec<Vec<Scored>>> {
        self.sync_pgvector(pgvector, model, dimensions).await?;
        self.ensure_pgvector_index(pgvector, model, dimensions).await?;
        let ext = &pgvector.schema;
        let distance =
            format!("e.embedding::{ext}.vector({dimensions}) OPERATOR({ext}.<=>) q.v::{ext}.vector({dimensions})");
        let statement = format!(
            "SELECT q.ord, n.seq, n.score FROM UNNEST($1::text[]) WITH ORDINALITY AS q(v, ord) \
             CROSS JOIN LATERAL (SELECT e.seq, 1 - ({distance}) AS score FROM embedding_cache e \
                 WHERE e.model = {model} AND e.dimensions = {dimensions} \
                 ORDER BY {distance} LIMIT $2) n",
            model = literal(model),
        );
        // Degenerate queries (zero or non-finite) find nothing, as with the other indexes.
        let usable: Vec<usize> = (0..queries.len()).filter(|&i| vector_index::unit(&queries[i]).is_some()).collect();
        let slices = parallel_slices(usable.len(), self.pool.options().get_max_connections());
        let slice_len = usable.len().div_ceil(slices).max(1);
        let searches = usable.chunks(slice_len).map(|slice| {
            let texts: Vec<String> = slice.iter().map(|&i| vector_text(&queries[i])).collect();
            self.pgvector_slice(&statement, texts, count)
        });
        let answers = futures_util::future::try_join_all(searches).await?;
        let mut found: Vec<Vec<Scored>> = vec![Vec::new(); queries.len()];
        for (slice, rows) in usable.chunks(slice_len).zip(answers) {
            for (ordinal, key, score) in rows {
                let Some(&query_index) = usize::try_from(ordinal - 1).ok().and_then(|i| slice.get(i)) else {
                    return Err(StoreError::Corrupt(format!("pgvector returned query ordinal {ordinal}")));
                };
                let score = (score as f32).clamp(-1.0, 1.0);
                if score.is_finite()
                    && let Ok(key) = u64::try_from(key)
                {
                    found[query_index].push(Scored { score, key });
                }
            }
        }
        for list in &mut found {
            list.sort_by(|a, b| b.cmp(a));
        }
        Ok(found)
    }

    /// One slice of a batch: `(query ordinal from 1, key, score)` rows.
    async fn pgvector_slice(
        &self,
        statement: &str,
        texts: Vec<String>,
        count: usize,
    ) -> StoreResult<Vec<(i64, i64, f64)>> {
        let mut tx = self.pool.begin().await?;
        // The HNSW scan keeps `ef_search` candidates; at least as many as asked for. A generic
        // plan of this prepared statement (PostgreSQL's choice after five runs) knows neither the
        // LIMIT nor the query vector and scans the table instead of the index: 257 ms against a
        // few at 100k chunks for a single `quire search`. Each run is planned with its values.
        let ef_search = count.clamp(64, 1000);
        let settings = format!("SET LOCAL hnsw.ef_search = {ef_search}; SET LOCAL plan_cache_mode = force_custom_plan");
        sqlx::raw_sql(AssertSqlSafe(settings)).execute(&mut *tx).await?;
        let rows: Vec<(i64, i64, f64)> = sqlx::query_as(AssertSqlSafe(statement.to_owned()))
            .bind(&texts)
            .bind(i64::try_from(count).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows)
    }
}

/// How many slices a batch of `queries` pgvector searches is cut into: one per
/// [`QUERIES_PER_SLICE`], at most [`MAX_PARALLEL_SLICES`], and never more than half the pool's
/// connections, so that a search leaves the queue its connections.
fn parallel_slices(queries: usize, max_connections: u32) -> usize {
    let by_pool = usize::try_from(max_connections / 2).unwrap_or(1).max(1);
    queries.div_ceil(QUERIES_PER_SLICE).clamp(1, MAX_PARALLEL_SLICES.min(by_pool))
}

/// The fewest queries worth a connection of their own.
const QUERIES_PER_SLICE: usize = 128;

/// The most connections one batch of pgvector searches uses at once.
const MAX_PARALLEL_SLICES: usize = 4;

#[async_trait]
impl VectorRows for PgStore {
    async fn vector_keys_after(&self, model: &str, dimensions: usize, after: i64) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar(sql::VECTOR_KEYS_AFTER)
            .bind(model)
            .bind(dimension_count(dimensions))
            .bind(after)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn vectors_after(
        &self,
        model: &str,
        dimensions: usize,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, Vec<f32>)>> {
        let rows: Vec<KeyedVectorRow> = sqlx::query_as(sql::VECTORS_AFTER)
            .bind(model)
            .bind(dimension_count(dimensions))
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        convert_all(rows)
    }

    async fn vectors_by_key(&self, keys: &[i64]) -> StoreResult<Vec<(i64, Vec<f32>)>> {
        let rows: Vec<KeyedVectorRow> = sqlx::query_as(sql::VECTORS_BY_KEY).bind(keys).fetch_all(&self.pool).await?;
        convert_all(rows)
    }

    async fn count_vectors_up_to(&self, model: &str, dimensions: usize, key: i64) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar(sql::COUNT_VECTORS_UP_TO)
            .bind(model)
            .bind(dimension_count(dimensions))
            .bind(key)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn chunks_for_keys(&self, keys: &[i64]) -> StoreResult<Vec<KeyedChunk>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<KeyedChunkRow> =
            sqlx::query_as(sql::CHUNKS_FOR_VECTOR_KEYS).bind(keys).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(KeyedChunk::from).collect())
    }

    fn keys_follow_commits(&self) -> bool {
        false
    }

    async fn settled_key(&self, model: &str, dimensions: usize, age: std::time::Duration) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(sql::SETTLED_VECTOR_KEY)
            .bind(model)
            .bind(dimension_count(dimensions))
            .bind(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
            .bind(self.bound_now())
            .fetch_one(&self.pool)
            .await?)
    }
}

#[async_trait]
impl NeighbourSearch for PgStore {
    async fn nearest_chunks(&self, query: NeighbourQuery<'_>) -> StoreResult<Vec<Vec<Neighbour>>> {
        let (model, dimensions) = (query.model, query.dimensions);
        let pgvector = self.pgvector.as_deref().filter(|_| dimensions <= PGVECTOR_MAX_DIMENSIONS);
        neighbours::search(self, query, |wanted: Vec<usize>, count| {
            let vectors: Vec<Vec<f32>> = wanted.iter().map(|&i| query.vectors[i].clone()).collect();
            async move {
                match (query.mode, pgvector) {
                    (SearchMode::Exact, _) => neighbours::exact_keys(self, model, dimensions, &vectors, count).await,
                    (SearchMode::Approximate, Some(pgvector)) => {
                        self.pgvector_keys(pgvector, model, dimensions, &vectors, count).await
                    }
                    (SearchMode::Approximate, None) => {
                        self.indexes.nearest_keys(self, model, dimensions, vectors, count).await
                    }
                }
            }
        })
        .await
    }

    fn vector_index_kind(&self) -> VectorIndexKind {
        if self.pgvector.is_some() { VectorIndexKind::Pgvector } else { VectorIndexKind::InProcess }
    }

    /// pgvector keeps its own index; the in-process ones (without pgvector, or for models with
    /// more dimensions than pgvector indexes) have nothing to settle unless they were asked.
    async fn settle_indexes(&self) -> StoreResult<()> {
        self.indexes.settle().await
    }

    async fn warm_indexes(&self, model: &str, dimensions: usize) -> StoreResult<()> {
        if self.pgvector.is_some() && dimensions <= PGVECTOR_MAX_DIMENSIONS {
            return Ok(());
        }
        self.indexes.warm(self, model, dimensions).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_quotes_and_vectors_round_trip_as_text() {
        assert_eq!(literal("text-embedding-3-small"), "'text-embedding-3-small'");
        assert_eq!(literal("o'brien\\"), "'o''brien\\'");
        assert_eq!(vector_text(&[1.0, -0.5, 1e-8]), "[1,-0.5,0.00000001]");
        let name = index_name("a'; DROP TABLE x; --", 384);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
        assert_ne!(index_name("m", 384), index_name("m", 1536));
    }
}
