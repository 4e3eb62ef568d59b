//! The operator's commands on the queue (`quire clean`, `dlq retry`, `replay`), checked against
//! every backend: they take back only jobs whose worker is gone, write a job and its document in
//! one transaction, and meet a conflicting job with a typed refusal rather than a raw constraint
//! error.

mod common;

use std::time::Duration;

use checkpoint_store::{
    DocumentStatus, EnqueueOptions, Failure, JobId, JobKind, JobStatus, NewDocument, RecoveryAction, RecoveryReason,
    StoreError,
};
use common::{RawPool, backends};
use stage_machine::Checkpoint;

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
        assert!(h.store.take_back_stale(&[job.id], None).await.unwrap().is_empty(), "{}", h.name);
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
        let recoveries = h.store.take_back_stale(&[job.id], None).await.unwrap();
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
        assert!(h.store.take_back_stale(&[job.id], Some(seconds(30))).await.unwrap().is_empty(), "{}", h.name);
        assert_eq!(h.job(job.id).await.status, JobStatus::Processing, "{}", h.name);

        h.clock.advance(seconds(10));
        assert_eq!(h.store.stale_jobs(Some(seconds(30))).await.unwrap().len(), 1, "{}", h.name);
        assert_eq!(h.store.take_back_stale(&[job.id], Some(seconds(30))).await.unwrap().len(), 1, "{}", h.name);
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
        let recoveries = h.store.take_back_stale(&stale, None).await.unwrap();

        assert_eq!(recoveries.iter().map(|r| r.job_id).collect::<Vec<_>>(), [gone.id], "{}", h.name);
        assert_eq!(h.job(slow.id).await.status, JobStatus::Processing, "{}", h.name);
        assert_eq!(h.job(gone.id).await.status, JobStatus::Pending, "{}", h.name);
    }
}

/// A stored document with a `process_document` job of one attempt, leased by a worker that then
/// went silent for longer than its lease: `quire clean` dead-letters it.
async fn stale_job_out_of_attempts(h: &common::Harness, content_hash: &str) -> (String, checkpoint_store::Job) {
    let document = stored_document(h, content_hash).await;
    let job = h.enqueue_with(&document, EnqueueOptions { max_attempts: Some(1), ..Default::default() }).await;
    let leased = h.lease_for("w1", 1, seconds(10)).await.remove(0);
    assert_eq!(leased.id, job.id, "{}", h.name);
    h.store.start_clock(leased.lease().unwrap()).await.unwrap();
    h.clock.advance(seconds(11));
    (document, leased)
}

async fn stored_document(h: &common::Harness, content_hash: &str) -> String {
    let upload = NewDocument { content_hash: content_hash.into(), file_name: "a.epub".into(), byte_size: 1 };
    h.docs.create_document(upload).await.unwrap().0.id
}

#[tokio::test]
async fn clean_dead_letters_a_job_out_of_attempts_and_fails_its_document_in_one_call() {
    for h in backends().await {
        let (document, job) = stale_job_out_of_attempts(&h, "00000000000000a1").await;

        let recoveries = h.store.take_back_stale(&[job.id], None).await.unwrap();

        assert_eq!(recoveries.len(), 1, "{}", h.name);
        assert_eq!(recoveries[0].action, RecoveryAction::DeadLettered, "{}", h.name);
        let dead = h.job(job.id).await;
        assert_eq!(dead.status, JobStatus::Dead, "{}", h.name);
        let document = h.docs.document(&document).await.unwrap().unwrap();
        assert_eq!(document.status, DocumentStatus::Failed, "{}", h.name);
        assert_eq!(document.error, dead.last_error, "{}: the document says why its job died", h.name);
        assert!(document.error.as_deref().is_some_and(|e| e.contains("operator")), "{}: {document:?}", h.name);
    }
}

#[tokio::test]
async fn clean_requeueing_a_job_with_attempts_left_leaves_its_document_alone() {
    for h in backends().await {
        let document = stored_document(&h, "00000000000000a2").await;
        let job = h.enqueue(&document).await;
        h.lease_for("w1", 1, seconds(10)).await;
        h.clock.advance(seconds(11));

        let recoveries = h.store.take_back_stale(&[job.id], None).await.unwrap();

        assert_eq!(recoveries[0].action, RecoveryAction::Requeued, "{}", h.name);
        let status = h.docs.document(&document).await.unwrap().unwrap().status;
        assert_eq!(status, DocumentStatus::Pending, "{}", h.name);
    }
}

#[tokio::test]
async fn clean_dead_lettering_a_connection_job_leaves_its_document_alone() {
    for h in backends().await {
        let document = stored_document(&h, "00000000000000a3").await;
        let options =
            EnqueueOptions { max_attempts: Some(1), document_id: Some(document.clone()), ..Default::default() };
        let payload = serde_json::json!({ "document_id": document });
        let job = h.store.enqueue(JobKind::DetectConnections, payload, options).await.unwrap().job;
        h.lease_for("w1", 1, seconds(10)).await;
        h.clock.advance(seconds(11));

        let recoveries = h.store.take_back_stale(&[job.id], None).await.unwrap();

        assert_eq!(recoveries[0].action, RecoveryAction::DeadLettered, "{}", h.name);
        let status = h.docs.document(&document).await.unwrap().unwrap().status;
        assert_eq!(status, DocumentStatus::Pending, "{}: connections failing do not fail the book", h.name);
    }
}

/// The job and its document are written together: when the document cannot be marked failed,
/// the job is not dead-lettered either. (Two separate writes left a dead job beside a document
/// still said to be in work.)
#[tokio::test]
async fn clean_that_cannot_fail_the_document_does_not_dead_letter_the_job() {
    for h in backends().await {
        let (document, job) = stale_job_out_of_attempts(&h, "00000000000000a4").await;
        h.raw
            .execute(match h.raw {
                RawPool::Sqlite(_) => {
                    "CREATE TRIGGER refuse_failed BEFORE UPDATE OF status ON documents \
                     WHEN NEW.status = 'failed' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                }
                RawPool::Postgres(_) => {
                    "CREATE FUNCTION refuse_failed() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
                     CREATE TRIGGER refuse_failed BEFORE UPDATE OF status ON documents \
                     FOR EACH ROW WHEN (NEW.status = 'failed') EXECUTE FUNCTION refuse_failed()"
                }
            })
            .await;

        let error = h.store.take_back_stale(&[job.id], None).await.unwrap_err();

        assert!(error.to_string().contains("refused by the test"), "{}: {error}", h.name);
        assert_eq!(h.job(job.id).await.status, JobStatus::Processing, "{}: nothing changed", h.name);
        let status = h.docs.document(&document).await.unwrap().unwrap().status;
        assert_eq!(status, DocumentStatus::Pending, "{}", h.name);
    }
}

// ---------------------------------------------------------------------------------------------
// `dlq retry` and `replay`: one transaction each, and a typed refusal under a key conflict.

/// A dead-lettered `process_document` job of a stored document, and a newer active job that
/// took its unique key (the book was submitted again meanwhile).
async fn dead_job_whose_key_was_taken(h: &common::Harness) -> (checkpoint_store::Job, checkpoint_store::Job) {
    let (document, _) = h
        .docs
        .create_document(NewDocument {
            content_hash: "0123456789abcdef".into(),
            file_name: "a.epub".into(),
            byte_size: 1,
        })
        .await
        .unwrap();
    let options = || EnqueueOptions { unique_key: Some(format!("process:{}", document.id)), ..Default::default() };
    let dead = h.enqueue_with(&document.id, options()).await;
    let lease = h.lease_one("w1").await;
    h.store.fail(lease, "broken", Failure::Permanent).await.unwrap();
    h.raw.set_document_status(&document.id, DocumentStatus::Failed, Some("broken")).await;
    let holder = h.enqueue_with(&document.id, options()).await;
    assert_ne!(holder.id, dead.id, "{}: the dead job frees its key", h.name);
    (h.job(dead.id).await, holder)
}

fn assert_key_taken(error: &StoreError, job: JobId, by: JobId) {
    match error {
        StoreError::UniqueKeyTaken { job_id, holder, .. } => assert_eq!((*job_id, *holder), (job, by)),
        other => panic!("expected UniqueKeyTaken, got {other:?}"),
    }
    assert!(error.is_refusal());
    assert!(error.to_string().contains(&format!("job {by} is active")), "{error}");
}

#[tokio::test]
async fn dlq_retry_while_another_job_holds_the_unique_key_is_refused_and_changes_nothing() {
    for h in backends().await {
        let (dead, holder) = dead_job_whose_key_was_taken(&h).await;
        let document = dead.document_id().unwrap().to_owned();

        let error = h.store.retry_dead(dead.id).await.unwrap_err();

        assert_key_taken(&error, dead.id, holder.id);
        assert_eq!(h.job(dead.id).await.status, JobStatus::Dead, "{}", h.name);
        assert_eq!(h.docs.document(&document).await.unwrap().unwrap().status, DocumentStatus::Failed, "{}", h.name);
    }
}

#[tokio::test]
async fn replay_while_another_job_holds_the_unique_key_is_refused_and_changes_nothing() {
    for h in backends().await {
        let (dead, holder) = dead_job_whose_key_was_taken(&h).await;
        let document = dead.document_id().unwrap().to_owned();

        let error = h.store.requeue_with_checkpoint(dead.id, &Checkpoint::default()).await.unwrap_err();

        assert_key_taken(&error, dead.id, holder.id);
        assert_eq!(h.job(dead.id).await.status, JobStatus::Dead, "{}", h.name);
        assert_eq!(h.docs.document(&document).await.unwrap().unwrap().status, DocumentStatus::Failed, "{}", h.name);
    }
}

#[tokio::test]
async fn replay_and_dlq_retry_requeue_the_job_and_reset_its_document_in_one_call() {
    for h in backends().await {
        let (dead, holder) = dead_job_whose_key_was_taken(&h).await;
        let document = dead.document_id().unwrap().to_owned();
        let lease = h.lease_one("w1").await;
        assert_eq!(lease.job_id, holder.id);
        h.store.complete(lease, None).await.unwrap();

        let replayed = h.store.requeue_with_checkpoint(dead.id, &Checkpoint::default()).await.unwrap();
        assert_eq!(replayed.status, JobStatus::Pending, "{}", h.name);
        let status = h.docs.document(&document).await.unwrap().unwrap().status;
        assert_eq!(status, DocumentStatus::Pending, "{}: the document follows its job", h.name);

        let lease = h.lease_one("w1").await;
        h.store.fail(lease, "broken", Failure::Permanent).await.unwrap();
        h.raw.set_document_status(&document, DocumentStatus::Failed, Some("broken")).await;
        assert_eq!(h.store.retry_dead(dead.id).await.unwrap().status, JobStatus::Pending, "{}", h.name);
        let status = h.docs.document(&document).await.unwrap().unwrap().status;
        assert_eq!(status, DocumentStatus::Pending, "{}: the document follows its job", h.name);
    }
}
