//! `quire-queue-bench apalis`: the same no-op workload on apalis 1.0 (`apalis-sqlite`,
//! `apalis-postgres`) and on quire's `JobStore`, side by side in one process.
//!
//! Each round runs, per backend (SQLite temp file, PostgreSQL):
//! - quire: `enqueue` of N jobs (one statement each), then drains of N prefilled jobs with
//!   1 and 4 workers and leases of 1 and 32 jobs (`scenarios::drain`, the same code as the main
//!   matrix);
//! - apalis: on a fresh database, N sequential `TaskSink::push` calls (timed: enqueue), then
//!   `--workers` apalis `Worker`s (each its own `WorkerBuilder` with a distinct name and a clone
//!   of the storage, default polling, default unbounded in-worker concurrency, `batch_size`
//!   from `--apalis-batch`, other `Config` fields at their defaults) drain them. The job
//!   function counts into an atomic; when the count reaches N every worker is told to stop, and
//!   `Worker::run_with_ctx` returns only after the worker has flushed its pending acks
//!   (`poll_close`). Drain time: from the first job function call to the return of the last
//!   worker (the "from spawn" time, which adds worker registration and the first fetch, is
//!   printed as well). Afterwards the run checks that the storage holds N `Done` jobs.
//!
//! Storage per apalis run: SQLite, a file in a fresh temporary directory opened with
//! `SqlitePool::connect` defaults and `SqliteStorage::setup` (as apalis-sqlite's README does);
//! PostgreSQL, a fresh database `quire_apalis_bench_<pid>_<n>` on the server of
//! `--database-url` (apalis-postgres hard-codes its schema `apalis` and sqlx's migration table
//! lands in `public`, so a database of its own is the only clean isolation), dropped after the
//! run. quire's PostgreSQL runs use their usual fresh schema in the `--database-url` database.

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data, TaskSink, WorkerBuilder, WorkerContext};
use clap::Parser;
use sqlx::Connection;

use crate::backend::{Backend, BenchResult};
use crate::report::Row;
use crate::scenarios::{self, Run};

/// apalis vs quire: enqueue and drain N no-op jobs on each backend.
#[derive(Debug, Parser)]
#[command(name = "quire-queue-bench apalis")]
pub struct ApalisCli {
    /// Backends, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite")]
    backend: Vec<Backend>,
    /// PostgreSQL server URL (quire gets a schema in this database; apalis a database of its own
    /// on the same server).
    #[arg(long, env = "QUIRE_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Jobs per run.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: u64,
    /// Runs of each configuration.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Worker counts to drain with (both libraries).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    workers: Vec<u32>,
    /// quire lease sizes to drain with.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    quire_batch: Vec<u32>,
    /// apalis `Config::batch_size` (jobs per fetch; apalis's default is 10).
    #[arg(long, default_value_t = 32)]
    apalis_batch: usize,
    /// Skip quire (apalis only).
    #[arg(long)]
    no_quire: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Measure {
    QuireEnqueue,
    QuireDrain {
        workers: u32,
        batch: u32,
    },
    /// One apalis run gives an enqueue and a drain figure.
    Apalis {
        workers: u32,
    },
}

/// What one apalis run measured.
struct ApalisRun {
    enqueue: Run,
    drain: Run,
    drain_from_spawn: Duration,
}

pub async fn main(cli: ApalisCli) -> BenchResult<()> {
    let mut measures = Vec::new();
    if !cli.no_quire {
        measures.push(Measure::QuireEnqueue);
        for &batch in &cli.quire_batch {
            for &workers in &cli.workers {
                measures.push(Measure::QuireDrain { workers, batch });
            }
        }
    }
    for &workers in &cli.workers {
        measures.push(Measure::Apalis { workers });
    }

    let load_before = crate::report::load_average();
    let started = Instant::now();
    // results[backend][measure] = runs; apalis measures keep (enqueue, drain) pairs.
    let mut quire: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); measures.len()]; cli.backend.len()];
    let mut apalis: Vec<Vec<Vec<ApalisRun>>> =
        (0..cli.backend.len()).map(|_| (0..measures.len()).map(|_| Vec::new()).collect()).collect();
    for round in 1..=cli.runs {
        for (m, measure) in measures.iter().enumerate() {
            for (b, backend) in cli.backend.iter().enumerate() {
                match *measure {
                    Measure::QuireEnqueue | Measure::QuireDrain { .. } => {
                        let fresh = backend.fresh_at(cli.database_url.as_deref()).await?;
                        let store = fresh.store.clone();
                        let run = match *measure {
                            Measure::QuireEnqueue => scenarios::enqueue(store.as_ref(), cli.jobs, false).await,
                            Measure::QuireDrain { workers, batch } => {
                                scenarios::drain(store, cli.jobs, workers, batch).await
                            }
                            Measure::Apalis { .. } => unreachable!(),
                        };
                        fresh.close().await;
                        let run = run?;
                        eprintln!("run {round}/{}: {backend:?} quire {measure:?}: {:.0} jobs/s", cli.runs, run.rate());
                        quire[b][m].push(run);
                    }
                    Measure::Apalis { workers } => {
                        let run = match backend {
                            Backend::Sqlite => apalis_sqlite_run(cli.jobs, workers, cli.apalis_batch).await?,
                            Backend::Postgres => {
                                let url = cli
                                    .database_url
                                    .clone()
                                    .or_else(|| std::env::var(crate::backend::DATABASE_URL_VAR).ok())
                                    .ok_or("--backend postgres needs --database-url")?;
                                apalis_postgres_run(&url, cli.jobs, workers, cli.apalis_batch).await?
                            }
                        };
                        eprintln!(
                            "run {round}/{}: {backend:?} apalis workers={workers}: enqueue {:.0} jobs/s, drain {:.0} jobs/s \
                             ({:.0} jobs/s from spawn)",
                            cli.runs,
                            run.enqueue.rate(),
                            run.drain.rate(),
                            cli.jobs as f64 / run.drain_from_spawn.as_secs_f64(),
                        );
                        apalis[b][m].push(run);
                    }
                }
            }
        }
    }
    let load_after = crate::report::load_average();

    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    println!("Command: `quire-queue-bench {command}` ({} jobs, {} runs each)", cli.jobs, cli.runs);
    println!("Load average (1, 5, 15 min): before {load_before}, after {load_after}; total {:.0?}", started.elapsed());
    for (b, backend) in cli.backend.iter().enumerate() {
        let mut rows = Vec::new();
        for (m, measure) in measures.iter().enumerate() {
            let runs = std::mem::take(&mut quire[b][m]);
            let ap = std::mem::take(&mut apalis[b][m]);
            match *measure {
                Measure::QuireEnqueue => rows.push(row("quire enqueue", "1", "1", runs, false)),
                Measure::QuireDrain { workers, batch } => {
                    rows.push(row("quire lease + complete each", &workers.to_string(), &batch.to_string(), runs, true))
                }
                Measure::Apalis { workers } => {
                    let batch = cli.apalis_batch.to_string();
                    rows.push(row(
                        &format!("apalis push (run with {workers} workers)"),
                        "1",
                        "1",
                        ap.iter().map(|r| r.enqueue).collect(),
                        false,
                    ));
                    rows.push(row(
                        "apalis drain",
                        &workers.to_string(),
                        &batch,
                        ap.iter().map(|r| r.drain).collect(),
                        false,
                    ));
                    let spawn: Vec<Run> = ap
                        .iter()
                        .map(|r| Run { ops: cli.jobs, elapsed: r.drain_from_spawn, ..Run::default() })
                        .collect();
                    rows.push(row("apalis drain, timed from spawn", &workers.to_string(), &batch, spawn, false));
                }
            }
        }
        println!();
        println!("Backend {backend:?}:");
        println!();
        print!("{}", crate::report::table(&rows));
    }
    Ok(())
}

fn row(name: &str, workers: &str, batch: &str, runs: Vec<Run>, lease: bool) -> Row {
    Row {
        name: name.to_owned(),
        unit: "jobs/s",
        workers: workers.to_owned(),
        batch: batch.to_owned(),
        show_lease_share: lease,
        runs,
    }
}

/// Shared by the job function of every worker of one run.
struct Progress {
    target: u64,
    done: AtomicU64,
    first_job: Mutex<Option<Instant>>,
    all_done: tokio::sync::Notify,
}

impl Progress {
    fn new(target: u64) -> Arc<Progress> {
        Arc::new(Progress {
            target,
            done: AtomicU64::new(0),
            first_job: Mutex::new(None),
            all_done: tokio::sync::Notify::new(),
        })
    }
}

/// The no-op job: counts, and wakes the stopper at the N-th job.
async fn noop_job(_job: u64, progress: Data<Arc<Progress>>) -> Result<(), BoxDynError> {
    {
        let mut first = progress.first_job.lock().expect("not poisoned");
        if first.is_none() {
            *first = Some(Instant::now());
        }
    }
    if progress.done.fetch_add(1, Ordering::SeqCst) + 1 == progress.target {
        progress.all_done.notify_waiters();
    }
    Ok(())
}

/// Enqueues with `$storage` (one push each, timed), drains with `$workers` workers built by
/// `$make` (a clone of the storage each), and returns the run. A macro because apalis's worker
/// types are long to name generically.
macro_rules! enqueue_and_drain {
    ($storage:expr, $jobs:expr, $workers:expr) => {{
        let mut storage = $storage;
        let jobs: u64 = $jobs;
        let start = Instant::now();
        let mut enqueue = Run { ops: jobs, ..Run::default() };
        for i in 0..jobs {
            let call = Instant::now();
            storage.push(i).await.map_err(|e| format!("apalis push: {e}"))?;
            let took = call.elapsed();
            enqueue.calls += 1;
            enqueue.call_time += took;
            enqueue.worst_call = enqueue.worst_call.max(took);
        }
        enqueue.elapsed = start.elapsed();

        let progress = Progress::new(jobs);
        let spawned = Instant::now();
        let mut handles = Vec::new();
        for w in 0..$workers {
            let worker = WorkerBuilder::new(format!("apalis-bench-{w}"))
                .backend(storage.clone())
                .data(progress.clone())
                .build(noop_job);
            let progress = progress.clone();
            handles.push(tokio::spawn(worker.run_with_ctx(move |ctx: WorkerContext| {
                let progress = progress.clone();
                async move {
                    // `notified()` before the check, so a notification between them is not lost.
                    let notified = progress.all_done.notified();
                    if progress.done.load(Ordering::SeqCst) < progress.target {
                        notified.await;
                    }
                    ctx.stop()
                }
            })));
        }
        let deadline = Duration::from_secs(600);
        for handle in handles {
            tokio::time::timeout(deadline, handle)
                .await
                .map_err(|_| "apalis drain did not finish in 600 s")?
                .map_err(|e| format!("apalis worker task: {e}"))?
                .map_err(|e| format!("apalis worker: {e}"))?;
        }
        let end = Instant::now();
        let first = progress.first_job.lock().expect("not poisoned").ok_or("no job ran")?;
        let done = progress.done.load(Ordering::SeqCst);
        if done != jobs {
            return Err(format!("apalis ran {done} jobs, expected {jobs}").into());
        }
        let drain = Run { ops: jobs, elapsed: end - first, ..Run::default() };
        (storage, ApalisRun { enqueue, drain, drain_from_spawn: end - spawned })
    }};
}

async fn apalis_sqlite_run(jobs: u64, workers: u32, batch: usize) -> BenchResult<ApalisRun> {
    use apalis_sqlite::{Config, SqliteStorage};
    let dir = tempfile::Builder::new().prefix("apalis-queue-bench-").tempdir()?;
    let path = dir.path().join("apalis.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await?;
    SqliteStorage::setup(&pool).await?;
    // `new` names the queue after the job type; keep that, change only the batch size.
    let config = Config::default().queue(std::any::type_name::<u64>()).batch_size(batch);
    let storage = SqliteStorage::<u64>::new(&pool).with_config(config);
    let (_storage, run) = enqueue_and_drain!(storage, jobs, workers);
    let done: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE status = 'Done'").fetch_one(&pool).await?;
    pool.close().await;
    drop(dir);
    if done as u64 != jobs {
        return Err(format!("apalis-sqlite has {done} Done jobs, expected {jobs}").into());
    }
    Ok(run)
}

async fn apalis_postgres_run(url: &str, jobs: u64, workers: u32, batch: usize) -> BenchResult<ApalisRun> {
    use apalis_postgres::PostgresStorage;
    use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
    static RUN: AtomicU32 = AtomicU32::new(0);
    let database = format!("quire_apalis_bench_{}_{}", std::process::id(), RUN.fetch_add(1, Ordering::Relaxed));
    let admin_options = PgConnectOptions::from_str(url)?;
    let mut admin = PgConnection::connect_with(&admin_options).await?;
    // The name is made of digits and `_`: safe to interpolate.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&mut admin).await?;
    let result = async {
        let pool = PgPool::connect_with(admin_options.clone().database(&database)).await?;
        PostgresStorage::setup(&pool).await?;
        let storage = PostgresStorage::<u64>::new(&pool);
        let config = storage.config().clone().batch_size(batch);
        let storage = storage.with_config(config);
        let (_storage, run) = enqueue_and_drain!(storage, jobs, workers);
        let done: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM apalis.jobs WHERE status = 'Done'").fetch_one(&pool).await?;
        pool.close().await;
        if done as u64 != jobs {
            return Err(format!("apalis-postgres has {done} Done jobs, expected {jobs}").into());
        }
        BenchResult::Ok(run)
    }
    .await;
    let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
    if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await {
        eprintln!("warning: could not drop database {database}: {error}");
    }
    let _ = admin.close().await;
    result
}
