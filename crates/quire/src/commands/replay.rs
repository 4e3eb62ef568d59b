//! `quire replay JOB_ID`: run a job again.
//!
//! Three ways to choose where it starts:
//!
//! - by default, from its checkpoint (`requeue_with_checkpoint(id, &job.checkpoint())`): it
//!   resumes where it stopped. A completed `process_document` job has nothing left to resume,
//!   so this is refused for it with a hint at the other two;
//! - `--from-stage S`: the checkpoint is rewound with [`Checkpoint::rewind_to`] so that `S` and
//!   every later stage run again. Embeddings stay cached, so unchanged text costs no AI request;
//! - `--fresh`: an empty checkpoint; everything runs again and the chunks are replaced (the
//!   embedding cache is still used).
//!
//! A replayed `process_document` job's document goes back to `pending`, in the transaction that
//! requeues the job. While another active job holds the job's unique key (the book was
//! submitted again), the replay is refused with the store's reason and nothing changes.
//!
//! With `--inline` the job is not left to the workers: this process runs a worker (concurrency
//! 1, `exit_when_idle`, debug logs) until the queue is empty. A job cannot be leased by id, so
//! that worker also runs whatever else is queued; when it stops, the replayed job and the
//! connection detection it queued are done (or dead). The command exits non-zero unless both
//! completed.

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use checkpoint_store::{JobFilter, JobId, JobKind, JobStatus};
use serde::Serialize;
use stage_machine::{Checkpoint, Stage};
use tokio_util::sync::CancellationToken;
use worker::{Worker, WorkerConfig};

use crate::app::App;
use crate::cli::{EmbedderOptions, GlobalOptions};
use crate::output::print_json;

/// What `replay` was asked.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The job.
    pub job_id: i64,
    /// Rewind to this stage.
    pub from_stage: Option<String>,
    /// Start from an empty checkpoint.
    pub fresh: bool,
    /// Run it here and now.
    pub inline: bool,
    /// Print JSON.
    pub json: bool,
}

/// The stages `--from-stage` accepts.
const REPLAYABLE: [Stage; 8] = [
    Stage::Extracting,
    Stage::Extracted,
    Stage::SavingMarkdown,
    Stage::MarkdownSaved,
    Stage::Chunking,
    Stage::Chunked,
    Stage::Embedding,
    Stage::Embedded,
];

/// What `replay --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    job_id: i64,
    kind: String,
    document_id: Option<String>,
    /// `checkpoint`, `from_stage`, or `fresh`.
    mode: &'static str,
    /// The stage the job resumes at.
    resumes_at: String,
    /// The job's status after the command (`pending` unless `--inline`).
    status: String,
    /// With `--inline`: the connection-detection job the replay led to, if any.
    detect_job: Option<DetectView>,
    /// With `--inline`: the work this process did.
    work: Option<Work>,
}

#[derive(Debug, Serialize)]
struct DetectView {
    id: i64,
    status: String,
}

/// Counters of the in-process pipeline, for `--inline`.
#[derive(Debug, Serialize)]
struct Work {
    ai_requests: u64,
    embedding_cache_hits: u64,
    extractions: u64,
    chunkings: u64,
    detections: u64,
}

fn parse_stage(text: &str) -> anyhow::Result<Stage> {
    let names = || REPLAYABLE.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
    let stage =
        Stage::from_str(text.trim()).map_err(|_| anyhow::anyhow!("unknown stage {text:?}; use one of: {}", names()))?;
    if !REPLAYABLE.contains(&stage) {
        bail!("cannot replay from {stage}; use one of: {}", names());
    }
    Ok(stage)
}

/// Queues the job again as asked and, with `--inline`, runs it here.
pub async fn run(
    global: &GlobalOptions,
    options: &ReplayOptions,
    embedder_options: &EmbedderOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    let id = JobId(options.job_id);
    let job = app.store.job(id).await?.with_context(|| format!("no job {id} (see `quire jobs list`)"))?;
    if job.status == JobStatus::Processing {
        bail!("job {id} is processing; wait for it, or take it back with `quire clean` if its worker is gone");
    }
    let (mode, checkpoint) = match (&options.from_stage, options.fresh) {
        (Some(stage), _) => {
            if job.kind != JobKind::ProcessDocument {
                bail!("job {id} is a {} job, which has no stages; replay it without --from-stage", job.kind);
            }
            let mut checkpoint = job.checkpoint();
            checkpoint.rewind_to(parse_stage(stage)?);
            ("from_stage", checkpoint)
        }
        (None, true) => ("fresh", Checkpoint::default()),
        (None, false) => {
            let checkpoint = job.checkpoint();
            if job.kind == JobKind::ProcessDocument && checkpoint.resume_stage() == Stage::Complete {
                bail!(
                    "job {id} has completed every stage, so resuming it would do nothing; use --from-stage STAGE or --fresh"
                );
            }
            ("checkpoint", checkpoint)
        }
    };
    let resumes_at = checkpoint.resume_stage();
    // The job and its document go back to pending in one transaction.
    let job =
        app.store.requeue_with_checkpoint(id, &checkpoint).await.with_context(|| format!("cannot requeue job {id}"))?;
    let document_id = job.document_id().map(str::to_owned);
    tracing::info!(job_id = %id, kind = %job.kind, mode, resumes_at = %resumes_at, "job queued again");
    let mut report = Report {
        job_id: id.0,
        kind: job.kind.to_string(),
        document_id: document_id.clone(),
        mode,
        resumes_at: resumes_at.to_string(),
        status: job.status.to_string(),
        detect_job: None,
        work: None,
    };
    if !options.inline {
        if options.json {
            print_json(&report)?;
        } else {
            println!(
                "job {id} queued again; it resumes at {resumes_at}. Run `quire worker` to process it (or replay with --inline)."
            );
        }
        return Ok(ExitCode::SUCCESS);
    }

    let pipeline = app.pipeline_for(embedder_options)?;
    let mut config = WorkerConfig::new(format!("replay:{}", std::process::id()));
    config.concurrency = 1;
    config.exit_when_idle = true;
    config.poll_interval = Duration::from_millis(100);
    tracing::info!(model = %pipeline.embedder.model(), "running the queue in this process until it is empty");
    Worker::new(app.store.clone(), pipeline.handlers(), config).run(shutdown).await?;

    let job = app.store.job(id).await?.with_context(|| format!("job {id} disappeared"))?;
    report.status = job.status.to_string();
    let mut ok = job.status == JobStatus::Completed;
    if let (JobKind::ProcessDocument, Some(document_id)) = (job.kind, &document_id) {
        let filter = JobFilter {
            kind: Some(JobKind::DetectConnections),
            document_id: Some(document_id.clone()),
            limit: Some(1),
            ..Default::default()
        };
        if let Some(detect) = app.store.list_jobs(&filter).await?.into_iter().next() {
            ok &= detect.status == JobStatus::Completed;
            report.detect_job = Some(DetectView { id: detect.id.0, status: detect.status.to_string() });
        }
    }
    let stats = &pipeline.stats;
    let work = Work {
        ai_requests: stats.embedding_requests.load(Ordering::Relaxed),
        embedding_cache_hits: stats.embedding_cache_hits.load(Ordering::Relaxed),
        extractions: stats.extractions.load(Ordering::Relaxed),
        chunkings: stats.chunkings.load(Ordering::Relaxed),
        detections: stats.detections.load(Ordering::Relaxed),
    };
    if options.json {
        report.work = Some(work);
        print_json(&report)?;
    } else {
        println!("job {id}: {}", report.status);
        if let Some(detect) = &report.detect_job {
            println!("connection detection (job {}): {}", detect.id, detect.status);
        }
        println!(
            "work done here: {} AI request(s), {} embedding(s) from the cache, {} extraction(s), {} chunking(s)",
            work.ai_requests, work.embedding_cache_hits, work.extractions, work.chunkings
        );
        if let Some(error) = job.last_error.as_deref().filter(|_| !ok) {
            println!("last error: {}", crate::output::printable(error));
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
