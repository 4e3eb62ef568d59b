//! The operator's commands on the queue (`quire clean`), checked against every backend: they take
//! back only jobs whose worker is gone.

mod common;

use std::time::Duration;

use checkpoint_store::{JobStatus, RecoveryReason};
use common::backends;

fn seconds(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------------------------------------
// `quire clean`: an expired lease, not a fixed silence.

#[tokio::test]
async fn clean_leaves_a_live_long_lease_alone_however_long_since_its_heartbeat() {
    for h in backends().await {
        // `--lease-ttl 5m --heartbeat-interval 100s`: 90 s without a heartbeat is normal.
        h.enqueue("d1").await;
        let job = h.lease_for("w1", 1, seconds(300)).await.remove(0);
        h.clock.advance(seconds(90));

        assert!(h.store.stale_jobs(None).await.unwrap().is_empty(), "{}: a live lease is not stale", h.name);
        assert!(h.store.stale_jobs(Some(seconds(60))).await.unwrap().is_empty(), "{}", h.name);
        assert!(h.store.requeue_stale(&[job.id], None).await.unwrap().is_empty(), "{}", h.name);
        assert_eq!(h.job(job.id).await.status, JobStatus::Processing, "{}", h.name);
    }
}

#[tokio::test]
async fn clean_takes_back_a_short_lease_as_soon_as_it_expires() {
    for h in backends().await {
        // `--lease-ttl 1s` and a worker that crashed: its job is stale after a second, not a minute.
        h.enqueue("d1").await;
        let job = h.lease_for("w1", 1, seconds(1)).await.remove(0);
        h.clock.advance(seconds(1));
        assert!(h.store.stale_jobs(None).await.unwrap().is_empty(), "{}: at expiry the lease still holds", h.name);

        h.clock.advance(Duration::from_millis(1));
        let stale = h.store.stale_jobs(None).await.unwrap();
        assert_eq!(stale.iter().map(|job| job.id).collect::<Vec<_>>(), [job.id], "{}", h.name);
        let recoveries = h.store.requeue_stale(&[job.id], None).await.unwrap();
        assert_eq!(recoveries.len(), 1, "{}", h.name);
        assert_eq!(recoveries[0].reason, RecoveryReason::Operator);
        assert_eq!(h.job(job.id).await.status, JobStatus::Pending, "{}", h.name);
    }
}

#[tokio::test]
async fn clean_older_than_requires_both_an_expired_lease_and_that_silence() {
    for h in backends().await {
        h.enqueue("d1").await;
        let job = h.lease_for("w1", 1, seconds(10)).await.remove(0);
        h.clock.advance(seconds(20));
        // Expired, but silent for 20 s only.
        assert!(h.store.stale_jobs(Some(seconds(30))).await.unwrap().is_empty(), "{}", h.name);
        assert!(h.store.requeue_stale(&[job.id], Some(seconds(30))).await.unwrap().is_empty(), "{}", h.name);
        assert_eq!(h.job(job.id).await.status, JobStatus::Processing, "{}", h.name);

        h.clock.advance(seconds(10));
        assert_eq!(h.store.stale_jobs(Some(seconds(30))).await.unwrap().len(), 1, "{}", h.name);
        assert_eq!(h.store.requeue_stale(&[job.id], Some(seconds(30))).await.unwrap().len(), 1, "{}", h.name);
        assert_eq!(h.job(job.id).await.status, JobStatus::Pending, "{}", h.name);
    }
}

#[tokio::test]
async fn clean_leaves_alone_a_job_whose_lease_was_renewed_since_the_listing() {
    for h in backends().await {
        h.enqueue("a").await;
        h.enqueue("b").await;
        let gone = h.lease_for("w1", 1, seconds(30)).await.remove(0);
        let slow = h.lease_for("w2", 1, seconds(30)).await.remove(0);
        h.clock.advance(seconds(31));
        let stale: Vec<_> = h.store.stale_jobs(None).await.unwrap().iter().map(|job| job.id).collect();
        assert_eq!(stale, [gone.id, slow.id], "{}", h.name);

        // The slow worker's heartbeat lands between the listing and the take-back.
        h.store.heartbeat("w2", &[slow.lease().unwrap()], seconds(30)).await.unwrap();
        let recoveries = h.store.requeue_stale(&stale, None).await.unwrap();

        assert_eq!(recoveries.iter().map(|r| r.job_id).collect::<Vec<_>>(), [gone.id], "{}", h.name);
        assert_eq!(h.job(slow.id).await.status, JobStatus::Processing, "{}", h.name);
        assert_eq!(h.job(gone.id).await.status, JobStatus::Pending, "{}", h.name);
    }
}
