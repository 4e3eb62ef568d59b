//! The worker runtime's timing and hand-over rules, on paused tokio time: heartbeat cadence,
//! immediate cancellation on a lost lease, the reaper at start-up and on its interval (and its
//! survival of errors), the rate-limit pause with release of unstarted jobs, graceful shutdown
//! with a grace period, and release of prefetched jobs however the loop ends.
//!
//! Longer than 500 lines because most of it is one scripted fake job store that answers the whole
//! queue contract (unused methods included); splitting it from the scenarios it serves would only
//! scatter one test fixture.
//!
//! The store here is an in-memory fake that records every call with the (virtual) time it came
//! at; the real stores' semantics are proven by checkpoint-store's conformance suite.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use checkpoint_store::{
    AttemptsEnded, Cancellation, EnqueueOptions, Enqueued, FailOutcome, Failure, FollowUp, HeartbeatReport, Job,
    JobAttempt, JobFilter, JobId, JobKind, JobStatus, JobStore, Lease, LeaseRequest, QueueCount, Recovery,
    RecoveryAction, RecoveryReason, StoreError, StoreResult,
};
use serde_json::{Value, json};
use stage_machine::Checkpoint;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use worker::{Handlers, JobContext, JobError, JobHandler, Worker, WorkerConfig};

/// Calls the runtime made, with the virtual time since the test started.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Lease(Vec<JobKind>, u32),
    Heartbeat(Vec<JobId>),
    Complete(JobId),
    Fail(JobId, Failure),
    Postpone(JobId, Duration),
    Release(Vec<JobId>),
    StartClock(JobId),
    CancelHeld(JobId),
    RecoverStale,
    EnforceTimeouts,
    /// A reaper pass recorded: jobs requeued, dead-lettered.
    ReaperPass(u32, u32),
}

#[derive(Default)]
struct FakeState {
    pending: Vec<Job>,
    processing: HashMap<JobId, Job>,
    revoked: Vec<JobId>,
    calls: Vec<(Duration, Call)>,
    reaper_fails: u32,
    /// Completions still to fail as if the database were down.
    outcome_outages: u32,
    /// Jobs the next reaper pass reports dead-lettered (and `job` then finds).
    reaped_dead: Vec<Job>,
    /// Heartbeats fail as if the database were down.
    heartbeats_fail: bool,
    /// Held jobs an operator asked to cancel.
    cancel_requested: Vec<JobId>,
    /// Leases expire as in a real store: a lease not renewed within its TTL is lost, and every
    /// write under it (a renewal, a completion) is refused.
    leases_expire: bool,
    /// How long every reaper pass waits before answering (a locked file, a slow query).
    recover_stale_stall: Duration,
    /// How long every lease request waits before answering.
    lease_stall: Duration,
}

struct FakeStore {
    state: Mutex<FakeState>,
    start: Instant,
    /// The job signal: raised by [`FakeStore::queue`], as a store raises it when a job is queued.
    signal: tokio::sync::watch::Sender<u64>,
}

impl FakeStore {
    fn new(jobs: Vec<Job>) -> Arc<FakeStore> {
        Arc::new(FakeStore {
            state: Mutex::new(FakeState { pending: jobs, ..Default::default() }),
            start: Instant::now(),
            signal: tokio::sync::watch::channel(0).0,
        })
    }

    /// Queues a job, raising the job signal unless `silently`.
    fn queue(&self, job: Job, silently: bool) {
        self.state.lock().unwrap().pending.push(job);
        if !silently {
            self.signal.send_modify(|raised| *raised += 1);
        }
    }

    fn record(&self, state: &mut FakeState, call: Call) {
        state.calls.push((self.start.elapsed(), call));
    }

    fn calls(&self) -> Vec<(Duration, Call)> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Takes the job's lease away, as a reaper elsewhere would.
    fn revoke(&self, id: JobId) {
        let mut state = self.state.lock().unwrap();
        state.processing.remove(&id);
        state.revoked.push(id);
    }

    fn held(&self, state: &FakeState, lease: Lease) -> bool {
        let now = self.now_millis();
        state.processing.get(&lease.job_id).is_some_and(|job| {
            job.lease_token == lease.token && (!state.leases_expire || job.lock_until.is_some_and(|until| now < until))
        })
    }

    /// The virtual time since the test started, as the store's clock (lock_until) counts it.
    fn now_millis(&self) -> i64 {
        i64::try_from(self.start.elapsed().as_millis()).unwrap()
    }

    /// Waits as a statement held up in the database would, without holding the fake's state.
    async fn stall(&self, how_long: fn(&FakeState) -> Duration) {
        let stall = how_long(&self.state.lock().unwrap());
        tokio::time::sleep(stall).await;
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap()
}

fn job(id: i64, kind: JobKind) -> Job {
    Job {
        id: JobId(id),
        kind,
        document_id: Some(format!("doc-{id}")),
        payload: json!({ "document_id": format!("doc-{id}") }),
        status: JobStatus::Pending,
        priority: 0,
        attempts: 0,
        max_attempts: 3,
        run_at: 0,
        lock_owner: None,
        lock_until: None,
        lease_token: 0,
        started_at: None,
        last_heartbeat: None,
        timeout: kind.default_timeout(),
        unique_key: None,
        metadata: json!({}),
        result: None,
        last_error: None,
        error_kind: None,
        created_at: 0,
        updated_at: 0,
        finished_at: None,
        cancel_requested_at: None,
    }
}

fn unused<T>() -> StoreResult<T> {
    Err(StoreError::Corrupt("not used by the worker runtime".into()))
}

#[async_trait]
impl JobStore for FakeStore {
    async fn enqueue(&self, _: JobKind, _: Value, _: EnqueueOptions) -> StoreResult<Enqueued> {
        unused()
    }
    async fn lease(&self, request: LeaseRequest<'_>) -> StoreResult<Vec<Job>> {
        self.stall(|state| state.lease_stall).await;
        let mut state = self.state.lock().unwrap();
        self.record(&mut state, Call::Lease(request.kinds.to_vec(), request.max_jobs));
        let mut leased = Vec::new();
        let mut index = 0;
        while index < state.pending.len() && leased.len() < request.max_jobs as usize {
            if request.kinds.contains(&state.pending[index].kind) {
                let mut job = state.pending.remove(index);
                job.status = JobStatus::Processing;
                job.lock_owner = Some(request.owner.to_owned());
                job.lock_until = Some(self.now_millis() + millis(request.ttl));
                job.lease_token += 1;
                job.attempts += 1;
                state.processing.insert(job.id, job.clone());
                leased.push(job);
            } else {
                index += 1;
            }
        }
        Ok(leased)
    }
    async fn heartbeat(&self, _: &str, leases: &[Lease], ttl: Duration) -> StoreResult<HeartbeatReport> {
        let mut state = self.state.lock().unwrap();
        let mut ids: Vec<JobId> = leases.iter().map(|l| l.job_id).collect();
        ids.sort();
        self.record(&mut state, Call::Heartbeat(ids));
        if state.heartbeats_fail {
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        let (renewed, lost): (Vec<Lease>, Vec<Lease>) = leases.iter().partition(|&&lease| self.held(&state, lease));
        let renewed_until = self.now_millis() + millis(ttl);
        for lease in &renewed {
            if let Some(job) = state.processing.get_mut(&lease.job_id) {
                job.lock_until = Some(renewed_until);
            }
        }
        Ok(HeartbeatReport {
            renewed: renewed.iter().map(|l| l.job_id).collect(),
            lost: lost.iter().map(|l| l.job_id).collect(),
            cancel_requested: renewed
                .iter()
                .map(|l| l.job_id)
                .filter(|id| state.cancel_requested.contains(id))
                .collect(),
        })
    }
    async fn start_clock(&self, lease: Lease) -> StoreResult<()> {
        let mut state = self.state.lock().unwrap();
        self.record(&mut state, Call::StartClock(lease.job_id));
        Ok(())
    }
    async fn save_checkpoint(&self, _: Lease, _: &Checkpoint) -> StoreResult<()> {
        Ok(())
    }
    async fn save_checkpoint_and_enqueue(&self, _: Lease, _: &Checkpoint, _: FollowUp) -> StoreResult<Enqueued> {
        unused()
    }
    async fn complete(&self, lease: Lease, _: Option<Value>) -> StoreResult<()> {
        let mut state = self.state.lock().unwrap();
        if state.outcome_outages > 0 {
            state.outcome_outages -= 1;
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        if !self.held(&state, lease) {
            return Err(StoreError::LeaseLost { job_id: lease.job_id });
        }
        state.processing.remove(&lease.job_id);
        self.record(&mut state, Call::Complete(lease.job_id));
        Ok(())
    }
    async fn fail(&self, lease: Lease, _: &str, failure: Failure) -> StoreResult<FailOutcome> {
        let mut state = self.state.lock().unwrap();
        state.processing.remove(&lease.job_id);
        self.record(&mut state, Call::Fail(lease.job_id, failure));
        Ok(FailOutcome::Dead)
    }
    async fn postpone(&self, lease: Lease, delay: Duration, _: &str) -> StoreResult<()> {
        let mut state = self.state.lock().unwrap();
        state.processing.remove(&lease.job_id);
        self.record(&mut state, Call::Postpone(lease.job_id, delay));
        Ok(())
    }
    async fn release(&self, _: &str, leases: &[Lease]) -> StoreResult<Vec<JobId>> {
        let mut state = self.state.lock().unwrap();
        let mut released = Vec::new();
        for Lease { job_id: id, .. } in leases {
            if let Some(mut job) = state.processing.remove(id) {
                job.status = JobStatus::Pending;
                job.attempts -= 1;
                state.pending.push(job);
                released.push(*id);
            }
        }
        self.record(&mut state, Call::Release(released.clone()));
        Ok(released)
    }
    async fn recover_stale(&self) -> StoreResult<Vec<Recovery>> {
        self.stall(|state| state.recover_stale_stall).await;
        let mut state = self.state.lock().unwrap();
        self.record(&mut state, Call::RecoverStale);
        if state.reaper_fails > 0 {
            state.reaper_fails -= 1;
            return Err(StoreError::Corrupt("the database is having a bad day".into()));
        }
        let dead = state.reaped_dead.iter().filter(|job| job.status != JobStatus::Dead).map(|job| Recovery {
            job_id: job.id,
            kind: job.kind,
            owner: Some("gone".into()),
            attempts: job.max_attempts,
            max_attempts: job.max_attempts,
            running_for: Duration::ZERO,
            silent_for: Duration::ZERO,
            reason: RecoveryReason::LeaseExpired,
            action: RecoveryAction::DeadLettered,
        });
        let dead: Vec<Recovery> = dead.collect();
        state.reaped_dead.iter_mut().for_each(|job| job.status = JobStatus::Dead);
        Ok(dead)
    }
    async fn enforce_timeouts(&self) -> StoreResult<Vec<Recovery>> {
        let mut state = self.state.lock().unwrap();
        self.record(&mut state, Call::EnforceTimeouts);
        Ok(Vec::new())
    }
    async fn attempts_ended(&self, _: i64, _: Duration) -> StoreResult<Vec<AttemptsEnded>> {
        unused()
    }
    async fn record_reaper_pass(&self, _: &str, requeued: u32, dead_lettered: u32) -> StoreResult<()> {
        let mut state = self.state.lock().unwrap();
        self.record(&mut state, Call::ReaperPass(requeued, dead_lettered));
        Ok(())
    }
    async fn last_reaper_pass(&self) -> StoreResult<Option<checkpoint_store::ReaperPass>> {
        unused()
    }
    async fn job(&self, id: JobId) -> StoreResult<Option<Job>> {
        Ok(self.state.lock().unwrap().reaped_dead.iter().find(|job| job.id == id).cloned())
    }
    async fn list_jobs(&self, _: &JobFilter) -> StoreResult<Vec<Job>> {
        unused()
    }
    async fn counts(&self) -> StoreResult<Vec<QueueCount>> {
        let state = self.state.lock().unwrap();
        let mut counts = Vec::new();
        for (status, n) in [(JobStatus::Pending, state.pending.len()), (JobStatus::Processing, state.processing.len())]
        {
            counts.push(QueueCount {
                status,
                kind: JobKind::ProcessDocument,
                count: n as u64,
                oldest_created_at: None,
            });
        }
        Ok(counts)
    }
    async fn stale_jobs(&self, _: Option<Duration>) -> StoreResult<Vec<Job>> {
        unused()
    }
    async fn take_back_stale(&self, _: &[JobId], _: Option<Duration>) -> StoreResult<Vec<Recovery>> {
        unused()
    }
    async fn retry_dead(&self, _: JobId) -> StoreResult<Job> {
        unused()
    }
    async fn purge_dead(&self, _: Duration) -> StoreResult<u64> {
        unused()
    }
    async fn requeue_with_checkpoint(&self, _: JobId, _: &Checkpoint) -> StoreResult<Job> {
        unused()
    }
    async fn cancel(&self, id: JobId) -> StoreResult<Cancellation> {
        let mut state = self.state.lock().unwrap();
        let job = state.processing.get(&id).cloned().ok_or(StoreError::JobNotFound(id))?;
        state.cancel_requested.push(id);
        Ok(Cancellation::Requested(job))
    }
    async fn cancel_held(&self, lease: Lease) -> StoreResult<Job> {
        let mut state = self.state.lock().unwrap();
        if !self.held(&state, lease) {
            return Err(StoreError::LeaseLost { job_id: lease.job_id });
        }
        let mut job = state.processing.remove(&lease.job_id).expect("held");
        job.status = JobStatus::Cancelled;
        self.record(&mut state, Call::CancelHeld(lease.job_id));
        Ok(job)
    }
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
    async fn job_attempts(&self, _: JobId) -> StoreResult<Vec<JobAttempt>> {
        unused()
    }
    fn job_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.signal.subscribe())
    }
}

/// How the scripted handler treats each job.
#[derive(Clone, Copy)]
enum Script {
    /// Works for this long (virtual time), checking for lost leases, then completes.
    WorkFor(Duration),
    /// Works in ten steps of this long, stopping at a step boundary once shutdown is asked for.
    Steps(Duration),
    /// Reports a rate limit.
    RateLimited(Duration),
    /// Reports that it waits on something outside the job.
    Deferred(Duration),
    /// Reports that the AI service refused the account.
    AccountRefused,
}

struct ScriptedHandler {
    scripts: HashMap<JobId, Script>,
    /// Jobs whose attempt saw its lease lost, and when.
    saw_lease_lost: Mutex<Vec<(JobId, Duration)>>,
    /// Jobs whose attempt started, in order.
    started: Mutex<Vec<JobId>>,
    /// How long the dead-letter hook takes (as a Batch API cancellation against a stalled
    /// service would).
    dead_letter_stall: Duration,
    /// Jobs whose cancellation hook ran (where a Batch API batch is cancelled), and when.
    cancelled: Mutex<Vec<(JobId, Duration)>>,
    start: Instant,
}

#[async_trait]
impl JobHandler for ScriptedHandler {
    async fn run(&self, job: &Job, context: &JobContext) -> Result<Value, JobError> {
        self.started.lock().unwrap().push(job.id);
        match self.scripts.get(&job.id).copied().unwrap_or(Script::WorkFor(Duration::ZERO)) {
            Script::WorkFor(duration) => {
                tokio::select! {
                    () = tokio::time::sleep(duration) => Ok(json!({})),
                    () = context.lease_lost.cancelled() => {
                        self.saw_lease_lost.lock().unwrap().push((job.id, self.start.elapsed()));
                        Err(JobError::LeaseLost)
                    }
                }
            }
            Script::Steps(step) => {
                for _ in 0..10 {
                    context.checkpoint_boundary()?;
                    tokio::time::sleep(step).await;
                }
                Ok(json!({}))
            }
            Script::RateLimited(retry_after) => Err(JobError::RateLimited { retry_after }),
            Script::Deferred(retry_after) => Err(JobError::Deferred { retry_after, reason: "waiting".into() }),
            Script::AccountRefused => Err(JobError::AccountRefused("HTTP 401: invalid api key".into())),
        }
    }

    async fn dead_lettered(&self, _: &Job) {
        tokio::time::sleep(self.dead_letter_stall).await;
    }

    async fn cancelled(&self, job: &Job) {
        self.cancelled.lock().unwrap().push((job.id, self.start.elapsed()));
    }

    fn needs_ai_service(&self) -> bool {
        true
    }
}

/// The scripted handler, for a kind that does not need the AI service.
struct WithoutAi(Arc<ScriptedHandler>);

#[async_trait]
impl JobHandler for WithoutAi {
    async fn run(&self, job: &Job, context: &JobContext) -> Result<Value, JobError> {
        self.0.run(job, context).await
    }

    async fn dead_lettered(&self, job: &Job) {
        self.0.dead_lettered(job).await;
    }

    async fn cancelled(&self, job: &Job) {
        self.0.cancelled(job).await;
    }

    fn needs_ai_service(&self) -> bool {
        false
    }
}

/// The scripted handler for both kinds; `process_document` needs the AI service, as the
/// pipeline's does, and `detect_connections` does not.
fn handlers(handler: &Arc<ScriptedHandler>) -> Handlers {
    Handlers::new()
        .with(JobKind::ProcessDocument, handler.clone())
        .with(JobKind::DetectConnections, Arc::new(WithoutAi(handler.clone())))
}

fn config() -> WorkerConfig {
    let mut config = WorkerConfig::new("test-worker");
    config.concurrency = 1;
    config.prefetch = 0;
    config.lease_ttl = Duration::from_secs(60);
    config.heartbeat_interval = Duration::from_secs(20);
    config.reaper_interval = Duration::from_secs(30);
    config.shutdown_grace = Duration::from_secs(30);
    config.poll_interval = Duration::from_millis(500);
    config
}

fn handler(scripts: &[(i64, Script)]) -> Arc<ScriptedHandler> {
    Arc::new(ScriptedHandler {
        scripts: scripts.iter().map(|&(id, script)| (JobId(id), script)).collect(),
        saw_lease_lost: Mutex::default(),
        started: Mutex::default(),
        dead_letter_stall: Duration::ZERO,
        cancelled: Mutex::default(),
        start: Instant::now(),
    })
}

fn spawn(
    store: &Arc<FakeStore>,
    handler: &Arc<ScriptedHandler>,
    config: WorkerConfig,
) -> (CancellationToken, tokio::task::JoinHandle<Result<(), StoreError>>) {
    let handlers = handlers(handler);
    let shutdown = CancellationToken::new();
    let worker = Worker::new(store.clone(), handlers, config);
    (shutdown.clone(), tokio::spawn(worker.run(shutdown)))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn heartbeats_renew_in_flight_leases_every_interval_in_one_call() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument)]);
    let handler = handler(&[(1, Script::WorkFor(secs(70)))]);
    let (_shutdown, run) = spawn(&store, &handler, config());
    tokio::time::sleep(secs(80)).await;
    let beats: Vec<Duration> =
        store.calls().into_iter().filter_map(|(at, call)| matches!(call, Call::Heartbeat(_)).then_some(at)).collect();
    // Leased at 0, worked for 70 s: renewed at 20, 40 and 60 s, each call carrying the job.
    assert_eq!(beats, [secs(20), secs(40), secs(60)]);
    assert!(store.calls().iter().any(|(_, call)| *call == Call::Complete(JobId(1))));
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn an_operators_cancel_stops_the_job_at_the_stage_boundary_after_the_next_heartbeat() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument)]);
    // Stage boundaries every 15 s: at 0, 15, 30, 45 … 135 s.
    let handler = handler(&[(1, Script::Steps(secs(15)))]);
    let (_shutdown, run) = spawn(&store, &handler, config());
    tokio::time::sleep(secs(25)).await;
    let asked = store.cancel(JobId(1)).await.unwrap();
    assert!(matches!(asked, Cancellation::Requested(_)), "{asked:?}");
    tokio::time::sleep(secs(60)).await;

    // Asked at 25 s; the heartbeat at 40 s tells the worker; the boundary at 45 s stops the job,
    // which is recorded cancelled under its lease (not completed, failed or postponed), and
    // its cancellation hook runs.
    let settled: Vec<(Duration, Call)> = store
        .calls()
        .into_iter()
        .filter(|(_, call)| {
            matches!(call, Call::Complete(_) | Call::Fail(..) | Call::Postpone(..) | Call::CancelHeld(_))
        })
        .collect();
    assert_eq!(settled, [(secs(45), Call::CancelHeld(JobId(1)))]);
    assert_eq!(*handler.cancelled.lock().unwrap(), [(JobId(1), secs(45))]);
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_cancels_the_job_at_the_next_heartbeat() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument)]);
    let handler = handler(&[(1, Script::WorkFor(secs(600)))]);
    let (_shutdown, run) = spawn(&store, &handler, config());
    tokio::time::sleep(secs(25)).await;
    store.revoke(JobId(1));
    tokio::time::sleep(secs(30)).await;
    // Revoked at 25 s; the heartbeat at 40 s finds out and the job stops then, not at 600 s.
    assert_eq!(*handler.saw_lease_lost.lock().unwrap(), [(JobId(1), secs(40))]);
    // It writes nothing more: no completion, no failure, no postponement.
    assert!(
        !store.calls().iter().any(|(_, call)| matches!(call, Call::Complete(_) | Call::Fail(..) | Call::Postpone(..)))
    );
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn the_reaper_runs_at_start_up_and_on_its_interval_and_survives_errors() {
    let store = FakeStore::new(Vec::new());
    store.state.lock().unwrap().reaper_fails = 1;
    let handler = handler(&[]);
    let (_shutdown, run) = spawn(&store, &handler, config());
    tokio::time::sleep(secs(65)).await;
    let passes: Vec<Duration> =
        store.calls().into_iter().filter_map(|(at, call)| (call == Call::RecoverStale).then_some(at)).collect();
    assert_eq!(passes, [secs(0), secs(30), secs(60)], "a failed pass at start-up does not stop the reaper");
    let timeouts = store.calls().iter().filter(|(_, call)| *call == Call::EnforceTimeouts).count();
    assert_eq!(timeouts, 2, "timeouts are enforced on every successful pass");
    let recorded: Vec<Duration> = store
        .calls()
        .into_iter()
        .filter_map(|(at, call)| matches!(call, Call::ReaperPass(0, 0)).then_some(at))
        .collect();
    assert_eq!(recorded, [secs(30), secs(60)], "every successful pass is recorded for operators, and only those");
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_releases_prefetched_jobs_and_pauses_embedding_work_until_it_passes() {
    let store = FakeStore::new(vec![
        job(1, JobKind::ProcessDocument),
        job(2, JobKind::ProcessDocument),
        job(3, JobKind::ProcessDocument),
    ]);
    let handler = handler(&[(1, Script::RateLimited(secs(30)))]);
    let mut config = config();
    config.prefetch = 2;
    let (_shutdown, run) = spawn(&store, &handler, config);
    tokio::time::sleep(secs(10)).await;
    let calls = store.calls();
    assert!(calls.iter().any(|(_, c)| *c == Call::Postpone(JobId(1), secs(30))), "{calls:?}");
    assert!(
        calls.iter().any(|(at, c)| *c == Call::Release(vec![JobId(2), JobId(3)]) && *at == Duration::ZERO),
        "{calls:?}"
    );
    // While limited, only work that needs no embeddings is leased.
    let during: Vec<&Call> =
        calls.iter().filter(|(at, c)| *at > Duration::ZERO && matches!(c, Call::Lease(..))).map(|(_, c)| c).collect();
    assert!(!during.is_empty());
    assert!(during.iter().all(|c| **c == Call::Lease(vec![JobKind::DetectConnections], 3)), "{during:?}");
    tokio::time::sleep(secs(25)).await;
    // After 30 s the released jobs are leased and done.
    let calls = store.calls();
    assert!(calls.iter().any(|(at, c)| *c == Call::Complete(JobId(2)) && *at >= secs(30)), "{calls:?}");
    assert!(calls.iter().any(|(_, c)| *c == Call::Complete(JobId(3))));
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_refused_account_pauses_ai_work_with_a_growing_back_off_and_spends_no_attempt() {
    let store = FakeStore::new(vec![
        job(1, JobKind::ProcessDocument),
        job(2, JobKind::ProcessDocument),
        job(3, JobKind::ProcessDocument),
    ]);
    let handler = handler(&[(1, Script::AccountRefused), (2, Script::AccountRefused)]);
    let mut config = config();
    config.prefetch = 2;
    let handlers = handlers(&handler);
    let worker = Worker::new(store.clone(), handlers, config);
    let metrics = worker.metrics();
    let run = tokio::spawn(worker.run(CancellationToken::new()));

    tokio::time::sleep(secs(10)).await;
    let calls = store.calls();
    // Postponed, not failed: the book is not at fault, and no attempt is spent on it.
    assert!(calls.iter().any(|(_, c)| *c == Call::Postpone(JobId(1), secs(60))), "{calls:?}");
    assert!(calls.iter().any(|(at, c)| *c == Call::Release(vec![JobId(2), JobId(3)]) && *at == Duration::ZERO));
    assert!(!calls.iter().any(|(_, c)| matches!(c, Call::Fail(..))), "{calls:?}");
    assert_eq!(metrics.account_refused.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(metrics.ai_paused_until.load(std::sync::atomic::Ordering::Relaxed) > 0);
    let reason = metrics.ai_pause_reason.lock().unwrap().clone().unwrap_or_default();
    assert!(reason.contains("invalid api key"), "{reason}");

    // After the first pause (60 s) the worker tries again and is refused again: the second
    // pause is twice as long, so job 3 waits until 60 + 120 s.
    tokio::time::sleep(secs(160)).await;
    let calls = store.calls();
    assert!(calls.iter().any(|(at, c)| *c == Call::Postpone(JobId(2), secs(60)) && *at >= secs(60)), "{calls:?}");
    assert!(!calls.iter().any(|(_, c)| *c == Call::Complete(JobId(3))), "job 3 ran during the pause: {calls:?}");
    let paused: Vec<&Call> = calls
        .iter()
        .filter(|(at, c)| *at > secs(61) && *at < secs(180) && matches!(c, Call::Lease(..)))
        .map(|(_, c)| c)
        .collect();
    assert!(paused.iter().all(|c| **c == Call::Lease(vec![JobKind::DetectConnections], 3)), "{paused:?}");

    tokio::time::sleep(secs(30)).await;
    let calls = store.calls();
    assert!(calls.iter().any(|(at, c)| *c == Call::Complete(JobId(3)) && *at >= secs(180)), "{calls:?}");
    assert_eq!(metrics.account_refused.load(std::sync::atomic::Ordering::Relaxed), 2);
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_the_grace_period_then_hands_jobs_back_at_a_stage_boundary() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument), job(2, JobKind::ProcessDocument)]);
    let handler = handler(&[(1, Script::Steps(secs(10)))]);
    let mut config = config();
    config.prefetch = 1;
    let (shutdown, run) = spawn(&store, &handler, config);
    tokio::time::sleep(secs(15)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let calls = store.calls();
    // The prefetched job goes back at once; the running one keeps going through the 30 s grace
    // and is handed back at its next step boundary (50 s), without using an attempt.
    assert!(calls.iter().any(|(at, c)| *c == Call::Release(vec![JobId(2)]) && *at == secs(15)), "{calls:?}");
    assert!(calls.iter().any(|(at, c)| *c == Call::Postpone(JobId(1), Duration::ZERO) && *at == secs(50)), "{calls:?}");
    assert!(store.state.lock().unwrap().processing.is_empty(), "nothing is left processing");
    // Its lease is renewed through the grace period, until it is handed back.
    assert_eq!(heartbeats(&store), [(secs(20), vec![JobId(1)]), (secs(40), vec![JobId(1)])]);
}

#[tokio::test(start_paused = true)]
async fn a_job_that_finishes_within_the_grace_period_completes() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument)]);
    let handler = handler(&[(1, Script::WorkFor(secs(20)))]);
    let (shutdown, run) = spawn(&store, &handler, config());
    tokio::time::sleep(secs(5)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert!(store.calls().iter().any(|(at, c)| *c == Call::Complete(JobId(1)) && *at == secs(20)));
}

#[tokio::test(start_paused = true)]
async fn exit_when_idle_returns_once_the_queue_is_empty() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument), job(2, JobKind::DetectConnections)]);
    let handler = handler(&[(1, Script::WorkFor(secs(3)))]);
    let mut config = config();
    config.exit_when_idle = true;
    let (_shutdown, run) = spawn(&store, &handler, config);
    tokio::time::timeout(secs(60), run).await.expect("the worker exits by itself").unwrap().unwrap();
    let completed = store.calls().into_iter().filter(|(_, c)| matches!(c, Call::Complete(_))).count();
    assert_eq!(completed, 2);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_in_the_same_process_learns_of_each_ended_attempt_when_it_ends() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument), job(2, JobKind::DetectConnections)]);
    let handler = handler(&[(1, Script::WorkFor(secs(3))), (2, Script::WorkFor(secs(7)))]);
    let worker = Worker::new(store.clone(), handlers(&handler), config());
    let mut ended = worker.attempts_ended();
    let run = tokio::spawn(worker.run(CancellationToken::new()));
    let start = Instant::now();
    // The first job ends at 3 s, the second (started when the first ended) at 10 s; each wakes
    // the waiter then, not at a poll.
    let next = |ended: &mut tokio::sync::watch::Receiver<u64>| {
        let mut ended = ended.clone();
        async move { tokio::time::timeout(secs(60), ended.changed()).await.expect("an attempt ended").unwrap() }
    };
    next(&mut ended).await;
    assert_eq!((*ended.borrow_and_update(), start.elapsed()), (1, secs(3)));
    next(&mut ended).await;
    assert_eq!((*ended.borrow_and_update(), start.elapsed()), (2, secs(10)));
    let completed = store.calls().into_iter().filter(|(_, c)| matches!(c, Call::Complete(_))).count();
    assert_eq!(completed, 2, "the count moves once the outcome is recorded");
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn an_idle_worker_leases_a_new_job_when_the_store_signals_it_not_at_its_next_poll() {
    let store = FakeStore::new(Vec::new());
    let handler = handler(&[]);
    let mut config = config();
    // Nothing else wakes the loop: only the signal, or the poll an hour on.
    config.poll_interval = Duration::from_secs(3600);
    config.reaper_interval = Duration::from_secs(7200);
    let (_shutdown, run) = spawn(&store, &handler, config);
    tokio::time::sleep(secs(5)).await;
    store.queue(job(1, JobKind::ProcessDocument), false);
    tokio::time::sleep(secs(1)).await;
    // Queued at 5 s, leased and completed then, an hour before the next poll.
    let calls = store.calls();
    assert!(calls.iter().any(|(at, c)| *c == Call::Complete(JobId(1)) && *at == secs(5)), "{calls:?}");

    // A job queued without the signal (another process, on SQLite) waits for the poll.
    store.queue(job(2, JobKind::ProcessDocument), true);
    tokio::time::sleep(secs(60)).await;
    assert!(!store.calls().iter().any(|(_, c)| *c == Call::Complete(JobId(2))), "found without a signal or a poll");
    tokio::time::sleep(secs(3600)).await;
    assert!(store.calls().iter().any(|(_, c)| *c == Call::Complete(JobId(2))), "the poll finds it");
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_worker_leases_only_the_kinds_it_has_handlers_for() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument), job(2, JobKind::DetectConnections)]);
    let handler = handler(&[]);
    let handlers = Handlers::new().with(JobKind::DetectConnections, Arc::new(WithoutAi(handler.clone())));
    let worker = Worker::new(store.clone(), handlers, config());
    let run = tokio::spawn(worker.run(CancellationToken::new()));
    tokio::time::sleep(secs(5)).await;
    let calls = store.calls();
    let leases: Vec<&Call> = calls.iter().filter(|(_, c)| matches!(c, Call::Lease(..))).map(|(_, c)| c).collect();
    assert!(!leases.is_empty());
    assert!(leases.iter().all(|c| matches!(c, Call::Lease(kinds, _) if *kinds == [JobKind::DetectConnections])));
    assert_eq!(*handler.started.lock().unwrap(), [JobId(2)], "{calls:?}");
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_deferred_job_is_postponed_without_pausing_other_work() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument), job(2, JobKind::ProcessDocument)]);
    let handler = handler(&[(1, Script::Deferred(secs(60)))]);
    let (_shutdown, run) = spawn(&store, &handler, config());
    tokio::time::sleep(secs(1)).await;
    let calls = store.calls();
    assert!(calls.iter().any(|(_, c)| *c == Call::Postpone(JobId(1), secs(60))), "{calls:?}");
    // Unlike a rate limit, waiting on one job does not stop the worker taking others.
    assert!(calls.iter().any(|(_, c)| *c == Call::Complete(JobId(2))), "{calls:?}");
    run.abort();
}

#[test]
fn settings_under_which_a_worker_would_lose_healthy_leases_are_refused() {
    let valid = WorkerConfig::new("w1");
    assert_eq!(valid.validate(), Ok(()));
    assert_eq!(valid.heartbeat_interval, WorkerConfig::heartbeat_for(valid.lease_ttl));
    let refused = |change: fn(&mut WorkerConfig), reason: &str| {
        let mut config = WorkerConfig::new("w1");
        change(&mut config);
        let error = config.validate().expect_err(reason);
        assert!(error.to_string().contains(reason), "{error}");
    };
    refused(|c| c.heartbeat_interval = c.lease_ttl, "shorter than the lease");
    refused(|c| c.heartbeat_interval = c.lease_ttl * 2, "shorter than the lease");
    refused(|c| c.concurrency = 0, "concurrency");
    refused(|c| c.poll_interval = Duration::ZERO, "poll interval");
    refused(|c| c.owner = " ".into(), "name");
}

/// The heartbeat calls, each with when it was made and the jobs it carried.
fn heartbeats(store: &FakeStore) -> Vec<(Duration, Vec<JobId>)> {
    store
        .calls()
        .into_iter()
        .filter_map(|(at, call)| match call {
            Call::Heartbeat(ids) => Some((at, ids)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn prefetched_jobs_have_their_leases_renewed_while_they_wait() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument), job(2, JobKind::ProcessDocument)]);
    let handler = handler(&[(1, Script::WorkFor(secs(70))), (2, Script::WorkFor(secs(1)))]);
    let mut config = config();
    config.prefetch = 1;
    let (_shutdown, run) = spawn(&store, &handler, config);
    tokio::time::sleep(secs(65)).await;
    // Job 2 waits behind job 1 for 70 s, longer than its 60 s lease: every beat renews it too.
    let both = vec![JobId(1), JobId(2)];
    assert_eq!(heartbeats(&store), [(secs(20), both.clone()), (secs(40), both.clone()), (secs(60), both)]);
    tokio::time::sleep(secs(10)).await;
    assert!(store.calls().iter().any(|(_, call)| *call == Call::Complete(JobId(2))), "it ran once job 1 ended");
    // Its timeout clock starts when it starts, at 70 s; job 1 started at once and keeps its own.
    let restarts: Vec<_> = store.calls().into_iter().filter(|(_, call)| matches!(call, Call::StartClock(_))).collect();
    assert_eq!(restarts, [(secs(70), Call::StartClock(JobId(2)))]);
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_prefetched_job_whose_lease_was_lost_is_never_started() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument), job(2, JobKind::ProcessDocument)]);
    let handler = handler(&[(1, Script::WorkFor(secs(70))), (2, Script::WorkFor(secs(1)))]);
    let mut config = config();
    config.prefetch = 1;
    let (_shutdown, run) = spawn(&store, &handler, config);
    tokio::time::sleep(secs(25)).await;
    store.revoke(JobId(2));
    tokio::time::sleep(secs(75)).await;
    // The beat at 40 s finds job 2's lease gone; job 1 ends at 70 s and job 2 is not started.
    assert_eq!(heartbeats(&store)[1], (secs(40), vec![JobId(1), JobId(2)]));
    assert_eq!(heartbeats(&store)[2], (secs(60), vec![JobId(1)]));
    assert!(store.calls().iter().any(|(_, call)| *call == Call::Complete(JobId(1))));
    assert_eq!(*handler.started.lock().unwrap(), [JobId(1)]);
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_database_outage_while_recording_an_outcome_costs_no_attempt() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument)]);
    // The work ends at 10 s; the database refuses the completion for its next six tries.
    store.state.lock().unwrap().outcome_outages = 6;
    let handler = handler(&[(1, Script::WorkFor(secs(10)))]);
    let (_shutdown, run) = spawn(&store, &handler, config());
    tokio::time::sleep(secs(30)).await;
    // Tried again after 0.1, 0.2, 0.4, 0.8, 1.6 and 3.2 s: recorded at 16.3 s, once, while the
    // lease still held; no failure, no retry, no attempt spent.
    let settled: Vec<_> = store
        .calls()
        .into_iter()
        .filter(|(_, call)| matches!(call, Call::Complete(_) | Call::Fail(..) | Call::Postpone(..)))
        .collect();
    assert_eq!(settled, [(Duration::from_millis(16_300), Call::Complete(JobId(1)))]);
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_hook_stalled_on_the_ai_service_starves_no_heartbeat() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument)]);
    // The reaper's first pass dead-letters a job whose hook then waits 180 s, three leases long.
    store.state.lock().unwrap().reaped_dead.push(job(9, JobKind::ProcessDocument));
    let scripts = [(1, Script::WorkFor(secs(200)))];
    let handler =
        Arc::new(ScriptedHandler { dead_letter_stall: secs(180), ..Arc::into_inner(handler(&scripts)).unwrap() });
    let (_shutdown, run) = spawn(&store, &handler, config());
    tokio::time::sleep(secs(125)).await;
    // The running job's lease is renewed on time throughout, and never lost.
    let beats: Vec<Duration> = heartbeats(&store).into_iter().map(|(at, _)| at).collect();
    assert_eq!(beats, [secs(20), secs(40), secs(60), secs(80), secs(100), secs(120)]);
    assert!(handler.saw_lease_lost.lock().unwrap().is_empty());
    assert!(store.calls().contains(&(secs(0), Call::ReaperPass(0, 1))), "the pass is recorded with its dead letter");
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_cannot_renew_its_leases_for_a_whole_lease_stops_its_jobs_and_starts_none() {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument), job(2, JobKind::ProcessDocument)]);
    store.state.lock().unwrap().heartbeats_fail = true;
    // Job 1 works in ten 15 s steps, checking for a stop before each; job 2 waits for a slot.
    let handler = handler(&[(1, Script::Steps(secs(15))), (2, Script::WorkFor(secs(1)))]);
    let mut config = config();
    config.prefetch = 1;
    let (_shutdown, run) = spawn(&store, &handler, config);
    tokio::time::sleep(secs(150)).await;
    // Beats fail from 20 s; at 80 s a whole 60 s lease has gone unrenewed, so job 1 stops at its
    // next step (90 s) and is handed back; job 2 is never started, and nothing more is leased.
    let settled: Vec<_> =
        store.calls().into_iter().filter(|(_, call)| matches!(call, Call::Complete(_) | Call::Postpone(..))).collect();
    assert_eq!(settled, [(secs(90), Call::Postpone(JobId(1), Duration::ZERO))]);
    assert_eq!(*handler.started.lock().unwrap(), [JobId(1)]);
    let leases_after_cut_off =
        store.calls().iter().filter(|(at, call)| matches!(call, Call::Lease(..)) && *at >= secs(80)).count();
    assert_eq!(leases_after_cut_off, 0);
    // Once a heartbeat succeeds again (at 160 s), the worker starts work again.
    store.state.lock().unwrap().heartbeats_fail = false;
    tokio::time::sleep(secs(20)).await;
    assert_eq!(*handler.started.lock().unwrap(), [JobId(1), JobId(2)]);
    assert!(store.calls().iter().any(|(_, call)| *call == Call::Complete(JobId(2))));
    run.abort();
}

/// Runs one job for 190 s under 60 s leases that really expire, with `stall` making the
/// database hold up the loop's statements for 180 s (three leases) each once the job has
/// started; checks that the lease was renewed on time throughout and the job completed under it.
async fn assert_leases_outlive_a_stalled_statement(stall: fn(&mut FakeState), prefetch: usize) {
    let store = FakeStore::new(vec![job(1, JobKind::ProcessDocument)]);
    store.state.lock().unwrap().leases_expire = true;
    let handler = handler(&[(1, Script::WorkFor(secs(190)))]);
    let mut config = config();
    config.prefetch = prefetch;
    let (_shutdown, run) = spawn(&store, &handler, config);
    // The job is leased and started at 0 s; the stall begins with the loop's next statement.
    tokio::time::sleep(Duration::from_millis(1)).await;
    stall(&mut store.state.lock().unwrap());
    tokio::time::sleep(secs(250)).await;
    let beats: Vec<Duration> = heartbeats(&store).into_iter().map(|(at, _)| at).collect();
    let every_20_s: Vec<Duration> = (1..=9).map(|beat| secs(20 * beat)).collect();
    assert_eq!(beats, every_20_s, "renewals reached the store during the stall");
    assert!(handler.saw_lease_lost.lock().unwrap().is_empty());
    let settled: Vec<_> =
        store.calls().into_iter().filter(|(_, call)| matches!(call, Call::Complete(_) | Call::Fail(..))).collect();
    assert_eq!(settled, [(secs(190), Call::Complete(JobId(1)))]);
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn a_reaper_pass_stalled_on_the_database_for_three_leases_starves_no_heartbeat() {
    // The reaper's pass at 30 s stalls until 210 s.
    assert_leases_outlive_a_stalled_statement(|state| state.recover_stale_stall = secs(180), 0).await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_request_stalled_on_the_database_for_three_leases_starves_no_heartbeat() {
    // With room to prefetch, the loop asks for more work while the job runs; its request at
    // 0.5 s stalls until 180.5 s.
    assert_leases_outlive_a_stalled_statement(|state| state.lease_stall = secs(180), 1).await;
}
