//! The job store's contract, shared by every backend.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use stage_machine::{Checkpoint, UnixMillis};

use crate::error::StoreResult;
use crate::jobs::{
    AttemptsEnded, Cancellation, EnqueueOptions, Enqueued, FailOutcome, Failure, FollowUp, HeartbeatReport, Job,
    JobAttempt, JobFilter, JobId, JobKind, Lease, LeaseRequest, QueueCount, ReaperPass, Recovery,
};

/// A durable, lease-based job queue.
///
/// Every operation is atomic and reports what it changed. Every write made on behalf of a worker
/// takes that worker's [`Lease`] and is refused with
/// [`StoreError::LeaseLost`](crate::StoreError::LeaseLost) once the lease is gone: a worker that
/// lost its job can never overwrite the worker that took over.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Adds a job. With a unique key, returns the pending or processing job that already has the
    /// key instead, flagged as deduplicated.
    async fn enqueue(&self, kind: JobKind, payload: Value, options: EnqueueOptions) -> StoreResult<Enqueued>;

    /// Claims up to `max_jobs` due jobs of the given kinds, highest priority first, then oldest.
    /// Each claimed job gets a fresh lease token and uses one attempt. Two concurrent callers
    /// never receive the same job.
    async fn lease(&self, request: LeaseRequest<'_>) -> StoreResult<Vec<Job>>;

    /// Renews, in one statement, every lease in `leases` that `owner` still holds, and reports
    /// the ones it no longer holds.
    async fn heartbeat(&self, owner: &str, leases: &[Lease], ttl: Duration) -> StoreResult<HeartbeatReport>;

    /// Starts the job's run-time clock (`started_at`, which `enforce_timeouts` measures from)
    /// now: for a job leased ahead of time that only now begins to run, so that the time it
    /// waited in its worker's queue does not count against its timeout. Fenced.
    async fn start_clock(&self, lease: Lease) -> StoreResult<()>;

    /// Stores the job's checkpoint. Fenced.
    async fn save_checkpoint(&self, lease: Lease, checkpoint: &Checkpoint) -> StoreResult<()>;

    /// Stores the job's checkpoint and adds a follow-up job (as [`JobStore::enqueue`]) in one
    /// transaction: both or neither, so a retry that resumes from the checkpoint never asks for
    /// the follow-up again, and one that resumes from before it always does. Fenced.
    async fn save_checkpoint_and_enqueue(
        &self,
        lease: Lease,
        checkpoint: &Checkpoint,
        follow_up: FollowUp,
    ) -> StoreResult<Enqueued>;

    /// Marks the job completed. Fenced.
    async fn complete(&self, lease: Lease, result: Option<Value>) -> StoreResult<()>;

    /// Records a failed attempt. A retryable failure returns the job to pending after a backoff
    /// while attempts remain; otherwise, and for permanent failures, the job is dead-lettered
    /// with its reason. Fenced.
    async fn fail(&self, lease: Lease, error: &str, failure: Failure) -> StoreResult<FailOutcome>;

    /// Returns a started job to pending, to run again after `delay`, without using an attempt
    /// (rate limits, graceful shutdown). Its checkpoint is kept. Fenced.
    async fn postpone(&self, lease: Lease, delay: Duration, reason: &str) -> StoreResult<()>;

    /// Returns jobs that `owner` leased but never started to pending without using an attempt,
    /// and the ids it released. Fenced by each lease's token, like every write of a worker: a
    /// lease since taken over (even by a process of the same name) or held by another owner is
    /// left alone; an empty list touches nothing.
    async fn release(&self, owner: &str, leases: &[Lease]) -> StoreResult<Vec<JobId>>;

    /// Takes back every processing job whose lease has expired: requeued while attempts remain,
    /// dead-lettered otherwise. Checkpoints are kept.
    async fn recover_stale(&self) -> StoreResult<Vec<Recovery>>;

    /// Takes back every processing job that has run longer than its timeout, even if it still
    /// heartbeats: its lease token changes, then it is retried after a backoff or dead-lettered.
    async fn enforce_timeouts(&self) -> StoreResult<Vec<Recovery>>;

    /// One job, with its checkpoint in `metadata`.
    async fn job(&self, id: JobId) -> StoreResult<Option<Job>>;

    /// Every attempt of job `id` that has ended, oldest first (none for an unknown job).
    async fn job_attempts(&self, id: JobId) -> StoreResult<Vec<JobAttempt>>;

    /// Jobs matching a filter, newest first.
    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>>;

    /// Number of jobs by status and kind.
    async fn counts(&self) -> StoreResult<Vec<QueueCount>>;

    /// The attempts that ended at `since` or later, counted by outcome in periods of `period`
    /// (each starting at a multiple of it), oldest first; a period with none is left out.
    async fn attempts_ended(&self, since: UnixMillis, period: Duration) -> StoreResult<Vec<AttemptsEnded>>;

    /// Records a pass of `worker`'s reaper, ended now (the store's time), that requeued and
    /// dead-lettered so many jobs, replacing the last pass of any worker.
    async fn record_reaper_pass(&self, worker: &str, requeued: u32, dead_lettered: u32) -> StoreResult<()>;

    /// The last pass of any worker's reaper; none before the first.
    async fn last_reaper_pass(&self) -> StoreResult<Option<ReaperPass>>;

    /// Processing jobs whose lease has expired (as [`JobStore::recover_stale`] judges it) and,
    /// when `silent_for` is given, whose last heartbeat is also at least that old; the longest
    /// expired first.
    async fn stale_jobs(&self, silent_for: Option<Duration>) -> StoreResult<Vec<Job>>;

    /// Takes back those of the given jobs that still qualify as [`JobStore::stale_jobs`] lists
    /// them, judged again inside the transaction (an operator's `quire clean`): a job renewed
    /// since the listing stays with its worker. Requeued while attempts remain, dead-lettered
    /// otherwise; a dead-lettered `process_document` job's document is marked `failed` with the
    /// job's reason in the same transaction, so the two never disagree. Checkpoints are kept.
    async fn take_back_stale(&self, jobs: &[JobId], silent_for: Option<Duration>) -> StoreResult<Vec<Recovery>>;

    /// Moves a dead-lettered job back to pending with a fresh attempt budget and, for a
    /// `process_document` job, its document back to `pending`, in one transaction. Its
    /// checkpoint is kept, so it resumes where it stopped. Refused, changing nothing, with
    /// [`StoreError::UniqueKeyTaken`](crate::StoreError::UniqueKeyTaken) while another active
    /// job holds its unique key.
    async fn retry_dead(&self, id: JobId) -> StoreResult<Job>;

    /// Deletes dead-lettered jobs that finished at least `older_than` ago; returns how many.
    async fn purge_dead(&self, older_than: Duration) -> StoreResult<u64>;

    /// Replaces the checkpoint of a job that is not processing (operators rewinding a job for
    /// replay) and makes it pending with a fresh attempt budget and, for a `process_document`
    /// job, its document `pending` too, in one transaction: both or neither. Refused, changing
    /// nothing, with [`StoreError::UniqueKeyTaken`](crate::StoreError::UniqueKeyTaken) while
    /// another active job holds its unique key.
    async fn requeue_with_checkpoint(&self, id: JobId, checkpoint: &Checkpoint) -> StoreResult<Job>;

    /// An operator's cancellation of job `id`. A pending job (new, retrying or postponed)
    /// becomes `cancelled` at once; a processing one gets a cancel request, which its worker
    /// learns of from its next heartbeat ([`HeartbeatReport::cancel_requested`]) and honours at
    /// the job's next stage boundary ([`JobStore::cancel_held`]); the worker's lease is not
    /// taken away. A `process_document` job cancelled at once has its document marked `failed`
    /// ("cancelled by an operator") in the same transaction. A finished job (completed, failed,
    /// dead, cancelled) is refused with [`StoreError::InvalidState`](crate::StoreError::InvalidState),
    /// an unknown one with [`StoreError::JobNotFound`](crate::StoreError::JobNotFound); neither
    /// changes anything.
    ///
    /// The request is addressed to the attempt holding the job: if that attempt ends otherwise
    /// (completes, fails, is postponed or taken back) before its next stage boundary, the
    /// request lapses with it, and cancelling the job again applies to its new state.
    async fn cancel(&self, id: JobId) -> StoreResult<Cancellation>;

    /// The lease holder stops its job at a stage boundary because an operator asked to cancel
    /// it: the job becomes `cancelled`, its checkpoint kept, its attempt given back (the
    /// operator's stop is not the job's failure), and a `process_document` job's document
    /// `failed` ("cancelled by an operator"), in one transaction. Fenced.
    async fn cancel_held(&self, lease: Lease) -> StoreResult<Job>;

    /// A counter that moves each time jobs may have become due (see `job_signal.rs` for what
    /// each backend sees): a worker waits on it between polls, so it starts new work at once.
    /// `None`: only polling finds new jobs.
    fn job_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// True when the database answers.
    async fn ping(&self) -> StoreResult<()>;
}
