//! `quire jobs list` and `quire jobs cancel`, the latter through [`worker::operations::cancel`].

use std::process::ExitCode;

use anyhow::anyhow;
use checkpoint_store::{Cancellation, ErrorKind, Job, JobFilter, JobId, JobKind, JobStatus, StageSchema};
use serde::Serialize;
use stage_machine::Stage;
use worker::operations::{self, OperationError};

use crate::app::App;
use crate::cli::{GlobalOptions, JobsCommand};
use crate::output::{age, excerpt, or_dash, print_json, printable, table};

/// A job as `jobs list --json` shows it. The fields of `status --json`'s jobs, plus more.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Job)]
pub struct JobView {
    #[serde(flatten)]
    pub record: JobRecord,
    /// Attempts used so far.
    pub attempts: u32,
}

/// A job's fields but for its attempts: a list counts them ([`JobView`]), a job's own page
/// (`GET /v1/jobs/{id}`) lists them under the same name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobRecord {
    pub id: i64,
    pub kind: JobKind,
    pub document_id: Option<String>,
    pub status: JobStatus,
    /// Where its checkpoint stands.
    #[schema(value_type = StageSchema)]
    pub stage: Stage,
    pub max_attempts: u32,
    pub last_error: Option<String>,
    pub error_kind: Option<ErrorKind>,
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

impl From<&Job> for JobRecord {
    fn from(job: &Job) -> JobRecord {
        JobRecord {
            id: job.id.0,
            kind: job.kind,
            document_id: job.document_id().map(str::to_owned),
            status: job.status,
            stage: job.checkpoint().processing_stage,
            max_attempts: job.max_attempts,
            last_error: job.last_error.clone(),
            error_kind: job.error_kind,
            lock_owner: job.lock_owner.clone(),
            created_at: job.created_at,
            run_at: job.run_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            cancel_requested_at: job.cancel_requested_at,
        }
    }
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> JobView {
        JobView { record: JobRecord::from(job), attempts: job.attempts }
    }
}

/// Runs a `jobs` subcommand.
pub async fn run(global: &GlobalOptions, command: JobsCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobsCommand::List { status, kind, limit, json } => list(global, status, kind, limit, json).await,
        JobsCommand::Cancel { job_id, json } => cancel(global, JobId(job_id), json).await,
    }
}

/// What `jobs cancel --json` prints and `POST /v1/jobs/{id}/cancel` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CancelReport {
    pub outcome: CancelOutcome,
    /// The job as the cancel left it.
    pub job: JobView,
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The job was pending: it is cancelled.
    Cancelled,
    /// A worker holds the job: it stops it at its next stage boundary, keeping its checkpoint.
    Requested,
}

impl CancelReport {
    /// The report of `cancellation`.
    pub fn new(cancellation: &Cancellation) -> CancelReport {
        match cancellation {
            Cancellation::Cancelled(job) => CancelReport { outcome: CancelOutcome::Cancelled, job: JobView::from(job) },
            Cancellation::Requested(job) => CancelReport { outcome: CancelOutcome::Requested, job: JobView::from(job) },
        }
    }
}

async fn cancel(global: &GlobalOptions, id: JobId, json: bool) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    let cancellation = operations::cancel(app.store.as_ref(), id).await.map_err(|error| match error {
        OperationError::NoSuchJob(id) => anyhow!("no job {id} (see `quire jobs list`)"),
        OperationError::Store(error) => anyhow::Error::new(error).context(format!("cannot cancel job {id}")),
        error => error.into(),
    })?;
    let report = CancelReport::new(&cancellation);
    if json {
        print_json(&report)?;
    } else if report.outcome == CancelOutcome::Cancelled {
        println!("job {id} cancelled. `quire replay {id}` runs it again.");
    } else {
        println!(
            "job {id} is running on {}: it stops at its next stage boundary, keeping its checkpoint, and is then cancelled.",
            printable(report.job.record.lock_owner.as_deref().unwrap_or("?"))
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
