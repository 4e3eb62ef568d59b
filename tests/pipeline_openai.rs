//! The OpenAI-compatible embedding path inside the pipeline, against a scripted local server
//! that counts every request: rate limits postpone without using an attempt or losing finished
//! batches, server errors retry with backoff, client errors fail permanently with the server's
//! message.

mod support;

use std::sync::Arc;
use std::time::Duration;

use checkpoint_store::{DocumentStore, ErrorKind, JobStatus, JobStore};
use embedder::{OpenAiConfig, OpenAiEmbedder};
use support::fake_openai::{FakeOpenAi, Reply};
use support::{Rig, START};

fn embedder(server: &FakeOpenAi) -> Arc<OpenAiEmbedder> {
    let config = OpenAiConfig {
        base_url: server.base_url.clone(),
        api_key: Some("test-key".into()),
        model: "test-embed".into(),
        dimensions: Some(64),
        batch_size: 1,
        ..OpenAiConfig::default()
    };
    Arc::new(OpenAiEmbedder::new(config).unwrap())
}

fn book() -> Vec<u8> {
    epub_fixtures::corpus_of(1, 31).remove(0).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_postpones_the_job_without_an_attempt_and_keeps_finished_batches() {
    let server = FakeOpenAi::start(|request| if request == 2 { Reply::RateLimited(7) } else { Reply::Embed }).await;
    let rig = Rig::new(embedder(&server)).await;
    let submission = rig.submit("book.epub", &book()).await;

    let postponed = rig.one_attempt().await;
    assert_eq!(postponed.status, JobStatus::Pending);
    assert_eq!(postponed.attempts, 0, "a rate limit uses no attempt");
    assert_eq!(postponed.run_at, START + 7_000, "Retry-After is honoured");
    assert_eq!(postponed.checkpoint().facts.embedded_chunks, 2, "the two finished batches are kept");
    assert_eq!(server.requests(), 3);

    rig.drive().await;
    let document = rig.store.document(&submission.document_id).await.unwrap().unwrap();
    assert_eq!(document.status.to_string(), "complete");
    assert_eq!(server.inputs() as u32, document.chunk_count, "every chunk was embedded exactly once");
    assert_eq!(server.requests() as u32, document.chunk_count + 1, "one request per chunk plus the refused one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_is_retried_with_backoff() {
    let server =
        FakeOpenAi::start(|request| if request == 0 { Reply::Error(500, "upstream hiccup") } else { Reply::Embed })
            .await;
    let rig = Rig::new(embedder(&server)).await;
    let submission = rig.submit("book.epub", &book()).await;

    let failed = rig.one_attempt().await;
    assert_eq!((failed.status, failed.attempts), (JobStatus::Pending, 1));
    assert_eq!(failed.error_kind, Some(ErrorKind::Retryable));
    assert!(failed.run_at > START, "the retry waits for its backoff");
    assert!(failed.last_error.unwrap().contains("upstream hiccup"));

    rig.clock.advance(Duration::from_secs(10));
    rig.drive().await;
    let document = rig.store.document(&submission.document_id).await.unwrap().unwrap();
    assert_eq!(document.status.to_string(), "complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_error_fails_permanently_with_the_servers_message() {
    let server = FakeOpenAi::start(|_| Reply::Error(400, "input is too long for this model")).await;
    let rig = Rig::new(embedder(&server)).await;
    let submission = rig.submit("book.epub", &book()).await;

    let dead = rig.one_attempt().await;
    assert_eq!((dead.status, dead.attempts), (JobStatus::Dead, 1));
    assert_eq!(dead.error_kind, Some(ErrorKind::Permanent));
    assert!(dead.last_error.as_deref().unwrap().contains("input is too long for this model"));
    assert_eq!(server.requests(), 1, "a permanent failure is not retried");
    let document = rig.store.document(&submission.document_id).await.unwrap().unwrap();
    assert_eq!(document.status.to_string(), "failed");
    assert!(document.error.unwrap().contains("input is too long"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_account_postpones_the_book_without_an_attempt_until_the_key_is_fixed() {
    // The first two requests meet a revoked key and an empty balance; then an operator fixes it.
    let server = FakeOpenAi::start(|request| match request {
        0 => Reply::Error(401, "Incorrect API key provided"),
        1 => Reply::Error(403, "You have insufficient permissions for this operation"),
        _ => Reply::Embed,
    })
    .await;
    let rig = Rig::new(embedder(&server)).await;
    let submission = rig.submit("book.epub", &book()).await;

    for (refusals, message) in [(1, "Incorrect API key"), (2, "insufficient permissions")] {
        let postponed = rig.one_attempt().await;
        assert_eq!(postponed.status, JobStatus::Pending, "refusal {refusals}");
        assert_eq!(postponed.attempts, 0, "a refused account spends no attempt");
        assert_eq!(postponed.run_at, START + 60_000, "postponed for the first pause");
        assert!(postponed.last_error.as_deref().unwrap().contains(message), "{:?}", postponed.last_error);
        assert_eq!(server.requests(), refusals);
        let document = rig.store.document(&submission.document_id).await.unwrap().unwrap();
        assert_ne!(document.status.to_string(), "failed", "the book is not at fault");
        // The job waits for its pause; the test's clock does not move, so lease it as if it had.
        rig.store.requeue_with_checkpoint(postponed.id, &postponed.checkpoint()).await.unwrap();
    }
    assert_eq!(rig.metrics.account_refused.load(std::sync::atomic::Ordering::Relaxed), 2);

    rig.drive().await;
    let document = rig.store.document(&submission.document_id).await.unwrap().unwrap();
    assert_eq!(document.status.to_string(), "complete");
    assert_eq!(server.inputs() as u32, document.chunk_count, "every chunk was embedded once the key worked");
}
