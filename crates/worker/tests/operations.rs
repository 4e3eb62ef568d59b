//! The operator's actions (`worker::operations`) on a real SQLite store whose clock the test
//! moves by hand: what each one changes, what it refuses, and the shape its answer takes in JSON.
//! The store's own half of each action (one transaction per job and document) is checked on
//! every backend in `checkpoint-store/tests/operator_commands.rs`.

use std::sync::Arc;
use std::time::Duration;

use checkpoint_store::{
    DocumentStatus, DocumentStore, EnqueueOptions, Failure, Job, JobId, JobKind, JobStatus, JobStore, LeaseRequest,
    ManualClock, NewDocument, SqliteStore, SqliteStoreOptions, StoreError,
};
use serde_json::json;
use stage_machine::{Checkpoint, Stage};
use worker::operations::{self, OperationError, ReplayFrom, TakeBackAction};

const START: i64 = 1_767_225_600_000;
const TTL: Duration = Duration::from_secs(60);

struct Fixture {
    store: Arc<SqliteStore>,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let options = SqliteStoreOptions { clock: Arc::new(clock.clone()), ..SqliteStoreOptions::default() };
    let store = Arc::new(SqliteStore::open(dir.path().join("quire.db"), options).await.unwrap());
    Fixture { store, clock, _dir: dir }
}

impl Fixture {
    async fn document(&self, content_hash: &str) -> String {
        let upload = NewDocument { content_hash: content_hash.into(), file_name: "a.epub".into(), byte_size: 1 };
        self.store.create_document(upload).await.unwrap().0.id
    }

    async fn enqueue(&self, kind: JobKind, document: &str, max_attempts: u32) -> Job {
        let options = EnqueueOptions {
            max_attempts: Some(max_attempts),
            unique_key: Some(format!("{kind}:{document}")),
            document_id: Some(document.to_owned()),
            ..Default::default()
        };
        self.store.enqueue(kind, json!({ "document_id": document }), options).await.unwrap().job
    }

    async fn lease(&self, owner: &str) -> Job {
        let kinds = [JobKind::ProcessDocument, JobKind::DetectConnections];
        let request = LeaseRequest { owner, max_jobs: 1, ttl: TTL, kinds: &kinds };
        self.store.lease(request).await.unwrap().remove(0)
    }

    fn now(&self) -> i64 {
        checkpoint_store::Clock::now(&self.clock)
    }

    async fn job(&self, id: JobId) -> Job {
        self.store.job(id).await.unwrap().unwrap()
    }

    async fn document_status(&self, id: &str) -> DocumentStatus {
        self.store.document(id).await.unwrap().unwrap().status
    }

    /// A `process_document` job that went through every stage and completed.
    async fn completed_job(&self, document: &str) -> Job {
        let job = self.enqueue(JobKind::ProcessDocument, document, 3).await;
        let lease = self.lease("w1").await.lease().unwrap();
        let mut checkpoint = Checkpoint::default();
        for milestone in Stage::milestones() {
            checkpoint.complete(milestone, START).unwrap();
        }
        self.store.save_checkpoint(lease, &checkpoint).await.unwrap();
        self.store.complete(lease, None).await.unwrap();
        self.job(job.id).await
    }

    /// A job failed for good by its worker.
    async fn dead_job(&self, kind: JobKind, document: &str) -> Job {
        let job = self.enqueue(kind, document, 3).await;
        let lease = self.lease("w1").await.lease().unwrap();
        self.store.fail(lease, "broken", Failure::Permanent).await.unwrap();
        self.job(job.id).await
    }
}

// ---------------------------------------------------------------------------------------------
// replay

#[tokio::test]
async fn replay_from_a_stage_rewinds_the_checkpoint_and_requeues_job_and_document() {
    let f = fixture().await;
    let document = f.document("00000000000000b1").await;
    let job = f.completed_job(&document).await;

    let replayed = operations::replay(f.store.as_ref(), job.id, ReplayFrom::Stage(Stage::Chunked)).await.unwrap();

    assert_eq!(replayed.resumes_at, Stage::Chunking, "a milestone replays from the stage that reaches it");
    assert_eq!(replayed.job.status, JobStatus::Pending);
    let stored = f.job(job.id).await;
    assert_eq!(stored.checkpoint().last_completed(), Stage::MarkdownSaved);
    assert_eq!(stored.attempts, 0, "a fresh attempt budget");
    assert_eq!(f.document_status(&document).await, DocumentStatus::Pending);
}

#[tokio::test]
async fn replay_fresh_starts_from_an_empty_checkpoint() {
    let f = fixture().await;
    let document = f.document("00000000000000b2").await;
    let job = f.completed_job(&document).await;

    let replayed = operations::replay(f.store.as_ref(), job.id, ReplayFrom::Fresh).await.unwrap();

    assert_eq!(replayed.resumes_at, Stage::Extracting);
    assert_eq!(f.job(job.id).await.checkpoint(), Checkpoint::default());
}

#[tokio::test]
async fn replay_from_the_checkpoint_of_a_finished_job_is_refused_and_changes_nothing() {
    let f = fixture().await;
    let document = f.document("00000000000000b3").await;
    let job = f.completed_job(&document).await;

    let error = operations::replay(f.store.as_ref(), job.id, ReplayFrom::Checkpoint).await.unwrap_err();

    assert!(matches!(error, OperationError::NothingToResume(id) if id == job.id), "{error:?}");
    assert_eq!(f.job(job.id).await, job);
}

#[tokio::test]
async fn replay_from_the_checkpoint_resumes_a_dead_job_where_it_stopped() {
    let f = fixture().await;
    let document = f.document("00000000000000b4").await;
    let job = f.enqueue(JobKind::ProcessDocument, &document, 3).await;
    let lease = f.lease("w1").await.lease().unwrap();
    let mut checkpoint = Checkpoint::default();
    checkpoint.complete(Stage::Extracted, START).unwrap();
    f.store.save_checkpoint(lease, &checkpoint).await.unwrap();
    f.store.fail(lease, "broken", Failure::Permanent).await.unwrap();

    let replayed = operations::replay(f.store.as_ref(), job.id, ReplayFrom::Checkpoint).await.unwrap();

    assert_eq!(replayed.resumes_at, Stage::SavingMarkdown);
    assert_eq!(f.job(job.id).await.checkpoint().last_completed(), Stage::Extracted, "the checkpoint is kept");
}

#[tokio::test]
async fn replay_refuses_what_does_not_apply() {
    let f = fixture().await;
    let document = f.document("00000000000000b5").await;
    let finished = f.completed_job(&document).await;
    let detect = f.dead_job(JobKind::DetectConnections, &document).await;
    let held = f.enqueue(JobKind::ProcessDocument, "elsewhere", 3).await;
    f.lease("w1").await;

    let store = f.store.as_ref();
    let error = operations::replay(store, JobId(999), ReplayFrom::Fresh).await.unwrap_err();
    assert!(matches!(error, OperationError::NoSuchJob(JobId(999))), "{error:?}");
    let error = operations::replay(store, held.id, ReplayFrom::Fresh).await.unwrap_err();
    assert!(matches!(error, OperationError::Processing(id) if id == held.id), "{error:?}");
    assert_eq!(f.job(held.id).await.status, JobStatus::Processing, "a held job stays with its worker");
    let error = operations::replay(store, detect.id, ReplayFrom::Stage(Stage::Chunked)).await.unwrap_err();
    assert!(matches!(error, OperationError::NoStages { kind: JobKind::DetectConnections, .. }), "{error:?}");
    for stage in [Stage::Pending, Stage::Complete, Stage::Failed] {
        let error = operations::replay(store, finished.id, ReplayFrom::Stage(stage)).await.unwrap_err();
        assert!(matches!(error, OperationError::NotReplayable { stage: s } if s == stage), "{error:?}");
        assert!(error.to_string().contains("extracting, extracted"), "{error}");
    }
    assert_eq!(f.job(finished.id).await, finished);
}

#[tokio::test]
async fn replay_while_another_job_holds_the_unique_key_is_the_stores_refusal() {
    let f = fixture().await;
    let document = f.document("00000000000000b6").await;
    let dead = f.dead_job(JobKind::ProcessDocument, &document).await;
    let holder = f.enqueue(JobKind::ProcessDocument, &document, 3).await;

    let error = operations::replay(f.store.as_ref(), dead.id, ReplayFrom::Fresh).await.unwrap_err();

    match error {
        OperationError::Store(StoreError::UniqueKeyTaken { holder: by, .. }) => assert_eq!(by, holder.id),
        other => panic!("expected the store's refusal, got {other:?}"),
    }
    assert_eq!(f.job(dead.id).await.status, JobStatus::Dead);
}

#[tokio::test]
async fn a_replay_is_complete_only_when_its_connection_detection_is() {
    let f = fixture().await;
    let document = f.document("00000000000000b7").await;
    let job = f.completed_job(&document).await;
    let result = operations::replay_result(f.store.as_ref(), job.id).await.unwrap();
    assert!(result.detect_connections.is_none());
    assert!(result.completed(), "no detection queued: the job alone decides");

    let detect = f.enqueue(JobKind::DetectConnections, &document, 3).await;
    let result = operations::replay_result(f.store.as_ref(), job.id).await.unwrap();
    assert_eq!(result.detect_connections.as_ref().map(|d| d.id), Some(detect.id));
    assert!(!result.completed(), "its detection is still pending");

    let lease = f.lease("w1").await.lease().unwrap();
    f.store.complete(lease, None).await.unwrap();
    assert!(operations::replay_result(f.store.as_ref(), job.id).await.unwrap().completed());
}

// ---------------------------------------------------------------------------------------------
// dead letters

#[tokio::test]
async fn retrying_dead_letters_reports_refusals_and_retries_the_rest() {
    let f = fixture().await;
    let a = f.document("00000000000000c1").await;
    let b = f.document("00000000000000c2").await;
    let first = f.dead_job(JobKind::ProcessDocument, &a).await;
    let taken = f.dead_job(JobKind::ProcessDocument, &b).await;
    let holder = f.enqueue(JobKind::ProcessDocument, &b, 3).await;
    let alive = f.enqueue(JobKind::ProcessDocument, "c", 3).await;

    let ids = [first.id, taken.id, alive.id, JobId(999)];
    let retries = operations::retry_dead_letters(f.store.as_ref(), &ids).await.unwrap();

    assert_eq!(retries.retried.iter().map(|job| job.id).collect::<Vec<_>>(), [first.id]);
    assert_eq!(f.job(first.id).await.status, JobStatus::Pending);
    assert_eq!(f.document_status(&a).await, DocumentStatus::Pending);
    let refused: Vec<_> = retries.refused.iter().map(|r| (r.job_id, r.job.as_ref().map(|job| job.status))).collect();
    assert_eq!(
        refused,
        [(taken.id, Some(JobStatus::Dead)), (alive.id, Some(JobStatus::Pending)), (JobId(999), None)],
        "each refusal with the job as it is now, in the order asked"
    );
    assert!(matches!(retries.refused[0].reason, StoreError::UniqueKeyTaken { holder: h, .. } if h == holder.id));

    let json = serde_json::to_value(&retries).unwrap();
    assert_eq!(json["refused"][2]["job"], serde_json::Value::Null);
    assert_eq!(json["refused"][2]["reason"], "job 999 not found", "the reason travels as text");
}

#[tokio::test]
async fn retrying_every_dead_letter_brings_them_all_back() {
    let f = fixture().await;
    let dead =
        [f.dead_job(JobKind::ProcessDocument, "x").await.id, f.dead_job(JobKind::DetectConnections, "y").await.id];

    let retries = operations::retry_all_dead_letters(f.store.as_ref()).await.unwrap();

    assert_eq!(retries.retried.len(), 2);
    assert!(retries.refused.is_empty());
    for id in dead {
        assert_eq!(f.job(id).await.status, JobStatus::Pending);
    }
    assert!(operations::dead_letters(f.store.as_ref()).await.unwrap().is_empty());
}

#[tokio::test]
async fn purging_deletes_what_the_preview_counted() {
    let f = fixture().await;
    let old = f.dead_job(JobKind::ProcessDocument, "old").await;
    f.clock.advance(Duration::from_secs(3600));
    let recent = f.dead_job(JobKind::ProcessDocument, "recent").await;
    let older_than = Duration::from_secs(1800);
    let now = f.now();

    assert_eq!(operations::purgeable_dead_letters(f.store.as_ref(), older_than, now).await.unwrap(), 1);
    let purged = operations::purge_dead_letters(f.store.as_ref(), older_than).await.unwrap();

    assert_eq!(serde_json::to_value(purged).unwrap(), json!({ "purged": 1 }));
    assert!(f.store.job(old.id).await.unwrap().is_none());
    assert_eq!(f.job(recent.id).await.status, JobStatus::Dead);
}

// ---------------------------------------------------------------------------------------------
// taking back stale jobs

#[tokio::test]
async fn taking_back_reports_every_listed_job_in_the_listings_order() {
    let f = fixture().await;
    let spent = f.document("00000000000000d1").await;
    let out_of_attempts = f.enqueue(JobKind::ProcessDocument, &spent, 1).await;
    f.lease("gone-1").await;
    let with_attempts = f.enqueue(JobKind::ProcessDocument, "d2", 3).await;
    f.lease("gone-2").await;
    let slow = f.enqueue(JobKind::ProcessDocument, "d3", 3).await;
    let slow_lease = f.lease("slow").await.lease().unwrap();
    f.clock.advance(TTL + Duration::from_secs(1));

    let stale = operations::stale_jobs(f.store.as_ref(), None, f.now()).await.unwrap();
    assert_eq!(stale.iter().map(|job| job.id).collect::<Vec<_>>(), [out_of_attempts.id, with_attempts.id, slow.id]);
    assert_eq!(stale[0].silent_for_seconds, 61);
    assert_eq!(stale[0].owner.as_deref(), Some("gone-1"));
    // The slow worker's heartbeat lands between the listing and the take-back.
    f.store.heartbeat("slow", &[slow_lease], TTL).await.unwrap();

    let outcomes = operations::take_back_stale(f.store.as_ref(), &stale, None).await.unwrap();

    let actions: Vec<_> = outcomes.iter().map(|outcome| (outcome.id, outcome.action)).collect();
    assert_eq!(
        actions,
        [
            (out_of_attempts.id, TakeBackAction::DeadLettered),
            (with_attempts.id, TakeBackAction::Requeued),
            (slow.id, TakeBackAction::LeftAlone),
        ]
    );
    assert_eq!(f.job(out_of_attempts.id).await.status, JobStatus::Dead);
    assert_eq!(f.document_status(&spent).await, DocumentStatus::Failed, "in the same transaction");
    assert_eq!(f.job(with_attempts.id).await.status, JobStatus::Pending);
    assert_eq!(f.job(slow.id).await.status, JobStatus::Processing);

    let json = serde_json::to_value(&outcomes[0]).unwrap();
    assert_eq!(json["action"], "dead_lettered");
    assert_eq!(json["kind"], "process_document");
    assert_eq!(json["id"], out_of_attempts.id.0);
    assert_eq!(serde_json::to_value(&stale[0]).unwrap()["stage"], "pending");
}

#[test]
fn replay_choices_read_as_an_http_body_would_send_them() {
    let read = |text: &str| serde_json::from_str::<ReplayFrom>(text).unwrap();
    assert_eq!(read(r#""checkpoint""#), ReplayFrom::Checkpoint);
    assert_eq!(read(r#""fresh""#), ReplayFrom::Fresh);
    assert_eq!(read(r#"{"stage": "chunked"}"#), ReplayFrom::Stage(Stage::Chunked));
    assert_eq!(ReplayFrom::Stage(Stage::Chunked).mode(), "from_stage");
}

// ---------------------------------------------------------------------------------------------
// Cancel.

#[tokio::test]
async fn cancel_answers_cancelled_for_a_pending_job_and_requested_for_a_running_one_in_json() {
    let f = fixture().await;
    let pending_document = f.document("00000000000000e1").await;
    let pending = f.enqueue(JobKind::ProcessDocument, &pending_document, 3).await;
    let running_document = f.document("00000000000000e2").await;
    f.enqueue(JobKind::ProcessDocument, &running_document, 3).await;
    let first = f.lease("w1").await;
    assert_eq!(first.id, pending.id);
    let running = f.lease("w1").await;
    f.store.postpone(first.lease().unwrap(), Duration::from_secs(30), "rate limited").await.unwrap();

    let cancelled = operations::cancel(f.store.as_ref(), pending.id).await.unwrap();
    let asked = operations::cancel(f.store.as_ref(), running.id).await.unwrap();

    let cancelled = serde_json::to_value(&cancelled).unwrap();
    assert_eq!(cancelled["outcome"], "cancelled");
    assert_eq!(cancelled["job"]["id"], pending.id.0);
    assert_eq!(cancelled["job"]["status"], "cancelled");
    let asked = serde_json::to_value(&asked).unwrap();
    assert_eq!(asked["outcome"], "requested");
    assert_eq!(asked["job"]["status"], "processing");
    assert_eq!(f.job(running.id).await.lease(), running.lease(), "the worker keeps its lease until its boundary");
    let document = f.store.document(&pending_document).await.unwrap().unwrap();
    assert_eq!(
        (document.status, document.error.as_deref()),
        (DocumentStatus::Failed, Some("cancelled by an operator"))
    );
}

#[tokio::test]
async fn cancel_refuses_a_finished_job_with_its_status_and_an_unknown_one_as_missing() {
    let f = fixture().await;
    let document = f.document("00000000000000e3").await;
    f.enqueue(JobKind::ProcessDocument, &document, 3).await;
    let done = f.lease("w1").await;
    f.store.complete(done.lease().unwrap(), None).await.unwrap();

    match operations::cancel(f.store.as_ref(), done.id).await {
        Err(OperationError::Finished { job_id, status }) => {
            assert_eq!((job_id, status), (done.id, JobStatus::Completed))
        }
        other => panic!("a completed job cannot be cancelled: {other:?}"),
    }
    assert_eq!(f.job(done.id).await.status, JobStatus::Completed);
    assert!(matches!(
        operations::cancel(f.store.as_ref(), JobId(404)).await,
        Err(OperationError::NoSuchJob(JobId(404)))
    ));
}

#[tokio::test]
async fn a_cancelled_job_is_replayed_from_its_checkpoint() {
    let f = fixture().await;
    let document = f.document("00000000000000e4").await;
    f.enqueue(JobKind::ProcessDocument, &document, 3).await;
    let job = f.lease("w1").await;
    let mut checkpoint = Checkpoint::default();
    checkpoint.complete(Stage::Extracted, f.now()).unwrap();
    f.store.save_checkpoint(job.lease().unwrap(), &checkpoint).await.unwrap();
    operations::cancel(f.store.as_ref(), job.id).await.unwrap();
    f.store.cancel_held(job.lease().unwrap()).await.unwrap();

    let replayed = operations::replay(f.store.as_ref(), job.id, ReplayFrom::Checkpoint).await.unwrap();

    assert_eq!(replayed.job.status, JobStatus::Pending);
    assert_eq!(replayed.resumes_at, Stage::SavingMarkdown);
    assert_eq!(f.store.document(&document).await.unwrap().unwrap().status, DocumentStatus::Pending);
}
