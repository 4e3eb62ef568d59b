//! The worker: leases jobs, runs them, renews their leases, reaps stale jobs, and shuts down
//! without leaving a job behind.
//!
//! One loop leases, starts and releases jobs, reaps, pauses AI work and shuts down; each job
//! runs in its own task with three cancellation tokens: `lease_lost` (stop at once, write
//! nothing), `shutdown` (the grace period is over: stop at the next stage boundary and hand the
//! job back with its checkpoint) and `cancel` (an operator cancelled it, as a heartbeat
//! reported: stop at the next stage boundary and record it `cancelled`). Whatever way the loop
//! ends, prefetched jobs that never started are released.
//!
//! The heartbeat runs beside the loop, on its own timer and task (`heartbeat.rs`), sharing only
//! the held leases with it, so that no statement the loop waits on can starve a renewal.
//!
//! Past 500 lines because the loop is one piece: leasing, starting, finishing, reaping,
//! releasing and shutting down share its state; what stands alone (the heartbeat, one attempt,
//! the AI pause) lives in files of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use checkpoint_store::{JobId, JobKind, JobStatus, JobStore, Lease, LeaseRequest, RecoveryAction, StoreError};
use strum::VariantArray;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::ai_pause::account_refused_pause;
use crate::attempt::run_attempt;
use crate::config::WorkerConfig;
use crate::heartbeat::{Heartbeat, HeldLeases, InFlight, Prefetched, RunningGuard};
use tracing::{Instrument, error, info, warn};

use crate::job::{JobContext, JobHandler};

/// A name for this process's worker: host and process id.
pub fn default_owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "host".into());
    format!("{host}:{}", std::process::id())
}

/// The handler of each job kind a worker runs: it leases only these kinds.
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: Vec<(JobKind, Arc<dyn JobHandler>)>,
}

impl Handlers {
    /// No handler: a worker with none leases nothing.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// These handlers, with `handler` running the jobs of `kind` (in place of any handler it had).
    #[must_use]
    pub fn with(mut self, kind: JobKind, handler: Arc<dyn JobHandler>) -> Handlers {
        self.by_kind.retain(|(known, _)| *known != kind);
        self.by_kind.push((kind, handler));
        self
    }

    /// The handler of `kind`, if the worker runs that kind.
    pub fn get(&self, kind: JobKind) -> Option<Arc<dyn JobHandler>> {
        self.by_kind.iter().find(|(known, _)| *known == kind).map(|(_, handler)| handler.clone())
    }

    /// The kinds to lease: all of them, or, while the AI service asks to wait, those whose
    /// handler does not need it.
    fn kinds_to_lease(&self, ai_paused: bool) -> Vec<JobKind> {
        let runs = |handler: &Arc<dyn JobHandler>| !ai_paused || !handler.needs_ai_service();
        self.by_kind.iter().filter(|(_, handler)| runs(handler)).map(|(kind, _)| *kind).collect()
    }

    fn needs_ai_service(&self, kind: JobKind) -> bool {
        self.get(kind).is_some_and(|handler| handler.needs_ai_service())
    }
}

/// Counters a worker keeps; rendered by the metrics endpoint.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Jobs completed.
    pub completed: AtomicU64,
    /// Attempts that failed and were scheduled again.
    pub retried: AtomicU64,
    /// Jobs dead-lettered by this worker.
    pub dead_lettered: AtomicU64,
    /// Jobs postponed for a rate limit.
    pub rate_limited: AtomicU64,
    /// Jobs postponed because the AI service refused the account.
    pub account_refused: AtomicU64,
    /// Until when (Unix millis) AI work is paused because the service refused the account; 0
    /// when it never was.
    pub ai_paused_until: AtomicI64,
    /// Why AI work was last paused for the account (the service's message).
    pub ai_pause_reason: std::sync::Mutex<Option<String>>,
    /// Jobs handed back at shutdown.
    pub interrupted: AtomicU64,
    /// Jobs stopped and recorded `cancelled` at an operator's request.
    pub cancelled: AtomicU64,
    /// Jobs postponed without an attempt while they wait (on a batch, on the database).
    pub deferred: AtomicU64,
    /// Leases this worker lost.
    pub leases_lost: AtomicU64,
    /// Unstarted jobs released.
    pub released: AtomicU64,
    /// Stale or timed-out jobs requeued by this worker's reaper.
    pub reaped_requeued: AtomicU64,
    /// Stale or timed-out jobs dead-lettered by this worker's reaper.
    pub reaped_dead: AtomicU64,
    /// Reaper passes that failed.
    pub reaper_errors: AtomicU64,
    /// Unix millis of the last successful reaper pass (0 before the first).
    pub reaper_last_success: AtomicI64,
    /// Jobs running now.
    pub in_flight: AtomicU64,
    /// How long attempts ran, by kind, in the order of [`JobKind::VARIANTS`].
    attempt_durations: [crate::histogram::DurationHistogram; JobKind::VARIANTS.len()],
}

impl WorkerMetrics {
    /// The histogram of attempt durations for `kind`.
    pub fn attempt_durations(&self, kind: JobKind) -> &crate::histogram::DurationHistogram {
        let position = JobKind::VARIANTS.iter().position(|known| *known == kind);
        // Every kind is among the variants.
        &self.attempt_durations[position.unwrap_or_default()]
    }
}

/// What an attempt reports back to the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The job.
    pub job_id: JobId,
    /// Its kind.
    pub kind: JobKind,
    /// Whether it completed (and that was recorded).
    pub completed: bool,
    /// Set when the AI service asked to wait this long.
    pub rate_limited: Option<Duration>,
    /// Set, with the reason, when the AI service refused the account.
    pub account_refused: Option<String>,
}

/// A worker process's engine.
pub struct Worker {
    store: Arc<dyn JobStore>,
    handlers: Handlers,
    config: WorkerConfig,
    metrics: Arc<WorkerMetrics>,
    /// How many attempts have ended, for whoever waits on this worker's work in-process.
    attempts_ended: tokio::sync::watch::Sender<u64>,
}

impl Worker {
    /// A worker over `store` running `handlers`.
    pub fn new(store: Arc<dyn JobStore>, handlers: Handlers, config: WorkerConfig) -> Worker {
        let (attempts_ended, _) = tokio::sync::watch::channel(0);
        Worker { store, handlers, config, metrics: Arc::default(), attempts_ended }
    }

    /// Changes each time an attempt of this worker ends (its outcome recorded, whatever it was):
    /// a caller in the same process (`quire process`) waits on it instead of polling the store.
    pub fn attempts_ended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.attempts_ended.subscribe()
    }

    /// The worker's counters.
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.metrics.clone()
    }

    /// Runs until `shutdown` is cancelled (then drains gracefully) or, with `exit_when_idle`,
    /// until the queue is empty.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StoreError> {
        let mut state = LoopState {
            held: Arc::default(),
            tasks: JoinSet::new(),
            stop: CancellationToken::new(),
            rate_limited_until: None,
            account_refusals_in_a_row: 0,
            draining_since: None,
            side_effects: JoinSet::new(),
        };
        let heartbeat = Heartbeat {
            store: self.store.clone(),
            owner: self.config.owner.clone(),
            lease_ttl: self.config.lease_ttl,
            interval: self.config.heartbeat_interval,
            held: state.held.clone(),
            metrics: self.metrics.clone(),
        }
        .spawn();
        let result = self.run_loop(&mut state, &shutdown).await;
        // Runs however the loop ended: nothing leased and unstarted stays with this worker.
        self.release_queued(&mut state).await;
        if result.is_err() {
            state.stop.cancel();
        }
        // The heartbeat keeps renewing the leases of jobs still running until the last ends.
        while state.tasks.join_next().await.is_some() {}
        heartbeat.stop().await;
        self.metrics.in_flight.store(0, Ordering::Relaxed);
        // Dead letters' side effects (cancelling their batches) finish too, within the grace.
        let side_effects = async { while state.side_effects.join_next().await.is_some() {} };
        if tokio::time::timeout(self.config.shutdown_grace, side_effects).await.is_err() {
            warn!(left = state.side_effects.len(), "dead-letter side effects still running at exit: abandoned");
        }
        result
    }

    async fn run_loop(&self, state: &mut LoopState, shutdown: &CancellationToken) -> Result<(), StoreError> {
        let config = &self.config;
        // The reaper's first pass runs at start-up.
        let mut reaper = tokio::time::interval(config.reaper_interval);
        reaper.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval(config.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // New jobs wake the loop at once where the store can tell; the poll finds the rest.
        let mut jobs_signal = self.store.job_signal();
        let mut lease_errors = 0u32;

        loop {
            self.start_queued(state);
            let draining = state.draining_since.is_some();
            if !draining {
                match self.lease_more(state).await {
                    Ok(0) => lease_errors = 0,
                    Ok(_) => {
                        lease_errors = 0;
                        continue;
                    }
                    Err(error) => {
                        // A lost connection is survived: log, back off, try again.
                        lease_errors += 1;
                        warn!(%error, "leasing failed; backing off");
                        let pause = Duration::from_millis(200 * u64::from(lease_errors.min(25)));
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = shutdown.cancelled() => {}
                        }
                    }
                }
            }
            if draining && state.tasks.is_empty() {
                info!("shutdown complete: no job left in flight");
                return Ok(());
            }
            let grace_over = state.draining_since.map(|since| since + config.shutdown_grace);
            tokio::select! {
                () = shutdown.cancelled(), if !draining => {
                    info!(in_flight = state.tasks.len(), grace = ?config.shutdown_grace, "shutdown requested: no more leases");
                    state.draining_since = Some(Instant::now());
                    self.release_queued(state).await;
                }
                () = sleep_until_opt(grace_over), if grace_over.is_some() && !state.stop.is_cancelled() => {
                    warn!(in_flight = state.tasks.len(), "grace period over: stopping jobs at their next stage boundary");
                    state.stop.cancel();
                }
                Some(joined) = state.tasks.join_next() => self.on_finished(state, joined).await,
                _ = reaper.tick() => self.reap(state).await,
                Some(_) = state.side_effects.join_next() => {}
                () = jobs_may_be_due(&mut jobs_signal), if !draining => {}
                _ = poll.tick() => {
                    let nothing_held = state.tasks.is_empty() && state.held.lock().waiting.is_empty();
                    if config.exit_when_idle && nothing_held && !draining && self.queue_is_idle().await {
                        info!("queue is empty: exiting");
                        return Ok(());
                    }
                }
            }
        }
    }

    fn start_queued(&self, state: &mut LoopState) {
        while state.tasks.len() < self.config.concurrency {
            // The lock is let go before the task is spawned: its guard locks again when dropped.
            let (job, leased_at, context, handler) = {
                let mut held = state.held.lock();
                if held.cut_off(self.config.lease_ttl) {
                    return;
                }
                let Some(Prefetched { job, leased_at }) = held.waiting.pop_front() else { return };
                let Some(handler) = self.handlers.get(job.kind) else {
                    // Leases name only the kinds this worker handles, so this is a store's fault:
                    // the job's lease lapses unrenewed and the reaper hands it back.
                    error!(job_id = %job.id, kind = %job.kind, "leased a job of a kind this worker does not run");
                    continue;
                };
                let lease = job.lease().expect("leased jobs are processing");
                let context = JobContext {
                    lease,
                    attempt: job.attempts,
                    lease_lost: CancellationToken::new(),
                    shutdown: state.stop.child_token(),
                    cancel: CancellationToken::new(),
                };
                let in_flight = InFlight {
                    lease,
                    lease_lost: context.lease_lost.clone(),
                    stop_at_boundary: context.shutdown.clone(),
                    cancel: context.cancel.clone(),
                };
                held.running.insert(job.id, in_flight);
                self.metrics.in_flight.store(held.running.len() as u64, Ordering::Relaxed);
                (job, leased_at, context, handler)
            };
            let lease = context.lease;
            let running = RunningGuard { held: state.held.clone(), lease };
            let store = self.store.clone();
            let attempt = run_attempt(self.store.clone(), handler, job, context, self.metrics.clone());
            // The store started the job's timeout clock when it leased the job; one that waited
            // for a slot starts it again, so the wait does not count against its timeout.
            let waited = leased_at.elapsed() >= CLOCK_RESTART_AFTER_WAIT;
            state.tasks.spawn(async move {
                let _running = running;
                if waited && let Err(error) = store.start_clock(lease).await {
                    // A lost lease stops the attempt at its first fenced write; a failed write
                    // leaves the lease-time clock, which only errs on the early side.
                    warn!(job_id = %lease.job_id, %error, "could not restart the job's timeout clock");
                }
                attempt.await
            });
        }
    }

    /// Leases as many jobs as there are free slots plus prefetch; returns how many it got.
    async fn lease_more(&self, state: &mut LoopState) -> Result<usize, StoreError> {
        let capacity = self.config.concurrency + self.config.prefetch;
        let room = {
            let held = state.held.lock();
            if held.cut_off(self.config.lease_ttl) {
                return Ok(0);
            }
            capacity.saturating_sub(state.tasks.len() + held.waiting.len())
        };
        if room == 0 {
            return Ok(0);
        }
        let rate_limited = state.rate_limited_until.is_some_and(|until| Instant::now() < until);
        if !rate_limited {
            state.rate_limited_until = None;
        }
        // While the AI service asks us to wait, only work that does not need it is leased.
        let kinds = self.handlers.kinds_to_lease(rate_limited);
        if kinds.is_empty() {
            return Ok(0);
        }
        let request = LeaseRequest {
            owner: &self.config.owner,
            max_jobs: room as u32,
            ttl: self.config.lease_ttl,
            kinds: &kinds,
        };
        let jobs = self.store.lease(request).await?;
        let got = jobs.len();
        let leased_at = Instant::now();
        state.held.lock().waiting.extend(jobs.into_iter().map(|job| Prefetched { job, leased_at }));
        Ok(got)
    }

    async fn on_finished(&self, state: &mut LoopState, joined: Result<Finished, tokio::task::JoinError>) {
        // The job left the held leases when its task ended (`RunningGuard`).
        self.metrics.in_flight.store(state.held.lock().running.len() as u64, Ordering::Relaxed);
        self.attempts_ended.send_modify(|ended| *ended += 1);
        let Ok(finished) = joined else { return };
        if finished.completed && self.handlers.needs_ai_service(finished.kind) {
            // Its AI requests were served (or cached): whatever refused the account is fixed.
            state.account_refusals_in_a_row = 0;
        }
        if let Some(retry_after) = finished.rate_limited {
            state.pause_ai_work(retry_after);
            info!(retry_after = ?retry_after, "rate limited: releasing unstarted jobs and pausing embedding work");
            self.release_queued(state).await;
        }
        if let Some(reason) = finished.account_refused {
            state.account_refusals_in_a_row = state.account_refusals_in_a_row.saturating_add(1);
            let pause = account_refused_pause(state.account_refusals_in_a_row);
            state.pause_ai_work(pause);
            let now = checkpoint_store::Clock::now(&checkpoint_store::SystemClock);
            let until = now.saturating_add(i64::try_from(pause.as_millis()).unwrap_or(i64::MAX));
            self.metrics.ai_paused_until.fetch_max(until, Ordering::Relaxed);
            if let Ok(mut last) = self.metrics.ai_pause_reason.lock() {
                *last = Some(reason.clone());
            }
            error!(
                reason,
                pause = ?pause,
                refusals_in_a_row = state.account_refusals_in_a_row,
                "the AI service refuses this account: pausing AI work until an operator fixes it"
            );
            self.release_queued(state).await;
        }
    }

    async fn reap(&self, state: &mut LoopState) {
        let mut recoveries = match self.store.recover_stale().await {
            Ok(recoveries) => recoveries,
            Err(error) => {
                self.metrics.reaper_errors.fetch_add(1, Ordering::Relaxed);
                return error!(%error, "reaper: recovering stale jobs failed");
            }
        };
        match self.store.enforce_timeouts().await {
            Ok(timed_out) => recoveries.extend(timed_out),
            Err(error) => {
                self.metrics.reaper_errors.fetch_add(1, Ordering::Relaxed);
                return error!(%error, "reaper: enforcing timeouts failed");
            }
        }
        for recovery in &recoveries {
            let counter = match recovery.action {
                RecoveryAction::Requeued => &self.metrics.reaped_requeued,
                RecoveryAction::DeadLettered => &self.metrics.reaped_dead,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            warn!(
                job_id = %recovery.job_id,
                kind = %recovery.kind,
                owner = recovery.owner.as_deref().unwrap_or("?"),
                running_for = ?recovery.running_for,
                silent_for = ?recovery.silent_for,
                attempts = recovery.attempts,
                max_attempts = recovery.max_attempts,
                reason = %recovery.reason,
                action = %recovery.action,
                "reaper recovered a job"
            );
            if recovery.action == RecoveryAction::DeadLettered
                && let Ok(Some(job)) = self.store.job(recovery.job_id).await
                && let Some(handler) = self.handlers.get(job.kind)
            {
                // A dead letter's side effects (cancelling its Batch API batch) may wait on the
                // AI service for minutes: never on this loop, which renews every lease.
                state.side_effects.spawn(async move { handler.dead_lettered(&job).await }.in_current_span());
            }
        }
        let now = checkpoint_store::Clock::now(&checkpoint_store::SystemClock);
        self.metrics.reaper_last_success.store(now, Ordering::Relaxed);
        let taken_back = |action| {
            let count = recoveries.iter().filter(|recovery| recovery.action == action).count();
            u32::try_from(count).unwrap_or(u32::MAX)
        };
        let (requeued, dead_lettered) =
            (taken_back(RecoveryAction::Requeued), taken_back(RecoveryAction::DeadLettered));
        // Only what operators see of the pass; the pass itself is done.
        if let Err(error) = self.store.record_reaper_pass(&self.config.owner, requeued, dead_lettered).await {
            warn!(%error, "reaper: recording its pass failed");
        }
    }

    async fn queue_is_idle(&self) -> bool {
        match self.store.counts().await {
            Ok(counts) => {
                !counts.iter().any(|c| c.count > 0 && matches!(c.status, JobStatus::Pending | JobStatus::Processing))
            }
            Err(_) => false,
        }
    }

    async fn release_queued(&self, state: &mut LoopState) {
        let leases: Vec<Lease> =
            state.held.lock().waiting.drain(..).filter_map(|waiting| waiting.job.lease()).collect();
        if leases.is_empty() {
            return;
        }
        match self.store.release(&self.config.owner, &leases).await {
            Ok(released) => {
                self.metrics.released.fetch_add(released.len() as u64, Ordering::Relaxed);
                info!(released = released.len(), "released unstarted jobs");
            }
            // Their leases expire and the reaper recovers them; nothing is lost.
            Err(error) => warn!(%error, jobs = leases.len(), "could not release unstarted jobs"),
        }
    }
}

/// A prefetched job that waited at least this long for a slot gets its timeout clock restarted
/// when it starts (one more write; a job started at once keeps the clock its lease started).
const CLOCK_RESTART_AFTER_WAIT: Duration = Duration::from_secs(1);

struct LoopState {
    /// The running and prefetched jobs' leases, shared with the heartbeat.
    held: Arc<HeldLeases>,
    tasks: JoinSet<Finished>,
    /// Cancelled when the grace period is over.
    stop: CancellationToken,
    /// Until when only work that needs no AI service is leased (a rate limit, a refused account).
    rate_limited_until: Option<Instant>,
    /// Refusals of the account since AI work last succeeded.
    account_refusals_in_a_row: u32,
    draining_since: Option<Instant>,
    /// Dead letters' side effects, running off the loop.
    side_effects: JoinSet<()>,
}

impl LoopState {
    /// Leases only work that needs no AI service for at least `pause`.
    fn pause_ai_work(&mut self, pause: Duration) {
        let until = Instant::now() + pause;
        self.rate_limited_until = Some(self.rate_limited_until.map_or(until, |current| current.max(until)));
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the store's job signal moves; never, without one (or once it is gone).
async fn jobs_may_be_due(signal: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match signal {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                *signal = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
