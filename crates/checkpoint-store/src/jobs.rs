//! The job queue's vocabulary: jobs, their kinds and states, leases, and what operations report.
//!
//! It runs just past 500 lines because each type carries its own parsing, display and schema
//! derives beside its doc; splitting the vocabulary across files would scatter what a reader of
//! `JobStore` looks up together.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stage_machine::{Checkpoint, UnixMillis};

/// A job's identity: a positive integer assigned by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(JobId)
    }
}

/// What a job does. Each kind has its own handler in the worker.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobKind {
    /// Extract, chunk and embed one document.
    ProcessDocument,
    /// Find connections between one document's chunks and the library.
    DetectConnections,
}

impl JobKind {
    /// The longest one attempt of this kind may run before the reaper takes it back.
    pub fn default_timeout(self) -> Duration {
        match self {
            JobKind::ProcessDocument => Duration::from_secs(30 * 60),
            JobKind::DetectConnections => Duration::from_secs(10 * 60),
        }
    }
}

/// Where a job is in its life.
///
/// ```text
///            enqueue            lease                complete
///   (new) ──────────▶ pending ─────────▶ processing ──────────▶ completed
///                      ▲  ▲  │             │  │  │
///                      │  └──┼─ release, ──┘  │  └─ fail (permanent, or out of attempts),
///                      │     │  postpone,     │     expiry/timeout out of attempts ──▶ dead
///                      │     │  retryable     │
///                      │     │  fail, expiry, └─ cancel requested (cancel_requested_at), honoured
///                      │     │  timeout          by its worker at the next stage boundary
///                      │     │                   (cancel_held) ──────────────▶ cancelled
///                      │     └─ cancel (at once) ────────────────────────────▶ cancelled
///                      ├──────── dlq retry ◀──────────────────────────────────────── dead
///                      └──────── replay ◀──────────────── completed, dead, cancelled
/// ```
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its `run_at` and a free worker. Moved in by enqueue, release, postpone,
    /// retryable failures, lease expiry and timeouts; moved out by lease.
    Pending,
    /// Leased by one worker (`lock_owner`) until `lock_until`. Moved out by that worker
    /// (complete, fail, release, postpone, cancel at an operator's request) or by the reaper
    /// (expiry, timeout).
    Processing,
    /// Done. Terminal.
    Completed,
    /// Reserved for a terminal failure that is neither dead-lettered nor cancelled; this version
    /// dead-letters every failure it does not retry, so no transition leads here yet.
    Failed,
    /// In the dead-letter queue: failed permanently or out of attempts. Terminal until an
    /// operator retries it.
    Dead,
    /// Cancelled by an operator: at once when pending, at its next stage boundary by the worker
    /// holding it when processing. Never retried nor dead-lettered; terminal until an operator
    /// replays it, which keeps or rewinds its checkpoint.
    Cancelled,
}

impl JobStatus {
    /// True for states that a job leaves only by an operator's hand.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Dead | JobStatus::Cancelled)
    }
}

/// Why a job's last attempt did not complete.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorKind {
    /// A failure that another attempt may not hit (network, rate limit, server error).
    Retryable,
    /// A failure no retry can fix (a broken book, a rejected request).
    Permanent,
    /// The attempt ran longer than the job's timeout.
    Timeout,
    /// The worker stopped renewing its lease.
    LeaseLost,
}

/// How a worker classifies a failure it reports with [`JobStore::fail`](crate::JobStore::fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Retry with backoff while attempts remain.
    Retryable,
    /// Dead-letter at once.
    Permanent,
}

/// Proof of ownership of one job: the job and the lease token it was leased with.
///
/// The token changes on every lease and every revocation, so a write fenced by a stale lease is
/// refused even when the same worker leases the same job again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The leased job.
    pub job_id: JobId,
    /// The fencing token.
    pub token: i64,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Identity.
    pub id: JobId,
    /// What the job does.
    pub kind: JobKind,
    /// The document the job works on, as its enqueuer named it
    /// ([`EnqueueOptions::document_id`]).
    pub document_id: Option<String>,
    /// The handler's input, as given at enqueue: the store never reads inside it.
    pub payload: Value,
    /// Where the job is in its life.
    pub status: JobStatus,
    /// Higher runs first.
    pub priority: i32,
    /// Leases so far (each lease is one attempt; a release gives the attempt back).
    pub attempts: u32,
    /// Attempts allowed before the job is dead-lettered.
    pub max_attempts: u32,
    /// Not leased before this time.
    pub run_at: UnixMillis,
    /// The worker holding the lease, while `processing`.
    pub lock_owner: Option<String>,
    /// When the lease expires unless renewed, while `processing`.
    pub lock_until: Option<UnixMillis>,
    /// The fencing token of the current (or last) lease.
    pub lease_token: i64,
    /// When the current (or last) attempt was leased.
    pub started_at: Option<UnixMillis>,
    /// When the current lease was last renewed.
    pub last_heartbeat: Option<UnixMillis>,
    /// The longest one attempt may run.
    pub timeout: Duration,
    /// At most one pending-or-processing job exists per key.
    pub unique_key: Option<String>,
    /// The checkpoint and other progress the handler keeps between attempts.
    pub metadata: Value,
    /// What the handler returned on completion.
    pub result: Option<Value>,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// The last failure's kind.
    pub error_kind: Option<ErrorKind>,
    /// When the job was enqueued.
    pub created_at: UnixMillis,
    /// When the row last changed.
    pub updated_at: UnixMillis,
    /// When the job reached a terminal state.
    pub finished_at: Option<UnixMillis>,
    /// When an operator asked to cancel the job while a worker held it (its worker stops it at
    /// the next stage boundary); cleared when the job leaves `processing`.
    pub cancel_requested_at: Option<UnixMillis>,
}

impl Job {
    /// The job's checkpoint (pending if none was written).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::from_metadata(&self.metadata)
    }

    /// The lease the job is held under, while it is `processing`.
    pub fn lease(&self) -> Option<Lease> {
        (self.status == JobStatus::Processing).then_some(Lease { job_id: self.id, token: self.lease_token })
    }

    /// The document the job works on, if its enqueuer named one.
    pub fn document_id(&self) -> Option<&str> {
        self.document_id.as_deref()
    }

    /// The document whose status follows this job's: a `process_document` job's. Queuing such a
    /// job again (an operator's retry or replay) sets its document back to `pending` in the same
    /// transaction, and dead-lettering it marks the document `failed`; a `detect_connections` job
    /// leaves its document's status alone.
    pub fn processed_document(&self) -> Option<&str> {
        (self.kind == JobKind::ProcessDocument).then(|| self.document_id()).flatten()
    }
}

/// Options for [`JobStore::enqueue`](crate::JobStore::enqueue).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnqueueOptions {
    /// Higher runs first. Default 0.
    pub priority: i32,
    /// Attempts before dead-lettering. Default 3.
    pub max_attempts: Option<u32>,
    /// Do not lease before this long from now. Default: at once.
    pub delay: Duration,
    /// Deduplication key: while a pending or processing job has this key, enqueue returns it.
    pub unique_key: Option<String>,
    /// The document the job works on: its jobs are listed by it, and a `process_document` job's
    /// document follows the job ([`Job::processed_document`]). The store never reads the
    /// payload, so this is the only way it learns of the document.
    pub document_id: Option<String>,
    /// Longest run of one attempt. Default: by kind.
    pub timeout: Option<Duration>,
    /// The commit survives a power loss once `enqueue` returns, and so does every commit made
    /// before it. For submissions, which answer "accepted" as soon as it returns. SQLite makes
    /// this one commit with `synchronous=FULL` (its other commits stay at `NORMAL`); PostgreSQL's
    /// commits are durable already (`synchronous_commit` on, its default). Default: false.
    pub durable: bool,
}

/// A job to add along with a checkpoint
/// ([`JobStore::save_checkpoint_and_enqueue`](crate::JobStore::save_checkpoint_and_enqueue)).
#[derive(Debug, Clone, PartialEq)]
pub struct FollowUp {
    /// Its kind.
    pub kind: JobKind,
    /// Its payload.
    pub payload: Value,
    /// As for [`JobStore::enqueue`](crate::JobStore::enqueue).
    pub options: EnqueueOptions,
}

/// Attempts allowed when [`EnqueueOptions::max_attempts`] is not set.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// What [`JobStore::enqueue`](crate::JobStore::enqueue) did.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    /// The new job, or the existing one with the same unique key.
    pub job: Job,
    /// True when an existing job was returned instead of a new one.
    pub deduplicated: bool,
}

/// What [`JobStore::lease`](crate::JobStore::lease) asks for.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRequest<'a> {
    /// The worker asking; written to `lock_owner`.
    pub owner: &'a str,
    /// How many jobs at most.
    pub max_jobs: u32,
    /// How long the lease lasts unless renewed.
    pub ttl: Duration,
    /// Which kinds the worker will run.
    pub kinds: &'a [JobKind],
}

impl LeaseRequest<'_> {
    /// The one kind asked for, if every entry of `kinds` names the same kind: such a claim has
    /// an index of its own (`jobs_claim_kind`), which a claim of several kinds cannot use
    /// without sorting.
    pub(crate) fn one_kind(&self) -> Option<JobKind> {
        let (&first, rest) = self.kinds.split_first()?;
        rest.iter().all(|&kind| kind == first).then_some(first)
    }
}

/// What [`JobStore::heartbeat`](crate::JobStore::heartbeat) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatReport {
    /// Leases renewed.
    pub renewed: Vec<JobId>,
    /// Leases no longer held: the worker must stop these jobs at once.
    pub lost: Vec<JobId>,
    /// Renewed leases whose job an operator asked to cancel
    /// ([`JobStore::cancel`](crate::JobStore::cancel)): the worker stops each at its next stage
    /// boundary and records it with [`JobStore::cancel_held`](crate::JobStore::cancel_held).
    pub cancel_requested: Vec<JobId>,
}

/// What an operator's [`JobStore::cancel`](crate::JobStore::cancel) did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "job", rename_all = "snake_case")]
pub enum Cancellation {
    /// The job was not held by a worker (pending, retrying or postponed): it is `cancelled` now.
    Cancelled(Job),
    /// A worker holds the job: the request is recorded, and the worker stops the job at its
    /// next stage boundary, keeping its checkpoint, and records it `cancelled`. The job as it
    /// is now (still `processing`).
    Requested(Job),
}

impl Cancellation {
    /// The job, as the cancellation left it.
    pub fn job(&self) -> &Job {
        match self {
            Cancellation::Cancelled(job) | Cancellation::Requested(job) => job,
        }
    }
}

/// What became of a job after [`JobStore::fail`](crate::JobStore::fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back to pending; it will run again at `run_at`.
    Retrying {
        /// When the next attempt may start.
        run_at: UnixMillis,
    },
    /// Dead-lettered.
    Dead,
}

/// What the reaper or an operator did with a job taken back from its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RecoveryAction {
    /// Back to pending; attempts remained.
    Requeued,
    /// Out of attempts: moved to the dead-letter queue.
    DeadLettered,
}

/// Why a job was taken back from its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RecoveryReason {
    /// Its lease expired: the worker stopped heartbeating.
    LeaseExpired,
    /// It ran longer than its timeout.
    TimedOut,
    /// An operator asked for it (`quire clean`).
    Operator,
}

/// One job taken back from its worker, with what was done to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// The job.
    pub job_id: JobId,
    /// Its kind.
    pub kind: JobKind,
    /// The worker that held it.
    pub owner: Option<String>,
    /// Attempts used so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// How long the attempt had been running (since its lease).
    pub running_for: Duration,
    /// How long since the lease was last renewed.
    pub silent_for: Duration,
    /// Why it was taken back.
    pub reason: RecoveryReason,
    /// What was done.
    pub action: RecoveryAction,
}

/// Number of jobs in one status of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCount {
    /// The status.
    pub status: JobStatus,
    /// The kind.
    pub kind: JobKind,
    /// How many.
    pub count: u64,
    /// When the oldest of them was enqueued: for pending jobs, how long the queue's head has
    /// waited.
    pub oldest_created_at: Option<UnixMillis>,
}

/// One attempt of a job as it ended ([`JobStore::job_attempts`](crate::JobStore::job_attempts)),
/// recorded by the statement that ended it, in its transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobAttempt {
    /// Which attempt, from 1: the job's attempts when it ended. An attempt handed back without
    /// counting shares its number with the attempt after it.
    pub attempt: u32,
    /// The worker that held the lease.
    pub worker: Option<String>,
    /// When it started (Unix milliseconds).
    #[schema(value_type = Option<i64>)]
    pub started_at: Option<UnixMillis>,
    /// When it ended (Unix milliseconds).
    #[schema(value_type = i64)]
    pub ended_at: UnixMillis,
    /// The stage the job's checkpoint had reached when it ended.
    #[schema(value_type = Option<crate::StageSchema>)]
    pub stage: Option<stage_machine::Stage>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Why it ended, unless it completed the job.
    pub error: Option<String>,
}

/// How an attempt ended.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AttemptOutcome {
    /// It completed the job.
    Completed,
    /// It failed the job for good.
    Failed,
    /// The job was dead-lettered (a permanent failure, the last attempt failing or taken back).
    Dead,
    /// An operator cancelled the job.
    Cancelled,
    /// It was handed back without counting: a rate limit, a shutdown, a job leased ahead and
    /// released.
    HandedBack,
    /// It failed, or was taken back (an expired lease, a timeout), and the job waits for another
    /// attempt.
    Retrying,
}

/// The attempts that ended in one period ([`JobStore::attempts_ended`](crate::JobStore::attempts_ended)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptsEnded {
    /// When the period began (Unix milliseconds, a multiple of its length).
    #[schema(value_type = i64)]
    pub period_start: UnixMillis,
    /// How they ended.
    pub outcome: AttemptOutcome,
    /// How many.
    pub count: u64,
}

/// A pass of a worker's reaper: stale leases recovered and overdue jobs taken back
/// ([`JobStore::record_reaper_pass`](crate::JobStore::record_reaper_pass)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReaperPass {
    /// The worker whose reaper it was.
    pub worker: String,
    /// When it ended (Unix milliseconds).
    #[schema(value_type = i64)]
    pub passed_at: UnixMillis,
    /// Jobs it gave back to the queue for another attempt.
    pub requeued: u32,
    /// Jobs it dead-lettered, out of attempts.
    pub dead_lettered: u32,
}

/// Filter for [`JobStore::list_jobs`](crate::JobStore::list_jobs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only this kind.
    pub kind: Option<JobKind>,
    /// Only jobs of this document.
    pub document_id: Option<String>,
    /// At most this many, newest first. Default 100.
    pub limit: Option<u32>,
    /// Only jobs older than this one (a smaller id): the next page after a page ending with it.
    pub before: Option<JobId>,
}
