//! What happens to a job taken back from its worker (lease expired, timed out, or an operator's
//! `quire clean`), decided once for every backend. Backends only run the statements.

use std::time::Duration;

use stage_machine::UnixMillis;

use crate::clock::millis;
use crate::jobs::{ErrorKind, Job, JobStatus, Recovery, RecoveryAction, RecoveryReason};
use crate::retry_policy::RetryPolicy;

/// The decision for one job.
pub(crate) struct TakeBack {
    /// Recorded as the job's error kind.
    pub error_kind: ErrorKind,
    /// Recorded as the job's last error.
    pub message: String,
    /// Out of attempts: dead-letter instead of requeueing.
    pub dead: bool,
    /// When requeued, how long before the next attempt may start.
    pub delay: Duration,
}

/// Decides what to do with `job`, held by a worker, taken back for `reason` at `now`.
pub(crate) fn plan(job: &Job, reason: RecoveryReason, now: UnixMillis, policy: &RetryPolicy) -> TakeBack {
    let owner = job.lock_owner.as_deref().unwrap_or("?");
    let (error_kind, message) = match reason {
        RecoveryReason::LeaseExpired => {
            (ErrorKind::LeaseLost, format!("lease expired: worker {owner} stopped renewing it"))
        }
        RecoveryReason::TimedOut => (
            ErrorKind::Timeout,
            format!(
                "timed out after running {} (limit {})",
                format_duration(elapsed(job.started_at, now)),
                format_duration(job.timeout)
            ),
        ),
        RecoveryReason::Operator => (
            ErrorKind::LeaseLost,
            format!(
                "taken back by an operator from worker {owner}: its lease had expired {} before, with no heartbeat for {}",
                format_duration(elapsed(job.lock_until, now)),
                format_duration(elapsed(Some(silent_since(job)), now))
            ),
        ),
    };
    // A crashed worker's job runs again at once; a timed-out one backs off, since the same input
    // is likely to be slow again.
    let delay = match reason {
        RecoveryReason::TimedOut => policy.delay_after(job.attempts),
        RecoveryReason::LeaseExpired | RecoveryReason::Operator => Duration::ZERO,
    };
    TakeBack { error_kind, message, dead: job.attempts >= job.max_attempts, delay }
}

/// Whether an operator (`quire clean`) may take `job` back at `now`: it is processing, its lease
/// has expired by the reaper's rule (`lock_until < now`: at the instant of expiry the lease still
/// holds), and, when `silent_for` is given, it has been silent at least that long. The stores'
/// listings ask the same in SQL; this is the re-check inside the transaction that takes it back.
pub(crate) fn operator_may_take_back(job: &Job, silent_for: Option<Duration>, now: UnixMillis) -> bool {
    let expired = job.lock_until.is_some_and(|until| until < now);
    let silent = silent_for.is_none_or(|silent_for| now - silent_since(job) >= millis(silent_for));
    job.status == JobStatus::Processing && expired && silent
}

/// The last sign of life of a held job: its last heartbeat, else the start of its attempt.
fn silent_since(job: &Job) -> UnixMillis {
    job.last_heartbeat.or(job.started_at).unwrap_or(job.updated_at)
}

/// The report of a take-back that happened.
pub(crate) fn report(job: &Job, reason: RecoveryReason, now: UnixMillis, plan: &TakeBack) -> Recovery {
    Recovery {
        job_id: job.id,
        kind: job.kind,
        owner: job.lock_owner.clone(),
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        running_for: elapsed(job.started_at, now),
        silent_for: elapsed(Some(silent_since(job)), now),
        reason,
        action: if plan.dead { RecoveryAction::DeadLettered } else { RecoveryAction::Requeued },
    }
}

/// Time from `since` to `now`; zero when unknown or in the future.
pub(crate) fn elapsed(since: Option<UnixMillis>, now: UnixMillis) -> Duration {
    since.map_or(Duration::ZERO, |since| Duration::from_millis(u64::try_from(now - since).unwrap_or(0)))
}

/// A duration for messages: `31m 0s`, `12s`, `250ms`.
pub(crate) fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 => format!("{}ms", duration.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
    }
}
