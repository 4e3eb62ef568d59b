//! The Batch API path of the embedding stage, against a scripted OpenAI-compatible server that
//! counts every upload, batch and status check: a job that dies after the service has done (or
//! started) its work asks the service first and never pays for that work again.
//!
//! Every test holds a `fail::FailScenario` (failpoints are process-wide, so these tests run one
//! at a time) and polls with a 1 ms interval while the fake advances one state per status check:
//! nothing waits for real time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use checkpoint_store::{DocumentStore, ErrorKind, JobStatus, JobStore};
use embedder::{OpenAiConfig, OpenAiEmbedder};
use support::fake_openai::{BatchScript, FakeOpenAi};
use support::{Rig, TTL};
use tokio_util::sync::CancellationToken;
use worker::{Batching, EmbeddingMode};

fn book() -> Vec<u8> {
    epub_fixtures::corpus_of(1, 31).remove(0).1
}

/// A rig whose pipeline embeds through the fake's Batch API for every document.
async fn rig(server: &FakeOpenAi) -> Rig {
    let config = OpenAiConfig {
        base_url: server.base_url.clone(),
        api_key: Some("test-key".into()),
        model: "test-embed".into(),
        dimensions: Some(64),
        batch_size: 8,
        ..OpenAiConfig::default()
    };
    let openai = Arc::new(OpenAiEmbedder::new(config).unwrap());
    let mut rig = Rig::new(openai.clone()).await;
    rig.pipeline.batching = Batching {
        service: Some(openai),
        mode: EmbeddingMode::Batch,
        threshold: 0,
        poll_interval: Duration::from_millis(1),
        max_poll_interval: Duration::from_millis(2),
        max_wait_per_attempt: Duration::from_secs(3600),
    };
    rig
}

/// Distinct chunk texts of the document: what one full batch holds.
async fn unique_inputs(rig: &Rig, document_id: &str) -> usize {
    let chunks = rig.store.chunks(document_id).await.unwrap();
    chunks.iter().map(|c| c.content_hash.clone()).collect::<std::collections::HashSet<_>>().len()
}

async fn assert_complete(rig: &Rig, document_id: &str) {
    let document = rig.store.document(document_id).await.unwrap().unwrap();
    assert_eq!(document.status.to_string(), "complete");
    let embedded = rig.store.embedded_chunks(Some(document_id), "test-embed@64", 64).await.unwrap();
    assert_eq!(embedded.len() as u32, document.chunk_count);
    assert!(embedded.iter().all(|c| c.embedding.is_some()), "every chunk has its vector");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_the_batch_was_created_the_retry_fetches_its_results_and_submits_nothing() {
    let scenario = fail::FailScenario::setup();
    fail::cfg("after_batch_created", "1*return").unwrap();
    let server = FakeOpenAi::with_batches(|_| BatchScript::completes_after(0)).await;
    let rig = rig(&server).await;
    let submission = rig.submit("book.epub", &book()).await;

    let crashed = rig.one_attempt().await;
    assert_eq!(crashed.status, JobStatus::Processing, "the crash left the lease to expire");
    let recorded = crashed.checkpoint().facts.embedding_batch.expect("the batch id was recorded before the crash");
    assert_eq!(recorded.id, "batch_0");
    let inputs = unique_inputs(&rig, &submission.document_id).await;
    assert_eq!(recorded.hashes_count as usize, inputs);
    assert_eq!((server.batches_created(), server.status_checks()), (1, 0));

    rig.drive().await;
    scenario.teardown();
    assert_complete(&rig, &submission.document_id).await;
    assert_eq!(server.batches_created(), 1, "no second batch");
    assert_eq!(server.files_uploaded(), 1, "no second upload");
    assert_eq!(server.inputs_per_batch(), vec![inputs]);
    assert_eq!(server.requests(), 0, "nothing was embedded directly");
    assert_eq!(server.downloads(), 1);
    let job = rig.store.job(submission.job_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(job.attempts, 2);
    assert_eq!(job.checkpoint().facts.embedding_batch, None, "a settled batch is forgotten");
    assert_eq!(job.checkpoint().facts.ai_inputs as usize, inputs, "inputs counted once");
    let stats = &rig.pipeline.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!((load(&stats.batches_submitted), load(&stats.batches_completed)), (1, 1));
    assert_eq!(load(&stats.inputs_batch) as usize, inputs);
    assert_eq!(load(&stats.inputs_direct), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_the_batch_runs_the_retry_waits_on_the_same_batch() {
    let scenario = fail::FailScenario::setup();
    let server = FakeOpenAi::with_batches(|_| BatchScript::completes_after(4)).await;
    let mut rig = rig(&server).await;
    let submission = rig.submit("book.epub", &book()).await;

    // The first attempt sees the batch in progress and waits an hour between checks; it is
    // killed (its lease lost) while waiting.
    rig.pipeline.batching.poll_interval = Duration::from_secs(3600);
    rig.pipeline.batching.max_poll_interval = Duration::from_secs(3600);
    let lease_lost = CancellationToken::new();
    let killer = {
        let (lease_lost, checks) = (lease_lost.clone(), server.status_checks_handle());
        tokio::spawn(async move {
            while checks() < 1 {
                tokio::task::yield_now().await;
            }
            lease_lost.cancel();
        })
    };
    let killed = rig.attempt_with(lease_lost, CancellationToken::new()).await;
    killer.await.unwrap();
    assert_eq!(killed.status, JobStatus::Processing);
    assert_eq!(killed.checkpoint().facts.embedding_batch.map(|b| b.id).as_deref(), Some("batch_0"));
    assert_eq!((server.batches_created(), server.status_checks()), (1, 1));

    rig.pipeline.batching.poll_interval = Duration::from_millis(1);
    rig.pipeline.batching.max_poll_interval = Duration::from_millis(2);
    rig.drive().await;
    scenario.teardown();
    assert_complete(&rig, &submission.document_id).await;
    assert_eq!(server.batches_created(), 1, "the retry waited on batch_0 instead of submitting again");
    assert_eq!(server.files_uploaded(), 1);
    assert_eq!(server.status_checks(), 5, "one check before the kill, four after");
    assert_eq!(server.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_while_polling_hands_the_job_back_with_the_batch_kept() {
    let scenario = fail::FailScenario::setup();
    let server = FakeOpenAi::with_batches(|_| BatchScript::completes_after(2)).await;
    let mut rig = rig(&server).await;
    let submission = rig.submit("book.epub", &book()).await;
    rig.pipeline.batching.poll_interval = Duration::from_secs(3600);
    let shutdown = CancellationToken::new();
    let stopper = {
        let (shutdown, checks) = (shutdown.clone(), server.status_checks_handle());
        tokio::spawn(async move {
            while checks() < 1 {
                tokio::task::yield_now().await;
            }
            shutdown.cancel();
        })
    };
    let handed_back = rig.attempt_with(CancellationToken::new(), shutdown).await;
    stopper.await.unwrap();
    assert_eq!(handed_back.status, JobStatus::Pending);
    assert_eq!(handed_back.attempts, 0, "a shutdown uses no attempt");
    assert_eq!(handed_back.checkpoint().facts.embedding_batch.map(|b| b.id).as_deref(), Some("batch_0"));

    rig.pipeline.batching.poll_interval = Duration::from_millis(1);
    rig.drive().await;
    scenario.teardown();
    assert_complete(&rig, &submission.document_id).await;
    assert_eq!(server.batches_created(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_batch_is_resubmitted_once_for_the_missing_inputs_only() {
    let scenario = fail::FailScenario::setup();
    // The first batch expires with three results done; the second completes.
    let server = FakeOpenAi::with_batches(|n| match n {
        0 => BatchScript { partial: 3, ..BatchScript::ends("expired", 1) },
        _ => BatchScript::completes_after(1),
    })
    .await;
    let rig = rig(&server).await;
    let submission = rig.submit("book.epub", &book()).await;

    let failed = rig.one_attempt().await;
    assert_eq!((failed.status, failed.attempts), (JobStatus::Pending, 1));
    assert_eq!(failed.error_kind, Some(ErrorKind::Retryable));
    assert!(failed.last_error.as_deref().unwrap().contains("expired"), "{:?}", failed.last_error);
    assert_eq!(failed.checkpoint().facts.embedding_batch, None);

    rig.drive().await;
    scenario.teardown();
    assert_complete(&rig, &submission.document_id).await;
    let inputs = unique_inputs(&rig, &submission.document_id).await;
    assert_eq!(
        server.inputs_per_batch(),
        vec![inputs, inputs - 3],
        "resubmitted once, without the three finished inputs"
    );
    let batches = server.batches();
    assert!(batches[0].custom_ids[..3].iter().all(|id| !batches[1].custom_ids.contains(id)));
    assert_eq!(server.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_found_failed_on_recovery_is_resubmitted_once() {
    let scenario = fail::FailScenario::setup();
    fail::cfg("after_batch_created", "1*return").unwrap();
    let server =
        FakeOpenAi::with_batches(
            |n| if n == 0 { BatchScript::ends("failed", 0) } else { BatchScript::completes_after(0) },
        )
        .await;
    let rig = rig(&server).await;
    let submission = rig.submit("book.epub", &book()).await;

    let crashed = rig.one_attempt().await;
    assert_eq!(crashed.status, JobStatus::Processing);
    rig.drive().await;
    scenario.teardown();
    assert_complete(&rig, &submission.document_id).await;
    let inputs = unique_inputs(&rig, &submission.document_id).await;
    assert_eq!(
        server.inputs_per_batch(),
        vec![inputs, inputs],
        "nothing of the failed batch was usable; one resubmission"
    );
    let job = rig.store.job(submission.job_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(job.attempts, 2, "the recovering attempt resubmitted and finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_service_during_recovery_is_an_ordinary_retry_and_nothing_is_marked_done() {
    let scenario = fail::FailScenario::setup();
    fail::cfg("after_batch_created", "1*return").unwrap();
    let server = FakeOpenAi::with_batches(|_| BatchScript::completes_after(0)).await;
    let rig = rig(&server).await;
    let submission = rig.submit("book.epub", &book()).await;
    rig.one_attempt().await;

    server.set_unreachable(true);
    rig.clock.advance(TTL + Duration::from_millis(1));
    rig.store.recover_stale().await.unwrap();
    let retried = rig.one_attempt().await;
    assert_eq!((retried.status, retried.attempts), (JobStatus::Pending, 2));
    assert_eq!(retried.error_kind, Some(ErrorKind::Retryable));
    assert!(retried.last_error.as_deref().unwrap().contains("503"), "{:?}", retried.last_error);
    assert_eq!(
        retried.checkpoint().facts.embedding_batch.map(|b| b.id).as_deref(),
        Some("batch_0"),
        "the batch is still remembered"
    );
    assert!(server.refused() >= 1);
    let document = rig.store.document(&submission.document_id).await.unwrap().unwrap();
    assert_eq!(document.status.to_string(), "processing", "nothing was marked done");
    assert!(
        rig.store
            .embedded_chunks(Some(&submission.document_id), "test-embed@64", 64)
            .await
            .unwrap()
            .iter()
            .all(|c| c.embedding.is_none())
    );

    server.set_unreachable(false);
    rig.drive().await;
    scenario.teardown();
    assert_complete(&rig, &submission.document_id).await;
    assert_eq!(server.batches_created(), 1, "the recovered batch's results were used");
    assert_eq!(server.files_uploaded(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_dead_lettered_by_its_timeout_cancels_its_batch() {
    let scenario = fail::FailScenario::setup();
    fail::cfg("after_batch_created", "1*return").unwrap();
    let server = FakeOpenAi::with_batches(|_| BatchScript::never_finishes()).await;
    let rig = rig(&server).await;
    let submission = rig.submit("book.epub", &book()).await;
    // The job's only attempt.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", rig.pipeline.data_dir.database_path().display()))
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET max_attempts = 1").execute(&pool).await.unwrap();
    pool.close().await;

    let stuck = rig.one_attempt().await;
    assert_eq!(stuck.status, JobStatus::Processing);
    // The worker keeps heartbeating past the job's 30-minute timeout.
    let lease = stuck.lease().unwrap();
    for _ in 0..40 {
        rig.clock.advance(Duration::from_secs(50));
        rig.store.heartbeat("w", &[lease], TTL).await.unwrap();
    }
    // A worker's start-up reaper times the job out; out of attempts, it is dead-lettered.
    let mut config = worker::WorkerConfig::new("reaper");
    config.exit_when_idle = true;
    config.poll_interval = Duration::from_millis(10);
    let worker = worker::Worker::new(rig.store.clone(), rig.pipeline.handlers(), config);
    let metrics = worker.metrics();
    tokio::time::timeout(Duration::from_secs(60), worker.run(CancellationToken::new())).await.unwrap().unwrap();
    scenario.teardown();

    assert_eq!(metrics.reaped_dead.load(std::sync::atomic::Ordering::SeqCst), 1);
    let job = rig.store.job(submission.job_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Dead);
    assert_eq!(server.cancels(), 1, "the batch was cancelled on the service");
    assert_eq!(server.batches()[0].status, "cancelling");
    assert_eq!(server.batches_created(), 1);
    let document = rig.store.document(&submission.document_id).await.unwrap().unwrap();
    assert_eq!(document.status.to_string(), "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_batch_hands_the_job_back_between_checks_without_using_attempts() {
    let scenario = fail::FailScenario::setup();
    let server = FakeOpenAi::with_batches(|_| BatchScript::completes_after(5)).await;
    let mut rig = rig(&server).await;
    // Every attempt checks once and, finding the batch still running, hands the job back.
    rig.pipeline.batching.max_wait_per_attempt = Duration::ZERO;
    let submission = rig.submit("book.epub", &book()).await;

    let waiting = rig.one_attempt().await;
    assert_eq!((waiting.status, waiting.attempts), (JobStatus::Pending, 0), "waiting uses no attempt");
    assert!(waiting.last_error.as_deref().unwrap_or_default().contains("waiting on embedding batch batch_0"));
    assert_eq!(waiting.checkpoint().facts.embedding_batch.map(|b| b.id).as_deref(), Some("batch_0"));

    rig.drive().await;
    scenario.teardown();
    assert_complete(&rig, &submission.document_id).await;
    assert_eq!(server.batches_created(), 1, "every later attempt waited on the same batch");
    let job = rig.store.job(submission.job_id.unwrap()).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Completed, 1));
}
