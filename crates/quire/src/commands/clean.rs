//! `quire clean`: take back processing jobs whose worker is gone.
//!
//! Lists the processing jobs whose lease has expired (and, with `--older-than`, that have also
//! been silent that long), asks, then hands them to `take_back_stale`, which checks each one again
//! inside its transaction: a job renewed since the listing stays with its worker. A lease is the
//! worker's own promise of how long it may stay silent, so this never takes back a live job,
//! whatever its `--lease-ttl` and heartbeat interval. Requeued jobs resume from their
//! checkpoint; a job out of attempts is dead-lettered and its document marked failed, as the
//! reaper would, in the same transaction.

use std::process::ExitCode;
use std::time::Duration;

use checkpoint_store::Job;
use serde::Serialize;

use crate::app::App;
use crate::cli::GlobalOptions;
use crate::output::{age, confirm, or_dash, print_json, table};

/// A stale job, as listed.
#[derive(Debug, Serialize)]
struct StaleView {
    id: i64,
    kind: String,
    document_id: Option<String>,
    owner: Option<String>,
    attempts: u32,
    max_attempts: u32,
    stage: String,
    /// Seconds since the attempt was leased.
    running_for_seconds: u64,
    /// Seconds since the last heartbeat.
    silent_for_seconds: u64,
}

/// What was done to one job.
#[derive(Debug, Serialize)]
struct Outcome {
    id: i64,
    kind: String,
    document_id: Option<String>,
    /// `requeued`, `dead_lettered`, or `left_alone` (renewed or finished meanwhile).
    action: String,
    attempts: u32,
    max_attempts: u32,
}

#[derive(Debug, Serialize)]
struct Report {
    dry_run: bool,
    /// The extra silence asked for with `--older-than`, if any.
    older_than_seconds: Option<u64>,
    stale: Vec<StaleView>,
    outcomes: Vec<Outcome>,
}

fn seconds_since(now: i64, since: Option<i64>) -> u64 {
    since.map_or(0, |since| u64::try_from(now - since).unwrap_or(0) / 1000)
}

fn view(job: &Job, now: i64) -> StaleView {
    StaleView {
        id: job.id.0,
        kind: job.kind.to_string(),
        document_id: job.document_id().map(str::to_owned),
        owner: job.lock_owner.clone(),
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        stage: job.checkpoint().processing_stage.to_string(),
        running_for_seconds: seconds_since(now, job.started_at),
        silent_for_seconds: seconds_since(now, job.last_heartbeat.or(job.started_at)),
    }
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
    let jobs = app.store.stale_jobs(older_than).await?;
    let now = crate::output::now_millis();
    let mut report = Report {
        dry_run,
        older_than_seconds: older_than.map(|older_than| older_than.as_secs()),
        stale: jobs.iter().map(|j| view(j, now)).collect(),
        outcomes: Vec::new(),
    };
    if !json {
        if jobs.is_empty() {
            match older_than {
                None => println!("no processing job has an expired lease"),
                Some(older_than) => println!(
                    "no processing job has an expired lease and has been silent for {}",
                    humantime::format_duration(older_than)
                ),
            }
        } else {
            let rows = jobs.iter().map(|job| {
                [
                    job.id.to_string(),
                    job.kind.to_string(),
                    or_dash(job.document_id()),
                    job.started_at.map_or_else(|| "-".into(), age),
                    job.last_heartbeat.or(job.started_at).map_or_else(|| "-".into(), age),
                    format!("{}/{}", job.attempts, job.max_attempts),
                    or_dash(job.lock_owner.as_deref()),
                ]
            });
            println!("{}", table(["job", "kind", "document", "running for", "silent for", "attempts", "owner"], rows));
        }
    }
    if dry_run || jobs.is_empty() {
        if dry_run && !json && !jobs.is_empty() {
            println!("dry run: nothing changed");
        }
        if json {
            print_json(&report)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let question = format!("Take back {} job(s) (requeue, or dead-letter those out of attempts)?", jobs.len());
    if !confirm(&question, yes)? {
        eprintln!("nothing changed");
        return Ok(ExitCode::FAILURE);
    }
    let ids: Vec<_> = jobs.iter().map(|job| job.id).collect();
    // Requeues, or dead-letters and fails the document, each job in one transaction.
    let recoveries = app.store.take_back_stale(&ids, older_than).await?;
    for job in &jobs {
        let recovery = recoveries.iter().find(|r| r.job_id == job.id);
        report.outcomes.push(Outcome {
            id: job.id.0,
            kind: job.kind.to_string(),
            document_id: job.document_id().map(str::to_owned),
            action: recovery.map_or_else(|| "left_alone".to_owned(), |r| r.action.to_string()),
            attempts: recovery.map_or(job.attempts, |r| r.attempts),
            max_attempts: recovery.map_or(job.max_attempts, |r| r.max_attempts),
        });
    }
    if json {
        print_json(&report)?;
    } else {
        let rows = report.outcomes.iter().map(|o| {
            let action = match o.action.as_str() {
                "requeued" => "requeued (resumes from its checkpoint)",
                "dead_lettered" => "dead-lettered (out of attempts; see `quire dlq list`)",
                _ => "left alone (its lease was renewed or it finished meanwhile)",
            };
            [
                o.id.to_string(),
                o.kind.clone(),
                or_dash(o.document_id.as_deref()),
                action.to_owned(),
                format!("{}/{}", o.attempts, o.max_attempts),
            ]
        });
        println!("{}", table(["job", "kind", "document", "action", "attempts"], rows));
    }
    Ok(ExitCode::SUCCESS)
}
