//! The backends the conformance suite runs against, each with a clock the test moves by hand.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use checkpoint_store::{
    DocumentStatus, DocumentStore, EnqueueOptions, Job, JobId, JobKind, JobStore, Lease, LeaseRequest, ManualClock,
    NeighbourSearch, PgStore, PgStoreOptions, RetryPolicy, SqliteStore, SqliteStoreOptions, TermIndex,
};
use serde_json::json;

/// The instant every test starts at: 2026-01-01T00:00:00Z.
pub const START: i64 = 1_767_225_600_000;

/// Delay after every retryable failure in the suite, so schedules are exact.
pub const RETRY_DELAY: Duration = Duration::from_secs(10);

pub const TTL: Duration = Duration::from_secs(60);

/// One store under test and the clock it reads.
pub struct Harness {
    pub name: &'static str,
    pub store: Arc<dyn JobStore>,
    pub docs: Arc<dyn DocumentStore>,
    pub search: Arc<dyn NeighbourSearch>,
    pub terms: Arc<dyn TermIndex>,
    pub clock: ManualClock,
    /// The store's own pool, for tests that must write what the store never would.
    pub raw: RawPool,
    /// The store itself, for what only its concrete type offers.
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    /// Creates the document of an upload named by `number`; returns its id.
    pub async fn create_numbered_document(&self, number: usize) -> String {
        let (document, _) = self
            .docs
            .create_document(checkpoint_store::NewDocument {
                content_hash: format!("book-{number}"),
                file_name: format!("{number}.epub"),
                byte_size: 1,
            })
            .await
            .expect("create document");
        document.id
    }

    /// The SQLite database file under test, for a second store on the same file (another
    /// process, as far as the store can tell); none for PostgreSQL.
    pub fn database_file(&self) -> Option<std::path::PathBuf> {
        matches!(self.backend, Backend::Sqlite(_)).then(|| self._dir.as_ref().map(|dir| dir.path().join("quire.db")))?
    }
}

/// The store under a harness, by its concrete type.
#[derive(Clone)]
pub enum Backend {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

/// The pool under a harness's store.
pub enum RawPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl RawPool {
    /// Runs statements the store would never run, written for this backend.
    pub async fn execute(&self, sql: &'static str) {
        match self {
            RawPool::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            RawPool::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        }
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    }

    /// Puts a document in a state directly, as no caller of the store may (every status write
    /// goes through a job's lease or the transaction that ends the job): for tests that need a
    /// document in a state its jobs would take longer to reach.
    pub async fn set_document_status(&self, id: &str, status: DocumentStatus, error: Option<&str>) {
        let status = <&str>::from(status);
        match self {
            RawPool::Sqlite(pool) => sqlx::query("UPDATE documents SET status = ?1, error = ?2 WHERE id = ?3")
                .bind(status)
                .bind(error)
                .bind(id)
                .execute(pool)
                .await
                .map(drop),
            RawPool::Postgres(pool) => sqlx::query("UPDATE documents SET status = $1, error = $2 WHERE id = $3")
                .bind(status)
                .bind(error)
                .bind(id)
                .execute(pool)
                .await
                .map(drop),
        }
        .unwrap_or_else(|error| panic!("setting document {id} to {status}: {error}"));
    }

    /// The single integer a query written for both backends returns (a count, say).
    pub async fn count(&self, sql: &'static str) -> i64 {
        match self {
            RawPool::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            RawPool::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// Runs statements that may be refused, returning the database's message if they are.
    pub async fn try_execute(&self, sql: &'static str) -> Result<(), String> {
        match self {
            RawPool::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            RawPool::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        }
        .map_err(|error| error.to_string())
    }
}

pub async fn sqlite() -> Harness {
    let dir = tempfile::tempdir().expect("temporary directory");
    let clock = ManualClock::new(START);
    let options = SqliteStoreOptions {
        clock: Arc::new(clock.clone()),
        retry_policy: RetryPolicy::fixed(RETRY_DELAY),
        ..SqliteStoreOptions::default()
    };
    let store = SqliteStore::open(dir.path().join("quire.db"), options).await.expect("open SQLite store");
    let raw = RawPool::Sqlite(store.writer_pool().clone());
    let store = Arc::new(store);
    Harness {
        name: "sqlite",
        store: store.clone(),
        docs: store.clone(),
        search: store.clone(),
        terms: store.clone(),
        backend: Backend::Sqlite(store),
        clock,
        raw,
        _dir: Some(dir),
    }
}

/// Every backend available on this machine: SQLite, and PostgreSQL when
/// `QUIRE_TEST_DATABASE_URL` is set (see [`postgres`]). Each implements both stores.
pub async fn backends() -> Vec<Harness> {
    let mut harnesses = vec![sqlite().await];
    harnesses.extend(postgres().await);
    harnesses
}

/// [`backends`], plus PostgreSQL with pgvector when `QUIRE_TEST_PGVECTOR_URL` names such a
/// server (see [`pgvector`]): the backends of the similarity search.
pub async fn search_backends() -> Vec<Harness> {
    let mut harnesses = backends().await;
    harnesses.extend(pgvector().await);
    harnesses
}

/// The PostgreSQL server with pgvector to test against, from `QUIRE_TEST_PGVECTOR_URL`. Unset:
/// skipped with a notice, except under `CI=true`, where it panics.
pub fn pgvector_url() -> Option<String> {
    static NOTICE: std::sync::Once = std::sync::Once::new();
    server_url("QUIRE_TEST_PGVECTOR_URL", "pgvector", &NOTICE)
}

/// A harness on a PostgreSQL server with pgvector, which the store must use.
pub async fn pgvector() -> Option<Harness> {
    let url = pgvector_url()?;
    let harness = postgres_at(&url, "pgvector", true).await;
    Some(harness)
}

/// The PostgreSQL server to test against, from `QUIRE_TEST_DATABASE_URL`.
///
/// Unset: PostgreSQL is skipped with a notice (once per test binary), except under `CI=true`,
/// where a missing server must not pass silently, so it panics.
pub fn postgres_url() -> Option<String> {
    static NOTICE: std::sync::Once = std::sync::Once::new();
    server_url("QUIRE_TEST_DATABASE_URL", "PostgreSQL", &NOTICE)
}

/// The URL in `variable`; unset or blank, the `suite` is skipped with a notice printed once, except
/// under `CI=true`, where a missing server must not pass silently, so it panics.
fn server_url(variable: &str, suite: &str, notice: &std::sync::Once) -> Option<String> {
    let url = std::env::var(variable).ok().filter(|url| !url.trim().is_empty());
    if url.is_none() {
        assert!(
            std::env::var("CI").map_or(true, |ci| ci != "true"),
            "CI=true but {variable} is not set: the {suite} suite must run in CI"
        );
        notice.call_once(|| skip_notice(&format!("notice: {variable} is not set; skipping {suite}")));
    }
    url
}

/// A schema name no other harness uses, in this process or any other:
/// `quire_test_<unix seconds>_<pid>_<counter>_<random>`. The creation time lets
/// [`sweep_old_schemas`] find leftovers.
pub fn test_schema() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("quire_test_{secs}_{}_{n}_{:08x}", std::process::id(), rand::random::<u32>())
}

/// A harness on its own schema of the PostgreSQL database, or `None` when PostgreSQL is
/// skipped (see [`postgres_url`]). A URL that is set but unreachable panics, CI or not: whoever
/// set it expects the suite to run there.
///
/// Schemas are not dropped when the harness is: a `Drop` cannot await, and the suite creates
/// a few dozen small schemas per run. Instead the first harness of each test binary drops test
/// schemas older than an hour, so leftovers never pile up while running suites are safe.
pub async fn postgres() -> Option<Harness> {
    let url = postgres_url()?;
    // This harness tests the path without pgvector, whatever the server offers.
    Some(postgres_at(&url, "postgres", false).await)
}

async fn postgres_at(url: &str, name: &'static str, use_pgvector: bool) -> Harness {
    let url = url.to_owned();
    sweep_old_schemas(&url).await;
    let clock = ManualClock::new(START);
    let options = PgStoreOptions {
        clock: Some(Arc::new(clock.clone())),
        schema: test_schema(),
        retry_policy: RetryPolicy::fixed(RETRY_DELAY),
        acquire_timeout: Duration::from_secs(5),
        use_pgvector,
        ..PgStoreOptions::default()
    };
    let store = PgStore::connect(&url, options)
        .await
        .unwrap_or_else(|error| panic!("{url} is set for the {name} suite but the store cannot be opened: {error}"));
    assert_eq!(store.has_pgvector(), use_pgvector, "{url}: the {name} suite expects pgvector in use: {use_pgvector}");
    let raw = RawPool::Postgres(store.pool().clone());
    let store = Arc::new(store);
    Harness {
        name,
        store: store.clone(),
        docs: store.clone(),
        search: store.clone(),
        terms: store.clone(),
        backend: Backend::Postgres(store),
        clock,
        raw,
        _dir: None,
    }
}

/// Drops test schemas created more than an hour ago, once per test binary. Failures are
/// ignored: sweeping is housekeeping, not part of any test.
async fn sweep_old_schemas(url: &str) {
    use sqlx::{Connection, Row};
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let Ok(mut conn) = sqlx::PgConnection::connect(url).await else { return };
    let Ok(rows) = sqlx::query("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'quire\\_test\\_%'")
        .fetch_all(&mut conn)
        .await
    else {
        return;
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    for row in rows {
        let name: String = row.get(0);
        let created: Option<u64> = name.split('_').nth(2).and_then(|secs| secs.parse().ok());
        let valid = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid && created.is_some_and(|created| created + 3600 < now) {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {name} CASCADE")))
                .execute(&mut conn)
                .await;
        }
    }
    let _ = conn.close().await;
}

impl Harness {
    /// A harness over a store opened by the test itself (on the system clock; `clock` is unused).
    pub fn over_sqlite(store: Arc<SqliteStore>) -> Harness {
        Harness {
            name: "sqlite",
            raw: RawPool::Sqlite(store.writer_pool().clone()),
            store: store.clone(),
            docs: store.clone(),
            search: store.clone(),
            terms: store.clone(),
            backend: Backend::Sqlite(store),
            clock: ManualClock::new(START),
            _dir: None,
        }
    }

    /// Applies the store's migrations again, as a new process opening the database would.
    pub async fn migrate(&self) {
        match &self.backend {
            Backend::Sqlite(store) => store.migrate().await,
            Backend::Postgres(store) => store.migrate().await,
        }
        .expect("migrate");
    }

    pub async fn enqueue(&self, document: &str) -> Job {
        self.enqueue_with(document, EnqueueOptions::default()).await
    }

    pub async fn enqueue_with(&self, document: &str, options: EnqueueOptions) -> Job {
        let options = EnqueueOptions { document_id: Some(document.to_owned()), ..options };
        self.store
            .enqueue(JobKind::ProcessDocument, json!({ "document_id": document }), options)
            .await
            .expect("enqueue")
            .job
    }

    pub async fn lease(&self, owner: &str, max_jobs: u32) -> Vec<Job> {
        self.lease_for(owner, max_jobs, TTL).await
    }

    pub async fn lease_for(&self, owner: &str, max_jobs: u32, ttl: Duration) -> Vec<Job> {
        let request =
            LeaseRequest { owner, max_jobs, ttl, kinds: &[JobKind::ProcessDocument, JobKind::DetectConnections] };
        self.store.lease(request).await.expect("lease")
    }

    pub async fn lease_one(&self, owner: &str) -> Lease {
        let jobs = self.lease(owner, 1).await;
        assert_eq!(jobs.len(), 1, "{}: expected one job to lease", self.name);
        jobs[0].lease().unwrap()
    }

    pub async fn job(&self, id: JobId) -> Job {
        self.store.job(id).await.expect("read job").expect("job exists")
    }
}

/// Prints a skip notice past the test harness's output capture, so that a skipped suite is
/// visible in a plain `cargo test` run.
fn skip_notice(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}
