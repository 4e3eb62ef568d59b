//! `quire jobs list` and `quire jobs cancel`, the latter through [`worker::operations::cancel`].

use std::process::ExitCode;

use anyhow::anyhow;
use checkpoint_store::{Cancellation, Job, JobFilter, JobId, JobKind, JobStatus};
use serde::Serialize;
use worker::operations::{self, OperationError};

use crate::app::App;
use crate::cli::{GlobalOptions, JobsCommand};
use crate::output::{age, excerpt, or_dash, print_json, printable, table};

/// A job as `jobs list --json` shows it. The fields of `status --json`'s jobs, plus more.
#[derive(Debug, Serialize)]
pub struct JobView {
    pub id: i64,
    pub kind: String,
    pub document_id: Option<String>,
    pub status: String,
    pub stage: String,
    pub attempts: u32,
    pub max_attempts: u32,
    pub last_error: Option<String>,
    pub error_kind: Option<String>,
    pub lock_owner: Option<String>,
    /// Unix millis.
    pub created_at: i64,
    /// Unix millis: not leased before.
    pub run_at: i64,
    /// Unix millis, while or since the last attempt ran.
    pub started_at: Option<i64>,
    /// Unix millis, once terminal.
    pub finished_at: Option<i64>,
    /// Unix millis, when an operator asked to cancel the job while a worker held it.
    pub cancel_requested_at: Option<i64>,
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> JobView {
        JobView {
            id: job.id.0,
            kind: job.kind.to_string(),
            document_id: job.document_id().map(str::to_owned),
            status: job.status.to_string(),
            stage: job.checkpoint().processing_stage.to_string(),
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            last_error: job.last_error.clone(),
            error_kind: job.error_kind.map(|k| k.to_string()),
            lock_owner: job.lock_owner.clone(),
            created_at: job.created_at,
            run_at: job.run_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            cancel_requested_at: job.cancel_requested_at,
        }
    }
}

/// Runs a `jobs` subcommand.
pub async fn run(global: &GlobalOptions, command: JobsCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobsCommand::List { status, kind, limit, json } => list(global, status, kind, limit, json).await,
        JobsCommand::Cancel { job_id, json } => cancel(global, JobId(job_id), json).await,
    }
}

/// What `jobs cancel --json` prints.
#[derive(Debug, Serialize)]
struct CancelReport {
    /// `cancelled` (it was pending) or `requested` (its worker stops it at its next stage
    /// boundary).
    outcome: &'static str,
    job: JobView,
}

async fn cancel(global: &GlobalOptions, id: JobId, json: bool) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    let cancellation = operations::cancel(app.store.as_ref(), id).await.map_err(|error| match error {
        OperationError::NoSuchJob(id) => anyhow!("no job {id} (see `quire jobs list`)"),
        OperationError::Store(error) => anyhow::Error::new(error).context(format!("cannot cancel job {id}")),
        error => error.into(),
    })?;
    let (outcome, job) = match &cancellation {
        Cancellation::Cancelled(job) => ("cancelled", job),
        Cancellation::Requested(job) => ("requested", job),
    };
    if json {
        print_json(&CancelReport { outcome, job: JobView::from(job) })?;
    } else if outcome == "cancelled" {
        println!("job {id} cancelled. `quire replay {id}` runs it again.");
    } else {
        println!(
            "job {id} is running on {}: it stops at its next stage boundary, keeping its checkpoint, and is then cancelled.",
            printable(job.lock_owner.as_deref().unwrap_or("?"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(
    global: &GlobalOptions,
    status: Option<JobStatus>,
    kind: Option<JobKind>,
    limit: u32,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    let filter = JobFilter { status, kind, limit: Some(limit), ..Default::default() };
    let jobs = app.store.list_jobs(&filter).await?;
    if json {
        print_json(&jobs.iter().map(JobView::from).collect::<Vec<_>>())?;
        return Ok(ExitCode::SUCCESS);
    }
    if jobs.is_empty() {
        println!("no jobs match");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = jobs.iter().map(|job| {
        [
            job.id.to_string(),
            job.kind.to_string(),
            or_dash(job.document_id()),
            match job.cancel_requested_at {
                // Still processing: its worker stops it at the next stage boundary.
                Some(_) => format!("{} (cancel asked)", job.status),
                None => job.status.to_string(),
            },
            job.checkpoint().processing_stage.to_string(),
            format!("{}/{}", job.attempts, job.max_attempts),
            age(job.created_at),
            or_dash(job.lock_owner.as_deref()),
            excerpt(job.last_error.as_deref().unwrap_or(""), 50),
        ]
    });
    println!(
        "{}",
        table(["job", "kind", "document", "status", "stage", "attempts", "age", "owner", "last error"], rows)
    );
    Ok(ExitCode::SUCCESS)
}
