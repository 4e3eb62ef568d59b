//! Dead-lettering, checked against every backend: a `process_document` job that will not run
//! again fails its document in the transaction that dead-letters it, whoever dead-letters it (its
//! worker, the reaper, the timeout), so no document says its book is on the way when no job will
//! bring it, even if the worker crashes right after; a `detect_connections` job leaves its
//! document's status alone.

mod common;

use checkpoint_store::{
    DocumentStatus, EnqueueOptions, FailOutcome, Failure, JobKind, JobStatus, NewDocument, RecoveryAction,
};
use common::{Harness, TTL, backends};
use serde_json::json;

async fn document(h: &Harness, content_hash: &str) -> String {
    let upload = NewDocument { content_hash: content_hash.into(), file_name: "a.epub".into(), byte_size: 1 };
    h.docs.create_document(upload).await.unwrap().0.id
}

fn one_attempt() -> EnqueueOptions {
    EnqueueOptions { max_attempts: Some(1), ..EnqueueOptions::default() }
}

async fn document_status(h: &Harness, id: &str) -> (DocumentStatus, Option<String>) {
    let stored = h.docs.document(id).await.unwrap().unwrap();
    (stored.status, stored.error)
}

#[tokio::test]
async fn a_process_job_dead_lettered_by_its_worker_fails_its_document_with_the_reason() {
    for h in backends().await {
        let id = document(&h, "00000000000000e1").await;
        let job = h.enqueue(&id).await;
        let lease = h.lease_one("w1").await;

        let outcome = h.store.fail(lease, "not an EPUB: no container.xml", Failure::Permanent).await.unwrap();

        assert_eq!(outcome, FailOutcome::Dead, "{}", h.name);
        assert_eq!(h.job(job.id).await.status, JobStatus::Dead, "{}", h.name);
        assert_eq!(
            document_status(&h, &id).await,
            (DocumentStatus::Failed, Some("not an EPUB: no container.xml".to_owned())),
            "{}",
            h.name
        );
    }
}

#[tokio::test]
async fn a_process_job_out_of_attempts_fails_its_document_and_one_with_attempts_left_does_not() {
    for h in backends().await {
        let id = document(&h, "00000000000000e2").await;
        h.enqueue_with(&id, EnqueueOptions { max_attempts: Some(2), ..EnqueueOptions::default() }).await;

        let lease = h.lease_one("w1").await;
        let outcome = h.store.fail(lease, "service unavailable", Failure::Retryable).await.unwrap();
        assert!(matches!(outcome, FailOutcome::Retrying { .. }), "{}: {outcome:?}", h.name);
        assert_eq!(document_status(&h, &id).await.0, DocumentStatus::Pending, "{}: a retry is on its way", h.name);

        h.clock.advance(TTL * 100);
        let lease = h.lease_one("w1").await;
        let outcome = h.store.fail(lease, "service unavailable", Failure::Retryable).await.unwrap();
        assert_eq!(outcome, FailOutcome::Dead, "{}", h.name);
        assert_eq!(
            document_status(&h, &id).await,
            (DocumentStatus::Failed, Some("service unavailable".to_owned())),
            "{}",
            h.name
        );
    }
}

#[tokio::test]
async fn a_process_job_the_reaper_dead_letters_fails_its_document_with_the_reapers_reason() {
    for h in backends().await {
        let id = document(&h, "00000000000000e3").await;
        let job = h.enqueue_with(&id, one_attempt()).await;
        h.lease_one("crashed").await;
        h.clock.advance(TTL * 2);

        let recoveries = h.store.recover_stale().await.unwrap();

        assert_eq!(recoveries.len(), 1, "{}", h.name);
        assert_eq!(recoveries[0].action, RecoveryAction::DeadLettered, "{}", h.name);
        let dead = h.job(job.id).await;
        assert_eq!(dead.status, JobStatus::Dead, "{}", h.name);
        let (status, error) = document_status(&h, &id).await;
        assert_eq!(status, DocumentStatus::Failed, "{}", h.name);
        assert_eq!(error, dead.last_error, "{}: the document says what the job says", h.name);
        assert!(error.is_some(), "{}", h.name);
    }
}

#[tokio::test]
async fn a_dead_lettered_detection_job_leaves_its_document_alone() {
    for h in backends().await {
        let id = document(&h, "00000000000000e4").await;
        let options = EnqueueOptions { document_id: Some(id.clone()), ..one_attempt() };
        h.store.enqueue(JobKind::DetectConnections, json!({ "document_id": id }), options).await.unwrap();
        let lease = h.lease_one("w1").await;

        let outcome = h.store.fail(lease, "no neighbours", Failure::Permanent).await.unwrap();

        assert_eq!(outcome, FailOutcome::Dead, "{}", h.name);
        assert_eq!(document_status(&h, &id).await, (DocumentStatus::Pending, None), "{}", h.name);
    }
}
