//! The fault run on PostgreSQL: three `quire worker` processes share twenty books on a server of
//! the test's own while the test terminates random worker connections with
//! `pg_terminate_backend` and restarts the server once, and the AI service is slow and sometimes
//! fails (503s, 429s). It must end with every book complete once, with the chunks of an
//! uninterrupted run, no connection touching a chunk of an unfinished book, no server session
//! left behind, and no attempt spent on the database's outages.
//!
//! Every fault lands on a job's write. Before each one the test locks the `jobs` table and waits
//! until some worker has two statements blocked on the lock: a worker's loop runs one statement
//! at a time, so one of the two is its job's. Then it cuts that worker's blocked connections and
//! a random half of the others, or restarts the server, and lets go of the lock. Faults are
//! spaced by observed progress (stages checkpointed, requests seen at the AI service), never by
//! sleeps; no assertion depends on how long anything took.
//!
//! The server is a private one, because the test restarts it: `initdb` and `pg_ctl` from
//! /usr/lib/postgresql/*/bin, run as the `postgres` user when tests run as root. Without them the
//! test prints a notice and passes, unless `CI=true`, where it fails. It takes about fifteen
//! seconds on two cores, so it runs in `cargo test --workspace` as well as in
//! `just test-retry-scenarios`.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use checkpoint_store::{
    DocumentStore, Job, JobFilter, JobKind, JobStore, PgStore, PgStoreOptions, SqliteStore, SqliteStoreOptions,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use support::Chaos;
use support::fake_openai::{FakeOpenAi, Reply, openai, strs};
use support::postgres::{self, Backend, PrivateServer};
use support::processes::{Lease, Processes, WorkerProcess};

const BOOKS: usize = 20;
const WORKERS: usize = 3;

/// Inputs per embedding request: small, so that a book takes several requests.
const BATCH: usize = 2;

const DEADLINE: Duration = Duration::from_secs(120);

/// The workers' schema on the private server.
const SCHEMA: &str = "quire";

/// Rounds of terminated connections; the server restart is one more round among them.
const TERMINATION_ROUNDS: usize = 5;

/// Leases far longer than any outage of this run (a lock held at most [`LOCK_PATIENCE`], a
/// restart of a second or two), so that no lease may expire: an expired lease taken back by a
/// reaper is an attempt spent, and here only an outage could cause one. (An outage longer than a
/// lease may cost an attempt by design: the worker cannot prove it is alive.)
const LEASE: Lease = Lease { ttl: "20s", heartbeat: "500ms" };
const LEASE_TTL: Duration = Duration::from_secs(20);

/// How long the test holds the jobs table locked waiting for a job's write to block on it.
const LOCK_PATIENCE: Duration = Duration::from_secs(3);

/// Whether the AI service answers request `n` (from 0) with a 503.
fn fails(n: usize) -> bool {
    n % 9 == 4
}

/// The AI service: slow (150 ms per answer, so requests are in flight when faults land), a 503
/// for every ninth request and a 429 with `Retry-After: 1` for every eleventh.
fn reply_to(n: usize) -> Reply {
    if fails(n) {
        Reply::Error(503, "the model is overloaded")
    } else if n % 11 == 7 {
        Reply::RateLimited(1)
    } else {
        Reply::EmbedAfter(Duration::from_millis(150))
    }
}

fn books() -> Vec<(String, Vec<u8>)> {
    epub_fixtures::corpus_of(BOOKS, 2020).into_iter().map(|(name, bytes)| (format!("{name}.epub"), bytes)).collect()
}

/// A document's chunks as compared between runs: id, index, text.
type Chunks = Vec<(String, u32, String)>;

async fn chunks_of<S: DocumentStore>(store: &S, id: &str) -> Chunks {
    store.chunks(id).await.unwrap().into_iter().map(|c| (c.id, c.index, c.text)).collect()
}

/// The chunks of an uninterrupted run of `books` (one worker on SQLite, an AI service that
/// never fails), by document id.
async fn clean_chunks(books: &[(String, Vec<u8>)]) -> BTreeMap<String, Chunks> {
    let service = FakeOpenAi::start(|_| Reply::Embed).await;
    let reference = Processes::sqlite();
    let ids = reference.submit(books);
    let openai = openai(&service.base_url, BATCH);
    let args = [vec!["--exit-when-idle"], strs(&openai)].concat();
    let mut worker = reference.worker("reference", None, &args);
    assert!(worker.wait_exit(DEADLINE).await.success(), "{}", reference.all_logs());
    let store = SqliteStore::open(reference.data_dir().join("quire.db"), SqliteStoreOptions::default()).await.unwrap();
    let mut clean = BTreeMap::new();
    for id in ids {
        let chunks = chunks_of(&store, &id).await;
        assert!(!chunks.is_empty(), "{id}: the clean run made no chunks\n{}", reference.all_logs());
        clean.insert(id, chunks);
    }
    clean
}

/// What the faults did.
#[derive(Debug, Default)]
struct Faults {
    /// Connections terminated with `pg_terminate_backend`.
    terminated: u64,
    /// How long the server was out for its restart.
    restart: Option<Duration>,
    /// Faults that landed while a job's write was blocked on the lock.
    on_a_job_write: u32,
    /// Rounds that found a job's write blocked on the lock within [`LOCK_PATIENCE`].
    rounds: u32,
}

/// Polls until the run has moved on (`moved_on` holds) while some job is being processed;
/// returns false once no job is left to run.
async fn wait_for_work(store: &PgStore, mut moved_on: impl FnMut(i64) -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let open: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM jobs WHERE status IN ('pending', 'processing') GROUP BY status",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        if open.is_empty() {
            return false;
        }
        let processing = open.iter().any(|(status, _)| status == "processing");
        if processing && moved_on(postgres::progress(store.pool()).await) {
            return true;
        }
        assert!(Instant::now() < deadline, "the run made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With the jobs table locked, polls until some worker has two statements waiting on the lock
/// (its loop's and its job's); returns the workers' connections then, and that worker. Gives up
/// after [`LOCK_PATIENCE`] with no worker.
async fn wait_for_a_blocked_job_write(admin: &PgPool, workers: &[WorkerProcess]) -> (Vec<Backend>, Option<usize>) {
    let give_up_at = Instant::now() + LOCK_PATIENCE;
    loop {
        let backends = postgres::worker_backends(admin, workers).await;
        let blocked = (0..workers.len())
            .find(|&worker| backends.iter().filter(|b| b.worker == worker && b.waiting_on_lock).count() >= 2);
        if blocked.is_some() || Instant::now() >= give_up_at {
            return (backends, blocked);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn job_of(store: &PgStore, id: &str, kind: JobKind) -> Job {
    let filter = JobFilter { kind: Some(kind), document_id: Some(id.to_owned()), ..Default::default() };
    store.list_jobs(&filter).await.unwrap().remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_through_a_server_restart_and_cut_connections_complete_every_book_once_and_spend_no_attempt_on_outages()
 {
    let Some(server) = PrivateServer::start() else { return };
    let started = Instant::now();
    let books = books();
    let clean = clean_chunks(&books).await;
    let reference_time = started.elapsed();

    let url = server.url();
    let service = FakeOpenAi::start(reply_to).await;
    let processes = Processes::postgres(&url, SCHEMA);
    let ids = processes.submit(&books);
    let submitted: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(submitted, clean.keys().collect(), "document ids derive from the books");
    let store = PgStore::connect(
        &url,
        PgStoreOptions { schema: SCHEMA.to_owned(), max_connections: 2, ..PgStoreOptions::default() },
    )
    .await
    .unwrap();
    // One connection holds the lock, the other looks at the server meanwhile.
    let admin_options = url.parse::<PgConnectOptions>().unwrap().application_name("quire_t_admin");
    let admin = PgPoolOptions::new().max_connections(2).connect_with(admin_options).await.unwrap();
    // A 503 costs its job an attempt (a retryable failure, as documented). Enough attempts that
    // the service's failures alone never dead-letter a book: what is asserted is which attempts
    // were spent, not whether the default three suffice.
    sqlx::query("UPDATE jobs SET max_attempts = 100").execute(store.pool()).await.unwrap();

    let args = openai(&service.base_url, BATCH);
    let mut workers: Vec<WorkerProcess> =
        (0..WORKERS).map(|i| processes.worker_with_lease(&format!("w{i}"), LEASE, None, &strs(&args))).collect();

    let mut chaos = Chaos(0x2545_f491_4f6c_dd1d);
    let restart_round = 1 + chaos.next(2) as usize;
    let mut faults = Faults::default();
    let (mut last_progress, mut last_requests) = (0, 0);
    for round in 0..=TERMINATION_ROUNDS {
        // The run moves on by a few stages, or a few AI requests, between two faults, so that they
        // land on different stages of different books.
        let step = 1 + chaos.next(3) as i64;
        let by_requests = chaos.next(2) == 0;
        let moved_on = |progress: i64| {
            if by_requests {
                service.requests() as i64 >= last_requests + step
            } else {
                progress >= last_progress + step
            }
        };
        if !wait_for_work(&store, moved_on).await {
            break;
        }
        let mut lock = admin.begin().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("LOCK TABLE {SCHEMA}.jobs IN EXCLUSIVE MODE")))
            .execute(&mut *lock)
            .await
            .unwrap();
        let (backends, blocked) = wait_for_a_blocked_job_write(&admin, &workers).await;
        faults.rounds += 1;
        faults.on_a_job_write += u32::from(blocked.is_some());
        if round == restart_round {
            faults.restart = Some(server.restart());
            // The lock went with its session.
            drop(lock);
        } else {
            let cut: Vec<Backend> = backends
                .into_iter()
                .filter(|b| (Some(b.worker) == blocked && b.waiting_on_lock) || chaos.next(2) == 0)
                .collect();
            faults.terminated += postgres::terminate(&admin, &cut).await;
            lock.rollback().await.unwrap();
        }
        processes.assert_running(&mut workers);
        (last_progress, last_requests) = (postgres::progress(store.pool()).await, service.requests() as i64);
    }
    processes.wait_complete(&store, &ids, DEADLINE).await;
    processes.wait_idle(&store, DEADLINE).await;
    processes.assert_running(&mut workers);
    let run_time = started.elapsed() - reference_time;
    for worker in &workers {
        worker.signal("TERM");
    }
    for worker in &mut workers {
        assert!(worker.wait_exit(DEADLINE).await.success(), "{}", processes.all_logs());
    }

    // The faults happened, and landed on jobs' writes, before the work ran out.
    let restart = faults.restart.unwrap_or_else(|| panic!("the run ended before the server was restarted: {faults:?}"));
    assert!(faults.terminated > 0, "no worker connection was terminated: {faults:?}");
    assert!(faults.on_a_job_write > 0, "no fault landed while a job was writing: {faults:?}");
    // The premise of the attempts bound below: no outage outlasted a lease.
    assert!(restart + LOCK_PATIENCE < LEASE_TTL, "the restart took {restart:?}, too long for {LEASE_TTL:?} leases");

    // Every book complete once, with the chunks of an uninterrupted run (none lost, none twice);
    // no connection touches a chunk of a book that is not complete; no lease left behind.
    support::integrity::assert_each_complete_once(&store, &ids).await;
    for (id, chunks) in &clean {
        assert_eq!(&chunks_of(&store, id).await, chunks, "{id}: chunks differ from an uninterrupted run");
    }
    support::integrity::assert_integrity(&store, "test-embed@64", 64).await;

    // No attempt spent on the outages. A job's `attempts` counts its leases less those given
    // back (a postponement: a rate limit, a connection lost mid-job). An attempt is kept only
    // when it ends in a recorded failure, when a reaper takes back its expired lease, or when it
    // completes (the last one). No lease expired here (no process died, no outage outlasted a
    // lease), a lost connection defers a job without using an attempt, and recording an outcome
    // waits out an outage; so every failure recorded is a 503 answered to a request of the job's
    // own book, and an attempt ends at its first one. Hence, for each book, attempts − 1 ≤ the
    // 503s answered to requests carrying its texts, and a connections job, which asks the
    // service nothing, ran once.
    let received = service.received();
    let mut owners: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (id, chunks) in &clean {
        for (_, _, text) in chunks {
            owners.entry(text.as_str()).or_default().insert(id.as_str());
        }
    }
    let mut failures: HashMap<&str, u32> = HashMap::new();
    let failed: Vec<&Vec<String>> = received.iter().enumerate().filter(|(n, _)| fails(*n)).map(|(_, r)| r).collect();
    for request in &failed {
        let books: BTreeSet<&str> = request
            .iter()
            .flat_map(|text| owners.get(text.as_str()).unwrap_or_else(|| panic!("a text no chunk has: {text:?}")))
            .copied()
            .collect();
        for book in books {
            *failures.entry(book).or_default() += 1;
        }
    }
    assert!(!failed.is_empty(), "the AI service failed no request: its failures were not put to the test");
    let mut spent = 0;
    for id in &ids {
        let process = job_of(&store, id, JobKind::ProcessDocument).await;
        let allowed = failures.get(id.as_str()).copied().unwrap_or(0);
        assert!(
            process.attempts - 1 <= allowed,
            "{id}: {} attempts for {allowed} failed AI requests: an attempt was spent on an outage: {process:?}\n{}",
            process.attempts,
            processes.all_logs()
        );
        spent += process.attempts - 1;
        let detect = job_of(&store, id, JobKind::DetectConnections).await;
        assert_eq!(detect.attempts, 1, "{id}: the connections job spent an attempt: {detect:?}");
    }
    assert!(spent as usize <= failed.len(), "{spent} attempts spent for {} failed AI requests", failed.len());

    // No session left on the server once the workers and the test's store are gone. Backends
    // end just after their clients, so this polls.
    store.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sessions: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'quire'")
                .fetch_one(&admin)
                .await
                .unwrap();
        if sessions == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{sessions} worker sessions left on the server after every worker exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin.close().await;
    eprintln!(
        "{} books in {run_time:?} (reference run {reference_time:?}): {faults:?}; {} AI requests, {} failed with 503, \
         {spent} attempts spent on them; log lines: {} 'database unavailable', {} 'recording the outcome again', \
         {} 'heartbeat failed', {} 'leasing failed'",
        ids.len(),
        received.len(),
        failed.len(),
        processes.logs_containing("database unavailable"),
        processes.logs_containing("recording the outcome again"),
        processes.logs_containing("heartbeat failed"),
        processes.logs_containing("leasing failed"),
    );
}
