//! An operator's cancellation (`quire jobs cancel`), checked against every backend: a job no
//! worker holds is cancelled at once, a held one only when its worker stops it under its own
//! lease, and a finished one is refused; the job and its document change in one transaction.

mod common;

use checkpoint_store::{Cancellation, DocumentStatus, Failure, JobId, JobStatus, NewDocument, StoreError};
use common::{Harness, TTL, backends};
use stage_machine::{Checkpoint, Stage};

/// A stored document and a pending `process_document` job for it.
async fn document_with_job(h: &Harness, content_hash: &str) -> (String, JobId) {
    let upload = NewDocument { content_hash: content_hash.into(), file_name: "a.epub".into(), byte_size: 1 };
    let document = h.docs.create_document(upload).await.unwrap().0.id;
    let job = h.enqueue(&document).await;
    (document, job.id)
}

#[tokio::test]
async fn a_pending_job_is_cancelled_at_once_with_its_document_failed() {
    for h in backends().await {
        let (document, job) = document_with_job(&h, "00000000000000c1").await;

        let cancellation = h.store.cancel(job).await.unwrap();

        let Cancellation::Cancelled(cancelled) = cancellation else {
            panic!("{}: a pending job is cancelled at once, not asked: {cancellation:?}", h.name)
        };
        assert_eq!(cancelled, h.job(job).await, "{}: the answer is the job as stored", h.name);
        assert_eq!(cancelled.status, JobStatus::Cancelled, "{}", h.name);
        assert!(cancelled.finished_at.is_some(), "{}", h.name);
        assert_eq!(cancelled.last_error.as_deref(), Some("cancelled by an operator"), "{}", h.name);
        let document = h.docs.document(&document).await.unwrap().unwrap();
        assert_eq!(document.status, DocumentStatus::Failed, "{}", h.name);
        assert_eq!(document.error.as_deref(), Some("cancelled by an operator"), "{}", h.name);
        assert!(h.lease("w1", 1).await.is_empty(), "{}: a cancelled job is never leased", h.name);
    }
}

#[tokio::test]
async fn a_job_waiting_for_its_retry_is_cancelled_at_once() {
    for h in backends().await {
        let (_, job) = document_with_job(&h, "00000000000000c2").await;
        let lease = h.lease_one("w1").await;
        h.store.fail(lease, "flaky", Failure::Retryable).await.unwrap();

        let cancellation = h.store.cancel(job).await.unwrap();

        assert!(matches!(cancellation, Cancellation::Cancelled(_)), "{}: {cancellation:?}", h.name);
        h.clock.advance(TTL * 10);
        assert!(h.lease("w1", 1).await.is_empty(), "{}: a cancelled job is not retried", h.name);
        assert_eq!(h.job(job).await.status, JobStatus::Cancelled, "{}", h.name);
    }
}

#[tokio::test]
async fn a_running_job_is_only_asked_and_stops_under_its_lease_keeping_its_checkpoint() {
    for h in backends().await {
        let (document, job) = document_with_job(&h, "00000000000000c3").await;
        let lease = h.lease_one("w1").await;
        let mut checkpoint = Checkpoint::default();
        checkpoint.complete(Stage::Extracted, common::START).unwrap();
        h.store.save_checkpoint(lease, &checkpoint).await.unwrap();

        let cancellation = h.store.cancel(job).await.unwrap();

        // The worker keeps its job, and its writes, until the stage boundary.
        let Cancellation::Requested(asked) = cancellation else {
            panic!("{}: a running job is asked to stop, not taken: {cancellation:?}", h.name)
        };
        assert_eq!(asked.status, JobStatus::Processing, "{}", h.name);
        assert_eq!(asked.lease(), Some(lease), "{}: the worker's lease still holds", h.name);
        assert!(asked.cancel_requested_at.is_some(), "{}: the request shows on the job", h.name);
        let report = h.store.heartbeat("w1", &[lease], TTL).await.unwrap();
        assert_eq!(report.renewed, [job], "{}", h.name);
        assert_eq!(report.cancel_requested, [job], "{}: the heartbeat tells the worker", h.name);
        checkpoint.complete(Stage::MarkdownSaved, common::START).unwrap();
        h.store.save_checkpoint(lease, &checkpoint).await.unwrap();
        let again = h.store.cancel(job).await.unwrap();
        let Cancellation::Requested(again) = again else { panic!("{}: asking twice is asking: {again:?}", h.name) };
        assert_eq!(again.cancel_requested_at, asked.cancel_requested_at, "{}: the first request's time", h.name);

        // The stage boundary: the worker records the cancellation.
        let cancelled = h.store.cancel_held(lease).await.unwrap();

        assert_eq!(cancelled, h.job(job).await, "{}", h.name);
        assert_eq!(cancelled.status, JobStatus::Cancelled, "{}", h.name);
        assert_eq!(cancelled.checkpoint().completed_stages, [Stage::Extracted, Stage::MarkdownSaved], "{}", h.name);
        assert_eq!(cancelled.attempts, 0, "{}: the operator's stop spends no attempt", h.name);
        assert_eq!(cancelled.error_kind, None, "{}: a cancellation is no failure", h.name);
        assert_eq!(cancelled.lock_owner, None, "{}", h.name);
        assert_eq!(cancelled.cancel_requested_at, None, "{}: the request was honoured", h.name);
        assert!(cancelled.finished_at.is_some(), "{}", h.name);
        assert_eq!(h.docs.document(&document).await.unwrap().unwrap().status, DocumentStatus::Failed, "{}", h.name);
        assert!(h.store.save_checkpoint(lease, &checkpoint).await.unwrap_err().is_lease_lost(), "{}", h.name);
        h.clock.advance(TTL * 2);
        assert!(h.store.recover_stale().await.unwrap().is_empty(), "{}: nothing to reap", h.name);
        assert_eq!(h.job(job).await.status, JobStatus::Cancelled, "{}: not retried, not dead", h.name);
    }
}

#[tokio::test]
async fn a_cancel_from_a_stale_lease_holder_is_refused_and_changes_nothing() {
    for h in backends().await {
        let (_, job) = document_with_job(&h, "00000000000000c4").await;
        let stale = h.lease_one("w1").await;
        h.store.cancel(job).await.unwrap();
        // The first worker stalls; its lease expires and the reaper takes the job back.
        h.clock.advance(TTL * 2);
        h.store.recover_stale().await.unwrap();
        let current = h.lease_one("w2").await;
        let before = h.job(job).await;

        let refused = h.store.cancel_held(stale).await.unwrap_err();

        assert!(refused.is_lease_lost(), "{}: {refused}", h.name);
        assert_eq!(h.job(job).await, before, "{}", h.name);
        assert_eq!(before.lease(), Some(current), "{}", h.name);
        // The request was the stalled attempt's: it lapsed with it, and the new attempt runs.
        let report = h.store.heartbeat("w2", &[current], TTL).await.unwrap();
        assert!(report.cancel_requested.is_empty(), "{}: {report:?}", h.name);
    }
}

#[tokio::test]
async fn a_finished_job_cannot_be_cancelled_and_an_unknown_one_is_not_found() {
    for h in backends().await {
        let (_, completed) = document_with_job(&h, "00000000000000c5").await;
        let lease = h.lease_one("w1").await;
        h.store.complete(lease, None).await.unwrap();
        let (_, dead) = document_with_job(&h, "00000000000000c6").await;
        let lease = h.lease_one("w1").await;
        h.store.fail(lease, "broken", Failure::Permanent).await.unwrap();
        let (_, cancelled) = document_with_job(&h, "00000000000000c7").await;
        h.store.cancel(cancelled).await.unwrap();

        for (job, status) in [(completed, "completed"), (dead, "dead"), (cancelled, "cancelled")] {
            let before = h.job(job).await;
            match h.store.cancel(job).await {
                Err(StoreError::InvalidState { job_id, status: refused, .. }) => {
                    assert_eq!((job_id, refused.as_str()), (job, status), "{}", h.name);
                }
                other => panic!("{}: a {status} job cannot be cancelled: {other:?}", h.name),
            }
            assert_eq!(h.job(job).await, before, "{}", h.name);
        }
        let missing = h.store.cancel(JobId(9_999)).await.unwrap_err();
        assert!(matches!(missing, StoreError::JobNotFound(JobId(9_999))), "{}: {missing}", h.name);
    }
}

#[tokio::test]
async fn a_cancelled_job_is_replayed_from_its_checkpoint_with_its_document_pending() {
    for h in backends().await {
        let (document, job) = document_with_job(&h, "00000000000000c8").await;
        let lease = h.lease_one("w1").await;
        let mut checkpoint = Checkpoint::default();
        checkpoint.complete(Stage::Extracted, common::START).unwrap();
        h.store.save_checkpoint(lease, &checkpoint).await.unwrap();
        h.store.cancel(job).await.unwrap();
        h.store.cancel_held(lease).await.unwrap();

        let replayed = h.store.requeue_with_checkpoint(job, &checkpoint).await.unwrap();

        assert_eq!(replayed.status, JobStatus::Pending, "{}", h.name);
        assert_eq!(replayed.finished_at, None, "{}", h.name);
        assert_eq!(h.docs.document(&document).await.unwrap().unwrap().status, DocumentStatus::Pending, "{}", h.name);
        let lease = h.lease_one("w2").await;
        let report = h.store.heartbeat("w2", &[lease], TTL).await.unwrap();
        assert!(report.cancel_requested.is_empty(), "{}: the old request is gone: {report:?}", h.name);
    }
}
