//! Pick-up latency: how long a job waits between its enqueue and the start of its run by an idle
//! `quire worker`.
//!
//! A real `worker::Worker` (one job at a time, no prefetch, `--poll-ms` as its poll interval)
//! runs a handler that notes when each job started and does nothing else. The bench enqueues one
//! job every `--gap-ms`, noting the time just before the enqueue call; a job's latency runs from
//! there to its handler's start. `--poll-only` gives the worker no job signal (on SQLite its own
//! store on the same file, as a worker in another process has; on PostgreSQL the notifying
//! trigger dropped): the baseline, a worker that only polls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use checkpoint_store::{EnqueueOptions, JobKind};
use clap::Parser;
use serde_json::json;

use crate::backend::{Backend, BenchResult, FreshStore};

/// Pick-up latency of an idle worker, enqueue to lease.
#[derive(Debug, Parser)]
#[command(name = "quire-queue-bench pickup")]
pub struct PickupCli {
    /// Backends, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite")]
    backend: Vec<Backend>,
    /// PostgreSQL server URL (a fresh schema per run).
    #[arg(long, env = "QUIRE_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Jobs per run.
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// Runs per backend; the report gives their medians' median and spread.
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// Milliseconds between two enqueues (the worker is idle when each arrives).
    #[arg(long, default_value_t = 20)]
    gap_ms: u64,
    /// The idle worker's poll interval, in milliseconds (quire's default: 500).
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Ignore the store's job signal: poll only.
    #[arg(long)]
    poll_only: bool,
}

pub async fn main(cli: PickupCli) -> BenchResult<()> {
    let mode = if cli.poll_only { "poll only" } else { "signal + poll" };
    println!(
        "pick-up latency, {mode}: {} jobs per run, one every {} ms, poll {} ms, {} runs",
        cli.jobs, cli.gap_ms, cli.poll_ms, cli.runs
    );
    for &backend in &cli.backend {
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        for _ in 0..cli.runs {
            let fresh = backend.fresh_at(cli.database_url.as_deref()).await?;
            let mut latencies = run(&fresh, &cli).await?;
            fresh.close().await;
            latencies.sort();
            p50s.push(percentile(&latencies, 0.50));
            p99s.push(percentile(&latencies, 0.99));
        }
        p50s.sort();
        p99s.sort();
        let (first, last) = (0, p50s.len() - 1);
        println!(
            "{backend:?}: p50 {:.2?} ({:.2?}–{:.2?}), p99 {:.2?} ({:.2?}–{:.2?})",
            p50s[p50s.len() / 2],
            p50s[first],
            p50s[last],
            p99s[p99s.len() / 2],
            p99s[first],
            p99s[last]
        );
    }
    Ok(())
}

fn percentile(sorted: &[Duration], share: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * share).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Notes when each job's run began, by the index in its payload.
struct NoteStart(Arc<std::sync::Mutex<Vec<Option<Instant>>>>);

#[async_trait::async_trait]
impl worker::JobHandler for NoteStart {
    async fn run(
        &self,
        job: &checkpoint_store::Job,
        _: &worker::JobContext,
    ) -> Result<serde_json::Value, worker::JobError> {
        let started = Instant::now();
        let index = job.payload["i"].as_u64().unwrap_or(u64::MAX) as usize;
        if let Some(slot) = self.0.lock().unwrap().get_mut(index) {
            *slot = Some(started);
        }
        Ok(json!({}))
    }

    fn needs_ai_service(&self) -> bool {
        false
    }
}

async fn run(fresh: &FreshStore, cli: &PickupCli) -> BenchResult<Vec<Duration>> {
    let store = fresh.store.clone();
    let jobs = cli.jobs;
    let started: Arc<std::sync::Mutex<Vec<Option<Instant>>>> = Arc::new(std::sync::Mutex::new(vec![None; jobs]));
    let mut config = worker::WorkerConfig::new("pickup");
    config.concurrency = 1;
    config.prefetch = 0;
    config.poll_interval = Duration::from_millis(cli.poll_ms);
    let handlers = worker::Handlers::new().with(JobKind::ProcessDocument, Arc::new(NoteStart(started.clone())));
    let worker_store = if cli.poll_only { fresh.without_job_signal().await? } else { store.clone() };
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(worker::Worker::new(worker_store, handlers, config).run(stop.clone()));
    let mut enqueued = Vec::with_capacity(jobs);
    for index in 0..jobs {
        tokio::time::sleep(Duration::from_millis(cli.gap_ms)).await;
        enqueued.push(Instant::now());
        store.enqueue(JobKind::ProcessDocument, json!({ "i": index }), EnqueueOptions::default()).await?;
    }
    // Every job started, at the latest a poll after the last enqueue.
    let deadline = Instant::now() + Duration::from_millis(cli.poll_ms) * 4 + Duration::from_secs(10);
    while started.lock().unwrap().iter().any(Option::is_none) {
        if Instant::now() > deadline {
            return Err("some jobs never started".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    worker.await??;
    let started = started.lock().unwrap();
    Ok(enqueued
        .iter()
        .zip(started.iter())
        .map(|(at, start)| start.map_or(Duration::MAX, |start| start - *at))
        .collect())
}
