//! One attempt of a leased job: run its handler, then settle the job with the store (complete,
//! retry, dead-letter, postpone) under the lease it was given, recording that outcome through a
//! database outage rather than letting the lease expire on finished work.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use checkpoint_store::{FailOutcome, Failure, Job, JobStore, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::ai_pause::ACCOUNT_REFUSED_FIRST_PAUSE;
use crate::job::{JobContext, JobError, JobHandler};
use crate::runtime::{Finished, WorkerMetrics};

/// Runs one attempt of a leased job and settles it with the store according to how it ended:
/// completed, retried or dead-lettered, postponed (rate limit, shutdown), cancelled (an
/// operator's request), or left alone when the lease was lost.
pub async fn run_attempt(
    store: Arc<dyn JobStore>,
    handler: Arc<dyn JobHandler>,
    job: Job,
    context: JobContext,
    metrics: Arc<WorkerMetrics>,
) -> Finished {
    let span =
        info_span!("job", job_id = %job.id, kind = %job.kind, attempt = job.attempts, stage = tracing::field::Empty);
    let job_id = job.id;
    let lease = context.lease;
    async move {
        info!("started");
        let started = tokio::time::Instant::now();
        let attempt = {
            let (handler, job, context) = (handler.clone(), job.clone(), context.clone());
            tokio::spawn(async move { handler.run(&job, &context).await }.in_current_span())
        };
        let outcome = match attempt.await {
            Ok(outcome) => outcome,
            // A panicking handler is a bug, not a verdict on the job: retry it.
            Err(join_error) => Err(JobError::Retryable(format!("the handler panicked: {join_error}"))),
        };
        metrics.attempt_durations(job.kind).observe(started.elapsed());
        let mut rate_limited = None;
        let mut account_refused = None;
        let mut completed = false;
        let settled = match outcome {
            Ok(result) => {
                recorded(&context.lease_lost, || store.complete(lease, Some(result.clone()))).await.map(|()| {
                    metrics.completed.fetch_add(1, Ordering::Relaxed);
                    completed = true;
                    info!("completed");
                })
            }
            Err(JobError::LeaseLost) => {
                warn!("lease lost: the job is left to its new owner");
                Ok(())
            }
            Err(JobError::RateLimited { retry_after }) => {
                rate_limited = Some(retry_after);
                metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
                let reason = format!("rate limited by the embedding service; retry after {}s", retry_after.as_secs());
                info!(retry_after = ?retry_after, "postponed: rate limited");
                recorded(&context.lease_lost, || store.postpone(lease, retry_after, &reason)).await
            }
            Err(JobError::AccountRefused(reason)) => {
                metrics.account_refused.fetch_add(1, Ordering::Relaxed);
                let reason = format!("the embedding service refuses this account: {reason}");
                warn!(reason, "postponed without using an attempt: pausing AI work");
                let outcome =
                    recorded(&context.lease_lost, || store.postpone(lease, ACCOUNT_REFUSED_FIRST_PAUSE, &reason)).await;
                account_refused = Some(reason);
                outcome
            }
            Err(JobError::Deferred { retry_after, reason }) => {
                metrics.deferred.fetch_add(1, Ordering::Relaxed);
                info!(retry_after = ?retry_after, reason, "postponed without using an attempt");
                recorded(&context.lease_lost, || store.postpone(lease, retry_after, &reason)).await
            }
            Err(JobError::Cancelled) => {
                info!("cancelled by an operator at a stage boundary, its checkpoint kept");
                match recorded(&context.lease_lost, || store.cancel_held(lease)).await {
                    Ok(cancelled) => {
                        metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                        // Undoing what the job left running (its batch) talks to the AI service:
                        // here, in the job's own task, never on the worker's loop.
                        handler.cancelled(&cancelled).await;
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            }
            Err(JobError::Interrupted) => {
                metrics.interrupted.fetch_add(1, Ordering::Relaxed);
                info!("handed back at shutdown with its checkpoint");
                let reason = "worker shut down before the job finished";
                recorded(&context.lease_lost, || store.postpone(lease, Duration::ZERO, reason)).await
            }
            Err(error @ (JobError::Permanent(_) | JobError::Retryable(_))) => {
                let failure =
                    if matches!(error, JobError::Permanent(_)) { Failure::Permanent } else { Failure::Retryable };
                let reason = error.to_string();
                match recorded(&context.lease_lost, || store.fail(lease, &reason, failure)).await {
                    Ok(FailOutcome::Dead) => {
                        metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        error!(reason, "dead-lettered");
                        handler.dead_lettered(&job).await;
                        Ok(())
                    }
                    Ok(FailOutcome::Retrying { run_at }) => {
                        metrics.retried.fetch_add(1, Ordering::Relaxed);
                        warn!(reason, run_at, "attempt failed; will retry");
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            }
        };
        match settled {
            Ok(()) => {}
            Err(StoreError::LeaseLost { .. }) => {
                metrics.leases_lost.fetch_add(1, Ordering::Relaxed);
                warn!("lease lost before the outcome could be recorded");
            }
            // The lease will expire and the reaper will hand the job to another attempt.
            Err(error) => error!(%error, "could not record the outcome"),
        }
        Finished { job_id, kind: job.kind, completed, rate_limited, account_refused }
    }
    .instrument(span)
    .await
}

/// How long an attempt keeps trying to record its outcome while the database is out of reach:
/// the work is done, and giving up would let the lease expire and spend an attempt on it (on the
/// last attempt, dead-letter a finished book). A job whose lease is taken back meanwhile stops
/// trying at once; one whose lease merely expired is still its worker's to settle until the
/// reaper takes it, since every write is fenced by the token, not the expiry.
const RECORD_OUTCOME_FOR: Duration = Duration::from_secs(600);

/// The longest pause between two tries of recording an outcome.
const RECORD_OUTCOME_MAX_PAUSE: Duration = Duration::from_secs(5);

/// Runs `write` until it succeeds, fails for a reason other than a lost connection, the lease is
/// lost, or [`RECORD_OUTCOME_FOR`] has passed; pauses double from 100 ms up to
/// [`RECORD_OUTCOME_MAX_PAUSE`].
async fn recorded<T, F, W>(lease_lost: &CancellationToken, mut write: W) -> Result<T, StoreError>
where
    W: FnMut() -> F,
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let give_up_at = tokio::time::Instant::now() + RECORD_OUTCOME_FOR;
    let mut pause = Duration::from_millis(100);
    loop {
        match write().await {
            Err(error)
                if error.is_connection_loss()
                    && !lease_lost.is_cancelled()
                    && tokio::time::Instant::now() + pause < give_up_at =>
            {
                warn!(%error, retry_in = ?pause, "the database is out of reach; recording the outcome again");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = lease_lost.cancelled() => {}
                }
                pause = (pause * 2).min(RECORD_OUTCOME_MAX_PAUSE);
            }
            settled => return settled,
        }
    }
}
