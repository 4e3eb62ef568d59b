//! The pipeline's decisions on what the embedder answers, against a scripted `MockEmbedder`
//! (mockall): which requests it sends, in what order, and what becomes of the job after each
//! kind of answer. The mock's expectations (`times`, `withf`, a sequence) are the assertions: a
//! request the pipeline should not send fails the test at the call.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkpoint_store::{DocumentStatus, DocumentStore, ErrorKind, JobStatus};
use embedder::{BatchLimits, EmbedError, MockEmbedder};
use mockall::Sequence;
use support::Rig;

/// Vector size of the scripted embedder.
const DIMENSIONS: usize = 4;

fn book() -> Vec<u8> {
    epub_fixtures::corpus_of(1, 7).remove(0).1
}

/// A mock that says who it is and takes one input per request, so the book takes one request
/// per chunk; `embed` is left to each test.
fn one_input_per_request() -> MockEmbedder {
    let mut mock = MockEmbedder::new();
    mock.expect_model().return_const("scripted-4".to_owned());
    mock.expect_dimensions().return_const(DIMENSIONS);
    mock.expect_batch_limits().return_const(BatchLimits {
        max_inputs: 1,
        max_tokens: 1_000_000,
        max_input_tokens: usize::MAX,
    });
    mock
}

/// One request the pipeline sent: its texts, and whether it was answered.
type Request = (Vec<String>, bool);

/// A distinct unit vector for each text, so that chunks have neighbours.
fn vectors(inputs: &[String]) -> Vec<Vec<f32>> {
    inputs
        .iter()
        .map(|text| {
            let seed = text.bytes().fold(1u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
            let raw: Vec<f32> = (0..DIMENSIONS as u32).map(|i| ((seed >> (i * 3)) % 97) as f32 + 1.0).collect();
            let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
            raw.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_of_a_text_fails_the_book_after_that_one_request() {
    let mut mock = one_input_per_request();
    let mut order = Sequence::new();
    mock.expect_embed().times(1).in_sequence(&mut order).returning(|inputs| Ok(vectors(inputs)));
    mock.expect_embed()
        .times(1)
        .in_sequence(&mut order)
        .returning(|_| Err(EmbedError::Permanent("HTTP 400: input contains invalid characters".into())));
    let rig = Rig::new(Arc::new(mock)).await;
    let submission = rig.submit("book.epub", &book()).await;

    let job = rig.one_attempt().await;

    // No third request, no retry: a refusal of the input is the book's own, for good.
    assert_eq!(job.status, JobStatus::Dead);
    assert_eq!(job.error_kind, Some(ErrorKind::Permanent));
    assert!(job.last_error.as_deref().unwrap_or("").contains("invalid characters"), "{:?}", job.last_error);
    let document = rig.store.document(&submission.document_id).await.unwrap().unwrap();
    assert_eq!(document.status, DocumentStatus::Failed);
    assert_eq!(document.error, job.last_error, "the document says why, as its job does");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rate_limit_the_next_attempt_asks_only_for_the_texts_not_yet_embedded() {
    let mut mock = one_input_per_request();
    let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
    let log = requests.clone();
    mock.expect_embed().returning(move |inputs| {
        let mut log = log.lock().unwrap();
        // The first attempt: two requests answered, the third rate limited; then all answered.
        let answer = log.len() != 2;
        log.push((inputs.to_vec(), answer));
        if answer { Ok(vectors(inputs)) } else { Err(EmbedError::RateLimited { retry_after: Duration::from_secs(30) }) }
    });
    let rig = Rig::new(Arc::new(mock)).await;
    let submission = rig.submit("book.epub", &book()).await;

    let postponed = rig.one_attempt().await;

    assert_eq!(postponed.status, JobStatus::Pending, "a rate limit postpones the job");
    assert_eq!(postponed.attempts, 0, "and gives its attempt back");
    rig.clock.advance(Duration::from_secs(31));
    rig.drive().await;

    let document = rig.store.document(&submission.document_id).await.unwrap().unwrap();
    assert_eq!(document.status, DocumentStatus::Complete);
    let chunks = rig.store.chunks(&submission.document_id).await.unwrap();
    assert!(chunks.len() > 3, "the book must outlast the first attempt: {} chunks", chunks.len());
    let requests = requests.lock().unwrap();
    let answered_first: HashSet<&String> = requests[..2].iter().flat_map(|(texts, _)| texts).collect();
    let asked_later: Vec<&String> = requests[3..].iter().flat_map(|(texts, _)| texts).collect();
    assert!(asked_later.iter().all(|text| !answered_first.contains(text)), "a text answered before was asked again");
    let distinct: HashSet<&String> = asked_later.iter().copied().collect();
    assert_eq!(distinct.len(), asked_later.len(), "a text was asked twice after the rate limit");
    assert_eq!(asked_later.len(), chunks.len() - 2, "every chunk not answered before is asked once");
    assert_eq!(requests[2].0, requests[3].0, "the refused request is the first one sent again");
}
