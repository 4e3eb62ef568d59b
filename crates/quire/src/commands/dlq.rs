//! `quire dlq list | retry | purge`: the dead-letter queue.
//!
//! A retried job goes back to pending with a fresh attempt budget and its checkpoint, so it
//! resumes where it stopped; its document goes back to `pending` too. Purging deletes jobs for
//! good — the only way a job ever leaves the table — and asks first.

use std::process::ExitCode;

use anyhow::Context;
use checkpoint_store::{DocumentStatus, Job, JobFilter, JobId, JobKind, JobStatus, Store};
use serde::Serialize;

use crate::app::App;
use crate::cli::{DlqCommand, GlobalOptions};
use crate::output::{confirm, excerpt, or_dash, print_json, table, timestamp};

/// Dead jobs listed at most.
const MAX_LISTED: u32 = 10_000;

/// A dead-lettered job as `dlq list --json` shows it.
#[derive(Debug, Serialize)]
struct DeadView {
    id: i64,
    kind: String,
    document_id: Option<String>,
    attempts: u32,
    max_attempts: u32,
    error_kind: Option<String>,
    last_error: Option<String>,
    /// Unix millis.
    finished_at: Option<i64>,
}

impl From<&Job> for DeadView {
    fn from(job: &Job) -> DeadView {
        DeadView {
            id: job.id.0,
            kind: job.kind.to_string(),
            document_id: job.document_id().map(str::to_owned),
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            error_kind: job.error_kind.map(|k| k.to_string()),
            last_error: job.last_error.clone(),
            finished_at: job.finished_at,
        }
    }
}

/// A retried job.
#[derive(Debug, Serialize)]
struct Retried {
    id: i64,
    kind: String,
    document_id: Option<String>,
    status: String,
    /// The stage it resumes after.
    stage: String,
}

async fn dead_jobs(store: &dyn Store) -> anyhow::Result<Vec<Job>> {
    Ok(store
        .list_jobs(&JobFilter { status: Some(JobStatus::Dead), limit: Some(MAX_LISTED), ..Default::default() })
        .await?)
}

/// Runs a `dlq` subcommand.
pub async fn run(global: &GlobalOptions, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    match command {
        DlqCommand::List { json } => {
            let jobs = dead_jobs(app.store.as_ref()).await?;
            if json {
                print_json(&jobs.iter().map(DeadView::from).collect::<Vec<_>>())?;
            } else if jobs.is_empty() {
                println!("the dead-letter queue is empty");
            } else {
                let rows = jobs.iter().map(|job| {
                    [
                        job.id.to_string(),
                        job.kind.to_string(),
                        or_dash(job.document_id()),
                        format!("{}/{}", job.attempts, job.max_attempts),
                        or_dash(job.error_kind),
                        excerpt(job.last_error.as_deref().unwrap_or(""), 60),
                        job.finished_at.map_or_else(|| "-".into(), timestamp),
                    ]
                });
                println!(
                    "{}",
                    table(["job", "kind", "document", "attempts", "error kind", "last error", "finished"], rows)
                );
            }
        }
        DlqCommand::Retry { job_id, all, json } => {
            let ids: Vec<JobId> = if all {
                dead_jobs(app.store.as_ref()).await?.iter().map(|job| job.id).collect()
            } else {
                vec![JobId(job_id.context("give a job id or --all")?)]
            };
            let mut retried = Vec::new();
            for id in ids {
                let job = app.store.retry_dead(id).await.with_context(|| format!("cannot retry job {id}"))?;
                if job.kind == JobKind::ProcessDocument
                    && let Some(document_id) = job.document_id()
                {
                    app.store.reset_document_status(document_id, DocumentStatus::Pending, None).await?;
                }
                retried.push(Retried {
                    id: job.id.0,
                    kind: job.kind.to_string(),
                    document_id: job.document_id().map(str::to_owned),
                    status: job.status.to_string(),
                    stage: job.checkpoint().last_completed().to_string(),
                });
            }
            if json {
                print_json(&retried)?;
            } else if retried.is_empty() {
                println!("the dead-letter queue is empty");
            } else {
                let rows = retried.iter().map(|r| {
                    [
                        r.id.to_string(),
                        r.kind.clone(),
                        or_dash(r.document_id.as_deref()),
                        r.status.clone(),
                        r.stage.clone(),
                    ]
                });
                println!("{}", table(["job", "kind", "document", "status", "resumes after"], rows));
            }
        }
        DlqCommand::Purge { older_than, yes, json } => {
            let before = crate::output::now_millis() - older_than.as_millis() as i64;
            let doomed = dead_jobs(app.store.as_ref())
                .await?
                .into_iter()
                .filter(|job| job.finished_at.is_some_and(|at| at <= before))
                .count();
            let purged = if doomed == 0 {
                0
            } else {
                let question = format!("Delete {doomed} dead-lettered job(s) for good?");
                if !confirm(&question, yes)? {
                    eprintln!("nothing changed");
                    return Ok(ExitCode::FAILURE);
                }
                app.store.purge_dead(older_than).await?
            };
            if json {
                print_json(&serde_json::json!({ "purged": purged }))?;
            } else {
                println!("purged {purged} dead-lettered job(s)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
