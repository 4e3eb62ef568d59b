//! The jobs table's lookups go through their indexes, checked on the statements the stores run:
//! a document's jobs through `jobs_document`, the claim of one kind (while embedding work is
//! paused) through `jobs_claim_kind`, both without reading the whole table or sorting it.

mod common;

use checkpoint_store::planned_statements::{postgres, sqlite};
use common::{Backend, backends};

/// How many pending jobs of the kind not asked for sit in front of the one asked for.
const QUEUED: i64 = 20_000;

/// The lines of SQLite's plan for `statement`, bound with `parameters` (text).
async fn sqlite_plan(pool: &sqlx::SqlitePool, statement: &str, parameters: &[Option<&str>]) -> String {
    let explain = format!("EXPLAIN QUERY PLAN {statement}");
    let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(explain));
    for parameter in parameters {
        query = query.bind(*parameter);
    }
    let rows = query.fetch_all(pool).await.unwrap_or_else(|error| panic!("{statement}: {error}"));
    rows.into_iter().map(|(_, _, _, detail)| detail).collect::<Vec<_>>().join("\n")
}

/// PostgreSQL's plan for `statement` with these parameters, after `ANALYZE`.
async fn postgres_plan<'q>(
    pool: &sqlx::PgPool,
    statement: &str,
    bind: impl FnOnce(
        sqlx::query::QueryScalar<'q, sqlx::Postgres, String, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryScalar<'q, sqlx::Postgres, String, sqlx::postgres::PgArguments>,
) -> String {
    let explain = format!("EXPLAIN {statement}");
    let query = bind(sqlx::query_scalar(sqlx::AssertSqlSafe(explain)));
    query.fetch_all(pool).await.unwrap_or_else(|error| panic!("{statement}: {error}")).join("\n")
}

#[tokio::test]
async fn a_documents_jobs_and_a_one_kind_claim_are_read_through_their_indexes() {
    for h in backends().await {
        match &h.backend {
            Backend::Sqlite(store) => {
                let pool = store.writer_pool();
                sqlx::query(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
                     INSERT INTO jobs (kind, payload, document_id, run_at, timeout_ms, created_at, updated_at) \
                     SELECT 'process_document', json_object('document_id', 'd' || i), 'd' || i, 0, 1000, 0, 0 \
                     FROM n",
                )
                .bind(QUEUED)
                .execute(pool)
                .await
                .unwrap();

                let claim = sqlite_plan(
                    pool,
                    sqlite::LEASE_ONE_KIND,
                    &[Some("w"), Some("1"), Some("1000"), Some("detect_connections"), Some("8")],
                )
                .await;
                assert!(claim.contains("INDEX jobs_claim_kind (kind=?)"), "{claim}");
                assert!(!claim.contains("SCAN jobs") && !claim.contains("TEMP B-TREE"), "{claim}");

                let of_document =
                    sqlite_plan(pool, sqlite::LIST_JOBS_OF_DOCUMENT, &[None, None, Some("d7"), Some("100"), None])
                        .await;
                assert!(of_document.contains("INDEX jobs_document"), "{of_document}");
                assert!(!of_document.contains("SCAN jobs") && !of_document.contains("TEMP B-TREE"), "{of_document}");
                // The claim of every kind keeps its own index.
                let claim_all = sqlite_plan(
                    pool,
                    sqlite::LEASE,
                    &[Some("w"), Some("1"), Some("1000"), Some(r#"["process_document"]"#), Some("8")],
                )
                .await;
                assert!(claim_all.lines().any(|line| line.ends_with("INDEX jobs_claim")), "{claim_all}");
            }
            Backend::Postgres(store) => {
                let pool = store.pool();
                let indexes: Vec<String> =
                    sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 ORDER BY 1")
                        .bind(store.schema())
                        .fetch_all(pool)
                        .await
                        .unwrap();
                for index in ["jobs_claim_kind", "jobs_document"] {
                    assert!(indexes.iter().any(|name| name == index), "{index} missing: {indexes:?}");
                }
                sqlx::query(
                    "INSERT INTO jobs (kind, payload, document_id, run_at, timeout_ms, created_at, updated_at) \
                     SELECT 'process_document', jsonb_build_object('document_id', 'd' || i), 'd' || i, \
                            0, 1000, 0, 0 \
                     FROM generate_series(1, $1::bigint) AS i",
                )
                .bind(QUEUED)
                .execute(pool)
                .await
                .unwrap();
                sqlx::query("ANALYZE jobs").execute(pool).await.unwrap();

                let claim = postgres_plan(pool, postgres::LEASE_ONE_KIND, |query| {
                    query.bind("w").bind(Some(1_i64)).bind(1000_i64).bind("detect_connections").bind(8_i64)
                })
                .await;
                assert!(claim.contains("jobs_claim_kind"), "{claim}");
                assert!(!claim.contains("Seq Scan on jobs") && !claim.contains("Sort"), "{claim}");

                let of_document = postgres_plan(pool, postgres::LIST_JOBS_OF_DOCUMENT, |query| {
                    query.bind(None::<String>).bind(None::<String>).bind("d7").bind(100_i64).bind(None::<i64>)
                })
                .await;
                assert!(of_document.contains("jobs_document"), "{of_document}");
                assert!(!of_document.contains("Seq Scan on jobs"), "{of_document}");
            }
        }
    }
}
