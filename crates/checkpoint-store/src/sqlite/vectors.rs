//! Nearest-neighbour search on SQLite: the in-process HNSW index, caught up by `rowid`.

use async_trait::async_trait;

use super::{SqliteStore, sql};
use crate::error::StoreResult;
use crate::neighbours::{
    self, KeyedChunk, Neighbour, NeighbourQuery, NeighbourSearch, SearchMode, VectorIndexKind, VectorRows,
};
use crate::rows::{KeyedChunkRow, KeyedVectorRow, convert_all};

fn key_list(keys: &[i64]) -> String {
    serde_json::to_string(keys).unwrap_or_else(|_| "[]".to_owned())
}

fn dimension_count(dimensions: usize) -> i64 {
    i64::try_from(dimensions).unwrap_or(i64::MAX)
}

#[async_trait]
impl VectorRows for SqliteStore {
    async fn vector_keys_after(&self, model: &str, dimensions: usize, after: i64) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar(sql::VECTOR_KEYS_AFTER)
            .bind(model)
            .bind(dimension_count(dimensions))
            .bind(after)
            .fetch_all(&self.reader)
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
            .fetch_all(&self.reader)
            .await?;
        convert_all(rows)
    }

    async fn vectors_by_key(&self, keys: &[i64]) -> StoreResult<Vec<(i64, Vec<f32>)>> {
        let rows: Vec<KeyedVectorRow> =
            sqlx::query_as(sql::VECTORS_BY_KEY).bind(key_list(keys)).fetch_all(&self.reader).await?;
        convert_all(rows)
    }

    async fn count_vectors_up_to(&self, model: &str, dimensions: usize, key: i64) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar(sql::COUNT_VECTORS_UP_TO)
            .bind(model)
            .bind(dimension_count(dimensions))
            .bind(key)
            .fetch_one(&self.reader)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn chunks_for_keys(&self, keys: &[i64]) -> StoreResult<Vec<KeyedChunk>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<KeyedChunkRow> =
            sqlx::query_as(sql::CHUNKS_FOR_VECTOR_KEYS).bind(key_list(keys)).fetch_all(&self.reader).await?;
        Ok(rows.into_iter().map(KeyedChunk::from).collect())
    }

    fn keys_follow_commits(&self) -> bool {
        true
    }

    async fn settled_key(&self, model: &str, dimensions: usize, age: std::time::Duration) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(sql::SETTLED_VECTOR_KEY)
            .bind(model)
            .bind(dimension_count(dimensions))
            .bind(self.now() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX / 2))
            .fetch_one(&self.reader)
            .await?)
    }
}

#[async_trait]
impl NeighbourSearch for SqliteStore {
    async fn nearest_chunks(&self, query: NeighbourQuery<'_>) -> StoreResult<Vec<Vec<Neighbour>>> {
        let (model, dimensions) = (query.model, query.dimensions);
        neighbours::search(self, query, |wanted: Vec<usize>, count| {
            let vectors: Vec<Vec<f32>> = wanted.iter().map(|&i| query.vectors[i].clone()).collect();
            async move {
                match query.mode {
                    SearchMode::Exact => neighbours::exact_keys(self, model, dimensions, &vectors, count).await,
                    SearchMode::Approximate => self.indexes.nearest_keys(self, model, dimensions, vectors, count).await,
                }
            }
        })
        .await
    }

    fn vector_index_kind(&self) -> VectorIndexKind {
        VectorIndexKind::InProcess
    }

    async fn settle_indexes(&self) -> StoreResult<()> {
        self.indexes.settle().await
    }

    async fn warm_indexes(&self, model: &str, dimensions: usize) -> StoreResult<()> {
        self.indexes.warm(self, model, dimensions).await
    }
}
