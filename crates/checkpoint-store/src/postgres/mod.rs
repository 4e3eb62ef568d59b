//! The PostgreSQL store: the job queue and the documents, for several machines sharing one
//! database. The document half lives in `documents.rs`, similarity search in `vectors.rs`; this
//! file is the connection set-up and the `JobStore` implementation, one cohesive thing (each
//! method a transaction of the queue), which is why it runs past 500 lines.
//!
//! Every object lives in a schema of the store's own (`quire` by default): each connection starts
//! with `search_path` set to it, so the statements in [`sql`] and the migrations in
//! `migrations/postgres/` never name it, and sqlx's migration table lands there too.
//!
//! **Time:** without an injected clock, every statement takes "now" from the database server
//! (`now()`), so that workers on machines whose clocks disagree still agree on which leases have
//! expired. With an injected clock (tests), its time is bound instead. Both paths go through the
//! same statements: each takes "now" as a nullable parameter (see [`sql`]). Times are stored as
//! BIGINT milliseconds, as in SQLite, so both backends produce identical [`Job`] values.
//!
//! Claims use `FOR UPDATE SKIP LOCKED`, so concurrent workers and reapers never wait on each
//! other's rows; statements that lock several rows lock them in id order, so they never
//! deadlock. A lost connection is dropped by the pool and replaced on the next acquire
//! (`test_before_acquire` catches connections that died while idle).
//!
//! **Similarity search** (`vectors.rs`) runs on pgvector's HNSW index when the server offers the
//! extension, and on the in-process HNSW index otherwise; connect logs which, once.
//! [`PgStore::vector_index_kind`](crate::NeighbourSearch::vector_index_kind) reports it. Vectors
//! are stored as BYTEA either way, the encoding both backends share.

mod documents;
pub(crate) mod sql;
mod terms;
mod vectors;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::query::QueryAs;
use sqlx::{Connection, Postgres, Transaction};
use stage_machine::{Checkpoint, UnixMillis};

use crate::cancellation;
use crate::clock::{Clock, millis};
use crate::codec::{fenced, integer, is_unique_violation};
use crate::documents::DocumentStatus;
use crate::error::{StoreError, StoreResult};
use crate::job_signal::{self, JobSignal};
use crate::job_store::JobStore;
use crate::jobs::{
    AttemptsEnded, Cancellation, DEFAULT_MAX_ATTEMPTS, EnqueueOptions, Enqueued, ErrorKind, FailOutcome, Failure,
    FollowUp, HeartbeatReport, Job, JobAttempt, JobFilter, JobId, JobKind, Lease, LeaseRequest, QueueCount, ReaperPass,
    Recovery, RecoveryReason,
};
use crate::neighbours::{InProcessIndexes, VectorSnapshots};
use crate::recovery;
use crate::retry_policy::RetryPolicy;
use crate::rows::{
    AttemptRow, AttemptsEndedRow, CountRow, HeldJobRow, JobRow, ReaperPassRow, RenewedRow, convert_all,
    heartbeat_report,
};
use crate::term_cache::InProcessTerms;

/// The migrations of the PostgreSQL schema, embedded in the binary. They name no schema: run
/// them on a connection whose `search_path` points at the store's schema (as
/// [`PgStore::connect`] and [`PgStore::migrate`] do).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// How many rows the reaper takes back per transaction, so that one pass never holds many row
/// locks for long.
const RECOVERY_BATCH: i64 = 256;

/// How many times enqueue retries when the job holding its unique key finishes between the
/// conflicting insert and the read of that job. Each retry needs another finish in that window.
const ENQUEUE_ATTEMPTS: usize = 16;

/// Settings of a PostgreSQL store, with defaults that suit a worker.
#[derive(Debug, Clone)]
pub struct PgStoreOptions {
    /// Where "now" comes from. `None` (the default) uses the database server's clock, so that
    /// every machine agrees; tests inject a [`ManualClock`](crate::ManualClock).
    pub clock: Option<Arc<dyn Clock>>,
    /// The schema holding the store's tables (created if missing). A lowercase SQL identifier:
    /// ASCII letters, digits and `_`, not starting with a digit, at most 63 bytes.
    pub schema: String,
    /// Backoff between attempts after retryable failures and timeouts.
    pub retry_policy: RetryPolicy,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long an operation waits for a connection (including reconnecting after the server
    /// went away) before failing.
    pub acquire_timeout: Duration,
    /// Whether to use pgvector for similarity search when the server offers it (the default).
    /// Off, the in-process index is used, as without the extension.
    pub use_pgvector: bool,
    /// Where the in-process vector indexes (used without pgvector) and the term cache keep their
    /// snapshots.
    pub vector_snapshots: VectorSnapshots,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        PgStoreOptions {
            clock: None,
            schema: "quire".to_owned(),
            retry_policy: RetryPolicy::default(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            use_pgvector: true,
            vector_snapshots: None,
        }
    }
}

/// The job store and document store on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    schema: String,
    clock: Option<Arc<dyn Clock>>,
    retry_policy: RetryPolicy,
    /// Whether the server offers the pgvector extension, checked once at connect time.
    pgvector_available: bool,
    /// pgvector, when similarity search uses it.
    pgvector: Option<Arc<vectors::Pgvector>>,
    /// The in-process nearest-neighbour indexes, used without pgvector.
    indexes: Arc<InProcessIndexes>,
    /// The term index in memory: a cache of the database's, shared by the store's clones.
    term_cache: Arc<InProcessTerms>,
    /// Raised on each notification of a job become pending in this store's schema.
    job_signal: JobSignal,
    /// Whether a connection listens for those notifications (opened by the first subscriber).
    listening: Arc<std::sync::atomic::AtomicBool>,
}

impl PgStore {
    /// Listens for notifications of pending jobs on a connection of its own, raising the job
    /// signal for each one of this store's schema, until the store is gone; reconnects after a
    /// lost connection (raising the signal then too: notifications sent meanwhile are lost).
    fn start_listening(&self) {
        if self.listening.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let (pool, schema, signal) = (self.pool.clone(), self.schema.clone(), self.job_signal.downgrade());
        tokio::spawn(async move {
            while signal.strong_count() > 0 {
                if let Err(error) = listen_for_pending_jobs(&pool, &schema, &signal).await {
                    tracing::debug!(%error, "job notifications: the listening connection failed; listening again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
    }

    /// [`JobStore::save_checkpoint`] on the pool or inside a transaction.
    async fn save_checkpoint_on<'e>(
        &self,
        executor: impl sqlx::PgExecutor<'e>,
        lease: Lease,
        checkpoint: &Checkpoint,
    ) -> StoreResult<()> {
        let result = sqlx::query(sql::SAVE_CHECKPOINT)
            .bind(lease.job_id.0)
            .bind(lease.token)
            .bind(checkpoint.to_metadata())
            .bind(self.bound_now())
            .execute(executor)
            .await?;
        fenced(lease, result.rows_affected())
    }

    /// [`JobStore::enqueue`] on one connection, inside a transaction or not.
    async fn enqueue_on(&self, connection: &mut PgConnection, follow_up: FollowUp) -> StoreResult<Enqueued> {
        let FollowUp { kind, payload, options } = follow_up;
        let max_attempts = options.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1);
        let timeout = options.timeout.unwrap_or_else(|| kind.default_timeout());
        // Under READ COMMITTED, in a transaction or not, each statement sees what committed
        // before it started. The insert waits for a concurrent insert of the same key and then does
        // nothing; the read that follows then sees that job. If the job finished in between,
        // the key is free again: go round.
        for _ in 0..ENQUEUE_ATTEMPTS {
            let inserted: Option<JobRow> = sqlx::query_as(sql::INSERT_JOB)
                .bind(<&str>::from(kind))
                .bind(&payload)
                .bind(options.priority)
                .bind(integer(max_attempts))
                .bind(millis(options.delay))
                .bind(millis(timeout).max(1))
                .bind(&options.unique_key)
                .bind(self.bound_now())
                .bind(&options.document_id)
                .fetch_optional(&mut *connection)
                .await?;
            if let Some(row) = inserted {
                return Ok(Enqueued { job: row.try_into()?, deduplicated: false });
            }
            // Only the unique key can conflict, so it is set.
            let key = options.unique_key.as_deref().unwrap_or_default();
            let existing: Option<JobRow> =
                sqlx::query_as(sql::ACTIVE_JOB_BY_UNIQUE_KEY).bind(key).fetch_optional(&mut *connection).await?;
            if let Some(row) = existing {
                return Ok(Enqueued { job: row.try_into()?, deduplicated: true });
            }
        }
        Err(StoreError::InvalidState {
            job_id: JobId(0),
            status: "contended".to_owned(),
            reason: format!(
                "unique key {:?} kept changing hands; gave up after {ENQUEUE_ATTEMPTS} attempts",
                options.unique_key.unwrap_or_default()
            ),
        })
    }

    /// Connects to the database named by a `postgres://…` URL, creates the schema if needed and
    /// applies pending migrations.
    pub async fn connect(url: &str, options: PgStoreOptions) -> StoreResult<PgStore> {
        check_schema_name(&options.schema)?;
        let connect = PgConnectOptions::from_str(url)?
            .application_name("quire")
            .options([("search_path", options.schema.as_str())]);
        // One direct connection first: the pool retries failed connects until its acquire
        // timeout and then reports only "timed out", while this reports the cause (refused,
        // authentication failed, no such database) at once.
        PgConnection::connect_with(&connect).await?.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            // A connection that died while idle (server restart, network cut) is found out and
            // replaced before it is handed out, instead of failing the caller's statement.
            .test_before_acquire(true)
            .idle_timeout(Duration::from_secs(10 * 60))
            .max_lifetime(Duration::from_secs(30 * 60))
            .connect_with(connect)
            .await?;
        let pgvector_available: bool = sqlx::query_scalar(sql::PGVECTOR_AVAILABLE).fetch_one(&pool).await?;
        let mut store = PgStore {
            pool,
            schema: options.schema,
            clock: options.clock,
            retry_policy: options.retry_policy,
            pgvector_available: pgvector_available && options.use_pgvector,
            pgvector: None,
            term_cache: Arc::new(InProcessTerms::new(options.vector_snapshots.clone())),
            indexes: Arc::new(InProcessIndexes::new(options.vector_snapshots)),
            job_signal: JobSignal::new(),
            listening: Arc::default(),
        };
        store.migrate().await?;
        store.pgvector = store.enable_pgvector().await?.map(|schema| Arc::new(vectors::Pgvector::new(schema)));
        Ok(store)
    }

    /// Whether similarity search runs on pgvector (the server offers the extension, the store
    /// was allowed to use it, and enabling it succeeded at connect time).
    pub fn has_pgvector(&self) -> bool {
        self.pgvector.is_some()
    }

    /// Creates the schema if needed, applies pending migrations and brings the term index up to
    /// date (also done by `connect`); applying twice is a no-op. Safe to run from several processes at once: sqlx's migrator
    /// holds an advisory lock, and the schema is created under it.
    pub async fn migrate(&self) -> StoreResult<()> {
        let mut migrator = sqlx::migrate::Migrator::with_migrations(MIGRATOR.iter().cloned().collect());
        // The name was checked by `connect`: a plain identifier, safe to interpolate.
        migrator.create_schema(self.schema.clone());
        migrator.run(&self.pool).await?;
        self.bring_term_index_up_to_date().await
    }

    /// The pool, for the other stores that share this database. Its connections have
    /// `search_path` set to the store's schema.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The injected clock, if any (`None`: the server's clock).
    pub fn clock(&self) -> Option<Arc<dyn Clock>> {
        self.clock.clone()
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The injected clock's time, or `None` to let the server decide.
    fn bound_now(&self) -> Option<UnixMillis> {
        self.clock.as_ref().map(|clock| clock.now())
    }

    /// "Now" for a transaction of several statements, which needs it on the client (messages,
    /// durations, backoff): the injected clock's time, or the server's transaction time.
    async fn now_in(&self, conn: &mut PgConnection) -> StoreResult<UnixMillis> {
        match self.bound_now() {
            Some(now) => Ok(now),
            None => Ok(sqlx::query_scalar(sql::NOW).bind(None::<i64>).fetch_one(conn).await?),
        }
    }

    /// Takes back one held (and locked) job inside `tx`: requeued after a delay while attempts
    /// remain, dead-lettered otherwise.
    /// A dead-lettered `process_document` job's document is marked failed in `tx` too. Returns
    /// what was done, or `None` when the job was no longer held.
    async fn take_back(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        job: &Job,
        reason: RecoveryReason,
        now: UnixMillis,
    ) -> StoreResult<Option<Recovery>> {
        let plan = recovery::plan(job, reason, now, &self.retry_policy);
        let changed = if plan.dead {
            let dead = sqlx::query(sql::DEAD_LETTER_HELD)
                .bind(job.id.0)
                .bind(job.lease_token)
                .bind(&plan.message)
                .bind(<&str>::from(plan.error_kind))
                .bind(Some(now))
                .execute(&mut **tx)
                .await?;
            if dead.rows_affected() > 0 {
                self.fail_document_of_ended_job(tx, job, &plan.message, now).await?;
            }
            dead
        } else {
            sqlx::query(sql::REQUEUE_HELD)
                .bind(job.id.0)
                .bind(job.lease_token)
                .bind(millis(plan.delay))
                .bind(&plan.message)
                .bind(<&str>::from(plan.error_kind))
                .bind(Some(now))
                .bind(0_i32)
                .execute(&mut **tx)
                .await?
        };
        Ok((changed.rows_affected() > 0).then(|| recovery::report(job, reason, now, &plan)))
    }

    /// Pages through the rows `select` finds and takes each back, one bounded transaction per
    /// page, until none is left. `select` locks its rows with `SKIP LOCKED`, so several reapers
    /// can run at once: each takes back the rows the others are not holding.
    async fn take_back_all(&self, select: &'static str, reason: RecoveryReason) -> StoreResult<Vec<Recovery>> {
        let mut recoveries = Vec::new();
        loop {
            let mut tx = self.pool.begin().await?;
            let now = self.now_in(&mut tx).await?;
            let rows: Vec<JobRow> = sqlx::query_as(select).bind(now).bind(RECOVERY_BATCH).fetch_all(&mut *tx).await?;
            let page = rows.len();
            for row in rows {
                let job = Job::try_from(row)?;
                recoveries.extend(self.take_back(&mut tx, &job, reason, now).await?);
            }
            tx.commit().await?;
            if page < RECOVERY_BATCH as usize {
                return Ok(recoveries);
            }
        }
    }

    /// Marks the document of a `process_document` job that will not run again (dead-lettered,
    /// or cancelled by an operator) `failed` with `reason`, inside the transaction that ends the
    /// job (job row, then document row: the documented lock order), so the document's status
    /// never says a book is on its way when no job will bring it. A job whose document is gone
    /// (never stored, in tests) ends all the same.
    async fn fail_document_of_ended_job(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        job: &Job,
        reason: &str,
        now: UnixMillis,
    ) -> StoreResult<()> {
        if let Some(document) = job.processed_document() {
            sqlx::query(sql::SET_DOCUMENT_STATUS)
                .bind(document)
                .bind(<&str>::from(DocumentStatus::Failed))
                .bind(reason)
                .bind(Some(now))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Runs `requeue`, an operator's statement that makes job `id` pending again and returns
    /// it, and sets the document the job processes back to `pending`, in one transaction (job
    /// row, then document row: the documented lock order). `refusal` says why when the
    /// statement found no job it applies to.
    async fn requeue_by_operator<'q>(
        &self,
        id: JobId,
        requeue: QueryAs<'q, Postgres, JobRow, PgArguments>,
        refusal: &str,
    ) -> StoreResult<Job> {
        let mut tx = self.pool.begin().await?;
        let row = match requeue.fetch_optional(&mut *tx).await {
            Ok(row) => row,
            Err(error) if is_unique_violation(&error) => {
                tx.rollback().await?;
                return Err(self.unique_key_taken(id, error).await);
            }
            Err(error) => return Err(error.into()),
        };
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(self.not_applicable(id, refusal).await);
        };
        let job = Job::try_from(row)?;
        if let Some(document) = job.processed_document() {
            // A job whose document is gone (never stored, in tests) is requeued all the same.
            sqlx::query(sql::SET_DOCUMENT_STATUS)
                .bind(document)
                .bind(<&str>::from(DocumentStatus::Pending))
                .bind(None::<&str>)
                .bind(Some(job.updated_at))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(job)
    }

    /// The refusal of a requeue of job `id` that failed with `error` on the index of active
    /// unique keys: which job holds the key. If that job finished meanwhile, the database's own
    /// error is returned, and running the command again succeeds.
    async fn unique_key_taken(&self, id: JobId, error: sqlx::Error) -> StoreError {
        let holder: Result<Option<(String, i64)>, _> =
            sqlx::query_as(sql::UNIQUE_KEY_HOLDER).bind(id.0).fetch_optional(&self.pool).await;
        match holder {
            Ok(Some((unique_key, holder))) => {
                StoreError::UniqueKeyTaken { job_id: id, unique_key, holder: JobId(holder) }
            }
            Ok(None) => error.into(),
            Err(lookup) => lookup.into(),
        }
    }

    async fn not_applicable(&self, id: JobId, reason: &str) -> StoreError {
        match self.job(id).await {
            Ok(Some(job)) => {
                StoreError::InvalidState { job_id: id, status: job.status.to_string(), reason: reason.to_owned() }
            }
            Ok(None) => StoreError::JobNotFound(id),
            Err(error) => error,
        }
    }
}

#[async_trait]
impl JobStore for PgStore {
    async fn enqueue(&self, kind: JobKind, payload: Value, options: EnqueueOptions) -> StoreResult<Enqueued> {
        let mut connection = self.pool.acquire().await?;
        self.enqueue_on(&mut connection, FollowUp { kind, payload, options }).await
    }

    async fn lease(&self, request: LeaseRequest<'_>) -> StoreResult<Vec<Job>> {
        if request.max_jobs == 0 || request.kinds.is_empty() {
            return Ok(Vec::new());
        }
        let kinds: Vec<&str> = request.kinds.iter().map(|&kind| kind.into()).collect();
        let query = match request.one_kind() {
            Some(kind) => sqlx::query_as(sql::LEASE_ONE_KIND)
                .bind(request.owner)
                .bind(self.bound_now())
                .bind(millis(request.ttl))
                .bind(<&str>::from(kind)),
            None => sqlx::query_as(sql::LEASE)
                .bind(request.owner)
                .bind(self.bound_now())
                .bind(millis(request.ttl))
                .bind(kinds),
        };
        let rows: Vec<JobRow> = query.bind(i64::from(request.max_jobs)).fetch_all(&self.pool).await?;
        let mut jobs: Vec<Job> = convert_all(rows)?;
        // RETURNING has no defined order; hand jobs out in claim order.
        jobs.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)).then(a.id.cmp(&b.id)));
        Ok(jobs)
    }

    async fn heartbeat(&self, owner: &str, leases: &[Lease], ttl: Duration) -> StoreResult<HeartbeatReport> {
        if leases.is_empty() {
            return Ok(HeartbeatReport::default());
        }
        let ids: Vec<i64> = leases.iter().map(|lease| lease.job_id.0).collect();
        let tokens: Vec<i64> = leases.iter().map(|lease| lease.token).collect();
        let renewed: Vec<RenewedRow> = sqlx::query_as(sql::HEARTBEAT)
            .bind(owner)
            .bind(self.bound_now())
            .bind(millis(ttl))
            .bind(&ids)
            .bind(&tokens)
            .fetch_all(&self.pool)
            .await?;
        Ok(heartbeat_report(leases, &renewed))
    }

    async fn start_clock(&self, lease: Lease) -> StoreResult<()> {
        let result = sqlx::query(sql::START_CLOCK)
            .bind(lease.job_id.0)
            .bind(lease.token)
            .bind(self.bound_now())
            .execute(&self.pool)
            .await?;
        fenced(lease, result.rows_affected())
    }

    async fn save_checkpoint(&self, lease: Lease, checkpoint: &Checkpoint) -> StoreResult<()> {
        self.save_checkpoint_on(&self.pool, lease, checkpoint).await
    }

    async fn save_checkpoint_and_enqueue(
        &self,
        lease: Lease,
        checkpoint: &Checkpoint,
        follow_up: FollowUp,
    ) -> StoreResult<Enqueued> {
        let mut tx = self.pool.begin().await?;
        self.save_checkpoint_on(&mut *tx, lease, checkpoint).await?;
        let enqueued = self.enqueue_on(&mut tx, follow_up).await?;
        tx.commit().await?;
        Ok(enqueued)
    }

    async fn complete(&self, lease: Lease, result: Option<Value>) -> StoreResult<()> {
        let outcome = sqlx::query(sql::COMPLETE)
            .bind(lease.job_id.0)
            .bind(lease.token)
            .bind(result)
            .bind(self.bound_now())
            .execute(&self.pool)
            .await?;
        fenced(lease, outcome.rows_affected())
    }

    async fn fail(&self, lease: Lease, error: &str, failure: Failure) -> StoreResult<FailOutcome> {
        let mut tx = self.pool.begin().await?;
        let held: Option<HeldJobRow> = sqlx::query_as(sql::HELD_JOB)
            .bind(lease.job_id.0)
            .bind(lease.token)
            .bind(self.bound_now())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(HeldJobRow { job, now }) = held else {
            return Err(StoreError::LeaseLost { job_id: lease.job_id });
        };
        let job = Job::try_from(job)?;
        let outcome = if failure == Failure::Permanent || job.attempts >= job.max_attempts {
            sqlx::query(sql::DEAD_LETTER_HELD)
                .bind(lease.job_id.0)
                .bind(lease.token)
                .bind(error)
                .bind(<&str>::from(match failure {
                    Failure::Permanent => ErrorKind::Permanent,
                    Failure::Retryable => ErrorKind::Retryable,
                }))
                .bind(Some(now))
                .execute(&mut *tx)
                .await?;
            self.fail_document_of_ended_job(&mut tx, &job, error, now).await?;
            FailOutcome::Dead
        } else {
            let delay = millis(self.retry_policy.delay_after(job.attempts));
            sqlx::query(sql::REQUEUE_HELD)
                .bind(lease.job_id.0)
                .bind(lease.token)
                .bind(delay)
                .bind(error)
                .bind(<&str>::from(ErrorKind::Retryable))
                .bind(Some(now))
                .bind(0_i32)
                .execute(&mut *tx)
                .await?;
            FailOutcome::Retrying { run_at: now + delay }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn postpone(&self, lease: Lease, delay: Duration, reason: &str) -> StoreResult<()> {
        let result = sqlx::query(sql::REQUEUE_HELD)
            .bind(lease.job_id.0)
            .bind(lease.token)
            .bind(millis(delay))
            .bind(reason)
            .bind(None::<&str>)
            .bind(self.bound_now())
            .bind(1_i32)
            .execute(&self.pool)
            .await?;
        fenced(lease, result.rows_affected())
    }

    async fn release(&self, owner: &str, leases: &[Lease]) -> StoreResult<Vec<JobId>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = leases.iter().map(|lease| lease.job_id.0).collect();
        let tokens: Vec<i64> = leases.iter().map(|lease| lease.token).collect();
        let released = sqlx::query_scalar::<_, i64>(sql::RELEASE)
            .bind(owner)
            .bind(&ids)
            .bind(self.bound_now())
            .bind(&tokens)
            .fetch_all(&self.pool)
            .await?;
        Ok(released.into_iter().map(JobId).collect())
    }

    async fn recover_stale(&self) -> StoreResult<Vec<Recovery>> {
        self.take_back_all(sql::EXPIRED_LEASES, RecoveryReason::LeaseExpired).await
    }

    async fn enforce_timeouts(&self) -> StoreResult<Vec<Recovery>> {
        self.take_back_all(sql::TIMED_OUT, RecoveryReason::TimedOut).await
    }

    async fn job(&self, id: JobId) -> StoreResult<Option<Job>> {
        let row: Option<JobRow> = sqlx::query_as(sql::JOB_BY_ID).bind(id.0).fetch_optional(&self.pool).await?;
        row.map(Job::try_from).transpose()
    }

    async fn job_attempts(&self, id: JobId) -> StoreResult<Vec<JobAttempt>> {
        let rows: Vec<AttemptRow> = sqlx::query_as(sql::JOB_ATTEMPTS).bind(id.0).fetch_all(&self.pool).await?;
        convert_all(rows)
    }

    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>> {
        let statement = if filter.document_id.is_some() { sql::LIST_JOBS_OF_DOCUMENT } else { sql::LIST_JOBS };
        let rows: Vec<JobRow> = sqlx::query_as(statement)
            .bind(filter.status.map(<&str>::from))
            .bind(filter.kind.map(<&str>::from))
            .bind(&filter.document_id)
            .bind(i64::from(filter.limit.unwrap_or(100)))
            .bind(filter.before.map(|id| id.0))
            .fetch_all(&self.pool)
            .await?;
        convert_all(rows)
    }

    async fn counts(&self) -> StoreResult<Vec<QueueCount>> {
        let rows: Vec<CountRow> = sqlx::query_as(sql::COUNTS).fetch_all(&self.pool).await?;
        convert_all(rows)
    }

    async fn attempts_ended(&self, since: UnixMillis, period: Duration) -> StoreResult<Vec<AttemptsEnded>> {
        let rows: Vec<AttemptsEndedRow> =
            sqlx::query_as(sql::ATTEMPTS_ENDED).bind(since).bind(millis(period).max(1)).fetch_all(&self.pool).await?;
        convert_all(rows)
    }

    async fn record_reaper_pass(&self, worker: &str, requeued: u32, dead_lettered: u32) -> StoreResult<()> {
        sqlx::query(sql::RECORD_REAPER_PASS)
            .bind(worker)
            .bind(self.bound_now())
            .bind(i64::from(requeued))
            .bind(i64::from(dead_lettered))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn last_reaper_pass(&self) -> StoreResult<Option<ReaperPass>> {
        let row: Option<ReaperPassRow> = sqlx::query_as(sql::LAST_REAPER_PASS).fetch_optional(&self.pool).await?;
        row.map(ReaperPass::try_from).transpose()
    }

    async fn stale_jobs(&self, silent_for: Option<Duration>) -> StoreResult<Vec<Job>> {
        let rows: Vec<JobRow> = sqlx::query_as(sql::EXPIRED_AND_SILENT_FOR)
            .bind(silent_for.map(millis))
            .bind(self.bound_now())
            .fetch_all(&self.pool)
            .await?;
        convert_all(rows)
    }

    async fn take_back_stale(&self, jobs: &[JobId], silent_for: Option<Duration>) -> StoreResult<Vec<Recovery>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = jobs.iter().map(|id| id.0).collect();
        let mut tx = self.pool.begin().await?;
        let now = self.now_in(&mut tx).await?;
        // Locked rows are skipped: a worker writing to its job right now is alive.
        let locked: Vec<JobRow> = sqlx::query_as(sql::LOCK_JOBS).bind(&ids).fetch_all(&mut *tx).await?;
        let locked: Vec<Job> = convert_all(locked)?;
        let mut recoveries = Vec::new();
        // In the caller's order, like SQLite; each job at most once.
        let mut seen = std::collections::HashSet::new();
        for id in jobs {
            let Some(job) = locked.iter().find(|job| job.id == *id) else { continue };
            if !seen.insert(*id) || !recovery::operator_may_take_back(job, silent_for, now) {
                continue;
            }
            let Some(taken) = self.take_back(&mut tx, job, RecoveryReason::Operator, now).await? else {
                continue;
            };
            recoveries.push(taken);
        }
        tx.commit().await?;
        Ok(recoveries)
    }

    async fn retry_dead(&self, id: JobId) -> StoreResult<Job> {
        let retry = sqlx::query_as(sql::RETRY_DEAD).bind(id.0).bind(self.bound_now());
        self.requeue_by_operator(id, retry, "only dead-lettered jobs can be retried").await
    }

    async fn purge_dead(&self, older_than: Duration) -> StoreResult<u64> {
        let result =
            sqlx::query(sql::PURGE_DEAD).bind(millis(older_than)).bind(self.bound_now()).execute(&self.pool).await?;
        Ok(result.rows_affected())
    }

    async fn requeue_with_checkpoint(&self, id: JobId, checkpoint: &Checkpoint) -> StoreResult<Job> {
        let requeue = sqlx::query_as(sql::REQUEUE_WITH_CHECKPOINT)
            .bind(id.0)
            .bind(checkpoint.to_metadata())
            .bind(self.bound_now());
        self.requeue_by_operator(id, requeue, "a processing job cannot be requeued; wait for it or run `quire clean`")
            .await
    }

    async fn cancel(&self, id: JobId) -> StoreResult<Cancellation> {
        let mut tx = self.pool.begin().await?;
        let now = self.now_in(&mut tx).await?;
        let row: Option<JobRow> = sqlx::query_as(sql::JOB_FOR_UPDATE).bind(id.0).fetch_optional(&mut *tx).await?;
        let job = Job::try_from(row.ok_or(StoreError::JobNotFound(id))?)?;
        let cancellation = match cancellation::plan(&job)? {
            cancellation::Plan::AtOnce => {
                let row: JobRow = sqlx::query_as(sql::CANCEL_PENDING)
                    .bind(id.0)
                    .bind(cancellation::REASON)
                    .bind(Some(now))
                    .fetch_one(&mut *tx)
                    .await?;
                let job = Job::try_from(row)?;
                self.fail_document_of_ended_job(&mut tx, &job, cancellation::REASON, now).await?;
                Cancellation::Cancelled(job)
            }
            cancellation::Plan::Request => {
                let row: JobRow =
                    sqlx::query_as(sql::REQUEST_CANCEL).bind(id.0).bind(Some(now)).fetch_one(&mut *tx).await?;
                Cancellation::Requested(Job::try_from(row)?)
            }
        };
        tx.commit().await?;
        Ok(cancellation)
    }

    async fn cancel_held(&self, lease: Lease) -> StoreResult<Job> {
        let mut tx = self.pool.begin().await?;
        let now = self.now_in(&mut tx).await?;
        let row: Option<JobRow> = sqlx::query_as(sql::CANCEL_HELD)
            .bind(lease.job_id.0)
            .bind(lease.token)
            .bind(cancellation::REASON)
            .bind(Some(now))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::LeaseLost { job_id: lease.job_id });
        };
        let job = Job::try_from(row)?;
        self.fail_document_of_ended_job(&mut tx, &job, cancellation::REASON, now).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn job_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.start_listening();
        Some(self.job_signal.subscribe())
    }
}

/// Refuses schema names that would need quoting: the name is written into `search_path` and
/// into `CREATE SCHEMA`, and a plain lowercase identifier needs no escaping in either.
fn check_schema_name(schema: &str) -> StoreResult<()> {
    let mut chars = schema.chars();
    let valid = schema.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StoreError::Database(sqlx::Error::Configuration(
            format!("invalid schema name {schema:?}: use lowercase ASCII letters, digits and _ (at most 63)").into(),
        )))
    }
}

/// One listening connection's life: returns `Ok` once the store is gone, an error when the
/// connection is.
async fn listen_for_pending_jobs(
    pool: &PgPool,
    schema: &str,
    signal: &std::sync::Weak<tokio::sync::watch::Sender<u64>>,
) -> Result<(), sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(job_signal::CHANNEL).await?;
    // Jobs that became pending while no connection listened are found by the lease this prompts.
    if !job_signal::raise(signal) {
        return Ok(());
    }
    loop {
        tokio::select! {
            notification = listener.recv() => {
                if notification?.payload() == schema && !job_signal::raise(signal) {
                    return Ok(());
                }
            }
            // Without notifications, look now and then whether the store is still there.
            () = tokio::time::sleep(Duration::from_secs(30)) => {
                if signal.strong_count() == 0 {
                    return Ok(());
                }
            }
        }
    }
}
