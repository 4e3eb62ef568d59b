//! `quire-queue-bench`: throughput of quire's job queue (`checkpoint_store::JobStore`).
//!
//! Measures, each on a fresh database:
//! - enqueue: one enqueue per statement, sequential;
//! - lease + complete ("drain"): `--workers` tasks lease `--batch` jobs at a time and complete
//!   each with its own statement until the queue is empty (filling the queue is not timed);
//! - heartbeat: one owner renewing `--leases` leases in one call, `--rounds` times;
//! - fenced checkpoint writes (`save_checkpoint`) from `--workers` tasks.
//!
//! Every configuration runs `--runs` times; runs are interleaved across configurations (run 1
//! of each, then run 2 of each, …) so that a burst of background load spreads over
//! configurations instead of spoiling every run of one. The report is a markdown table of the
//! median and the min–max over runs.
//!
//! ```text
//! CARGO_TARGET_DIR=target cargo run --release --manifest-path bench/Cargo.toml -- --all
//! ```
//!
//! `quire-queue-bench apalis …` runs the apalis comparison instead (see `apalis.rs`; `apalis
//! --help` for its options).

mod apalis;
mod backend;
mod pickup;
mod report;
mod scenarios;

use std::time::Instant;

use clap::{Parser, ValueEnum};

use crate::backend::{Backend, BenchResult};
use crate::report::Row;
use crate::scenarios::Run;

/// Queue throughput benchmark for quire's job store.
#[derive(Debug, Parser)]
#[command(name = "quire-queue-bench")]
struct Cli {
    /// The store implementations to measure, comma-separated (`sqlite,postgres`): with several,
    /// runs are interleaved across backends too and one table is printed per backend.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite")]
    backend: Vec<Backend>,
    /// The PostgreSQL database for `--backend postgres` (each run gets a schema of its own,
    /// dropped after it), e.g. `postgres://postgres@127.0.0.1:5432/test` or, over the Unix
    /// socket, `postgres://postgres@%2Fvar%2Frun%2Fpostgresql/test`.
    #[arg(long, env = "QUIRE_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Jobs per run (enqueued, drained, or checkpoint writes).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: u64,
    /// Runs of each configuration; the report gives their median and spread.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Run the whole matrix: enqueue (plain and with unique keys), drain with batch 1 and 32
    /// and 1, 4 and 16 workers, heartbeat, and checkpoint writes with 4 tasks.
    #[arg(long, conflicts_with_all = ["scenario", "workers", "batch"])]
    all: bool,
    /// One scenario to run instead of the matrix.
    #[arg(long, value_enum, default_value_t = Scenario::Drain)]
    scenario: Scenario,
    /// Concurrent tasks for drain (default 1) and checkpoint (default 4).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    workers: Option<u32>,
    /// Jobs per lease for drain.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Leases renewed by each heartbeat call.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    leases: u32,
    /// Heartbeat calls per run.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// The baseline of the attempt history's cost: drop the trigger that records each ended
    /// attempt (migration 0012) from every fresh store before the run.
    #[arg(long)]
    without_attempt_history: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Sequential enqueues without a unique key.
    Enqueue,
    /// Sequential enqueues, each with a distinct unique key.
    EnqueueUnique,
    /// Lease + complete until the queue is empty.
    Drain,
    /// Renew `--leases` leases in one call, `--rounds` times.
    Heartbeat,
    /// Fenced checkpoint writes from `--workers` tasks.
    Checkpoint,
}

/// One configuration of the matrix.
#[derive(Debug, Clone, Copy)]
struct Config {
    scenario: Scenario,
    workers: u32,
    batch: u32,
}

impl Config {
    fn new(scenario: Scenario, workers: u32, batch: u32) -> Config {
        Config { scenario, workers, batch }
    }
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    if std::env::args().nth(1).as_deref() == Some("apalis") {
        return apalis::main(apalis::ApalisCli::parse_from(std::env::args().skip(1))).await;
    }
    if std::env::args().nth(1).as_deref() == Some("pickup") {
        return pickup::main(pickup::PickupCli::parse_from(std::env::args().skip(1))).await;
    }
    let cli = Cli::parse();
    let configs = if cli.all {
        let mut configs = vec![Config::new(Scenario::Enqueue, 1, 1), Config::new(Scenario::EnqueueUnique, 1, 1)];
        for batch in [1, 32] {
            for workers in [1, 4, 16] {
                configs.push(Config::new(Scenario::Drain, workers, batch));
            }
        }
        configs.push(Config::new(Scenario::Heartbeat, 1, cli.leases));
        configs.push(Config::new(Scenario::Checkpoint, 4, 1));
        configs
    } else {
        let workers = cli.workers.unwrap_or(match cli.scenario {
            Scenario::Checkpoint => 4,
            _ => 1,
        });
        let batch = if cli.scenario == Scenario::Heartbeat { cli.leases } else { cli.batch };
        vec![Config::new(cli.scenario, workers, batch)]
    };

    let load_before = report::load_average();
    let started = Instant::now();
    let mut results: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); configs.len()]; cli.backend.len()];
    for round in 1..=cli.runs {
        for (c, config) in configs.iter().enumerate() {
            for (b, backend) in cli.backend.iter().enumerate() {
                let run = measure(&cli, *backend, *config).await?;
                eprintln!(
                    "run {round}/{}: {backend:?} {:?} workers={} batch={}: {:.0}/s",
                    cli.runs,
                    config.scenario,
                    config.workers,
                    config.batch,
                    run.rate()
                );
                results[b][c].push(run);
            }
        }
    }
    let load_after = report::load_average();

    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    println!("Command: `quire-queue-bench {command}` ({} jobs, {} runs each)", cli.jobs, cli.runs);
    println!("Load average (1, 5, 15 min): before {load_before}, after {load_after}; total {:.0?}", started.elapsed());
    for (backend, runs) in cli.backend.iter().zip(results) {
        let rows: Vec<Row> = configs.iter().zip(runs).map(|(config, runs)| row(&cli, *config, runs)).collect();
        println!();
        println!("Backend {backend:?}:");
        println!();
        print!("{}", report::table(&rows));
    }
    Ok(())
}

/// Runs one configuration once, on a fresh store.
async fn measure(cli: &Cli, backend: Backend, config: Config) -> BenchResult<Run> {
    let fresh = match cli.database_url.as_deref() {
        Some(url) => backend.fresh_at(Some(url)).await?,
        None => backend.fresh().await?,
    };
    if cli.without_attempt_history {
        fresh.drop_attempt_history().await?;
    }
    let store = fresh.store.clone();
    let run = match config.scenario {
        Scenario::Enqueue => scenarios::enqueue(store.as_ref(), cli.jobs, false).await,
        Scenario::EnqueueUnique => scenarios::enqueue(store.as_ref(), cli.jobs, true).await,
        Scenario::Drain => scenarios::drain(store, cli.jobs, config.workers, config.batch).await,
        Scenario::Heartbeat => scenarios::heartbeat(store.as_ref(), cli.jobs, cli.leases, cli.rounds).await,
        // 25 leases per task: 100 jobs in flight with 4 tasks, like the heartbeat scenario.
        Scenario::Checkpoint => scenarios::checkpoint(store, cli.jobs, config.workers, 25).await,
    };
    fresh.close().await;
    run
}

/// The report row of one configuration.
fn row(cli: &Cli, config: Config, runs: Vec<Run>) -> Row {
    let (name, unit, workers, batch) = match config.scenario {
        Scenario::Enqueue => ("enqueue".to_owned(), "jobs/s", "1".to_owned(), "1".to_owned()),
        Scenario::EnqueueUnique => ("enqueue, unique key".to_owned(), "jobs/s", "1".to_owned(), "1".to_owned()),
        Scenario::Drain => {
            ("lease + complete each".to_owned(), "jobs/s", config.workers.to_string(), config.batch.to_string())
        }
        Scenario::Heartbeat => (
            format!("heartbeat, {} leases, ×{}", cli.leases, cli.rounds),
            "calls/s",
            "1".to_owned(),
            cli.leases.to_string(),
        ),
        Scenario::Checkpoint => ("save_checkpoint".to_owned(), "writes/s", config.workers.to_string(), "–".to_owned()),
    };
    Row { name, unit, workers, batch, show_lease_share: config.scenario == Scenario::Drain, runs }
}
