//! The heartbeat: renews every lease the worker holds, on its own timer and in its own task,
//! so that nothing the worker loop waits on (a reaper pass, a lease request, a release held up
//! by a locked SQLite file or a slow query) can delay a renewal and let a healthy job's lease
//! expire behind it.
//!
//! The loop and the heartbeat share only [`HeldLeases`]: the running jobs with their
//! cancellation tokens, the prefetched jobs waiting for a slot, and since when renewals have
//! been failing. Its lock is a `std::sync::Mutex`, never held across an await, so the heartbeat
//! never waits on the loop; the one statement it awaits is the store's heartbeat, which talks
//! to the database only, never to the AI service.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use checkpoint_store::{Job, JobId, JobStore, Lease};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::runtime::WorkerMetrics;

/// The leases a worker holds, shared by its loop (which leases, starts and releases jobs) and
/// its heartbeat (which renews them and reports what the store said about them).
#[derive(Default)]
pub(crate) struct HeldLeases(Mutex<Held>);

impl HeldLeases {
    /// The held leases, locked. Never hold the guard across an await.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Held> {
        // Nothing panics while holding the lock, and every change under it is whole, so a
        // poisoned lock still guards consistent state.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets a running job once its attempt has ended (or its task was dropped), unless its
    /// entry is already a newer lease of the same job.
    pub(crate) fn finished(&self, lease: Lease) {
        let mut held = self.lock();
        if held.running.get(&lease.job_id).is_some_and(|job| job.lease == lease) {
            held.running.remove(&lease.job_id);
        }
    }
}

/// What [`HeldLeases`] guards.
#[derive(Default)]
pub(crate) struct Held {
    /// Jobs whose attempt is running, by id.
    pub(crate) running: HashMap<JobId, InFlight>,
    /// Leased jobs waiting for a free slot, in the order they were leased.
    pub(crate) waiting: VecDeque<Prefetched>,
    /// Since when every heartbeat has failed (none: the last one succeeded, or none failed yet).
    pub(crate) renewals_failing_since: Option<Instant>,
}

impl Held {
    /// Whether heartbeats have failed for at least a whole lease: every lease this worker holds
    /// may have expired and been taken over, so it starts nothing and bills nothing more.
    pub(crate) fn cut_off(&self, lease_ttl: Duration) -> bool {
        self.renewals_failing_since.is_some_and(|since| since.elapsed() >= lease_ttl)
    }

    fn leases(&self) -> Vec<Lease> {
        let running = self.running.values().map(|job| job.lease);
        running.chain(self.waiting.iter().filter_map(|waiting| waiting.job.lease())).collect()
    }
}

/// A running job: its lease and the tokens the heartbeat cancels.
pub(crate) struct InFlight {
    pub(crate) lease: Lease,
    /// Cancelled when a heartbeat finds the lease lost.
    pub(crate) lease_lost: CancellationToken,
    /// The job's own `shutdown`: a child of the loop's `stop`, also cancelled alone when this
    /// worker cannot renew its leases.
    pub(crate) stop_at_boundary: CancellationToken,
    /// The job's `cancel`: cancelled when a heartbeat reports an operator's cancel request.
    pub(crate) cancel: CancellationToken,
}

/// A leased job waiting for a free slot.
pub(crate) struct Prefetched {
    pub(crate) job: Job,
    pub(crate) leased_at: Instant,
}

/// Removes its job from the held leases when dropped: when the attempt's task ends, however it
/// ends, without waiting for the loop to notice.
pub(crate) struct RunningGuard {
    pub(crate) held: Arc<HeldLeases>,
    pub(crate) lease: Lease,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.held.finished(self.lease);
    }
}

/// Renews the held leases every `interval`.
pub(crate) struct Heartbeat {
    pub(crate) store: Arc<dyn JobStore>,
    /// The worker's name, as its leases carry it.
    pub(crate) owner: String,
    /// How far each renewal extends a lease.
    pub(crate) lease_ttl: Duration,
    pub(crate) interval: Duration,
    /// Shared with the worker loop.
    pub(crate) held: Arc<HeldLeases>,
    /// Where lost leases are counted.
    pub(crate) metrics: Arc<WorkerMetrics>,
}

impl Heartbeat {
    /// Starts beating on a task of its own; the first beat comes one interval from now.
    pub(crate) fn spawn(self) -> HeartbeatTask {
        let mut ticks = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let handle = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    () = stopped.cancelled() => return,
                    _ = ticks.tick() => self.beat().await,
                }
            }
        });
        HeartbeatTask { stop, handle }
    }

    /// Renews every lease the worker holds: the running jobs' and the prefetched ones', which
    /// would otherwise expire while they wait and be taken back (an attempt spent) without ever
    /// running. A prefetched job whose lease was lost is dropped from the queue, never started.
    ///
    /// What the store reports is applied to a job only while the worker still holds the very
    /// lease that was sent: the loop may have started, released or re-leased it meanwhile.
    async fn beat(&self) {
        let leases = self.held.lock().leases();
        if leases.is_empty() {
            return;
        }
        let renewal = self.store.heartbeat(&self.owner, &leases, self.lease_ttl).await;
        let sent: HashSet<Lease> = leases.into_iter().collect();
        let mut held = self.held.lock();
        match renewal {
            Ok(report) => {
                // A prefetched job asked to be cancelled is told when it starts: the request
                // stays on its row while it is processing, so the next heartbeat reports it again.
                for asked in report.cancel_requested {
                    if let Some(job) = held.running.get(&asked)
                        && sent.contains(&job.lease)
                        && !job.cancel.is_cancelled()
                    {
                        info!(job_id = %asked, "cancel requested: stopping the job at its next stage boundary");
                        job.cancel.cancel();
                    }
                }
                for lost in report.lost {
                    if let Some(job) = held.running.get(&lost)
                        && sent.contains(&job.lease)
                    {
                        warn!(job_id = %lost, "lease lost: stopping the job");
                        job.lease_lost.cancel();
                        self.metrics.leases_lost.fetch_add(1, Ordering::Relaxed);
                    } else if let Some(position) = held.waiting.iter().position(|waiting| {
                        waiting.job.lease().is_some_and(|lease| lease.job_id == lost && sent.contains(&lease))
                    }) {
                        warn!(job_id = %lost, "lease lost before the job started: dropping it");
                        held.waiting.remove(position);
                        self.metrics.leases_lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
                held.renewals_failing_since = None;
            }
            // Leases stay valid until they expire; the next beat tries again.
            Err(error) => {
                warn!(%error, "heartbeat failed");
                let since = *held.renewals_failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.lease_ttl {
                    let running: Vec<&InFlight> =
                        held.running.values().filter(|job| !job.stop_at_boundary.is_cancelled()).collect();
                    if !running.is_empty() {
                        error!(
                            jobs = running.len(),
                            "no lease renewed for a whole lease: stopping jobs at their next stage boundary"
                        );
                    }
                    running.iter().for_each(|job| job.stop_at_boundary.cancel());
                }
            }
        }
    }
}

/// The running heartbeat. Dropping it (the worker's run dropped mid-way) aborts the task, so
/// nothing renews a lease once the run that held it is gone.
pub(crate) struct HeartbeatTask {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl HeartbeatTask {
    /// Stops beating once the beat under way, if any, has ended.
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        // A panic in the task is not resumed here: every lease it renewed is settled or
        // released by now, which is all a stop has to wait for.
        let _ = (&mut self.handle).await;
    }
}

impl Drop for HeartbeatTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}
