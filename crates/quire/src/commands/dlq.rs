//! `quire dlq list | retry | purge`: the dead-letter queue, through [`worker::operations`].
//!
//! A retried job goes back to pending with a fresh attempt budget and its checkpoint, so it
//! resumes where it stopped; its document goes back to `pending` in the same transaction. A job
//! that cannot come back (another active job holds its unique key) is reported, the others are
//! retried all the same, and the command exits non-zero. Purging deletes jobs for good — the
//! only way a job ever leaves the table — and asks first.

use std::process::ExitCode;

use anyhow::Context;
use checkpoint_store::{Job, JobId};
use serde::Serialize;
use worker::operations::{self, RefusedRetry};

use crate::app::App;
use crate::cli::{DlqCommand, GlobalOptions};
use crate::output::{confirm, excerpt, or_dash, print_json, printable, table, timestamp};

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

/// A job `dlq retry` was asked to bring back.
#[derive(Debug, Serialize)]
struct Retried {
    id: i64,
    kind: String,
    document_id: Option<String>,
    /// `pending` once retried; its unchanged status when refused.
    status: String,
    /// The stage it resumes after.
    stage: String,
    /// Why it was left as it was (another active job holds its unique key, or it is no longer
    /// dead); absent when it was retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
}

impl Retried {
    fn new(job: &Job, refused: Option<String>) -> Retried {
        Retried {
            id: job.id.0,
            kind: job.kind.to_string(),
            document_id: job.document_id().map(str::to_owned),
            status: job.status.to_string(),
            stage: job.checkpoint().last_completed().to_string(),
            refused,
        }
    }

    fn from_refusal(refusal: &RefusedRetry) -> Retried {
        let reason = Some(refusal.reason.to_string());
        match &refusal.job {
            Some(job) => Retried::new(job, reason),
            None => Retried {
                id: refusal.job_id.0,
                kind: String::new(),
                document_id: None,
                status: "gone".to_owned(),
                stage: String::new(),
                refused: reason,
            },
        }
    }
}

/// Runs a `dlq` subcommand.
pub async fn run(global: &GlobalOptions, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    match command {
        DlqCommand::List { json } => {
            let jobs = operations::dead_letters(app.store.as_ref()).await?;
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
            let retries = if all {
                operations::retry_all_dead_letters(app.store.as_ref()).await?
            } else {
                let id = JobId(job_id.context("give a job id or --all")?);
                operations::retry_dead_letters(app.store.as_ref(), &[id]).await?
            };
            let mut shown: Vec<Retried> = retries.retried.iter().map(|job| Retried::new(job, None)).collect();
            shown.extend(retries.refused.iter().map(Retried::from_refusal));
            if json {
                print_json(&shown)?;
            } else if shown.is_empty() {
                println!("the dead-letter queue is empty");
            } else {
                if !retries.retried.is_empty() {
                    let rows = shown.iter().filter(|r| r.refused.is_none()).map(|r| {
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
            for refusal in &retries.refused {
                eprintln!("job {} not retried: {}", refusal.job_id, printable(&refusal.reason.to_string()));
            }
            if !retries.refused.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        DlqCommand::Purge { older_than, yes, json } => {
            let now = crate::output::now_millis();
            let doomed = operations::purgeable_dead_letters(app.store.as_ref(), older_than, now).await?;
            let purged = if doomed == 0 {
                operations::Purged { purged: 0 }
            } else {
                let question = format!("Delete {doomed} dead-lettered job(s) for good?");
                if !confirm(&question, yes)? {
                    eprintln!("nothing changed");
                    return Ok(ExitCode::FAILURE);
                }
                operations::purge_dead_letters(app.store.as_ref(), older_than).await?
            };
            if json {
                print_json(&purged)?;
            } else {
                println!("purged {} dead-lettered job(s)", purged.purged);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
