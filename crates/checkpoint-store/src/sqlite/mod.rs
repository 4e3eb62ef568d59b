//! The SQLite job store: the embedded default.
//!
//! Two pools share one database file in WAL mode: a single writer connection, through which
//! every write goes, and a few reader connections. One writer serialises writes inside the
//! process without busy-wait sleeps; other processes on the same file (several workers, the CLI)
//! are serialised by SQLite's busy timeout. Transactions of several statements open with
//! `BEGIN IMMEDIATE`, because a deferred transaction that upgrades to a write fails with
//! `SQLITE_BUSY` at once instead of waiting.
//!
//! The document half lives in `documents.rs`, the term index in `terms.rs`, similarity search in
//! `vectors.rs`; this file is the pools and the `JobStore` implementation, one cohesive thing
//! (each method a transaction of the queue), which is why it runs past 500 lines.

mod documents;
mod migration_lock;
pub(crate) mod sql;
mod terms;
mod vectors;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::query::QueryAs;
use sqlx::sqlite::SqliteArguments;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, Sqlite, Transaction};
use stage_machine::{Checkpoint, UnixMillis};

use crate::cancellation;
use crate::clock::{Clock, SystemClock, millis};
use crate::codec::{fenced, is_unique_violation};
use crate::documents::DocumentStatus;
use crate::error::{StoreError, StoreResult};
use crate::job_signal::JobSignal;
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
use migration_lock::MigrationLock;

/// The migrations of the SQLite schema, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// How many rows the reaper takes back per transaction, so that one pass never holds the write
/// lock for long.
const RECOVERY_BATCH: i64 = 256;

/// Settings of a store, with defaults that suit a worker.
#[derive(Debug, Clone)]
pub struct SqliteStoreOptions {
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Backoff between attempts after retryable failures and timeouts.
    pub retry_policy: RetryPolicy,
    /// How long a statement waits for another process's write lock.
    pub busy_timeout: Duration,
    /// Reader connections.
    pub readers: u32,
    /// Where the in-process vector indexes keep their snapshots (none: rebuilt from the database
    /// by each process on its first query).
    pub vector_snapshots: VectorSnapshots,
}

impl Default for SqliteStoreOptions {
    fn default() -> Self {
        SqliteStoreOptions {
            clock: Arc::new(SystemClock),
            retry_policy: RetryPolicy::default(),
            busy_timeout: Duration::from_secs(30),
            readers: 4,
            vector_snapshots: None,
        }
    }
}

/// The job store on an SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    clock: Arc<dyn Clock>,
    retry_policy: RetryPolicy,
    /// The nearest-neighbour indexes: caches of `embedding_cache`, shared by the store's clones.
    indexes: Arc<InProcessIndexes>,
    /// The term index in memory: a cache of the database's, shared by the store's clones.
    term_cache: Arc<InProcessTerms>,
    /// The database file, beside which migrations are locked (`None`: in memory).
    file: Option<PathBuf>,
    /// Raised after each commit of this process that makes a job pending.
    job_signal: JobSignal,
}

impl SqliteStore {
    /// [`JobStore::save_checkpoint`] through the writer or inside a write transaction.
    async fn save_checkpoint_on<'e>(
        &self,
        executor: impl sqlx::SqliteExecutor<'e>,
        lease: Lease,
        checkpoint: &Checkpoint,
    ) -> StoreResult<()> {
        let result = sqlx::query(sql::SAVE_CHECKPOINT)
            .bind(lease.job_id.0)
            .bind(lease.token)
            .bind(checkpoint.to_metadata().to_string())
            .bind(self.now())
            .execute(executor)
            .await?;
        fenced(lease, result.rows_affected())
    }

    /// [`JobStore::enqueue`] inside a write transaction.
    async fn enqueue_in(&self, tx: &mut Transaction<'_, Sqlite>, follow_up: FollowUp) -> StoreResult<Enqueued> {
        let FollowUp { kind, payload, options } = follow_up;
        let now = self.now();
        let max_attempts = options.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1);
        let timeout = options.timeout.unwrap_or_else(|| kind.default_timeout());
        if let Some(key) = &options.unique_key {
            let existing: Option<JobRow> =
                sqlx::query_as(sql::ACTIVE_JOB_BY_UNIQUE_KEY).bind(key).fetch_optional(&mut **tx).await?;
            if let Some(row) = existing {
                return Ok(Enqueued { job: Job::try_from(row)?, deduplicated: true });
            }
        }
        let row: JobRow = sqlx::query_as(sql::INSERT_JOB)
            .bind(<&str>::from(kind))
            .bind(payload.to_string())
            .bind(options.priority)
            .bind(i64::from(max_attempts))
            .bind(now + millis(options.delay))
            .bind(millis(timeout).max(1))
            .bind(&options.unique_key)
            .bind(now)
            .bind(&options.document_id)
            .fetch_one(&mut **tx)
            .await?;
        Ok(Enqueued { job: Job::try_from(row)?, deduplicated: false })
    }

    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub async fn open(path: impl AsRef<Path>, options: SqliteStoreOptions) -> StoreResult<SqliteStore> {
        let path = path.as_ref();
        Self::open_with(SqliteConnectOptions::new().filename(path), Some(path.to_path_buf()), options).await
    }

    /// Opens the database named by a `sqlite://PATH` URL (see [`SqliteStore::open`]).
    pub async fn open_url(url: &str, options: SqliteStoreOptions) -> StoreResult<SqliteStore> {
        let connect = SqliteConnectOptions::from_str(url)?;
        let file = (!migration_lock::is_in_memory(url)).then(|| connect.get_filename().to_path_buf());
        Self::open_with(connect, file, options).await
    }

    /// `file` is the database file, for the lock that serialises creating and migrating it
    /// between processes (`None` for an in-memory database).
    async fn open_with(
        connect: SqliteConnectOptions,
        file: Option<PathBuf>,
        options: SqliteStoreOptions,
    ) -> StoreResult<SqliteStore> {
        let connect = connect
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        // Creating the file and switching it to WAL are part of what another process must not
        // do at the same time, so the lock is taken before the first connection.
        let lock = MigrationLock::acquire_for(file.as_deref()).await?;
        let writer =
            SqlitePoolOptions::new().max_connections(1).min_connections(1).connect_with(connect.clone()).await?;
        MIGRATOR.run(&writer).await?;
        drop(lock);
        let reader = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            .connect_with(connect.read_only(true))
            .await?;
        let store = SqliteStore {
            writer,
            reader,
            clock: options.clock,
            retry_policy: options.retry_policy,
            term_cache: Arc::new(InProcessTerms::new(options.vector_snapshots.clone())),
            indexes: Arc::new(InProcessIndexes::new(options.vector_snapshots)),
            file,
            job_signal: JobSignal::new(),
        };
        store.bring_term_index_up_to_date().await?;
        Ok(store)
    }

    /// Applies pending migrations and brings the term index up to date (also done by `open`);
    /// applying twice is a no-op.
    pub async fn migrate(&self) -> StoreResult<()> {
        let lock = MigrationLock::acquire_for(self.file.as_deref()).await?;
        MIGRATOR.run(&self.writer).await?;
        drop(lock);
        self.bring_term_index_up_to_date().await
    }

    /// The writer pool, for the other stores that share this database.
    pub fn writer_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// The reader pool, for the other stores that share this database.
    pub fn reader_pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// The store's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Closes both pools, waiting for connections to finish.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    async fn begin_immediate(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// [`JobStore::enqueue`] committed with `synchronous=FULL`: the commit syncs the WAL, which
    /// makes it and every commit before it durable. The setting is per connection and cannot
    /// change inside a transaction, so the one writer connection is switched for this commit and
    /// switched back; a connection that cannot be switched back is closed rather than left
    /// slower for everyone.
    async fn enqueue_durably(&self, follow_up: FollowUp) -> StoreResult<Enqueued> {
        let mut connection = self.writer.acquire().await?;
        sqlx::query(sql::SYNCHRONOUS_FULL).execute(&mut *connection).await?;
        let enqueued = async {
            let mut tx = connection.begin_with("BEGIN IMMEDIATE").await?;
            let enqueued = self.enqueue_in(&mut tx, follow_up).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(enqueued)
        }
        .await;
        if let Err(error) = sqlx::query(sql::SYNCHRONOUS_NORMAL).execute(&mut *connection).await {
            tracing::warn!(%error, "cannot restore synchronous=NORMAL on the writer; closing the connection");
            connection.close_on_drop();
        }
        enqueued
    }

    /// The writer connection's `synchronous` setting (0 off, 1 normal, 2 full, 3 extra).
    #[doc(hidden)]
    pub async fn writer_synchronous(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(sql::SYNCHRONOUS).fetch_one(&self.writer).await?)
    }

    /// Takes back one held job inside `tx`: requeued after `delay` while attempts remain,
    /// dead-lettered otherwise.
    /// A dead-lettered `process_document` job's document is marked failed in `tx` too. Returns
    /// what was done, or `None` when the job was no longer held.
    async fn take_back(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
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
                .bind(now)
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
                .bind(now + millis(plan.delay))
                .bind(&plan.message)
                .bind(<&str>::from(plan.error_kind))
                .bind(now)
                .bind(0_i64)
                .execute(&mut **tx)
                .await?
        };
        Ok((changed.rows_affected() > 0).then(|| recovery::report(job, reason, now, &plan)))
    }

    /// Pages through the rows `select` finds and takes each back, one bounded transaction per
    /// page, until none is left.
    async fn take_back_all(&self, select: &'static str, reason: RecoveryReason) -> StoreResult<Vec<Recovery>> {
        let mut recoveries = Vec::new();
        loop {
            let now = self.now();
            let mut tx = self.begin_immediate().await?;
            let rows: Vec<JobRow> = sqlx::query_as(select).bind(now).bind(RECOVERY_BATCH).fetch_all(&mut *tx).await?;
            let page = rows.len();
            for row in rows {
                let job = Job::try_from(row)?;
                recoveries.extend(self.take_back(&mut tx, &job, reason, now).await?);
            }
            tx.commit().await?;
            if page > 0 {
                self.job_signal.raise();
            }
            if page < RECOVERY_BATCH as usize {
                return Ok(recoveries);
            }
        }
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn enqueue(&self, kind: JobKind, payload: Value, options: EnqueueOptions) -> StoreResult<Enqueued> {
        if options.durable {
            let enqueued = self.enqueue_durably(FollowUp { kind, payload, options }).await?;
            self.job_signal.raise();
            return Ok(enqueued);
        }
        let mut tx = self.begin_immediate().await?;
        let enqueued = self.enqueue_in(&mut tx, FollowUp { kind, payload, options }).await?;
        tx.commit().await?;
        self.job_signal.raise();
        Ok(enqueued)
    }

    async fn lease(&self, request: LeaseRequest<'_>) -> StoreResult<Vec<Job>> {
        if request.max_jobs == 0 || request.kinds.is_empty() {
            return Ok(Vec::new());
        }
        let kinds: Vec<&str> = request.kinds.iter().map(|&kind| kind.into()).collect();
        let (statement, kinds) = match request.one_kind() {
            Some(kind) => (sql::LEASE_ONE_KIND, <&str>::from(kind).to_owned()),
            None => (sql::LEASE, serde_json::to_string(&kinds).unwrap_or_default()),
        };
        let rows: Vec<JobRow> = sqlx::query_as(statement)
            .bind(request.owner)
            .bind(self.now())
            .bind(millis(request.ttl))
            .bind(kinds)
            .bind(i64::from(request.max_jobs))
            .fetch_all(&self.writer)
            .await?;
        let mut jobs: Vec<Job> = convert_all(rows)?;
        // RETURNING has no defined order; hand jobs out in claim order.
        jobs.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)).then(a.id.cmp(&b.id)));
        Ok(jobs)
    }

    async fn heartbeat(&self, owner: &str, leases: &[Lease], ttl: Duration) -> StoreResult<HeartbeatReport> {
        if leases.is_empty() {
            return Ok(HeartbeatReport::default());
        }
        let pairs: Vec<[i64; 2]> = leases.iter().map(|lease| [lease.job_id.0, lease.token]).collect();
        let renewed: Vec<RenewedRow> = sqlx::query_as(sql::HEARTBEAT)
            .bind(owner)
            .bind(self.now())
            .bind(millis(ttl))
            .bind(serde_json::to_string(&pairs).unwrap_or_default())
            .fetch_all(&self.writer)
            .await?;
        Ok(heartbeat_report(leases, &renewed))
    }

    async fn start_clock(&self, lease: Lease) -> StoreResult<()> {
        let result = sqlx::query(sql::START_CLOCK)
            .bind(lease.job_id.0)
            .bind(lease.token)
            .bind(self.now())
            .execute(&self.writer)
            .await?;
        fenced(lease, result.rows_affected())
    }

    async fn save_checkpoint(&self, lease: Lease, checkpoint: &Checkpoint) -> StoreResult<()> {
        self.save_checkpoint_on(&self.writer, lease, checkpoint).await
    }

    async fn save_checkpoint_and_enqueue(
        &self,
        lease: Lease,
        checkpoint: &Checkpoint,
        follow_up: FollowUp,
    ) -> StoreResult<Enqueued> {
        let mut tx = self.begin_immediate().await?;
        self.save_checkpoint_on(&mut *tx, lease, checkpoint).await?;
        let enqueued = self.enqueue_in(&mut tx, follow_up).await?;
        tx.commit().await?;
        self.job_signal.raise();
        Ok(enqueued)
    }

    async fn complete(&self, lease: Lease, result: Option<Value>) -> StoreResult<()> {
        let outcome = sqlx::query(sql::COMPLETE)
            .bind(lease.job_id.0)
            .bind(lease.token)
            .bind(result.map(|value| value.to_string()))
            .bind(self.now())
            .execute(&self.writer)
            .await?;
        fenced(lease, outcome.rows_affected())
    }

    async fn fail(&self, lease: Lease, error: &str, failure: Failure) -> StoreResult<FailOutcome> {
        let now = self.now();
        let mut tx = self.begin_immediate().await?;
        let held: Option<HeldJobRow> = sqlx::query_as(sql::HELD_JOB)
            .bind(lease.job_id.0)
            .bind(lease.token)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(HeldJobRow { job, now: _ }) = held else {
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
                .bind(now)
                .execute(&mut *tx)
                .await?;
            self.fail_document_of_ended_job(&mut tx, &job, error, now).await?;
            FailOutcome::Dead
        } else {
            let delay = self.retry_policy.delay_after(job.attempts);
            let run_at = now + millis(delay);
            sqlx::query(sql::REQUEUE_HELD)
                .bind(lease.job_id.0)
                .bind(lease.token)
                .bind(run_at)
                .bind(error)
                .bind(<&str>::from(ErrorKind::Retryable))
                .bind(now)
                .bind(0_i64)
                .execute(&mut *tx)
                .await?;
            FailOutcome::Retrying { run_at }
        };
        tx.commit().await?;
        self.job_signal.raise();
        Ok(outcome)
    }

    async fn postpone(&self, lease: Lease, delay: Duration, reason: &str) -> StoreResult<()> {
        let now = self.now();
        let result = sqlx::query(sql::REQUEUE_HELD)
            .bind(lease.job_id.0)
            .bind(lease.token)
            .bind(now + millis(delay))
            .bind(reason)
            .bind(None::<&str>)
            .bind(now)
            .bind(1_i64)
            .execute(&self.writer)
            .await?;
        fenced(lease, result.rows_affected())?;
        self.job_signal.raise();
        Ok(())
    }

    async fn release(&self, owner: &str, leases: &[Lease]) -> StoreResult<Vec<JobId>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<[i64; 2]> = leases.iter().map(|lease| [lease.job_id.0, lease.token]).collect();
        let released: Vec<i64> = sqlx::query_scalar(sql::RELEASE)
            .bind(owner)
            .bind(serde_json::to_string(&pairs).unwrap_or_default())
            .bind(self.now())
            .fetch_all(&self.writer)
            .await?;
        if !released.is_empty() {
            self.job_signal.raise();
        }
        Ok(released.into_iter().map(JobId).collect())
    }

    async fn recover_stale(&self) -> StoreResult<Vec<Recovery>> {
        self.take_back_all(sql::EXPIRED_LEASES, RecoveryReason::LeaseExpired).await
    }

    async fn enforce_timeouts(&self) -> StoreResult<Vec<Recovery>> {
        self.take_back_all(sql::TIMED_OUT, RecoveryReason::TimedOut).await
    }

    async fn job(&self, id: JobId) -> StoreResult<Option<Job>> {
        let row: Option<JobRow> = sqlx::query_as(sql::JOB_BY_ID).bind(id.0).fetch_optional(&self.reader).await?;
        row.map(Job::try_from).transpose()
    }

    async fn job_attempts(&self, id: JobId) -> StoreResult<Vec<JobAttempt>> {
        let rows: Vec<AttemptRow> = sqlx::query_as(sql::JOB_ATTEMPTS).bind(id.0).fetch_all(&self.reader).await?;
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
            .fetch_all(&self.reader)
            .await?;
        convert_all(rows)
    }

    async fn counts(&self) -> StoreResult<Vec<QueueCount>> {
        let rows: Vec<CountRow> = sqlx::query_as(sql::COUNTS).fetch_all(&self.reader).await?;
        convert_all(rows)
    }

    async fn attempts_ended(&self, since: UnixMillis, period: Duration) -> StoreResult<Vec<AttemptsEnded>> {
        let rows: Vec<AttemptsEndedRow> =
            sqlx::query_as(sql::ATTEMPTS_ENDED).bind(since).bind(millis(period).max(1)).fetch_all(&self.reader).await?;
        convert_all(rows)
    }

    async fn record_reaper_pass(&self, worker: &str, requeued: u32, dead_lettered: u32) -> StoreResult<()> {
        sqlx::query(sql::RECORD_REAPER_PASS)
            .bind(worker)
            .bind(self.now())
            .bind(i64::from(requeued))
            .bind(i64::from(dead_lettered))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn last_reaper_pass(&self) -> StoreResult<Option<ReaperPass>> {
        let row: Option<ReaperPassRow> = sqlx::query_as(sql::LAST_REAPER_PASS).fetch_optional(&self.reader).await?;
        row.map(ReaperPass::try_from).transpose()
    }

    async fn stale_jobs(&self, silent_for: Option<Duration>) -> StoreResult<Vec<Job>> {
        let now = self.now();
        let silent_since = silent_for.map(|silent_for| now - millis(silent_for));
        let rows: Vec<JobRow> =
            sqlx::query_as(sql::EXPIRED_AND_SILENT_SINCE).bind(now).bind(silent_since).fetch_all(&self.reader).await?;
        convert_all(rows)
    }

    async fn take_back_stale(&self, jobs: &[JobId], silent_for: Option<Duration>) -> StoreResult<Vec<Recovery>> {
        let now = self.now();
        let mut tx = self.begin_immediate().await?;
        let mut recoveries = Vec::new();
        for &id in jobs {
            let row: Option<JobRow> = sqlx::query_as(sql::JOB_BY_ID).bind(id.0).fetch_optional(&mut *tx).await?;
            let Some(row) = row else { continue };
            let job = Job::try_from(row)?;
            if !recovery::operator_may_take_back(&job, silent_for, now) {
                continue;
            }
            let Some(taken) = self.take_back(&mut tx, &job, RecoveryReason::Operator, now).await? else {
                continue;
            };
            recoveries.push(taken);
        }
        tx.commit().await?;
        self.job_signal.raise();
        Ok(recoveries)
    }

    async fn retry_dead(&self, id: JobId) -> StoreResult<Job> {
        let retry = sqlx::query_as(sql::RETRY_DEAD).bind(id.0).bind(self.now());
        self.requeue_by_operator(id, retry, "only dead-lettered jobs can be retried").await
    }

    async fn purge_dead(&self, older_than: Duration) -> StoreResult<u64> {
        let before = self.now() - millis(older_than);
        let result = sqlx::query(sql::PURGE_DEAD).bind(before).execute(&self.writer).await?;
        Ok(result.rows_affected())
    }

    async fn requeue_with_checkpoint(&self, id: JobId, checkpoint: &Checkpoint) -> StoreResult<Job> {
        let requeue = sqlx::query_as(sql::REQUEUE_WITH_CHECKPOINT)
            .bind(id.0)
            .bind(checkpoint.to_metadata().to_string())
            .bind(self.now());
        self.requeue_by_operator(id, requeue, "a processing job cannot be requeued; wait for it or run `quire clean`")
            .await
    }

    async fn cancel(&self, id: JobId) -> StoreResult<Cancellation> {
        let now = self.now();
        let mut tx = self.begin_immediate().await?;
        let row: Option<JobRow> = sqlx::query_as(sql::JOB_BY_ID).bind(id.0).fetch_optional(&mut *tx).await?;
        let job = Job::try_from(row.ok_or(StoreError::JobNotFound(id))?)?;
        let cancellation = match cancellation::plan(&job)? {
            cancellation::Plan::AtOnce => {
                let row: JobRow = sqlx::query_as(sql::CANCEL_PENDING)
                    .bind(id.0)
                    .bind(cancellation::REASON)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                let job = Job::try_from(row)?;
                self.fail_document_of_ended_job(&mut tx, &job, cancellation::REASON, now).await?;
                Cancellation::Cancelled(job)
            }
            cancellation::Plan::Request => {
                let row: JobRow = sqlx::query_as(sql::REQUEST_CANCEL).bind(id.0).bind(now).fetch_one(&mut *tx).await?;
                Cancellation::Requested(Job::try_from(row)?)
            }
        };
        tx.commit().await?;
        Ok(cancellation)
    }

    async fn cancel_held(&self, lease: Lease) -> StoreResult<Job> {
        let now = self.now();
        let mut tx = self.begin_immediate().await?;
        let row: Option<JobRow> = sqlx::query_as(sql::CANCEL_HELD)
            .bind(lease.job_id.0)
            .bind(lease.token)
            .bind(cancellation::REASON)
            .bind(now)
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
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    fn job_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.job_signal.subscribe())
    }
}

impl SqliteStore {
    /// Marks the document of a `process_document` job that will not run again (dead-lettered,
    /// or cancelled by an operator) `failed` with `reason`, inside the transaction that ends the
    /// job (job row, then document row: the documented lock order), so the document's status
    /// never says a book is on its way when no job will bring it. A job whose document is gone
    /// (never stored, in tests) ends all the same.
    async fn fail_document_of_ended_job(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        job: &Job,
        reason: &str,
        now: UnixMillis,
    ) -> StoreResult<()> {
        if let Some(document) = job.processed_document() {
            sqlx::query(sql::SET_DOCUMENT_STATUS)
                .bind(document)
                .bind(<&str>::from(DocumentStatus::Failed))
                .bind(reason)
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Runs `requeue`, an operator's statement that makes job `id` pending again and returns
    /// it, and sets the document the job processes back to `pending`, in one transaction.
    /// `refusal` says why when the statement found no job it applies to.
    async fn requeue_by_operator<'q>(
        &self,
        id: JobId,
        requeue: QueryAs<'q, Sqlite, JobRow, SqliteArguments>,
        refusal: &str,
    ) -> StoreResult<Job> {
        let mut tx = self.begin_immediate().await?;
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
                .bind(job.updated_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.job_signal.raise();
        Ok(job)
    }

    /// The refusal of a requeue of job `id` that failed with `error` on the index of active
    /// unique keys: which job holds the key. If that job finished meanwhile, the database's own
    /// error is returned, and running the command again succeeds.
    async fn unique_key_taken(&self, id: JobId, error: sqlx::Error) -> StoreError {
        let holder: Result<Option<(String, i64)>, _> =
            sqlx::query_as(sql::UNIQUE_KEY_HOLDER).bind(id.0).fetch_optional(&self.reader).await;
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
