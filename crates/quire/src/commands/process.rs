//! `quire process FILE...`: the one-shot main job. Submits the books, runs a worker in this
//! process until they are done, and prints a summary.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use checkpoint_store::{DocumentStatus, JobFilter, JobKind, JobStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use stage_machine::Stage;
use tokio_util::sync::CancellationToken;
use worker::{Submission, Worker, WorkerConfig};

use crate::app::App;
use crate::cli::{EmbedderOptions, GlobalOptions};
use crate::output::{excerpt, print_json, table};

/// One row of the summary.
#[derive(Debug, Serialize)]
struct Outcome {
    file: String,
    document_id: Option<String>,
    title: Option<String>,
    chunks: u32,
    connections: u64,
    status: String,
    error: Option<String>,
}

/// Where a document stands, as far as `process` is concerned.
struct Progress {
    stage: String,
    /// Steps done out of [`STEPS`].
    step: u64,
    done: bool,
    error: Option<String>,
}

/// Extract, save, chunk, embed, connect.
const STEPS: u64 = 5;

/// How often the bars show a book's stage while no attempt ends.
const PROGRESS_REFRESH: Duration = Duration::from_millis(250);

pub async fn run(
    global: &GlobalOptions,
    files: &[PathBuf],
    embedder_options: &EmbedderOptions,
    json: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    let pipeline = app.pipeline_for(embedder_options)?;
    app.warm_indexes(&pipeline);

    let mut outcomes = Vec::new();
    let mut submitted: Vec<Submission> = Vec::new();
    for file in files {
        match worker::submit_file(app.store.as_ref(), &app.data_dir, file).await {
            Ok(submission) => submitted.push(submission),
            Err(error) => outcomes.push(Outcome {
                file: file.display().to_string(),
                document_id: None,
                title: None,
                chunks: 0,
                connections: 0,
                status: "not submitted".into(),
                error: Some(error.to_string()),
            }),
        }
    }

    let mut config = WorkerConfig::new(format!("process:{}", std::process::id()));
    config.poll_interval = Duration::from_millis(100);
    let worker_stop = CancellationToken::new();
    let worker = Worker::new(app.store.clone(), pipeline.handlers(), config);
    let mut attempts_ended = worker.attempts_ended();
    let worker = tokio::spawn(worker.run(worker_stop.clone()));

    let terminal = std::io::stderr().is_terminal() && !json;
    let bars = MultiProgress::with_draw_target(if terminal {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{prefix:>24} [{bar:20}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut tracked: HashMap<String, (ProgressBar, String)> = HashMap::new();
    for submission in &submitted {
        let bar = bars.add(ProgressBar::new(STEPS));
        bar.set_style(style.clone());
        bar.set_prefix(excerpt(&submission.file_name, 24));
        tracked.insert(submission.document_id.clone(), (bar, String::new()));
    }

    let mut interrupted = false;
    loop {
        let mut all_done = true;
        for submission in &submitted {
            let progress = progress_of(&app, &submission.document_id).await?;
            let (bar, last) = tracked.get_mut(&submission.document_id).expect("tracked above");
            bar.set_position(progress.step);
            bar.set_message(progress.stage.clone());
            if !terminal && !json && *last != progress.stage {
                eprintln!("{}: {}", submission.file_name, progress.stage);
            }
            *last = progress.stage;
            if progress.done {
                bar.finish();
            }
            all_done &= progress.done;
        }
        if all_done {
            break;
        }
        // A book is done when an attempt ends, so that wakes the loop at once; the timer only
        // moves the bars along between attempts.
        tokio::select! {
            _ = attempts_ended.changed() => {}
            () = tokio::time::sleep(PROGRESS_REFRESH) => {}
            () = shutdown.cancelled() => { interrupted = true; break; }
        }
    }
    worker_stop.cancel();
    worker.await??;
    let _ = bars.clear();

    for submission in &submitted {
        let document = app.store.document(&submission.document_id).await?;
        let connections = app.store.connection_count(&submission.document_id).await?;
        let progress = progress_of(&app, &submission.document_id).await?;
        outcomes.push(Outcome {
            file: submission.file_name.clone(),
            document_id: Some(submission.document_id.clone()),
            title: document.as_ref().and_then(|d| d.title.clone()),
            chunks: document.as_ref().map_or(0, |d| d.chunk_count),
            connections,
            status: document.as_ref().map_or_else(|| "missing".into(), |d| d.status.to_string()),
            error: progress.error,
        });
    }
    let all_complete = !interrupted && outcomes.iter().all(|o| o.status == DocumentStatus::Complete.to_string());
    if json {
        print_json(&outcomes)?;
    } else {
        let rows = outcomes.iter().map(|o| {
            [
                excerpt(o.title.as_deref().unwrap_or(&o.file), 40),
                o.chunks.to_string(),
                o.connections.to_string(),
                o.status.clone(),
                excerpt(o.error.as_deref().unwrap_or(""), 70),
            ]
        });
        println!("{}", table(["title", "chunks", "connections", "status", "error"], rows));
    }
    // An interrupted run exits at once; the next process catches up with what it stored.
    if !interrupted {
        app.settle_indexes().await;
    }
    Ok(if all_complete { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn progress_of(app: &App, document_id: &str) -> anyhow::Result<Progress> {
    let Some(document) = app.store.document(document_id).await? else {
        return Ok(Progress {
            stage: "missing".into(),
            step: 0,
            done: true,
            error: Some("document disappeared".into()),
        });
    };
    let filter = JobFilter { document_id: Some(document_id.to_owned()), limit: Some(20), ..Default::default() };
    let jobs = app.store.list_jobs(&filter).await?;
    let process = jobs.iter().find(|j| j.kind == JobKind::ProcessDocument);
    let detect = jobs.iter().find(|j| j.kind == JobKind::DetectConnections);
    let dead = |job: Option<&checkpoint_store::Job>| {
        job.filter(|j| matches!(j.status, JobStatus::Dead | JobStatus::Cancelled))
            .map(|j| j.last_error.clone().unwrap_or_else(|| j.status.to_string()))
    };
    match document.status {
        DocumentStatus::Complete => {
            return Ok(Progress { stage: "complete".into(), step: STEPS, done: true, error: None });
        }
        DocumentStatus::Failed => {
            return Ok(Progress {
                stage: "failed".into(),
                step: 0,
                done: true,
                error: document.error.or_else(|| dead(process)),
            });
        }
        DocumentStatus::Embedded => {
            if let Some(error) = dead(detect) {
                return Ok(Progress {
                    stage: "connections failed".into(),
                    step: STEPS - 1,
                    done: true,
                    error: Some(error),
                });
            }
            return Ok(Progress { stage: "finding connections".into(), step: STEPS - 1, done: false, error: None });
        }
        DocumentStatus::Pending | DocumentStatus::Processing => {}
    }
    if let Some(error) = dead(process) {
        return Ok(Progress { stage: "failed".into(), step: 0, done: true, error: Some(error) });
    }
    let checkpoint = process.map(|j| j.checkpoint()).unwrap_or_default();
    let step = match checkpoint.last_completed() {
        Stage::Pending => 0,
        Stage::Extracted => 1,
        Stage::MarkdownSaved => 2,
        Stage::Chunked => 3,
        _ => 4,
    };
    let stage = match process.map(|j| j.status) {
        Some(JobStatus::Pending) if checkpoint.last_completed() == Stage::Pending => "queued".to_owned(),
        _ => checkpoint.processing_stage.to_string().replace('_', " "),
    };
    Ok(Progress { stage, step, done: false, error: None })
}
