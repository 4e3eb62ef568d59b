//! `quire replay JOB_ID`: run a job again, through [`worker::operations::replay`].
//!
//! Three ways to choose where it starts:
//!
//! - by default, from its checkpoint: it resumes where it stopped. A completed
//!   `process_document` job has nothing left to resume, so this is refused for it with a hint at
//!   the other two;
//! - `--from-stage S`: `S` and every later stage run again. Embeddings stay cached, so unchanged
//!   text costs no AI request;
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

use anyhow::anyhow;
use checkpoint_store::JobId;
use serde::Serialize;
use stage_machine::Stage;
use tokio_util::sync::CancellationToken;
use worker::operations::{self, OperationError, ReplayFrom};
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

fn replay_from(options: &ReplayOptions) -> anyhow::Result<ReplayFrom> {
    Ok(match (&options.from_stage, options.fresh) {
        (Some(stage), _) => {
            ReplayFrom::Stage(Stage::from_str(stage.trim()).map_err(|_| {
                anyhow!("unknown stage {stage:?}; use one of: {}", operations::replayable_stage_names())
            })?)
        }
        (None, true) => ReplayFrom::Fresh,
        (None, false) => ReplayFrom::Checkpoint,
    })
}

/// The refusal in the command line's own words, naming its flags.
fn explain(error: OperationError) -> anyhow::Error {
    match error {
        OperationError::NoSuchJob(id) => anyhow!("no job {id} (see `quire jobs list`)"),
        OperationError::NoStages { job_id, kind } => {
            anyhow!("job {job_id} is a {kind} job, which has no stages; replay it without --from-stage")
        }
        OperationError::NothingToResume(id) => anyhow!(
            "job {id} has completed every stage, so resuming it would do nothing; use --from-stage STAGE or --fresh"
        ),
        other => other.into(),
    }
}

/// Queues the job again as asked and, with `--inline`, runs it here.
pub async fn run(
    global: &GlobalOptions,
    options: &ReplayOptions,
    embedder_options: &EmbedderOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let from = replay_from(options)?;
    let app = App::open(global).await?;
    let id = JobId(options.job_id);
    let replayed = operations::replay(app.store.as_ref(), id, from).await.map_err(|error| match error {
        OperationError::Store(error) => anyhow::Error::new(error).context(format!("cannot requeue job {id}")),
        error => explain(error),
    })?;
    let job = &replayed.job;
    let resumes_at = replayed.resumes_at;
    tracing::info!(job_id = %id, kind = %job.kind, mode = from.mode(), resumes_at = %resumes_at, "job queued again");
    let mut report = Report {
        job_id: id.0,
        kind: job.kind.to_string(),
        document_id: job.document_id().map(str::to_owned),
        mode: from.mode(),
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

    let result = operations::replay_result(app.store.as_ref(), id).await.map_err(|error| match error {
        OperationError::NoSuchJob(_) => anyhow!("job {id} disappeared"),
        error => error.into(),
    })?;
    report.status = result.job.status.to_string();
    report.detect_job = result
        .detect_connections
        .as_ref()
        .map(|detect| DetectView { id: detect.id.0, status: detect.status.to_string() });
    let ok = result.completed();
    let job = &result.job;
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
