//! `quire clean`: take back processing jobs whose worker is gone.
//!
//! Lists the processing jobs whose lease has expired (and, with `--older-than`, that have also
//! been silent that long), asks, then takes them back through [`worker::operations`], which
//! holds the rule: each job is judged again inside the transaction that takes it back, requeued
//! to resume from its checkpoint, or, out of attempts, dead-lettered with its document marked
//! failed in the same transaction.

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use worker::operations::{self, StaleJob, TakeBackAction, TakenBack};

use crate::app::App;
use crate::cli::GlobalOptions;
use crate::output::{confirm, or_dash, print_json, table};

#[derive(Debug, Serialize)]
struct Report {
    dry_run: bool,
    /// The extra silence asked for with `--older-than`, if any.
    older_than_seconds: Option<u64>,
    stale: Vec<StaleJob>,
    outcomes: Vec<TakenBack>,
}

fn seconds(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

/// Lists stale jobs and, unless `dry_run`, takes them back after confirmation.
pub async fn run(
    global: &GlobalOptions,
    dry_run: bool,
    older_than: Option<Duration>,
    yes: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    let stale = operations::stale_jobs(app.store.as_ref(), older_than, crate::output::now_millis()).await?;
    let mut report = Report {
        dry_run,
        older_than_seconds: older_than.map(|older_than| older_than.as_secs()),
        stale,
        outcomes: Vec::new(),
    };
    let stale = &report.stale;
    if !json {
        if stale.is_empty() {
            match older_than {
                None => println!("no processing job has an expired lease"),
                Some(older_than) => println!(
                    "no processing job has an expired lease and has been silent for {}",
                    humantime::format_duration(older_than)
                ),
            }
        } else {
            let rows = stale.iter().map(|job| {
                [
                    job.id.to_string(),
                    job.kind.to_string(),
                    or_dash(job.document_id.as_deref()),
                    seconds(job.running_for_seconds),
                    seconds(job.silent_for_seconds),
                    format!("{}/{}", job.attempts, job.max_attempts),
                    or_dash(job.owner.as_deref()),
                ]
            });
            println!("{}", table(["job", "kind", "document", "running for", "silent for", "attempts", "owner"], rows));
        }
    }
    if dry_run || stale.is_empty() {
        if dry_run && !json && !stale.is_empty() {
            println!("dry run: nothing changed");
        }
        if json {
            print_json(&report)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let question = format!("Take back {} job(s) (requeue, or dead-letter those out of attempts)?", stale.len());
    if !confirm(&question, yes)? {
        eprintln!("nothing changed");
        return Ok(ExitCode::FAILURE);
    }
    report.outcomes = operations::take_back_stale(app.store.as_ref(), stale, older_than).await?;
    if json {
        print_json(&report)?;
    } else {
        let rows = report.outcomes.iter().map(|outcome| {
            let action = match outcome.action {
                TakeBackAction::Requeued => "requeued (resumes from its checkpoint)",
                TakeBackAction::DeadLettered => "dead-lettered (out of attempts; see `quire dlq list`)",
                TakeBackAction::LeftAlone => "left alone (its lease was renewed or it finished meanwhile)",
            };
            [
                outcome.id.to_string(),
                outcome.kind.to_string(),
                or_dash(outcome.document_id.as_deref()),
                action.to_owned(),
                format!("{}/{}", outcome.attempts, outcome.max_attempts),
            ]
        });
        println!("{}", table(["job", "kind", "document", "action", "attempts"], rows));
    }
    Ok(ExitCode::SUCCESS)
}
