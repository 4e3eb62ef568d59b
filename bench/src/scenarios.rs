//! The measured workloads. Each function takes a fresh store, fills it (untimed) and times one
//! workload on it through the `JobStore` trait only, as a worker would use it.
//!
//! Jobs do no work: the figures are the queue's own cost per job, an upper bound on what a
//! worker pool can get through the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use checkpoint_store::{EnqueueOptions, JobKind, JobStatus, JobStore, Lease, LeaseRequest};
use serde_json::json;
use stage_machine::{Checkpoint, Stage};

use crate::backend::BenchResult;

/// Lease time-to-live: far longer than any run, so no lease expires mid-measurement.
const TTL: Duration = Duration::from_secs(600);

/// The kinds every worker asks for.
const KINDS: &[JobKind] = &[JobKind::ProcessDocument];

/// What one measured run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    /// Units of work done (jobs, heartbeat statements, checkpoint writes).
    pub ops: u64,
    /// Wall-clock time of the timed part.
    pub elapsed: Duration,
    /// Store calls made.
    pub calls: u64,
    /// Sum over all tasks of the time spent inside store calls.
    pub call_time: Duration,
    /// Of `call_time`, the time spent in `lease`.
    pub lease_time: Duration,
    /// The slowest single store call.
    pub worst_call: Duration,
}

impl Run {
    /// Units of work per second of wall-clock time.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// Mean duration of one store call, as seen by the task that made it.
    pub fn mean_call(&self) -> Duration {
        self.call_time / u32::try_from(self.calls.max(1)).unwrap_or(u32::MAX)
    }

    /// Times one store call into this run's tallies.
    fn record(&mut self, started: Instant, is_lease: bool) {
        let took = started.elapsed();
        self.calls += 1;
        self.call_time += took;
        if is_lease {
            self.lease_time += took;
        }
        self.worst_call = self.worst_call.max(took);
    }

    /// Adds another task's tallies (not its ops or elapsed, which the caller owns).
    fn absorb(&mut self, other: &Run) {
        self.calls += other.calls;
        self.call_time += other.call_time;
        self.lease_time += other.lease_time;
        self.worst_call = self.worst_call.max(other.worst_call);
    }
}

/// The payload every job carries, shaped like a real `process_document` job.
fn payload(i: u64) -> serde_json::Value {
    json!({ "document_id": format!("doc-{i:08}") })
}

/// Enqueues `jobs` pending jobs, one statement each. Used untimed to fill a store.
pub async fn prefill(store: &dyn JobStore, jobs: u64) -> BenchResult<()> {
    for i in 0..jobs {
        store.enqueue(JobKind::ProcessDocument, payload(i), EnqueueOptions::default()).await?;
    }
    Ok(())
}

/// Enqueue throughput: `jobs` enqueues, one after another, each its own statement (and, in
/// `SqliteStore`, its own `BEGIN IMMEDIATE` transaction). With `unique_key`, every job carries a
/// distinct deduplication key, which adds the store's lookup of an active job with that key.
pub async fn enqueue(store: &dyn JobStore, jobs: u64, unique_key: bool) -> BenchResult<Run> {
    let mut run = Run { ops: jobs, ..Run::default() };
    let start = Instant::now();
    for i in 0..jobs {
        let options = EnqueueOptions {
            unique_key: unique_key.then(|| format!("process_document:doc-{i:08}")),
            ..EnqueueOptions::default()
        };
        let call = Instant::now();
        store.enqueue(JobKind::ProcessDocument, payload(i), options).await?;
        run.record(call, false);
    }
    run.elapsed = start.elapsed();
    Ok(run)
}

/// Lease + complete throughput: `workers` concurrent tasks each loop `lease(batch)` then
/// `complete` every leased job with its lease, one statement per job (the store has no
/// batch-complete), until a lease comes back empty. The store is filled with `jobs` first.
pub async fn drain(store: Arc<dyn JobStore>, jobs: u64, workers: u32, batch: u32) -> BenchResult<Run> {
    prefill(store.as_ref(), jobs).await?;
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move { drain_worker(store.as_ref(), &format!("bench-worker-{w}"), batch).await })
        })
        .collect();
    let mut run = Run::default();
    for task in tasks {
        let worker = task.await??;
        run.ops += worker.ops;
        run.absorb(&worker);
    }
    run.elapsed = start.elapsed();
    // Every job must have been completed exactly once, or the figure means nothing.
    if run.ops != jobs {
        return Err(format!("completed {} jobs, expected {jobs}", run.ops).into());
    }
    let completed: u64 = store
        .counts()
        .await?
        .iter()
        .filter(|count| count.status == JobStatus::Completed)
        .map(|count| count.count)
        .sum();
    if completed != jobs {
        return Err(format!("store reports {completed} completed jobs, expected {jobs}").into());
    }
    Ok(run)
}

/// One worker's loop. Every job is pending and due from the start, so an empty lease means
/// the queue is drained.
async fn drain_worker(store: &dyn JobStore, owner: &str, batch: u32) -> BenchResult<Run> {
    let mut run = Run::default();
    loop {
        let call = Instant::now();
        let leased = store.lease(LeaseRequest { owner, max_jobs: batch, ttl: TTL, kinds: KINDS }).await?;
        run.record(call, true);
        if leased.is_empty() {
            return Ok(run);
        }
        for job in &leased {
            let lease = job.lease().ok_or("a leased job has no lease")?;
            let call = Instant::now();
            store.complete(lease, None).await?;
            run.record(call, false);
            run.ops += 1;
        }
    }
}

/// Heartbeat cost: one owner holds `leases` jobs (in a store filled with `jobs`) and renews all
/// of them, in one `heartbeat` call, `rounds` times in a row. One op is one heartbeat call.
pub async fn heartbeat(store: &dyn JobStore, jobs: u64, leases: u32, rounds: u32) -> BenchResult<Run> {
    prefill(store, jobs.max(u64::from(leases))).await?;
    let owner = "bench-heartbeat-owner";
    let held: Vec<Lease> = store
        .lease(LeaseRequest { owner, max_jobs: leases, ttl: TTL, kinds: KINDS })
        .await?
        .iter()
        .filter_map(|job| job.lease())
        .collect();
    if held.len() != leases as usize {
        return Err(format!("leased {} jobs, expected {leases}", held.len()).into());
    }
    let mut run = Run { ops: u64::from(rounds), ..Run::default() };
    let start = Instant::now();
    for _ in 0..rounds {
        let call = Instant::now();
        let report = store.heartbeat(owner, &held, TTL).await?;
        run.record(call, false);
        if !report.lost.is_empty() || report.renewed.len() != held.len() {
            return Err(
                format!("heartbeat renewed {} and lost {} leases", report.renewed.len(), report.lost.len()).into()
            );
        }
    }
    run.elapsed = start.elapsed();
    Ok(run)
}

/// Fenced checkpoint writes: `tasks` concurrent tasks each hold `per_task` leased jobs and
/// write `jobs / tasks` checkpoints over them, round-robin. One op is one `save_checkpoint`.
pub async fn checkpoint(store: Arc<dyn JobStore>, jobs: u64, tasks: u32, per_task: u32) -> BenchResult<Run> {
    prefill(store.as_ref(), jobs.max(u64::from(tasks * per_task))).await?;
    let writes_per_task = jobs / u64::from(tasks);
    let mut held = Vec::new();
    for t in 0..tasks {
        let owner = format!("bench-checkpoint-{t}");
        let leased = store.lease(LeaseRequest { owner: &owner, max_jobs: per_task, ttl: TTL, kinds: KINDS }).await?;
        held.push(leased.iter().filter_map(|job| job.lease()).collect::<Vec<_>>());
    }
    let start = Instant::now();
    let workers: Vec<_> = held
        .into_iter()
        .map(|leases| {
            let store = store.clone();
            tokio::spawn(async move { checkpoint_worker(store.as_ref(), &leases, writes_per_task).await })
        })
        .collect();
    let mut run = Run::default();
    for worker in workers {
        let worker = worker.await??;
        run.ops += worker.ops;
        run.absorb(&worker);
    }
    run.elapsed = start.elapsed();
    Ok(run)
}

async fn checkpoint_worker(store: &dyn JobStore, leases: &[Lease], writes: u64) -> BenchResult<Run> {
    let mut run = Run::default();
    let mut checkpoint = embedding_checkpoint();
    for i in 0..writes {
        let lease = leases[(i as usize) % leases.len()];
        // What the embedding stage writes after each batch: the progress counters move.
        checkpoint.facts.embedded_chunks = u32::try_from(i % 412).unwrap_or(0);
        checkpoint.facts.ai_requests = i;
        let call = Instant::now();
        store.save_checkpoint(lease, &checkpoint).await?;
        run.record(call, false);
        run.ops += 1;
    }
    Ok(run)
}

/// A checkpoint of a job part-way through embedding: the size and shape of the checkpoints a
/// worker writes most often.
fn embedding_checkpoint() -> Checkpoint {
    let mut checkpoint = Checkpoint::default();
    let now = 1_750_000_000_000;
    let steps = [
        (Stage::Extracting, Stage::Extracted),
        (Stage::SavingMarkdown, Stage::MarkdownSaved),
        (Stage::Chunking, Stage::Chunked),
    ];
    for (working, milestone) in steps {
        checkpoint.begin(working, now).expect("stages in pipeline order");
        checkpoint.complete(milestone, now).expect("stages in pipeline order");
    }
    checkpoint.begin(Stage::Embedding, now).expect("embedding follows chunked");
    checkpoint.facts.markdown_hash = Some("ab".repeat(32));
    checkpoint.facts.markdown_bytes = Some(812_345);
    checkpoint.facts.chunk_count = Some(412);
    checkpoint
}
