//! The retry story, proven with real processes: `quire worker` processes on one database,
//! killed with SIGKILL, paused with SIGSTOP, stopped with SIGTERM, rate limited and starved of a
//! working AI service. Every scenario ends with the documents of an uninterrupted run, and with
//! no AI request repeated for work that was already done.
//!
//! Every scenario is one function of the backend, run twice: `sqlite::<scenario>` on a SQLite
//! file in the cluster's data directory, and `postgres::<scenario>` in a schema of the cluster's
//! own (`quire_t_<pid>_<n>`, dropped with the cluster) on the server named by
//! `QUIRE_TEST_DATABASE_URL`; without it the PostgreSQL tests print a notice and pass, unless
//! `CI=true`, where they fail. The scenarios read outcomes through the store's traits only, so one
//! list serves both; the failpoints are the worker binary's, so they fire on either backend.
//!
//! Workers run with a 2 s lease so that recovery takes seconds. Waiting is by polling the
//! database with a deadline, and kills are timed by observed progress (a checkpoint reached, a
//! request arrived at the fake AI service), never by sleeps; no assertion depends on how long
//! anything took. AI requests are counted at the fake service, which sees a request even when
//! the worker that sent it died before recording it.
//!
//! One file past 500 lines: every scenario shares one cluster type, one reference run and one
//! way of reading outcomes, and the chaos run's crew of killable workers serves only it.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use checkpoint_store::{
    ConnectionFilter, DocumentStatus, EnqueueOptions, Job, JobFilter, JobKind, JobStatus, OpenOptions, Store,
    StoreLocation,
};
use sqlx::Connection;
use stage_machine::Stage;
use support::Chaos;
use support::fake_openai::{FakeOpenAi, Reply, openai, strs};
use support::postgres::TestSchema;
use support::processes::{Processes, WorkerProcess};

/// Scenarios share two cores; running them one at a time keeps heartbeats on schedule.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

const DEADLINE: Duration = Duration::from_secs(90);

/// The database a scenario's workers share.
#[derive(Debug, Clone)]
enum Backend {
    /// A SQLite file in each cluster's data directory.
    Sqlite,
    /// A schema of each cluster's own on the PostgreSQL server at this URL.
    Postgres(String),
}

/// Generates one test per scenario and backend, `sqlite::<scenario>` and
/// `postgres::<scenario>`, each running the scenario function of that name. The PostgreSQL test
/// asks [`support::postgres::database_url`] for its server, which skips it with a notice when
/// none is configured outside CI.
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::Sqlite).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(url) = crate::support::postgres::database_url() else { return };
                    super::$scenario(super::Backend::Postgres(url)).await;
                }
            )+
        }
    };
}

on_both_backends!(
    a_worker_killed_after_any_stage_checkpoint_is_finished_by_the_next_with_nothing_repaid,
    a_worker_killed_midway_through_embedding_leaves_only_unfinished_batches_to_send,
    a_heartbeating_job_past_its_timeout_is_taken_back_and_its_old_worker_writes_nothing,
    a_paused_worker_is_fenced_and_the_job_completes_once_under_the_new_owner,
    a_rate_limited_worker_releases_its_prefetched_jobs_to_another_worker,
    sigterm_hands_a_long_job_back_with_its_checkpoint_and_the_next_worker_finishes_it,
    a_job_that_fails_every_time_ends_in_the_dead_letter_queue_with_its_last_error,
    chaos_three_workers_killed_at_random_still_finish_every_document_exactly,
);

/// Where a cluster's database lives.
enum Database {
    /// The SQLite file in the data directory.
    Sqlite(PathBuf),
    /// The cluster's own schema, dropped with it.
    Postgres(TestSchema),
}

/// Worker processes on one database, and the store the tests read it through.
struct Cluster {
    /// The test's own connection to the workers' database, opened as the binary opens it.
    store: Arc<dyn Store>,
    processes: Processes,
    /// Declared last: a PostgreSQL schema is dropped after the store's connections.
    database: Database,
}

impl std::ops::Deref for Cluster {
    type Target = Processes;
    fn deref(&self) -> &Processes {
        &self.processes
    }
}

/// What one document ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    status: DocumentStatus,
    chunks: Vec<(String, String)>,
    connections: BTreeSet<(String, String, String)>,
    ai_requests: u64,
}

impl Cluster {
    /// A fresh data directory and database; the store is opened (and migrated) before any
    /// process starts.
    async fn new(backend: &Backend) -> Cluster {
        let (processes, location, database, options) = match backend {
            Backend::Sqlite => {
                let processes = Processes::sqlite();
                let path = worker::DataDir::open(processes.data_dir()).unwrap().database_path();
                (processes, StoreLocation::SqliteFile(path.clone()), Database::Sqlite(path), OpenOptions::default())
            }
            Backend::Postgres(url) => {
                let schema = TestSchema::new(url).await;
                let processes = Processes::postgres(url, schema.name());
                let options = OpenOptions { postgres_schema: Some(schema.name().to_owned()), ..OpenOptions::default() };
                (processes, StoreLocation::Url(url.clone()), Database::Postgres(schema), options)
            }
        };
        let store = checkpoint_store::open(&location, options).await.unwrap();
        Cluster { store, processes, database }
    }

    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Gives every job this timeout per attempt, which no command sets: one statement, the same
    /// on both backends, on a connection of its own.
    async fn set_job_timeouts(&self, timeout: Duration) {
        let statement = sqlx::AssertSqlSafe(format!("UPDATE jobs SET timeout_ms = {}", timeout.as_millis()));
        match &self.database {
            Database::Sqlite(path) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
                let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
                sqlx::query(statement).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            Database::Postgres(schema) => {
                let options = schema
                    .url()
                    .parse::<sqlx::postgres::PgConnectOptions>()
                    .unwrap()
                    .options([("search_path", schema.name())]);
                let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
                sqlx::query(statement).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// Polls until `condition` holds.
    async fn wait_until<F, Fut>(&self, what: &str, mut condition: F)
    where
        F: FnMut(Arc<dyn Store>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + DEADLINE;
        while !condition(self.store()).await {
            assert!(Instant::now() < deadline, "timed out waiting until {what}\n{}", self.all_logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn process_job(&self, document_id: &str) -> Job {
        let filter = JobFilter {
            kind: Some(JobKind::ProcessDocument),
            document_id: Some(document_id.into()),
            ..Default::default()
        };
        self.store.list_jobs(&filter).await.unwrap().remove(0)
    }

    async fn outcome(&self, document_id: &str) -> Outcome {
        let store = &self.store;
        let document = store.document(document_id).await.unwrap().unwrap();
        let chunks = store.chunks(document_id).await.unwrap().into_iter().map(|c| (c.id, c.text)).collect();
        let connections = store
            .connections(document_id, &ConnectionFilter { limit: Some(100_000), ..Default::default() })
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.source.chunk_id, c.target.chunk_id, c.engine))
            .collect();
        Outcome { status: document.status, chunks, connections, ai_requests: document.ai_requests }
    }

    async fn wait_complete(&self, document_ids: &[String]) {
        self.processes.wait_complete(self.store.as_ref(), document_ids, DEADLINE).await;
    }

    async fn wait_checkpoint(&self, document_id: &str, reached: impl Fn(&Job) -> bool) {
        let id = document_id.to_owned();
        let reached = &reached;
        self.wait_until(&format!("the checkpoint of {document_id} is reached"), |store| {
            let id = id.clone();
            async move {
                let filter =
                    JobFilter { kind: Some(JobKind::ProcessDocument), document_id: Some(id), ..Default::default() };
                store.list_jobs(&filter).await.unwrap().first().is_some_and(reached)
            }
        })
        .await;
    }
}

/// `n` distinct books.
fn books(n: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    epub_fixtures::corpus_of(n, seed).into_iter().map(|(name, bytes)| (format!("{name}.epub"), bytes)).collect()
}

fn book(seed: u64) -> (String, Vec<u8>) {
    let (name, bytes) = epub_fixtures::corpus_of(1, seed).remove(0);
    (format!("{name}.epub"), bytes)
}

/// Processes `books` in a fresh cluster with one uninterrupted worker.
async fn clean_run(backend: &Backend, books: &[(String, Vec<u8>)], extra: &[&str]) -> Vec<Outcome> {
    let cluster = Cluster::new(backend).await;
    let ids = cluster.submit(books);
    let mut args = vec!["--exit-when-idle"];
    args.extend_from_slice(extra);
    let mut worker = cluster.worker("clean", None, &args);
    assert!(worker.wait_exit(DEADLINE).await.success());
    let mut outcomes = Vec::new();
    for id in &ids {
        let outcome = cluster.outcome(id).await;
        assert_eq!(outcome.status, DocumentStatus::Complete, "{}", cluster.all_logs());
        outcomes.push(outcome);
    }
    outcomes
}

fn distinct(texts: &[String]) -> usize {
    texts.iter().collect::<BTreeSet<_>>().len()
}

fn milestone_reached(stage: &'static str) -> impl Fn(&Job) -> bool {
    move |job| {
        let checkpoint = job.checkpoint();
        checkpoint.completed_stages.iter().any(|s| s.to_string() == stage)
            || checkpoint.processing_stage.to_string() == stage
    }
}

async fn a_worker_killed_after_any_stage_checkpoint_is_finished_by_the_next_with_nothing_repaid(backend: Backend) {
    let _serial = serial().await;
    let books = vec![book(11)];
    let clean = clean_run(&backend, &books, &["--embedding-batch-size", "2"]).await;
    for (failpoint, stage) in [
        ("after_checkpoint_extracted", "extracted"),
        ("after_checkpoint_markdown_saved", "markdown_saved"),
        ("after_checkpoint_chunked", "chunked"),
        ("after_checkpoint_embedded", "embedded"),
        ("before_complete", "complete"),
    ] {
        let cluster = Cluster::new(&backend).await;
        let ids = cluster.submit(&books);
        let mut first =
            cluster.worker("first", Some(&format!("{failpoint}=sleep(60000)")), &["--embedding-batch-size", "2"]);
        cluster.wait_checkpoint(&ids[0], milestone_reached(stage)).await;
        first.kill9();
        let mut second = cluster.worker("second", None, &["--exit-when-idle", "--embedding-batch-size", "2"]);
        assert!(second.wait_exit(DEADLINE).await.success(), "{failpoint}");
        let outcome = cluster.outcome(&ids[0]).await;
        assert_eq!(
            outcome,
            clean[0],
            "{failpoint}: the result differs from an uninterrupted run\n{}",
            cluster.all_logs()
        );
        let job = cluster.process_job(&ids[0]).await;
        assert_eq!((job.status, job.attempts), (JobStatus::Completed, 2), "{failpoint}");
        // The checkpoint of a completed job says so, whichever attempt finished it.
        assert_eq!(job.checkpoint().processing_stage, Stage::Complete, "{failpoint}: {:?}", job.metadata);
    }
}

async fn a_worker_killed_midway_through_embedding_leaves_only_unfinished_batches_to_send(backend: Backend) {
    let _serial = serial().await;
    let books = vec![book(12)];
    let reference = FakeOpenAi::start(|_| Reply::Embed).await;
    let clean = clean_run(&backend, &books, &strs(&openai(&reference.base_url, 1))).await;
    let clean_texts: Vec<String> = reference.received().concat();
    assert!(clean_texts.len() >= 4, "the book must take several requests");
    assert_eq!(distinct(&clean_texts), clean_texts.len(), "an uninterrupted run sends each text once");
    // The third request is never answered: the worker is killed while it waits on it, after the
    // answers to the first two were stored.
    let server = FakeOpenAi::start(|n| if n == 2 { Reply::Stall } else { Reply::Embed }).await;
    let args = openai(&server.base_url, 1);
    let cluster = Cluster::new(&backend).await;
    let ids = cluster.submit(&books);
    let mut first = cluster.worker("first", None, &strs(&args));
    cluster
        .wait_until("the first worker waits on its third embedding request", |_| async { server.requests() >= 3 })
        .await;
    first.kill9();
    let mut second = cluster.worker("second", None, &[vec!["--exit-when-idle"], strs(&args)].concat());
    assert!(second.wait_exit(DEADLINE).await.success());
    let job = cluster.process_job(&ids[0]).await;
    assert_eq!((job.status, job.attempts), (JobStatus::Completed, 2), "{}", cluster.all_logs());
    let outcome = cluster.outcome(&ids[0]).await;
    assert_eq!(
        (&outcome.status, &outcome.chunks, &outcome.connections),
        (&clean[0].status, &clean[0].chunks, &clean[0].connections),
        "{}",
        cluster.all_logs()
    );
    // The second attempt sent exactly what the first had not stored: the unanswered request
    // again, then the rest, each once.
    let received = server.received();
    let (stored_by_first, unanswered) = (received[..2].concat(), &received[2]);
    let sent_by_second = received[3..].concat();
    assert_eq!(sent_by_second.first(), unanswered.first(), "the unanswered request is sent again first");
    let mut expected: Vec<String> = clean_texts.iter().filter(|t| !stored_by_first.contains(t)).cloned().collect();
    let mut sent = sent_by_second.clone();
    expected.sort();
    sent.sort();
    assert_eq!(sent, expected, "the second attempt embeds only what the first did not store, once each");
    assert_eq!(server.requests(), reference.requests() + 1, "one request repeated: the one in flight");
}

async fn a_heartbeating_job_past_its_timeout_is_taken_back_and_its_old_worker_writes_nothing(backend: Backend) {
    let _serial = serial().await;
    let books = vec![book(13)];
    let clean = clean_run(&backend, &books, &[]).await;
    let cluster = Cluster::new(&backend).await;
    let ids = cluster.submit(&books);
    // Every attempt of this job may run 2.5 s; the first stalls for 5 s after chunking while its
    // worker keeps heartbeating.
    cluster.set_job_timeouts(Duration::from_millis(2500)).await;
    let mut stalled = cluster.worker("stalled", Some("after_checkpoint_chunked=1*return(5000)"), &[]);
    cluster.wait_checkpoint(&ids[0], milestone_reached("chunked")).await;
    let mut rescuer = cluster.worker("rescuer", None, &[]);
    cluster.wait_complete(&ids).await;
    let job = cluster.process_job(&ids[0]).await;
    assert_eq!(job.attempts, 2, "{}", cluster.all_logs());
    assert!(job.last_error.as_deref().unwrap_or_default().contains("timed out"), "{job:?}");
    // The stalled attempt wakes up to find its lease gone.
    cluster
        .wait_until("the stalled worker notices its lost lease", |_| async { stalled.log_contains("lease lost") })
        .await;
    assert_eq!(cluster.outcome(&ids[0]).await, clean[0]);
    stalled.signal("TERM");
    rescuer.signal("TERM");
    assert!(stalled.wait_exit(DEADLINE).await.success());
    assert!(rescuer.wait_exit(DEADLINE).await.success());
}

async fn a_paused_worker_is_fenced_and_the_job_completes_once_under_the_new_owner(backend: Backend) {
    let _serial = serial().await;
    let books = vec![book(14)];
    let clean = clean_run(&backend, &books, &[]).await;
    let cluster = Cluster::new(&backend).await;
    let ids = cluster.submit(&books);
    let mut paused = cluster.worker("paused", Some("after_checkpoint_chunked=1*return(1000)"), &[]);
    cluster.wait_checkpoint(&ids[0], milestone_reached("chunked")).await;
    paused.signal("STOP");
    let mut new_owner = cluster.worker("new-owner", None, &["--exit-when-idle"]);
    assert!(new_owner.wait_exit(DEADLINE).await.success());
    let completed = cluster.process_job(&ids[0]).await;
    assert_eq!((completed.status, completed.attempts), (JobStatus::Completed, 2));
    paused.signal("CONT");
    cluster
        .wait_until("the resumed worker finds its lease gone", |_| async { paused.log_contains("lease lost") })
        .await;
    // Its late writes changed nothing.
    assert_eq!(cluster.process_job(&ids[0]).await, completed);
    assert_eq!(cluster.outcome(&ids[0]).await, clean[0]);
    let detect = JobFilter { kind: Some(JobKind::DetectConnections), ..Default::default() };
    assert_eq!(cluster.store().list_jobs(&detect).await.unwrap().len(), 1, "connections were detected once");
    paused.signal("TERM");
    assert!(paused.wait_exit(DEADLINE).await.success());
}

async fn a_rate_limited_worker_releases_its_prefetched_jobs_to_another_worker(backend: Backend) {
    let _serial = serial().await;
    let server = FakeOpenAi::start(|request| if request == 0 { Reply::RateLimited(30) } else { Reply::Embed }).await;
    let openai = [
        "--embedder",
        "openai",
        "--openai-base-url",
        &server.base_url,
        "--embedding-model",
        "test-embed",
        "--embedding-dimensions",
        "64",
    ];
    let cluster = Cluster::new(&backend).await;
    let ids = cluster.submit(&books(3, 21));
    let mut args = openai.to_vec();
    args.extend(["--prefetch", "3"]);
    let limited = cluster.worker("limited", None, &args);
    cluster
        .wait_until("the first job is postponed and the prefetched ones released", |store| async move {
            let jobs = store.list_jobs(&JobFilter::default()).await.unwrap();
            let postponed = jobs.iter().any(|j| {
                j.status == JobStatus::Pending && j.last_error.as_deref().is_some_and(|e| e.contains("rate limited"))
            });
            postponed && jobs.iter().all(|j| j.status != JobStatus::Processing)
        })
        .await;
    let store = cluster.store();
    let jobs = store.list_jobs(&JobFilter::default()).await.unwrap();
    let limited_job =
        jobs.iter().find(|j| j.last_error.as_deref().is_some_and(|e| e.contains("rate limited"))).unwrap().clone();
    // Everything the limited worker had leased is pending again, and no attempt was spent.
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| (j.status, j.attempts) == (JobStatus::Pending, 0)), "{jobs:?}\n{}", cluster.all_logs());
    assert!(limited.log_contains("released unstarted jobs"), "{}", cluster.all_logs());
    let _other = cluster.worker("other", None, &openai);
    let others: Vec<String> = ids.iter().filter(|id| limited_job.document_id() != Some(id.as_str())).cloned().collect();
    assert_eq!(others.len(), 2, "three distinct books were submitted");
    cluster.wait_complete(&others).await;
    for id in &others {
        assert_eq!(cluster.process_job(id).await.attempts, 1, "a released job used no attempt");
    }
    let postponed = store.job(limited_job.id).await.unwrap().unwrap();
    assert_eq!((postponed.status, postponed.attempts), (JobStatus::Pending, 0), "{postponed:?}");
    assert!(postponed.checkpoint().has_completed(stage_machine::Stage::Chunked), "its progress was kept");
}

async fn sigterm_hands_a_long_job_back_with_its_checkpoint_and_the_next_worker_finishes_it(backend: Backend) {
    let _serial = serial().await;
    let books = vec![book(15)];
    let clean = clean_run(&backend, &books, &[]).await;
    let cluster = Cluster::new(&backend).await;
    let ids = cluster.submit(&books);
    let mut stopping = cluster.worker("stopping", Some("after_checkpoint_chunked=1*return(2000)"), &[]);
    cluster.wait_checkpoint(&ids[0], milestone_reached("chunked")).await;
    stopping.signal("TERM");
    assert!(stopping.wait_exit(DEADLINE).await.success(), "{}", cluster.all_logs());
    let handed_back = cluster.process_job(&ids[0]).await;
    assert_eq!((handed_back.status, handed_back.attempts), (JobStatus::Pending, 0), "{}", cluster.all_logs());
    assert!(handed_back.checkpoint().has_completed(stage_machine::Stage::Chunked));
    let processing = cluster
        .store()
        .list_jobs(&JobFilter { status: Some(JobStatus::Processing), ..Default::default() })
        .await
        .unwrap();
    assert!(processing.is_empty(), "nothing stays processing after a graceful shutdown");
    let mut next = cluster.worker("next", None, &["--exit-when-idle"]);
    assert!(next.wait_exit(DEADLINE).await.success());
    assert_eq!(cluster.outcome(&ids[0]).await, clean[0]);
}

async fn a_job_that_fails_every_time_ends_in_the_dead_letter_queue_with_its_last_error(backend: Backend) {
    let _serial = serial().await;
    let server = FakeOpenAi::start(|_| Reply::Error(500, "the model is overloaded")).await;
    let cluster = Cluster::new(&backend).await;
    let ids = cluster.submit(&[book(16)]);
    let args = [
        "--exit-when-idle",
        "--embedder",
        "openai",
        "--openai-base-url",
        &server.base_url,
        "--embedding-model",
        "test-embed",
        "--embedding-dimensions",
        "64",
    ];
    let mut worker = cluster.worker("doomed", None, &args);
    assert!(worker.wait_exit(DEADLINE).await.success());
    let job = cluster.process_job(&ids[0]).await;
    assert_eq!((job.status, job.attempts), (JobStatus::Dead, 3), "{}", cluster.all_logs());
    assert!(job.last_error.as_deref().unwrap_or_default().contains("overloaded"), "{job:?}");
    assert_eq!(server.requests(), 3, "one request per attempt, none hidden");
    let document = cluster.store().document(&ids[0]).await.unwrap().unwrap();
    assert_eq!(document.status, DocumentStatus::Failed);
}

/// Worker processes in fixed slots; a killed one is replaced under a new name, so a job's
/// `lock_owner` names the one live process that holds it.
struct Crew {
    workers: Vec<(String, WorkerProcess)>,
    started: usize,
    args: Vec<String>,
    kills: u64,
}

impl Crew {
    fn start(cluster: &Cluster, size: usize, args: Vec<String>) -> Crew {
        let mut crew = Crew { workers: Vec::new(), started: 0, args, kills: 0 };
        for _ in 0..size {
            let worker = crew.spawn(cluster);
            crew.workers.push(worker);
        }
        crew
    }

    fn spawn(&mut self, cluster: &Cluster) -> (String, WorkerProcess) {
        let name = format!("w{}", self.started);
        self.started += 1;
        let process = cluster.worker(&name, None, &strs(&self.args));
        (name, process)
    }

    /// Polls the queue until `ready` holds and a live worker holds a job that `at_work` picks
    /// out, then kills that worker with SIGKILL and starts a new one in its slot. Gives up,
    /// killing nothing, when no job is left to run or none came within `patience`.
    async fn kill_when(
        &mut self,
        cluster: &Cluster,
        chaos: &mut Chaos,
        ready: impl Fn(&[Job]) -> bool,
        at_work: impl Fn(&Job) -> bool,
    ) -> Kill {
        let store = cluster.store();
        let patience = Instant::now() + Duration::from_secs(10);
        loop {
            let jobs = store.list_jobs(&JobFilter { limit: Some(10_000), ..Default::default() }).await.unwrap();
            if jobs.iter().all(|j| j.status == JobStatus::Completed) {
                return Kill::NothingLeft;
            }
            let busy: Vec<usize> = (0..self.workers.len())
                .filter(|&slot| {
                    jobs.iter().any(|j| {
                        j.status == JobStatus::Processing
                            && j.lock_owner.as_deref() == Some(self.workers[slot].0.as_str())
                            && at_work(j)
                    })
                })
                .collect();
            if ready(&jobs) && !busy.is_empty() {
                let slot = busy[chaos.next(busy.len() as u64) as usize];
                self.workers[slot].1.kill9();
                self.kills += 1;
                let replacement = self.spawn(cluster);
                self.workers[slot] = replacement;
                return Kill::Landed;
            }
            if Instant::now() > patience {
                return Kill::GaveUp;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How [`Crew::kill_when`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Kill {
    Landed,
    GaveUp,
    NothingLeft,
}

/// Stages reached, summed over every `process_document` job, plus finished detections: a count
/// that grows while any work is left.
fn milestones(jobs: &[Job]) -> usize {
    jobs.iter()
        .map(|j| match j.kind {
            JobKind::ProcessDocument => j.checkpoint().completed_stages.len(),
            JobKind::DetectConnections => usize::from(j.status == JobStatus::Completed),
        })
        .sum()
}

/// Asks for every document to be connected again, against the whole library as it now stands.
async fn reconnect_all(cluster: &Cluster, ids: &[String]) {
    let store = cluster.store();
    for id in ids {
        let chunk_count = store.document(id).await.unwrap().unwrap().chunk_count;
        let payload = worker::JobPayload::detect_connections(id, chunk_count as usize);
        payload.enqueue(store.as_ref(), EnqueueOptions::default()).await.unwrap();
    }
}

/// Books are connected against the library as it stood when each was embedded, so which
/// connections the first detections find depends on the order the books finished in, which
/// chaos changes. The runs are compared after every book was connected again against the whole
/// library, a result that depends only on the chunks, their vectors and their terms.
async fn chaos_three_workers_killed_at_random_still_finish_every_document_exactly(backend: Backend) {
    let _serial = serial().await;
    let books: Vec<(String, Vec<u8>)> =
        epub_fixtures::corpus_of(20, 99).into_iter().map(|(n, b)| (format!("{n}.epub"), b)).collect();

    // The reference: the same binary, one worker, no kills.
    let reference_server = FakeOpenAi::start(|_| Reply::Embed).await;
    let reference_args = openai(&reference_server.base_url, 2);
    let reference = Cluster::new(&backend).await;
    let reference_ids = reference.submit(&books);
    let drain = |cluster: &Cluster| {
        let args = [vec!["--exit-when-idle"], strs(&reference_args)].concat();
        cluster.worker("reference", None, &args)
    };
    assert!(drain(&reference).wait_exit(DEADLINE).await.success(), "{}", reference.all_logs());
    reconnect_all(&reference, &reference_ids).await;
    assert!(drain(&reference).wait_exit(DEADLINE).await.success(), "{}", reference.all_logs());
    let mut clean = Vec::new();
    for id in &reference_ids {
        let outcome = reference.outcome(id).await;
        assert_eq!(outcome.status, DocumentStatus::Complete, "{}", reference.all_logs());
        clean.push(outcome);
    }
    let clean_requests = reference_server.requests();
    assert!(clean.iter().any(|o| !o.connections.is_empty()), "the corpus must connect");

    // Three workers, one killed whenever the queue has moved on by a few stages (any worker at
    // work) or by a few AI requests (a worker embedding: the service takes 100 ms to answer, so
    // its request is most likely in flight, the window in which the book's own count misses it).
    let server = FakeOpenAi::start(|_| Reply::EmbedAfter(Duration::from_millis(100))).await;
    let cluster = Cluster::new(&backend).await;
    let ids = cluster.submit(&books);
    assert_eq!(ids, reference_ids, "document ids derive from the books");
    let mut crew = Crew::start(&cluster, 3, openai(&server.base_url, 2));
    let mut chaos = Chaos(0x9e37_79b9_7f4a_7c15);
    let (mut last_milestones, mut last_requests) = (0, 0);
    for _ in 0..10 {
        let landed = if chaos.next(2) == 0 {
            let stages = 1 + chaos.next(3) as usize;
            let ready = |jobs: &[Job]| milestones(jobs) >= last_milestones + stages;
            crew.kill_when(&cluster, &mut chaos, ready, |_| true).await
        } else {
            let requests = 1 + chaos.next(3) as usize;
            let ready = |_: &[Job]| server.requests() >= last_requests + requests;
            let embedding = |job: &Job| {
                let checkpoint = job.checkpoint();
                checkpoint.has_completed(Stage::Chunked) && !checkpoint.has_completed(Stage::Embedded)
            };
            crew.kill_when(&cluster, &mut chaos, ready, embedding).await
        };
        if landed == Kill::NothingLeft {
            break;
        }
        let store = cluster.store();
        let jobs = store.list_jobs(&JobFilter { limit: Some(10_000), ..Default::default() }).await.unwrap();
        (last_milestones, last_requests) = (milestones(&jobs), server.requests());
    }
    let store = cluster.store();
    let first_pass_kills = crew.kills;
    assert!(first_pass_kills >= 5, "only {first_pass_kills} kills landed while books were processed");
    cluster.wait_complete(&ids).await;
    cluster.wait_idle(store.as_ref(), DEADLINE).await;
    for (id, clean) in ids.iter().zip(&clean) {
        assert_eq!(cluster.outcome(id).await.chunks, clean.chunks, "{id}: chunks differ from a clean run");
    }

    // AI requests, as the service counted them. Each attempt sends each of its book's texts at
    // most once, and a retry takes from the cache everything an earlier attempt stored: it sends
    // again at most the one request that was in flight when its predecessor died.
    let mut owners: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut attempts: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        for chunk in store.chunks(id).await.unwrap() {
            owners.entry(chunk.text).or_default().insert(id.clone());
        }
        attempts.insert(id.clone(), cluster.process_job(id).await.attempts as usize);
    }
    let received = server.received();
    let mut sent: HashMap<&str, usize> = HashMap::new();
    let mut repeats: HashMap<&str, usize> = HashMap::new();
    for request in &received {
        let mut repeated_for = BTreeSet::new();
        for text in request {
            let owners = owners.get(text).unwrap_or_else(|| panic!("a text no chunk has was embedded: {text:?}"));
            let count = sent.entry(text.as_str()).or_default();
            *count += 1;
            let allowed: usize = owners.iter().map(|d| attempts[d]).sum();
            assert!(*count <= allowed, "{text:?} sent {count} times by {allowed} attempts of {owners:?}");
            if *count > 1 && owners.len() == 1 {
                repeated_for.insert(owners.first().unwrap().as_str());
            }
        }
        for document in repeated_for {
            *repeats.entry(document).or_default() += 1;
        }
    }
    assert_eq!(sent.len(), owners.len(), "every chunk text was embedded");
    assert!(!repeats.is_empty(), "no kill landed with a request in flight: nothing above was put to the test");
    for (document, repeated) in &repeats {
        let retries = attempts[*document] - 1;
        assert!(
            *repeated <= retries,
            "{document}: {repeated} requests repeated its texts in {retries} retries\n{}",
            cluster.all_logs()
        );
    }
    let retries: usize = attempts.values().map(|a| a - 1).sum();
    assert!(
        received.len() <= clean_requests + retries,
        "{} AI requests for {clean_requests} clean ones and {retries} retries",
        received.len()
    );

    // Connections: every book connected again, with kills landing on the detections.
    reconnect_all(&cluster, &ids).await;
    for _ in 0..4 {
        let detecting = |job: &Job| job.kind == JobKind::DetectConnections;
        if crew.kill_when(&cluster, &mut chaos, |_| true, detecting).await == Kill::NothingLeft {
            break;
        }
    }
    cluster.wait_idle(store.as_ref(), DEADLINE).await;
    for (id, clean) in ids.iter().zip(&clean) {
        let outcome = cluster.outcome(id).await;
        assert_eq!(outcome.connections, clean.connections, "{id}: connections differ from a clean run");
    }
    support::integrity::assert_integrity(store.as_ref(), "test-embed@64", 64).await;
}
