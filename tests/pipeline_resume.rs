//! A retry never loses data and never pays twice for AI work, proven stage by stage: every test
//! here crashes an attempt at a named point (a failpoint that ends the attempt as a killed worker
//! would, leaving its lease to expire), lets the job be recovered and retried, and compares the
//! result with an uninterrupted run.

mod support;

use std::sync::Arc;

use checkpoint_store::{DocumentStatus, DocumentStore, JobFilter, JobKind, JobStatus, JobStore};
use support::{CountingEmbedder, Rig, Snapshot};

/// A book with enough text for several chunks and several embedding batches.
fn book() -> Vec<u8> {
    epub_fixtures::corpus_of(1, 7).remove(0).1
}

struct Run {
    snapshot: Snapshot,
    /// `detect_connections` jobs the book got.
    detections: usize,
    requests: u64,
    inputs: u64,
    extractions: u64,
    chunkings: u64,
    /// Attempts the processing job took: 2 when the crash happened.
    attempts: u32,
}

/// Processes the book once, with the failpoint `crash_at` (if any) firing once.
async fn run(crash_at: Option<&str>, failpoint_action: &str) -> Run {
    let scenario = fail::FailScenario::setup();
    if let Some(name) = crash_at {
        fail::cfg(name, failpoint_action).unwrap();
    }
    // One input per request, so the book takes one request per chunk.
    let embedder = CountingEmbedder::new(1);
    let rig = Rig::new(embedder.clone()).await;
    let submission = rig.submit("book.epub", &book()).await;
    rig.drive().await;
    scenario.teardown();
    let process = rig.store.job(submission.job_id.unwrap()).await.unwrap().unwrap();
    let detect = JobFilter { kind: Some(JobKind::DetectConnections), limit: Some(100), ..Default::default() };
    Run {
        detections: rig.store.list_jobs(&detect).await.unwrap().len(),
        attempts: process.attempts,
        snapshot: rig.snapshot(&submission.document_id).await,
        requests: embedder.requests(),
        inputs: embedder.inputs(),
        extractions: rig.extractions(),
        chunkings: rig.chunkings(),
    }
}

async fn uninterrupted() -> Run {
    let clean = run(None, "off").await;
    assert_eq!(clean.snapshot.status, "complete");
    assert!(clean.snapshot.chunks.len() >= 4, "the book must span several batches: {}", clean.snapshot.chunks.len());
    assert!(!clean.snapshot.connections.is_empty(), "the book must have connections");
    assert_eq!((clean.extractions, clean.chunkings, clean.attempts), (1, 1, 1));
    clean
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_any_stage_checkpoint_resumes_without_losing_or_repaying_work() {
    let clean = uninterrupted().await;
    let cases = [
        // (failpoint, extractions expected, chunkings expected)
        ("after_checkpoint_extracted", 1, 1),
        ("after_checkpoint_markdown_saved", 1, 1),
        ("after_checkpoint_chunked", 1, 1),
        ("after_checkpoint_embedded", 1, 1),
        ("before_complete", 1, 1),
    ];
    for (failpoint, extractions, chunkings) in cases {
        let crashed = run(Some(failpoint), "1*return").await;
        assert_eq!(crashed.attempts, 2, "{failpoint}: the crash did not happen");
        assert_eq!(crashed.snapshot, clean.snapshot, "{failpoint}: chunks or connections differ from a clean run");
        assert_eq!(crashed.extractions, extractions, "{failpoint}: extraction ran again");
        assert_eq!(crashed.chunkings, chunkings, "{failpoint}: chunking ran again");
        assert_eq!(crashed.requests, clean.requests, "{failpoint}: AI requests repeated for finished work");
        assert_eq!(crashed.inputs, clean.inputs, "{failpoint}: inputs embedded twice");
        assert_eq!(crashed.detections, 1, "{failpoint}: connections asked for more than once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_dead_lettered_after_its_last_checkpoint_and_retried_leaves_its_book_complete() {
    let clean = uninterrupted().await;
    // Every attempt dies after the book's last checkpoint, until the job is out of attempts. The
    // scenario is held to the end: the failpoints are the process's, shared with other tests.
    let scenario = fail::FailScenario::setup();
    fail::cfg("before_complete", "3*return").unwrap();
    let embedder = CountingEmbedder::new(1);
    let rig = Rig::new(embedder.clone()).await;
    let submission = rig.submit("book.epub", &book()).await;
    let job = submission.job_id.unwrap();
    rig.drive().await;
    assert_eq!(rig.store.job(job).await.unwrap().unwrap().status, JobStatus::Dead);
    assert_eq!(rig.snapshot(&submission.document_id).await.status, "failed");
    let requests = embedder.requests();

    // The operator's retry puts the book back to `pending`; the attempt that finds nothing left
    // to do must not leave it there.
    let retried = worker::operations::retry_dead_letters(rig.store.as_ref(), &[job]).await.unwrap();
    assert!(retried.refused.is_empty(), "{:?}", retried.refused);
    rig.drive().await;
    assert_eq!(rig.store.job(job).await.unwrap().unwrap().status, JobStatus::Completed);
    let snapshot = rig.snapshot(&submission.document_id).await;
    assert_eq!(snapshot, clean.snapshot, "the book ends as an uninterrupted run leaves it");
    assert_eq!(embedder.requests(), requests, "nothing embedded again");
    assert_eq!((rig.extractions(), rig.chunkings()), (1, 1), "nothing extracted or chunked again");
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_midway_through_embedding_sends_only_the_remaining_batches() {
    let clean = uninterrupted().await;
    assert!(clean.requests >= 3, "needs at least three batches, got {}", clean.requests);
    // Crash after the second of n batches.
    let crashed = run(Some("after_embedding_batch"), "1*off->1*return").await;
    assert_eq!(crashed.attempts, 2, "the crash did not happen");
    assert_eq!(crashed.snapshot, clean.snapshot);
    assert_eq!(crashed.requests, clean.requests, "only the batches not yet embedded are sent again");
    assert_eq!(crashed.inputs, clean.inputs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_the_embedding_request_is_in_flight_resends_at_most_that_batch() {
    let clean = uninterrupted().await;
    // The crash lands after the request but before its vectors are stored: that one batch is
    // paid for twice, nothing else.
    let crashed = run(Some("before_storing_embeddings"), "1*off->1*return").await;
    assert_eq!(crashed.attempts, 2, "the crash did not happen");
    assert_eq!(crashed.snapshot, clean.snapshot);
    assert_eq!(crashed.requests, clean.requests + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_text_in_another_document_is_served_from_the_cache() {
    let _scenario = fail::FailScenario::setup();
    let embedder = CountingEmbedder::new(2);
    let rig = Rig::new(embedder.clone()).await;
    let first = rig.submit("a.epub", &epub_fixtures::sample_book()).await;
    rig.drive().await;
    let paid = embedder.inputs();
    // The illustrated edition shares its text with the first book.
    let second = rig.submit("b.epub", &epub_fixtures::sample_book_with_image()).await;
    rig.drive().await;
    let document = rig.store.document(&second.document_id).await.unwrap().unwrap();
    assert_eq!(document.status, DocumentStatus::Complete);
    assert!(document.embeddings_from_cache > 0, "shared chunks come from the cache");
    assert!(embedder.inputs() - paid < u64::from(document.chunk_count), "only new text is embedded");
    assert_eq!(rig.snapshot(&first.document_id).await.status, "complete");
}

/// Each embedder says how much one input may carry; the pipeline cuts every chunk's text to that
/// window, not to one provider's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_are_cut_to_the_embedders_own_window() {
    let _scenario = fail::FailScenario::setup();
    let narrow = CountingEmbedder::with_window(8, 20);
    let rig = Rig::new(narrow.clone()).await;
    let submission = rig.submit("a.epub", &book()).await;
    rig.drive().await;
    assert_eq!(rig.snapshot(&submission.document_id).await.status, "complete");
    assert!(narrow.longest_input() > 0);
    assert!(narrow.longest_input() <= 60, "an input of {} characters passed a 20-token window", narrow.longest_input());

    let unbounded = CountingEmbedder::new(8);
    let rig = Rig::new(unbounded.clone()).await;
    let submission = rig.submit("a.epub", &book()).await;
    rig.drive().await;
    let longest_chunk =
        rig.store.chunks(&submission.document_id).await.unwrap().iter().map(|c| c.text.chars().count() as u64).max();
    assert_eq!(Some(unbounded.longest_input()), longest_chunk, "an embedder without a window reads whole chunks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_submission_of_the_same_book_queues_nothing() {
    let _scenario = fail::FailScenario::setup();
    let rig = Rig::new(CountingEmbedder::new(8)).await;
    let first = rig.submit("a.epub", &book()).await;
    assert!(!first.deduplicated);
    let again = rig.submit("copy.epub", &book()).await;
    assert!(again.deduplicated);
    assert_eq!((again.document_id.as_str(), again.job_id), (first.document_id.as_str(), first.job_id));
    rig.drive().await;
    let after = rig.submit("third.epub", &book()).await;
    assert!(after.deduplicated, "a processed book is not processed again");
    let jobs =
        rig.store.list_jobs(&JobFilter { kind: Some(JobKind::ProcessDocument), ..Default::default() }).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, JobStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_detection_during_reprocessing_finishes_without_errors_or_orphans() {
    let _scenario = fail::FailScenario::setup();
    let embedder = CountingEmbedder::new(8);
    let rig = Rig::new(embedder.clone()).await;
    let submission = rig.submit("book.epub", &book()).await;
    rig.drive().await;
    let clean = rig.snapshot(&submission.document_id).await;

    // Reprocess from scratch while a connection job for the old chunks runs concurrently.
    let process = rig
        .store
        .list_jobs(&JobFilter { kind: Some(JobKind::ProcessDocument), ..Default::default() })
        .await
        .unwrap()
        .remove(0);
    rig.store.requeue_with_checkpoint(process.id, &stage_machine::Checkpoint::default()).await.unwrap();
    let old_count = clean.chunks.len();
    worker::JobPayload::detect_connections(&submission.document_id, old_count)
        .enqueue(rig.store.as_ref(), Default::default())
        .await
        .unwrap();
    // Both jobs are leased and run at the same time.
    let request = checkpoint_store::LeaseRequest {
        owner: "racer",
        max_jobs: 2,
        ttl: support::TTL,
        kinds: &[JobKind::ProcessDocument, JobKind::DetectConnections],
    };
    let jobs = rig.store.lease(request).await.unwrap();
    assert_eq!(jobs.len(), 2);
    let handlers = rig.pipeline.handlers();
    let attempts = jobs.into_iter().map(|job| {
        let handler = handlers.get(job.kind).expect("the pipeline runs every kind");
        let context = worker::JobContext {
            lease: job.lease().unwrap(),
            attempt: job.attempts,
            lease_lost: Default::default(),
            shutdown: Default::default(),
            cancel: Default::default(),
        };
        tokio::spawn(worker::run_attempt(
            rig.store.clone(),
            handler,
            job,
            context,
            Arc::new(worker::WorkerMetrics::default()),
        ))
    });
    for attempt in attempts.collect::<Vec<_>>() {
        attempt.await.unwrap();
    }
    rig.drive().await;

    let dead = rig.store.list_jobs(&JobFilter { status: Some(JobStatus::Dead), ..Default::default() }).await.unwrap();
    assert!(dead.is_empty(), "no job failed: {dead:?}");
    let after = rig.snapshot(&submission.document_id).await;
    assert_eq!(after, clean, "reprocessing yields the same chunks and connections");
    let chunk_ids: std::collections::HashSet<_> = after.chunks.iter().map(|c| c.0.clone()).collect();
    assert!(after.connections.iter().all(|(source, _, _)| chunk_ids.contains(source)));
}
