//! The two schemas state the same rules: every CHECK constraint is named, both backends list the
//! same (table, name) pairs, and the rules that migration 0009 added or tightened refuse the rows
//! they describe on both. Migration 0009 rebuilds SQLite's tables; a populated database keeps
//! every row, key, index and trigger through it. Migration 0011 gives jobs queued before it the
//! document their payload named.

mod common;

use std::collections::BTreeSet;

use checkpoint_store::{SQLITE_MIGRATOR, SqliteStore, SqliteStoreOptions};
use common::{Backend, Harness, backends, postgres, sqlite};
use sqlx::sqlite::SqliteConnectOptions;

/// A table and the name of one of its CHECK constraints.
type NamedCheck = (String, String);

/// The CHECK constraints of an SQLite schema, read from each table's `CREATE TABLE` text: the
/// named ones, and the tables holding one without a name.
async fn sqlite_checks(pool: &sqlx::SqlitePool) -> (BTreeSet<NamedCheck>, Vec<String>) {
    let tables: Vec<(String, String)> =
        sqlx::query_as("SELECT tbl_name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL")
            .fetch_all(pool)
            .await
            .expect("read sqlite_master");
    let mut named = BTreeSet::new();
    let mut unnamed = Vec::new();
    for (table, sql) in tables {
        let words = sql_words(&sql);
        for (at, word) in words.iter().enumerate() {
            if !word.eq_ignore_ascii_case("check") {
                continue;
            }
            match at.checked_sub(2).map(|before| &words[before]) {
                Some(keyword) if keyword.eq_ignore_ascii_case("constraint") => {
                    named.insert((table.clone(), words[at - 1].clone()));
                }
                _ => unnamed.push(table.clone()),
            }
        }
    }
    (named, unnamed)
}

/// The identifiers and keywords of `sql`, without its comments and string literals (where the
/// word "check" may appear without being a constraint). Quoted identifiers lose their quotes.
fn sql_words(sql: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let in_word = c.is_ascii_alphanumeric() || c == '_';
        if in_word {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        match c {
            '-' if chars.peek() == Some(&'-') => {
                chars.by_ref().take_while(|&c| c != '\n').for_each(drop);
            }
            // A doubled quote inside a literal ends one literal and opens the next: harmless here.
            '\'' => chars.by_ref().take_while(|&c| c != '\'').for_each(drop),
            _ => {}
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The CHECK constraints of the tables in the store's PostgreSQL schema.
async fn postgres_checks(pool: &sqlx::PgPool, schema: &str) -> BTreeSet<NamedCheck> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, con.conname::text FROM pg_constraint con \
         JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE con.contype = 'c' AND n.nspname = $1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("read pg_constraint");
    rows.into_iter().collect()
}

fn sqlite_store(h: &Harness) -> &SqliteStore {
    match &h.backend {
        Backend::Sqlite(store) => store,
        Backend::Postgres(_) => panic!("{}: not SQLite", h.name),
    }
}

#[tokio::test]
async fn both_backends_name_the_same_check_constraints_on_the_same_tables() {
    let lite = sqlite().await;
    let (sqlite_named, unnamed) = sqlite_checks(sqlite_store(&lite).writer_pool()).await;
    assert!(unnamed.is_empty(), "SQLite tables with an unnamed CHECK: {unnamed:?}");
    for rule in ["jobs_finished_iff_terminal", "jobs_locked_iff_processing", "jobs_processing_has_started"] {
        assert!(sqlite_named.contains(&("jobs".to_owned(), rule.to_owned())), "SQLite lacks {rule}: {sqlite_named:?}");
    }

    let Some(pg) = postgres().await else { return };
    let Backend::Postgres(store) = &pg.backend else { unreachable!("postgres() is PostgreSQL") };
    let postgres_named = postgres_checks(store.pool(), store.schema()).await;
    let only_sqlite: Vec<_> = sqlite_named.difference(&postgres_named).collect();
    let only_postgres: Vec<_> = postgres_named.difference(&sqlite_named).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "CHECK constraints only on SQLite: {only_sqlite:?}; only on PostgreSQL: {only_postgres:?}"
    );
}

#[test]
fn comments_and_literals_hide_no_check_and_invent_none() {
    let sql = "CREATE TABLE \"t\" (\n  -- a CHECK in a comment\n  s TEXT CHECK (s <> 'check'),\n  \
               CONSTRAINT t_named CHECK (s IS NOT NULL)\n)";
    assert_eq!(
        sql_words(sql),
        ["CREATE", "TABLE", "t", "s", "TEXT", "CHECK", "s", "CONSTRAINT", "t_named", "CHECK", "s", "IS", "NOT", "NULL"]
    );
}

/// Runs `sql` on every backend, after `setup`, and expects it refused under the constraint `name`.
async fn refused_on_every_backend(setup: &'static str, sql: &'static str, name: &str) {
    for h in backends().await {
        h.enqueue("d1").await;
        h.raw.execute(setup).await;
        let error = h.raw.try_execute(sql).await.expect_err(&format!("{}: {sql} must be refused", h.name));
        assert!(error.contains(name), "{}: {sql} refused, but not by {name}: {error}", h.name);
    }
}

const NO_SETUP: &str = "SELECT 1";

#[tokio::test]
async fn a_processing_job_without_a_start_time_is_refused() {
    refused_on_every_backend(
        NO_SETUP,
        "UPDATE jobs SET status = 'processing', lock_owner = 'w', lock_until = 1, started_at = NULL",
        "jobs_processing_has_started",
    )
    .await;
    // The same row with a start time is a processing job like any other.
    for h in backends().await {
        h.enqueue("d1").await;
        h.raw.execute("UPDATE jobs SET status = 'processing', lock_owner = 'w', lock_until = 1, started_at = 1").await;
    }
}

#[tokio::test]
async fn a_job_that_is_not_processing_with_a_lock_owner_alone_is_refused() {
    refused_on_every_backend(NO_SETUP, "UPDATE jobs SET lock_owner = 'w'", "jobs_locked_iff_processing").await;
    refused_on_every_backend(NO_SETUP, "UPDATE jobs SET lock_until = 1", "jobs_locked_iff_processing").await;
}

#[tokio::test]
async fn a_cancel_request_on_a_job_that_is_not_processing_is_refused() {
    refused_on_every_backend(
        NO_SETUP,
        "UPDATE jobs SET cancel_requested_at = 1",
        "jobs_cancel_requested_while_processing",
    )
    .await;
    // On a processing job it is an operator's request like any other.
    for h in backends().await {
        h.enqueue("d1").await;
        h.raw
            .execute(
                "UPDATE jobs SET status = 'processing', lock_owner = 'w', lock_until = 1, started_at = 1, \
                 cancel_requested_at = 1",
            )
            .await;
    }
}

#[tokio::test]
async fn a_negative_lease_token_is_refused() {
    refused_on_every_backend(NO_SETUP, "UPDATE jobs SET lease_token = -1", "jobs_lease_token_check").await;
}

const ONE_DOCUMENT: &str = "INSERT INTO documents (id, content_hash, file_name, byte_size, created_at, updated_at) \
                            VALUES ('d1', 'h1', 'd1.epub', 1, 0, 0)";

#[tokio::test]
async fn a_heading_path_that_is_not_an_array_is_refused() {
    refused_on_every_backend(
        ONE_DOCUMENT,
        "INSERT INTO chunks (id, document_id, chunk_index, heading_path, text, start_offset, end_offset, \
         content_hash) VALUES ('c1', 'd1', 0, '{\"h\": 1}', 't', 0, 1, 'c')",
        "chunks_heading_path_check",
    )
    .await;
}

#[tokio::test]
async fn a_connection_from_a_chunk_to_itself_is_refused() {
    refused_on_every_backend(
        "INSERT INTO documents (id, content_hash, file_name, byte_size, created_at, updated_at) \
         VALUES ('d1', 'h1', 'd1.epub', 1, 0, 0); \
         INSERT INTO chunks (id, document_id, chunk_index, heading_path, text, start_offset, end_offset, \
         content_hash) VALUES ('c1', 'd1', 0, '[]', 't', 0, 1, 'c')",
        "INSERT INTO connections (source_chunk_id, target_chunk_id, engine, score, reason, created_at) \
         VALUES ('c1', 'c1', 'e', 1, 'r', 0)",
        "connections_distinct_chunks",
    )
    .await;
}

#[tokio::test]
async fn text_that_is_not_json_is_refused_in_every_json_column() {
    for sql in [
        "UPDATE jobs SET payload = 'not json'",
        "UPDATE jobs SET metadata = 'not json'",
        "UPDATE jobs SET result = 'not json'",
    ] {
        for h in backends().await {
            h.enqueue("d1").await;
            // SQLite names the rule; PostgreSQL's jsonb type refuses the text before any rule runs.
            let error = h.raw.try_execute(sql).await.expect_err(&format!("{}: {sql} must be refused", h.name));
            if h.name == "sqlite" {
                let column = sql.split_whitespace().nth(3).expect("the column");
                assert!(error.contains(&format!("jobs_{column}_check")), "{sql}: {error}");
            }
        }
    }
}

/// Rows written under migrations 0001…0008, one of each kind the rebuild must carry: a purged
/// job's id (AUTOINCREMENT must not hand it out again), a pending job with a stray lock owner
/// (the weaker rule let it through; the copy clears it), a chunk with its term vector, a
/// connection, a cached vector.
const ROWS_BEFORE_0009: &str = "
    INSERT INTO jobs (id, kind, payload, run_at, timeout_ms, created_at, updated_at)
        VALUES (1, 'process_document', '{\"document_id\": \"d1\"}', 0, 1000, 0, 0),
               (2, 'process_document', '{\"document_id\": \"d2\"}', 0, 1000, 0, 0);
    UPDATE jobs SET lock_owner = 'gone' WHERE id = 1;
    DELETE FROM jobs WHERE id = 2;
    INSERT INTO documents (id, content_hash, file_name, byte_size, created_at, updated_at)
        VALUES ('d1', 'h1', 'd1.epub', 1, 0, 0);
    INSERT INTO chunks (rowid, id, document_id, chunk_index, heading_path, text, start_offset, end_offset,
                        content_hash)
        VALUES (7, 'c7', 'd1', 0, '[\"One\"]', 'alpha beta', 0, 10, 'x7'),
               (9, 'c9', 'd1', 1, '[]', 'beta gamma', 10, 20, 'x9');
    INSERT INTO connections (source_chunk_id, target_chunk_id, engine, score, reason, created_at)
        VALUES ('c7', 'c9', 'lexical', 0.5, 'beta', 0);
    INSERT INTO embedding_cache (rowid, content_hash, model, dimensions, vector, created_at)
        VALUES (5, 'x7', 'm', 1, x'0000803f', 0);
";

#[tokio::test]
async fn migration_0009_carries_every_row_key_index_and_trigger_of_a_populated_database() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("quire.db");
    let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true).foreign_keys(true);
    let before = sqlx::SqlitePool::connect_with(options).await.expect("open the database");
    SQLITE_MIGRATOR.run_to(8, &before).await.expect("migrations 0001…0008");
    sqlx::raw_sql(ROWS_BEFORE_0009).execute(&before).await.expect("rows before 0009");
    before.close().await;

    let store = SqliteStore::open(&path, SqliteStoreOptions::default()).await.expect("open, applying 0009");
    let pool = store.writer_pool();
    let rows = |sql: &'static str| async move {
        sqlx::query_as::<_, (String,)>(sql)
            .fetch_all(pool)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
            .into_iter()
            .map(|(row,)| row)
            .collect::<Vec<_>>()
    };

    assert_eq!(rows("SELECT id || ':' || coalesce(lock_owner, '-') FROM jobs").await, ["1:-"]);
    assert_eq!(rows("SELECT id || ':' || status FROM documents").await, ["d1:pending"]);
    assert_eq!(rows("SELECT rowid || ':' || id FROM chunks ORDER BY rowid").await, ["7:c7", "9:c9"]);
    assert_eq!(rows("SELECT source_chunk_id || '>' || target_chunk_id FROM connections").await, ["c7>c9"]);
    assert_eq!(rows("SELECT rowid || ':' || content_hash FROM embedding_cache").await, ["5:x7"]);

    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO jobs (kind, run_at, timeout_ms, created_at, updated_at) \
         VALUES ('process_document', 0, 1000, 0, 0) RETURNING id",
    )
    .fetch_one(pool)
    .await
    .expect("a new job");
    assert_eq!(id, 3, "the purged job's id is not handed out again");

    let mut objects = rows("SELECT type || ' ' || name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").await;
    objects.sort();
    for expected in [
        "index chunks_content_hash",
        "index connections_target",
        "index embedding_cache_model_key",
        "index jobs_active_unique_key",
        "index jobs_claim",
        "index jobs_claim_kind",
        "index jobs_document",
        "index jobs_processing_lock_until",
        "index jobs_processing_owner",
        "index jobs_status_kind",
        "trigger chunks_leave_term_index",
    ] {
        assert!(objects.iter().any(|object| object == expected), "{expected} is missing: {objects:?}");
    }
    assert!(!objects.iter().any(|object| object.contains("_aligned")), "{objects:?}");

    // The foreign keys point at the renamed tables, and the term index follows a leaving chunk.
    sqlx::raw_sql("DELETE FROM documents").execute(pool).await.expect("delete the document");
    assert!(rows("SELECT id FROM chunks").await.is_empty());
    assert!(rows("SELECT source_chunk_id FROM connections").await.is_empty());
    assert!(rows("SELECT CAST(chunk AS TEXT) FROM chunk_term_vectors").await.is_empty());
    let violations = rows("SELECT \"table\" FROM pragma_foreign_key_check").await;
    assert!(violations.is_empty(), "{violations:?}");
}

/// A job queued before migration 0011, when the store read a job's document from its payload.
const JOB_QUEUED_BEFORE_0011: &str = "
    INSERT INTO jobs (kind, payload, run_at, timeout_ms, created_at, updated_at)
        VALUES ('process_document', '{\"document_id\": \"d-old\"}', 0, 1000, 0, 0),
               ('process_document', '{\"document_id\": 7}', 0, 1000, 0, 0)";

#[tokio::test]
async fn jobs_queued_before_the_document_column_keep_their_document() {
    // SQLite: the rows are written under migrations 0001…0010, then the store opens the file.
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("quire.db");
    let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true).foreign_keys(true);
    let before = sqlx::SqlitePool::connect_with(options).await.expect("open the database");
    SQLITE_MIGRATOR.run_to(10, &before).await.expect("migrations 0001…0010");
    sqlx::raw_sql(JOB_QUEUED_BEFORE_0011).execute(&before).await.expect("jobs before 0011");
    before.close().await;
    let store = SqliteStore::open(&path, SqliteStoreOptions::default()).await.expect("open, applying 0011");
    assert_documents_of_old_jobs(&store, "sqlite").await;

    // PostgreSQL's migrations are idempotent: a row without the column's value, as every row was
    // before the column existed, gets it when the migration runs again.
    if let Some(h) = postgres().await {
        h.raw.execute(JOB_QUEUED_BEFORE_0011).await;
        h.raw.execute(include_str!("../../../migrations/postgres/0011_job_documents.sql")).await;
        assert_documents_of_old_jobs(h.store.as_ref(), h.name).await;
    }
}

async fn assert_documents_of_old_jobs(store: &dyn checkpoint_store::JobStore, backend: &str) {
    let filter = checkpoint_store::JobFilter { document_id: Some("d-old".into()), ..Default::default() };
    let listed = store.list_jobs(&filter).await.expect("jobs of d-old");
    assert_eq!(listed.len(), 1, "{backend}");
    assert_eq!(listed[0].document_id(), Some("d-old"), "{backend}");
    assert_eq!(listed[0].processed_document(), Some("d-old"), "{backend}");
    // A payload whose document_id is not a string names no document.
    let all = store.list_jobs(&checkpoint_store::JobFilter::default()).await.expect("every job");
    assert_eq!(all.iter().filter(|job| job.document_id().is_none()).count(), 1, "{backend}: {all:?}");
}
