//! Real `quire worker` processes on one PostgreSQL database: four workers share forty books while
//! one of them is killed with SIGKILL and restarted, or while the server terminates their
//! connections. Every document must end complete exactly once, with nothing lost, duplicated or
//! paid for twice beyond what the interruptions explain.
//!
//! Needs `QUIRE_TEST_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`); without it
//! the tests print a notice and pass, unless `CI=true`, where they fail. Each test works in a
//! schema of its own (`quire_t_<pid>_<n>`), dropped at the end, and a data directory of its own
//! shared by its workers (uploads and markdown live there).
//!
//! Workers run with a 2 s lease so that recovery takes seconds. Waiting is by polling the
//! database with a deadline; no assertion depends on how long anything took.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use checkpoint_store::{PgStore, PgStoreOptions};
use embedder::{Embedder, LocalEmbedder};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use support::postgres::{self, TestSchema, database_url};
use support::processes::{Processes, WorkerProcess};

/// The two scenarios share two cores; one at a time keeps heartbeats on schedule.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DEADLINE: Duration = Duration::from_secs(60);

/// Inputs per embedding request: small, so that a book takes several requests.
const BATCH: u64 = 2;

const WORKERS: usize = 4;

/// A schema and a data directory shared by worker processes.
struct PgCluster {
    /// Held to be dropped with the cluster: first, while the store's connections are still open
    /// (they hold no locks).
    _schema: TestSchema,
    processes: Processes,
    store: PgStore,
    /// Connections outside the schema, for `pg_stat_activity`.
    admin: PgPool,
}

impl std::ops::Deref for PgCluster {
    type Target = Processes;
    fn deref(&self) -> &Processes {
        &self.processes
    }
}

impl PgCluster {
    async fn new(url: &str) -> PgCluster {
        let schema = TestSchema::new(url).await;
        let admin_options: PgConnectOptions =
            url.parse::<PgConnectOptions>().unwrap().application_name("quire_t_admin");
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(admin_options)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to QUIRE_TEST_DATABASE_URL: {error}"));
        let store = PgStore::connect(
            url,
            PgStoreOptions { schema: schema.name().to_owned(), max_connections: 4, ..PgStoreOptions::default() },
        )
        .await
        .unwrap();
        PgCluster { processes: Processes::postgres(url, schema.name()), _schema: schema, store, admin }
    }

    /// Starts a worker with short leases, one job at a time, small embedding batches.
    fn worker(&self, name: &str) -> WorkerProcess {
        self.processes.worker(name, None, &["--embedding-batch-size", &BATCH.to_string()])
    }

    /// Polls until every document is complete and no job is left to run (a failed document fails
    /// the test); a job whose completion was lost with its connection is finished by a later
    /// attempt.
    async fn wait_complete(&self, ids: &[String]) {
        self.processes.wait_complete(&self.store, ids, DEADLINE).await;
        self.processes.wait_idle(&self.store, DEADLINE).await;
    }

    /// Terminates the server connections of these worker processes (and only theirs: they are
    /// found by their client ports); returns how many were terminated.
    async fn terminate_connections(&self, workers: &[WorkerProcess]) -> u64 {
        let backends = postgres::worker_backends(&self.admin, workers).await;
        postgres::terminate(&self.admin, &backends).await
    }

    /// Checks what every run must end with; returns the total of the documents' AI requests.
    async fn verify(&self, ids: &[String], extra_allowed: u64) -> u64 {
        let pool = self.store.pool();
        support::integrity::assert_each_complete_once(&self.store, ids).await;
        let dimensions = embedder::DEFAULT_LOCAL_DIMENSIONS;
        support::integrity::assert_integrity(&self.store, &LocalEmbedder::new(dimensions).model(), dimensions).await;
        // AI requests. A clean run asks for each distinct chunk text of a document at most once,
        // BATCH texts per request (the local embedder sets no token limit that would split a
        // batch further; texts cached by another document only lower the count), so a clean run
        // costs at most the sum of ceil(distinct texts / BATCH). Each interruption (a kill, a
        // failed attempt) can repeat at most the one request whose vectors were not stored yet.
        let per_document: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT d.id, d.ai_requests, (SELECT COUNT(DISTINCT content_hash) FROM chunks c WHERE c.document_id = d.id) \
             FROM documents d ORDER BY d.id",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let attempts: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
            "SELECT payload->>'document_id', SUM(attempts - 1)::BIGINT FROM jobs WHERE kind = 'process_document' GROUP BY 1",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        let mut total = 0u64;
        let mut clean_ceiling = 0u64;
        for (id, requests, distinct) in &per_document {
            let ceiling = (*distinct as u64).div_ceil(BATCH);
            let retries = attempts.get(id).copied().unwrap_or(0) as u64;
            assert!(
                *requests as u64 <= ceiling + retries,
                "{id}: {requests} AI requests for {distinct} distinct chunks and {retries} retries"
            );
            total += *requests as u64;
            clean_ceiling += ceiling;
        }
        assert!(
            total <= clean_ceiling + extra_allowed,
            "{total} AI requests; a clean run needs at most {clean_ceiling}, interruptions allow {extra_allowed} more"
        );
        total
    }

    /// Closes the test's connections; the schema is dropped when the cluster is (its workers,
    /// declared after the cluster, are killed first).
    async fn finish(self) {
        self.store.close().await;
        self.admin.close().await;
    }
}

fn corpus(seed: u64) -> Vec<(String, Vec<u8>)> {
    epub_fixtures::corpus_of(40, seed).into_iter().map(|(name, bytes)| (format!("{name}.epub"), bytes)).collect()
}

/// Polls until the cluster's [`postgres::progress`] has reached `target` while some worker holds a job,
/// and returns the progress and that worker's name; `None` once no job is left to run. Fails the
/// test if nothing moves within the deadline.
async fn next_holder_after_progress(cluster: &PgCluster, target: i64) -> Option<(i64, String)> {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'processing')")
            .fetch_one(cluster.store.pool())
            .await
            .unwrap();
        if open == 0 {
            return None;
        }
        let now = postgres::progress(cluster.store.pool()).await;
        if now >= target {
            let holder: Option<String> = sqlx::query_scalar(
                "SELECT lock_owner FROM jobs WHERE status = 'processing' ORDER BY lock_until DESC LIMIT 1",
            )
            .fetch_optional(cluster.store.pool())
            .await
            .unwrap()
            .flatten();
            if let Some(holder) = holder {
                return Some((now, holder));
            }
        }
        assert!(std::time::Instant::now() < deadline, "the cluster made no progress (at {now}, waiting for {target})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_one_killed_and_restarted_finish_forty_documents_exactly_once() {
    let Some(url) = database_url() else { return };
    let _serial = SERIAL.lock().await;
    let cluster = PgCluster::new(&url).await;
    let ids = cluster.submit(&corpus(4040));
    let mut workers: Vec<WorkerProcess> = (0..WORKERS).map(|i| cluster.worker(&format!("w{i}"))).collect();
    // Kill a worker that holds a job each time the cluster has checkpointed two more stages,
    // restart it under its name; a few times. Timed by progress, not by the clock, so the kills
    // land mid-work however fast or loaded the machine is.
    let mut kills = 0u64;
    let mut reached = 0;
    for _ in 0..6 {
        let Some((now, holder)) = next_holder_after_progress(&cluster, reached + 2).await else { break };
        reached = now;
        let Some(victim) = (0..WORKERS).find(|&i| holder == format!("w{i}")) else {
            panic!("job held by {holder:?}, which is none of this test's workers")
        };
        workers[victim].kill9();
        kills += 1;
        workers[victim] = cluster.worker(&format!("w{victim}"));
    }
    cluster.wait_complete(&ids).await;
    cluster.assert_running(&mut workers);
    assert!(kills > 0, "the run ended before any worker could be killed");
    // With one job per worker, each kill interrupts at most one attempt.
    let total = cluster.verify(&ids, kills).await;
    eprintln!("{} documents, {kills} kills, {total} AI requests", ids.len());
    drop(workers);
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_survive_their_connections_being_terminated_and_lose_nothing() {
    let Some(url) = database_url() else { return };
    let _serial = SERIAL.lock().await;
    let cluster = PgCluster::new(&url).await;
    let ids = cluster.submit(&corpus(5050));
    let mut workers: Vec<WorkerProcess> = (0..WORKERS).map(|i| cluster.worker(&format!("w{i}"))).collect();
    let mut rounds = 0u64;
    let mut terminated = 0u64;
    // Two rounds, not more: a lost connection fails the statement running on it, and a job
    // whose statement fails uses one of its three attempts (a retryable failure, as documented).
    // One round costs a job at most one attempt, so two rounds can never dead-letter a job;
    // terminating every 200 ms for 2 s did dead-letter one ("terminating connection due to
    // administrator command" three times), which is the documented policy, not a lost job.
    // Each round waits until the cluster has checkpointed two more stages with a job held, so
    // the connections are cut mid-work.
    let mut reached = 0;
    for _ in 0..2 {
        let Some((now, _)) = next_holder_after_progress(&cluster, reached + 2).await else { break };
        reached = now;
        terminated += cluster.terminate_connections(&workers).await;
        rounds += 1;
        cluster.assert_running(&mut workers);
    }
    cluster.wait_complete(&ids).await;
    cluster.assert_running(&mut workers);
    assert!(terminated > 0, "no worker connection was found to terminate (is the URL a TCP one?)");
    // A terminated connection fails at most the statement running on it: at most one attempt per
    // worker per round; those are counted by the attempts themselves in `verify`.
    let retries: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(attempts - 1), 0)::BIGINT FROM jobs WHERE kind = 'process_document'")
            .fetch_one(cluster.store.pool())
            .await
            .unwrap();
    let total = cluster.verify(&ids, retries as u64).await;
    eprintln!(
        "{} documents, {rounds} rounds, {terminated} connections terminated, {retries} retried attempts, {total} AI requests, \
         log lines: {} 'leasing failed', {} 'heartbeat failed', {} 'reaper: … failed', {} 'attempt failed', {} 'could not record'",
        ids.len(),
        cluster.logs_containing("leasing failed"),
        cluster.logs_containing("heartbeat failed"),
        cluster.logs_containing("reaper: "),
        cluster.logs_containing("attempt failed; will retry"),
        cluster.logs_containing("could not record the outcome"),
    );
    drop(workers);
    cluster.finish().await;
}
