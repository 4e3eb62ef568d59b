//! The job store's promises, checked against every backend: no job is lost, no job is owned by
//! two workers, and no worker that lost its lease writes anything.
//!
//! Longer than 500 lines because it is one scenario per promise and per queue operation, each
//! run on both backends through the same harness; the document store, the searches and the
//! property tests already live in files of their own.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkpoint_store::{
    EnqueueOptions, ErrorKind, FailOutcome, Failure, JobKind, JobStatus, JobStore, LeaseRequest, RecoveryAction,
    RecoveryReason,
};
use common::{RETRY_DELAY, START, TTL, backends};
use serde_json::json;
use stage_machine::{Checkpoint, Stage};

fn minutes(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

// ---------------------------------------------------------------------------------------------
// Recovery of stale jobs.

#[tokio::test]
async fn expired_leases_return_to_pending_with_their_checkpoint() {
    for h in backends().await {
        let job = h.enqueue("d1").await;
        let lease = h.lease_one("w1").await;
        let mut checkpoint = Checkpoint::default();
        checkpoint.complete(Stage::Extracted, START).unwrap();
        h.store.save_checkpoint(lease, &checkpoint).await.unwrap();

        h.clock.advance(TTL + Duration::from_millis(1));
        let recoveries = h.store.recover_stale().await.unwrap();

        assert_eq!(recoveries.len(), 1, "{}", h.name);
        assert_eq!(recoveries[0].action, RecoveryAction::Requeued);
        assert_eq!(recoveries[0].reason, RecoveryReason::LeaseExpired);
        assert_eq!(recoveries[0].owner.as_deref(), Some("w1"));
        let job = h.job(job.id).await;
        assert_eq!(job.status, JobStatus::Pending);
        assert_eq!(job.lock_owner, None);
        assert_eq!(job.error_kind, Some(ErrorKind::LeaseLost));
        assert_eq!(job.checkpoint().completed_stages, [Stage::Extracted]);
    }
}

#[tokio::test]
async fn active_leases_are_untouched_by_recovery() {
    for h in backends().await {
        let job = h.enqueue("d1").await;
        h.lease_one("w1").await;
        h.clock.advance(TTL); // Exactly at expiry the lease still holds.
        let before = h.job(job.id).await;
        assert!(h.store.recover_stale().await.unwrap().is_empty(), "{}", h.name);
        assert_eq!(h.job(job.id).await, before);
    }
}

#[tokio::test]
async fn recovery_of_mixed_states_takes_back_only_expired_processing_jobs() {
    for h in backends().await {
        let expired = h.enqueue("expired").await;
        h.lease_one("w1").await;
        h.clock.advance(Duration::from_secs(30));
        let active = h.enqueue("active").await;
        h.lease_one("w2").await;
        let done = h.enqueue("done").await;
        let done_lease = h.lease_one("w3").await;
        h.store.complete(done_lease, None).await.unwrap();
        let pending = h.enqueue("pending").await;
        h.clock.advance(Duration::from_secs(31));

        let recoveries = h.store.recover_stale().await.unwrap();
        let recovered: Vec<_> = recoveries.iter().map(|r| r.job_id).collect();
        assert_eq!(recovered, [expired.id], "{}", h.name);
        assert_eq!(h.job(expired.id).await.status, JobStatus::Pending);
        assert_eq!(h.job(active.id).await.status, JobStatus::Processing);
        assert_eq!(h.job(pending.id).await.status, JobStatus::Pending);
        assert_eq!(h.job(done.id).await.status, JobStatus::Completed);
    }
}

#[tokio::test]
async fn recovery_with_nothing_stale_changes_nothing() {
    for h in backends().await {
        let pending = h.enqueue("d1").await;
        let before = h.job(pending.id).await;
        assert!(h.store.recover_stale().await.unwrap().is_empty(), "{}", h.name);
        assert!(h.store.enforce_timeouts().await.unwrap().is_empty());
        assert_eq!(h.job(pending.id).await, before);
    }
}

#[tokio::test]
async fn a_stale_job_out_of_attempts_goes_dead_not_pending() {
    for h in backends().await {
        let job = h.enqueue_with("d1", EnqueueOptions { max_attempts: Some(2), ..Default::default() }).await;
        for _ in 0..2 {
            h.lease_one("w1").await;
            h.clock.advance(TTL * 2);
            h.store.recover_stale().await.unwrap();
        }
        let job = h.job(job.id).await;
        assert_eq!(job.status, JobStatus::Dead, "{}", h.name);
        assert_eq!(job.attempts, 2);
        assert!(job.finished_at.is_some());
        assert!(job.last_error.unwrap().contains("w1"));
    }
}

// ---------------------------------------------------------------------------------------------
// Release.

#[tokio::test]
async fn release_returns_a_batch_without_using_attempts() {
    for h in backends().await {
        for d in ["a", "b", "c"] {
            h.enqueue(d).await;
        }
        let jobs = h.lease("w1", 3).await;
        let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
        let leases: Vec<_> = jobs.iter().map(|j| j.lease().unwrap()).collect();
        let mut released = h.store.release("w1", &leases).await.unwrap();
        released.sort();
        assert_eq!(released, ids, "{}", h.name);
        for id in ids {
            let job = h.job(id).await;
            assert_eq!(job.status, JobStatus::Pending);
            assert_eq!(job.attempts, 0);
            assert_eq!(job.lock_owner, None);
        }
        // Released jobs can be leased again at once.
        assert_eq!(h.lease("w2", 10).await.len(), 3);
    }
}

#[tokio::test]
async fn release_leaves_other_owners_jobs_alone() {
    for h in backends().await {
        h.enqueue("a").await;
        h.enqueue("b").await;
        let mine = h.lease_one("w1").await;
        let theirs = h.lease_one("w2").await;
        let released = h.store.release("w1", &[mine, theirs]).await.unwrap();
        assert_eq!(released, [mine.job_id], "{}", h.name);
        let theirs_now = h.job(theirs.job_id).await;
        assert_eq!(theirs_now.status, JobStatus::Processing);
        assert_eq!(theirs_now.lock_owner.as_deref(), Some("w2"));
    }
}

#[tokio::test]
async fn release_is_fenced_by_the_lease_token_not_the_owner_name() {
    for h in backends().await {
        let job = h.enqueue("a").await;
        let old = h.lease_one("w1").await;
        // The lease expires and another process that goes by the same name takes the job.
        h.clock.advance(TTL * 2);
        h.store.recover_stale().await.unwrap();
        h.clock.advance(RETRY_DELAY * 10);
        let new = h.lease_one("w1").await;
        assert_ne!(old.token, new.token, "{}", h.name);
        let before = h.job(job.id).await;
        assert!(h.store.release("w1", &[old]).await.unwrap().is_empty(), "{}", h.name);
        assert_eq!(h.job(job.id).await, before, "{}: the live lease was released", h.name);
        assert_eq!(h.store.release("w1", &[new]).await.unwrap(), [job.id], "{}", h.name);
    }
}

#[tokio::test]
async fn releasing_an_empty_list_touches_nothing() {
    for h in backends().await {
        h.enqueue("a").await;
        let lease = h.lease_one("w1").await;
        let before = h.job(lease.job_id).await;
        h.clock.advance(Duration::from_secs(1));
        assert!(h.store.release("w1", &[]).await.unwrap().is_empty(), "{}", h.name);
        assert_eq!(h.job(lease.job_id).await, before);
    }
}

// ---------------------------------------------------------------------------------------------
// Fencing.

#[tokio::test]
async fn a_worker_whose_lease_was_taken_over_cannot_write_anything() {
    for h in backends().await {
        let job = h.enqueue("d1").await;
        let old = h.lease_one("w1").await;
        h.clock.advance(TTL * 2);
        h.store.recover_stale().await.unwrap();
        let new = h.lease_one("w2").await;
        assert_ne!(old.token, new.token);
        let mut theirs = Checkpoint::default();
        theirs.complete(Stage::Extracted, START).unwrap();
        h.store.save_checkpoint(new, &theirs).await.unwrap();
        let before = h.job(job.id).await;

        let mut stale_checkpoint = Checkpoint::default();
        stale_checkpoint.fail(START);
        assert!(h.store.save_checkpoint(old, &stale_checkpoint).await.unwrap_err().is_lease_lost(), "{}", h.name);
        assert!(h.store.complete(old, Some(json!("stale"))).await.unwrap_err().is_lease_lost());
        assert!(h.store.fail(old, "stale", Failure::Permanent).await.unwrap_err().is_lease_lost());
        assert!(h.store.fail(old, "stale", Failure::Retryable).await.unwrap_err().is_lease_lost());
        assert!(h.store.postpone(old, Duration::ZERO, "stale").await.unwrap_err().is_lease_lost());
        let report = h.store.heartbeat("w1", &[old], TTL).await.unwrap();
        assert_eq!(report.lost, [job.id]);
        assert!(report.renewed.is_empty());
        // Even the new owner's name with the old token is refused.
        let report = h.store.heartbeat("w2", &[old], TTL).await.unwrap();
        assert_eq!(report.lost, [job.id]);

        assert_eq!(h.job(job.id).await, before);
        h.store.complete(new, None).await.unwrap();
        assert_eq!(h.job(job.id).await.status, JobStatus::Completed);
    }
}

#[tokio::test]
async fn a_checkpoint_and_its_follow_up_job_are_saved_together_or_not_at_all() {
    for h in backends().await {
        let job = h.enqueue("d1").await;
        let old = h.lease_one("w1").await;
        let follow_up = || checkpoint_store::FollowUp {
            kind: JobKind::DetectConnections,
            payload: json!({ "document_id": "d1" }),
            options: EnqueueOptions { unique_key: Some("detect:d1".into()), ..Default::default() },
        };
        let mut checkpoint = Checkpoint::default();
        checkpoint.complete(Stage::Extracted, START).unwrap();
        let first = h.store.save_checkpoint_and_enqueue(old, &checkpoint, follow_up()).await.unwrap();
        assert!(!first.deduplicated, "{}", h.name);
        assert_eq!(h.job(job.id).await.checkpoint(), checkpoint, "{}", h.name);
        // Asked again while the follow-up waits: the same job.
        let again = h.store.save_checkpoint_and_enqueue(old, &checkpoint, follow_up()).await.unwrap();
        assert_eq!((again.job.id, again.deduplicated), (first.job.id, true), "{}", h.name);

        // A worker that lost its lease writes neither.
        h.clock.advance(TTL * 2);
        h.store.recover_stale().await.unwrap();
        let follow_ups = || async {
            let filter = checkpoint_store::JobFilter { kind: Some(JobKind::DetectConnections), ..Default::default() };
            h.store.list_jobs(&filter).await.unwrap().len()
        };
        let before = (h.job(job.id).await, follow_ups().await);
        assert_eq!(before.1, 1, "{}", h.name);
        let mut stale = checkpoint.clone();
        stale.complete(Stage::MarkdownSaved, START).unwrap();
        // Under a key no job holds, so that only the lease can refuse it.
        let other = checkpoint_store::FollowUp {
            options: EnqueueOptions { unique_key: Some("detect:other".into()), ..Default::default() },
            ..follow_up()
        };
        let refused = h.store.save_checkpoint_and_enqueue(old, &stale, other).await.unwrap_err();
        assert!(refused.is_lease_lost(), "{}: {refused}", h.name);
        assert_eq!((h.job(job.id).await, follow_ups().await), before, "{}", h.name);
    }
}

#[tokio::test]
async fn heartbeats_renew_held_leases_in_one_call_and_report_lost_ones() {
    for h in backends().await {
        for d in ["a", "b", "c"] {
            h.enqueue(d).await;
        }
        let jobs = h.lease("w1", 3).await;
        let leases: Vec<_> = jobs.iter().map(|j| j.lease().unwrap()).collect();
        h.store.complete(leases[2], None).await.unwrap();
        h.clock.advance(Duration::from_secs(50));
        let report = h.store.heartbeat("w1", &leases, TTL).await.unwrap();
        let mut renewed = report.renewed.clone();
        renewed.sort();
        assert_eq!(renewed, [leases[0].job_id, leases[1].job_id], "{}", h.name);
        assert_eq!(report.lost, [leases[2].job_id]);
        // Renewed leases now outlive the original expiry.
        h.clock.advance(Duration::from_secs(50));
        assert!(h.store.recover_stale().await.unwrap().is_empty());
        let job = h.job(leases[0].job_id).await;
        assert_eq!(job.lock_until, Some(START + 50_000 + 60_000));
        assert_eq!(job.last_heartbeat, Some(START + 50_000));
    }
}

// ---------------------------------------------------------------------------------------------
// Timeouts.

#[tokio::test]
async fn timeouts_spare_a_job_at_29_minutes_and_take_it_back_at_31_despite_heartbeats() {
    for h in backends().await {
        let job = h.enqueue("d1").await;
        assert_eq!(job.timeout, minutes(30));
        let lease = h.lease_one("w1").await;
        for _ in 0..29 {
            h.clock.advance(minutes(1));
            h.store.heartbeat("w1", &[lease], TTL).await.unwrap();
        }
        assert!(h.store.enforce_timeouts().await.unwrap().is_empty(), "{}", h.name);
        assert_eq!(h.job(job.id).await.status, JobStatus::Processing);

        for _ in 0..2 {
            h.clock.advance(minutes(1));
            h.store.heartbeat("w1", &[lease], TTL).await.unwrap();
        }
        assert!(h.store.recover_stale().await.unwrap().is_empty(), "the lease itself is fresh");
        let recoveries = h.store.enforce_timeouts().await.unwrap();
        assert_eq!(recoveries.len(), 1);
        assert_eq!(recoveries[0].reason, RecoveryReason::TimedOut);
        assert_eq!(recoveries[0].running_for, minutes(31));

        let timed_out = h.job(job.id).await;
        assert_eq!(timed_out.status, JobStatus::Pending);
        assert_eq!(timed_out.error_kind, Some(ErrorKind::Timeout));
        assert_eq!(timed_out.run_at, START + 31 * 60_000 + RETRY_DELAY.as_millis() as i64);
        assert!(timed_out.last_error.unwrap().contains("timed out"));
        // The old worker's heartbeat now reports its lease lost, and its writes are refused.
        let report = h.store.heartbeat("w1", &[lease], TTL).await.unwrap();
        assert_eq!(report.lost, [job.id]);
        assert!(h.store.complete(lease, None).await.unwrap_err().is_lease_lost());
    }
}

#[tokio::test]
async fn detect_connections_jobs_time_out_after_ten_minutes() {
    for h in backends().await {
        let enqueued = h
            .store
            .enqueue(JobKind::DetectConnections, json!({"document_id": "d"}), EnqueueOptions::default())
            .await
            .unwrap();
        assert_eq!(enqueued.job.timeout, minutes(10), "{}", h.name);
        let lease = h.lease_one("w1").await;
        h.clock.advance(minutes(9));
        h.store.heartbeat("w1", &[lease], TTL).await.unwrap();
        assert!(h.store.enforce_timeouts().await.unwrap().is_empty());
        h.clock.advance(minutes(2));
        h.store.heartbeat("w1", &[lease], TTL).await.unwrap();
        assert_eq!(h.store.enforce_timeouts().await.unwrap().len(), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Enqueue, lease order, failures.

#[tokio::test]
async fn a_unique_key_deduplicates_while_the_job_is_pending_or_processing() {
    for h in backends().await {
        let options = || EnqueueOptions { unique_key: Some("connections:d1".into()), ..Default::default() };
        let first = h.store.enqueue(JobKind::DetectConnections, json!({"document_id": "d1"}), options()).await.unwrap();
        assert!(!first.deduplicated, "{}", h.name);
        let second =
            h.store.enqueue(JobKind::DetectConnections, json!({"document_id": "d1"}), options()).await.unwrap();
        assert!(second.deduplicated);
        assert_eq!(second.job.id, first.job.id);

        let lease = h.lease_one("w1").await;
        let third = h.store.enqueue(JobKind::DetectConnections, json!({}), options()).await.unwrap();
        assert!(third.deduplicated, "processing jobs deduplicate too");
        h.store.complete(lease, None).await.unwrap();

        let fourth = h.store.enqueue(JobKind::DetectConnections, json!({}), options()).await.unwrap();
        assert!(!fourth.deduplicated, "a finished job does not block a new one");
        assert_ne!(fourth.job.id, first.job.id);
    }
}

#[tokio::test]
async fn leases_go_by_priority_then_age_and_respect_kinds_and_run_at() {
    for h in backends().await {
        let old_low = h.enqueue("old-low").await;
        h.clock.advance(Duration::from_millis(5));
        let new_high = h.enqueue_with("new-high", EnqueueOptions { priority: 10, ..Default::default() }).await;
        let delayed = h
            .enqueue_with(
                "delayed",
                EnqueueOptions { priority: 99, delay: Duration::from_secs(5), ..Default::default() },
            )
            .await;
        let other_kind = h
            .store
            .enqueue(JobKind::DetectConnections, json!({}), EnqueueOptions { priority: 50, ..Default::default() })
            .await
            .unwrap()
            .job;

        let request = LeaseRequest { owner: "w", max_jobs: 10, ttl: TTL, kinds: &[JobKind::ProcessDocument] };
        let leased: Vec<_> = h.store.lease(request).await.unwrap().iter().map(|j| j.id).collect();
        assert_eq!(leased, [new_high.id, old_low.id], "{}", h.name);

        h.clock.advance(Duration::from_secs(5));
        let leased: Vec<_> = h.lease("w", 10).await.iter().map(|j| j.id).collect();
        assert_eq!(leased, [delayed.id, other_kind.id]);
    }
}

#[tokio::test]
async fn a_retryable_failure_backs_off_then_dead_letters_after_max_attempts() {
    for h in backends().await {
        let job = h.enqueue_with("d1", EnqueueOptions { max_attempts: Some(2), ..Default::default() }).await;
        let lease = h.lease_one("w1").await;
        let outcome = h.store.fail(lease, "connection reset", Failure::Retryable).await.unwrap();
        let retry_at = START + RETRY_DELAY.as_millis() as i64;
        assert_eq!(outcome, FailOutcome::Retrying { run_at: retry_at }, "{}", h.name);
        assert!(h.lease("w1", 1).await.is_empty(), "not before the backoff has passed");
        h.clock.advance(RETRY_DELAY);
        let lease = h.lease_one("w1").await;
        assert_eq!(h.store.fail(lease, "connection reset again", Failure::Retryable).await.unwrap(), FailOutcome::Dead);
        let dead = h.job(job.id).await;
        assert_eq!(dead.status, JobStatus::Dead);
        assert_eq!(dead.attempts, 2);
        assert_eq!(dead.last_error.as_deref(), Some("connection reset again"));
        assert_eq!(dead.error_kind, Some(ErrorKind::Retryable));
    }
}

#[tokio::test]
async fn a_permanent_failure_dead_letters_at_once_with_its_reason() {
    for h in backends().await {
        let job = h.enqueue("d1").await;
        let lease = h.lease_one("w1").await;
        let outcome = h.store.fail(lease, "META-INF/container.xml is missing", Failure::Permanent).await.unwrap();
        assert_eq!(outcome, FailOutcome::Dead, "{}", h.name);
        let dead = h.job(job.id).await;
        assert_eq!(dead.status, JobStatus::Dead);
        assert_eq!(dead.attempts, 1);
        assert_eq!(dead.error_kind, Some(ErrorKind::Permanent));
        assert_eq!(dead.last_error.as_deref(), Some("META-INF/container.xml is missing"));
        assert_eq!(dead.finished_at, Some(START));
    }
}

#[tokio::test]
async fn postpone_keeps_the_checkpoint_and_gives_the_attempt_back() {
    for h in backends().await {
        let job = h.enqueue_with("d1", EnqueueOptions { max_attempts: Some(1), ..Default::default() }).await;
        let lease = h.lease_one("w1").await;
        let mut checkpoint = Checkpoint::default();
        checkpoint.complete(Stage::Extracted, START).unwrap();
        h.store.save_checkpoint(lease, &checkpoint).await.unwrap();
        h.store.postpone(lease, Duration::from_secs(7), "rate limited").await.unwrap();

        let postponed = h.job(job.id).await;
        assert_eq!(postponed.status, JobStatus::Pending, "{}", h.name);
        assert_eq!(postponed.attempts, 0);
        assert_eq!(postponed.run_at, START + 7_000);
        assert_eq!(postponed.checkpoint(), checkpoint);
        assert!(h.lease("w1", 1).await.is_empty());
        h.clock.advance(Duration::from_secs(7));
        assert_eq!(h.lease("w2", 1).await.len(), 1, "a one-attempt job can still run after a postpone");
    }
}

#[tokio::test]
async fn dead_letters_can_be_retried_and_purged() {
    for h in backends().await {
        let job = h.enqueue("d1").await;
        let lease = h.lease_one("w1").await;
        h.store.fail(lease, "broken", Failure::Permanent).await.unwrap();
        let retried = h.store.retry_dead(job.id).await.unwrap();
        assert_eq!(retried.status, JobStatus::Pending, "{}", h.name);
        assert_eq!(retried.attempts, 0);
        assert_eq!(retried.finished_at, None);
        assert!(h.store.retry_dead(job.id).await.is_err(), "only dead jobs can be retried");

        let lease = h.lease_one("w1").await;
        h.store.fail(lease, "broken", Failure::Permanent).await.unwrap();
        h.clock.advance(Duration::from_secs(100));
        assert_eq!(h.store.purge_dead(Duration::from_secs(101)).await.unwrap(), 0);
        assert_eq!(h.store.purge_dead(Duration::from_secs(100)).await.unwrap(), 1);
        assert!(h.store.job(job.id).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn counts_group_by_status_and_kind() {
    for h in backends().await {
        h.enqueue("a").await;
        h.enqueue("b").await;
        h.lease_one("w1").await;
        let counts = h.store.counts().await.unwrap();
        let of = |status| {
            counts.iter().find(|c| c.status == status && c.kind == JobKind::ProcessDocument).map_or(0, |c| c.count)
        };
        assert_eq!(of(JobStatus::Pending), 1, "{}", h.name);
        assert_eq!(of(JobStatus::Processing), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_leasers_complete_two_thousand_jobs_exactly_once() {
    for h in backends().await {
        const JOBS: usize = 2_000;
        for i in 0..JOBS {
            h.enqueue(&format!("d{i}")).await;
        }
        let held: Arc<Mutex<HashSet<i64>>> = Arc::default();
        let completions: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let store = h.store.clone();
            let held = held.clone();
            let completions = completions.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("w{worker}");
                loop {
                    let request =
                        LeaseRequest { owner: &owner, max_jobs: 8, ttl: TTL, kinds: &[JobKind::ProcessDocument] };
                    let jobs = store.lease(request).await.unwrap();
                    if jobs.is_empty() {
                        return;
                    }
                    for job in &jobs {
                        assert!(held.lock().unwrap().insert(job.id.0), "job {} leased twice at once", job.id);
                    }
                    for job in jobs {
                        held.lock().unwrap().remove(&job.id.0);
                        store.complete(job.lease().unwrap(), None).await.unwrap();
                        *completions.lock().unwrap().entry(job.id.0).or_default() += 1;
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        {
            let completions = completions.lock().unwrap();
            assert_eq!(completions.len(), JOBS, "{}", h.name);
            assert!(completions.values().all(|&n| n == 1));
        }
        let counts = h.store.counts().await.unwrap();
        assert_eq!(counts.len(), 1);
        assert_eq!((counts[0].status, counts[0].count), (JobStatus::Completed, JOBS as u64));
    }
}

// ---------------------------------------------------------------------------------------------
// Migrations.

#[tokio::test]
async fn sqlite_migrations_apply_twice_without_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quire.db");
    let store = checkpoint_store::SqliteStore::open(&path, Default::default()).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    // Reopening runs the migrator again.
    let store = checkpoint_store::SqliteStore::open(&path, Default::default()).await.unwrap();
    // And the statements themselves are idempotent, even outside the migrator's bookkeeping.
    for migration in checkpoint_store::SQLITE_MIGRATOR.iter() {
        sqlx::raw_sql(migration.sql.clone()).execute(store.writer_pool()).await.unwrap();
    }
}

#[tokio::test]
async fn postgres_migrations_apply_twice_without_error() {
    let Some(url) = common::postgres_url() else { return };
    let options = checkpoint_store::PgStoreOptions { schema: common::test_schema(), ..Default::default() };
    let store = checkpoint_store::PgStore::connect(&url, options.clone()).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    // Reconnecting runs the migrator again.
    let store = checkpoint_store::PgStore::connect(&url, options.clone()).await.unwrap();
    // And the statements themselves are idempotent, even outside the migrator's bookkeeping.
    for migration in checkpoint_store::POSTGRES_MIGRATOR.iter() {
        sqlx::raw_sql(migration.sql.clone()).execute(store.pool()).await.unwrap();
    }
    // Everything, the migrator's own table included, lives in the store's schema.
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1")
            .bind(&options.schema)
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "chunk_term_counts",
            "chunk_term_departures",
            "chunk_term_postings",
            "chunks",
            "connections",
            "documents",
            "embedding_cache",
            "job_attempts",
            "jobs",
            "reaper_passes",
            "term_index_edition"
        ]
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", options.schema)))
        .execute(store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_takes_time_from_the_server_without_an_injected_clock() {
    let Some(url) = common::postgres_url() else { return };
    let options = checkpoint_store::PgStoreOptions { schema: common::test_schema(), ..Default::default() };
    let store = checkpoint_store::PgStore::connect(&url, options.clone()).await.unwrap();
    let server_now: i64 = sqlx::query_scalar("SELECT floor(extract(epoch FROM now()) * 1000)::bigint")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let job = store.enqueue(JobKind::ProcessDocument, json!({}), EnqueueOptions::default()).await.unwrap().job;
    // The server's clock, not the (possibly skewed) client's: within a minute of the server's now.
    assert!((job.created_at - server_now).abs() < 60_000, "{} vs {server_now}", job.created_at);
    let request = LeaseRequest { owner: "w", max_jobs: 1, ttl: TTL, kinds: &[JobKind::ProcessDocument] };
    let leased = store.lease(request).await.unwrap();
    let lease = leased[0].lease().unwrap();
    assert_eq!(leased[0].lock_until, Some(leased[0].started_at.unwrap() + TTL.as_millis() as i64));
    let outcome = store.fail(lease, "flaky", Failure::Retryable).await.unwrap();
    let FailOutcome::Retrying { run_at } = outcome else { panic!("{outcome:?}") };
    assert_eq!(store.job(job.id).await.unwrap().unwrap().run_at, run_at);
    assert!(store.recover_stale().await.unwrap().is_empty());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", options.schema)))
        .execute(store.pool())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_with_one_unique_key_make_one_job() {
    for h in backends().await {
        for round in 0..5 {
            let key = format!("connections:d{round}");
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let store = h.store.clone();
                    let options = EnqueueOptions { unique_key: Some(key.clone()), ..Default::default() };
                    tokio::spawn(
                        async move { store.enqueue(JobKind::DetectConnections, json!({}), options).await.unwrap() },
                    )
                })
                .collect();
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap());
            }
            let ids: HashSet<_> = results.iter().map(|r| r.job.id).collect();
            assert_eq!(ids.len(), 1, "{}: one job per key", h.name);
            assert_eq!(results.iter().filter(|r| !r.deduplicated).count(), 1, "{}", h.name);
        }
    }
}

#[tokio::test]
async fn postgres_store_survives_its_connection_being_killed() {
    use sqlx::Connection;
    let Some(url) = common::postgres_url() else { return };
    let options =
        checkpoint_store::PgStoreOptions { schema: common::test_schema(), max_connections: 1, ..Default::default() };
    let store = checkpoint_store::PgStore::connect(&url, options.clone()).await.unwrap();
    let job = store.enqueue(JobKind::ProcessDocument, json!({}), EnqueueOptions::default()).await.unwrap().job;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(store.pool()).await.unwrap();
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let killed: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&mut admin).await.unwrap();
    assert!(killed);
    // The pool notices the dead connection before handing it out and opens a new one.
    assert_eq!(store.job(job.id).await.unwrap().unwrap().id, job.id);
    let new_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(store.pool()).await.unwrap();
    assert_ne!(new_pid, pid);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", options.schema)))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_prefetched_jobs_timeout_counts_from_when_it_starts_not_from_its_lease() {
    for h in backends().await {
        let job = h.enqueue("d1").await;
        let lease = h.lease_one("w1").await;
        // It waits 20 minutes in its worker's queue, renewed, then starts.
        for _ in 0..20 {
            h.clock.advance(minutes(1));
            h.store.heartbeat("w1", &[lease], TTL).await.unwrap();
        }
        h.store.start_clock(lease).await.unwrap();
        assert_eq!(h.job(job.id).await.started_at, Some(START + 20 * 60_000), "{}", h.name);
        // 29 minutes of running later (49 since its lease) it is within its 30-minute timeout.
        for _ in 0..29 {
            h.clock.advance(minutes(1));
            h.store.heartbeat("w1", &[lease], TTL).await.unwrap();
        }
        assert!(h.store.enforce_timeouts().await.unwrap().is_empty(), "{}", h.name);
        h.clock.advance(minutes(2));
        h.store.heartbeat("w1", &[lease], TTL).await.unwrap();
        let recoveries = h.store.enforce_timeouts().await.unwrap();
        assert_eq!(recoveries.len(), 1, "{}", h.name);
        assert_eq!(recoveries[0].running_for, minutes(31));
        // The clock is the lease's to restart: a lost lease restarts nothing.
        let error = h.store.start_clock(lease).await.unwrap_err();
        assert!(error.is_lease_lost(), "{}: {error}", h.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Durable enqueues (submissions).

#[tokio::test]
async fn a_durable_enqueue_commits_and_deduplicates_like_any_other() {
    for h in backends().await {
        let durable = || EnqueueOptions {
            unique_key: Some("process_document:doc-1".into()),
            durable: true,
            ..Default::default()
        };
        let first = h.enqueue_with("doc-1", durable()).await;
        assert_eq!(h.job(first.id).await.status, JobStatus::Pending, "{}", h.name);
        let again =
            h.store.enqueue(JobKind::ProcessDocument, json!({ "document_id": "doc-1" }), durable()).await.unwrap();
        assert!(again.deduplicated, "{}", h.name);
        assert_eq!(again.job.id, first.id, "{}", h.name);
    }
}

#[tokio::test]
async fn a_durable_enqueue_leaves_sqlites_other_commits_at_synchronous_normal() {
    let h = common::sqlite().await;
    let common::Backend::Sqlite(store) = &h.backend else { unreachable!("the SQLite harness") };
    assert_eq!(store.writer_synchronous().await.unwrap(), 1, "the store commits at NORMAL");
    h.enqueue_with("doc-1", EnqueueOptions { durable: true, ..Default::default() }).await;
    assert_eq!(store.writer_synchronous().await.unwrap(), 1, "FULL was for the durable commit only");
    h.enqueue("doc-2").await;
}

// ---------------------------------------------------------------------------------------------
// Listing a page at a time, and the age of the queue's head.

#[tokio::test]
async fn jobs_list_a_page_at_a_time_and_counts_know_their_oldest_job() {
    for h in backends().await {
        let oldest = h.enqueue("a").await;
        h.clock.advance(minutes(1));
        let middle = h.enqueue("b").await;
        h.clock.advance(minutes(1));
        let newest = h.enqueue("c").await;
        let page = |before, document: Option<&str>| checkpoint_store::JobFilter {
            limit: Some(2),
            before,
            document_id: document.map(str::to_owned),
            ..Default::default()
        };
        let ids = |jobs: Vec<checkpoint_store::Job>| jobs.into_iter().map(|job| job.id).collect::<Vec<_>>();

        assert_eq!(ids(h.store.list_jobs(&page(None, None)).await.unwrap()), [newest.id, middle.id], "{}", h.name);
        let next = h.store.list_jobs(&page(Some(middle.id), None)).await.unwrap();
        assert_eq!(ids(next), [oldest.id], "{}", h.name);
        // The cursor narrows a document's listing too (its own statement and index).
        assert!(h.store.list_jobs(&page(Some(newest.id), Some("c"))).await.unwrap().is_empty(), "{}", h.name);
        assert_eq!(ids(h.store.list_jobs(&page(Some(newest.id), Some("b"))).await.unwrap()), [middle.id]);

        let counts = h.store.counts().await.unwrap();
        let pending = counts.iter().find(|count| count.status == JobStatus::Pending).expect("pending jobs");
        assert_eq!((pending.count, pending.oldest_created_at), (3, Some(oldest.created_at)), "{}", h.name);
        assert!(oldest.created_at < newest.created_at, "{}", h.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Attempt history.

#[tokio::test]
async fn every_attempt_is_recorded_as_it_ends_with_its_worker_stage_and_outcome() {
    use checkpoint_store::AttemptOutcome;
    for h in backends().await {
        let job = h.enqueue("d1").await;
        assert!(h.store.job_attempts(job.id).await.unwrap().is_empty(), "{}", h.name);

        // A rate limit hands the first lease back; the next fails after extracting; the reaper
        // takes the third back; the fourth (the budget is given back by the postpone) completes.
        let lease = h.lease_one("w1").await;
        h.store.postpone(lease, Duration::ZERO, "rate limited").await.unwrap();
        let lease = h.lease_one("w1").await;
        let mut checkpoint = Checkpoint::default();
        checkpoint.complete(Stage::Extracted, START).unwrap();
        h.store.save_checkpoint(lease, &checkpoint).await.unwrap();
        h.store.fail(lease, "the AI service answered 503", Failure::Retryable).await.unwrap();
        h.clock.advance(RETRY_DELAY * 100);
        let lost = h.lease_one("w2").await;
        h.clock.advance(TTL * 2);
        h.store.recover_stale().await.unwrap();
        h.clock.advance(RETRY_DELAY * 100);
        let last = h.lease_one("w3").await;
        // A write under the lease the reaper took away changes nothing, and records nothing.
        assert!(h.store.complete(lost, None).await.unwrap_err().is_lease_lost(), "{}", h.name);
        h.store.complete(last, None).await.unwrap();

        let attempts = h.store.job_attempts(job.id).await.unwrap();
        let summary: Vec<_> = attempts
            .iter()
            .map(|attempt| (attempt.attempt, attempt.worker.as_deref(), attempt.outcome, attempt.stage))
            .collect();
        assert_eq!(
            summary,
            [
                (1, Some("w1"), AttemptOutcome::HandedBack, None),
                (1, Some("w1"), AttemptOutcome::Retrying, Some(Stage::Extracted)),
                (2, Some("w2"), AttemptOutcome::Retrying, Some(Stage::Extracted)),
                (3, Some("w3"), AttemptOutcome::Completed, Some(Stage::Extracted)),
            ],
            "{}",
            h.name
        );
        assert_eq!(attempts[1].error.as_deref(), Some("the AI service answered 503"), "{}", h.name);
        assert!(attempts[2].error.is_some(), "{}: the reaper says why: {:?}", h.name, attempts[2]);
        assert_eq!(attempts[3].error, None, "{}", h.name);
        assert!(attempts.iter().all(|attempt| attempt.started_at.is_some_and(|at| at <= attempt.ended_at)));

        // A purged job takes its history with it.
        let dead = h.enqueue_with("d2", EnqueueOptions { max_attempts: Some(1), ..Default::default() }).await;
        let lease = h.lease_one("w1").await;
        h.store.fail(lease, "not an EPUB", Failure::Permanent).await.unwrap();
        let history = h.store.job_attempts(dead.id).await.unwrap();
        assert_eq!(history.iter().map(|a| a.outcome).collect::<Vec<_>>(), [AttemptOutcome::Dead], "{}", h.name);
        h.store.purge_dead(Duration::ZERO).await.unwrap();
        assert!(h.store.job_attempts(dead.id).await.unwrap().is_empty(), "{}", h.name);
    }
}

#[tokio::test]
async fn ended_attempts_are_counted_by_period_and_outcome_from_a_given_time() {
    use checkpoint_store::{AttemptOutcome, AttemptsEnded};
    const PERIOD: Duration = Duration::from_secs(20);
    for h in backends().await {
        for document in ["a", "b", "c"] {
            h.enqueue(document).await;
        }
        let leases: Vec<_> = h.lease("w1", 3).await.iter().map(|job| job.lease().unwrap()).collect();
        h.store.complete(leases[0], None).await.unwrap();
        h.store.fail(leases[1], "the AI service answered 503", Failure::Retryable).await.unwrap();
        h.clock.advance(Duration::from_secs(30));
        h.store.fail(leases[2], "not an EPUB", Failure::Permanent).await.unwrap();

        let ended = |period_start, outcome, count| AttemptsEnded { period_start, outcome, count };
        let second_period = START + 20_000;
        assert_eq!(
            h.store.attempts_ended(START, PERIOD).await.unwrap(),
            [
                ended(START, AttemptOutcome::Completed, 1),
                ended(START, AttemptOutcome::Retrying, 1),
                ended(second_period, AttemptOutcome::Dead, 1),
            ],
            "{}",
            h.name
        );
        assert_eq!(
            h.store.attempts_ended(START + 1, PERIOD).await.unwrap(),
            [ended(second_period, AttemptOutcome::Dead, 1)],
            "{}: only those ended since the given time",
            h.name
        );
    }
}

#[tokio::test]
async fn the_reapers_last_pass_replaces_the_one_before_whichever_worker_made_it() {
    use checkpoint_store::ReaperPass;
    for h in backends().await {
        assert_eq!(h.store.last_reaper_pass().await.unwrap(), None, "{}", h.name);
        h.store.record_reaper_pass("w1", 2, 1).await.unwrap();
        let first = ReaperPass { worker: "w1".into(), passed_at: START, requeued: 2, dead_lettered: 1 };
        assert_eq!(h.store.last_reaper_pass().await.unwrap(), Some(first), "{}: at the store's time", h.name);
        h.clock.advance(Duration::from_secs(30));
        h.store.record_reaper_pass("w2", 0, 0).await.unwrap();
        let second = ReaperPass { worker: "w2".into(), passed_at: START + 30_000, requeued: 0, dead_lettered: 0 };
        assert_eq!(h.store.last_reaper_pass().await.unwrap(), Some(second), "{}", h.name);
    }
}
