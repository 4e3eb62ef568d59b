//! `quire-pipeline-bench recovery`: from a SIGKILL of the worker holding a job to that job
//! being leased again by another worker.
//!
//! Each kill, on a fresh data directory: submit one book; start worker A with a failpoint that
//! stalls the job right after its `chunked` checkpoint; poll the database every `--poll-ms`
//! until the checkpoint shows `chunked`; SIGKILL A (T0, taken just before the signal); start
//! worker B at once; poll until the job is `processing` under B's name (T1). Latency is
//! T1 − T0. B's own start-up is inside the latency, as it would be for a supervisor that
//! restarts a crashed worker; a second worker already running would only save that start-up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use checkpoint_store::{JobKind, JobStatus, SqliteStore};
use stage_machine::Stage;

use crate::stats::{Spread, ms};
use crate::{BenchResult, store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A `quire` binary built with `--features failpoints` (test-only).
    #[arg(long, default_value = "target/release/quire")]
    quire: PathBuf,
    /// The book to submit (default: the smallest-text book of the corpus that is a real novel,
    /// Dr Jekyll and Mr Hyde, so that each kill reaches `chunked` quickly).
    #[arg(
        long,
        default_value = "../shared/corpus/valid/standardebooks_robert-louis-stevenson_the-strange-case-of-dr-jekyll-and-mr-hyde.epub"
    )]
    book: PathBuf,
    /// Kills to measure.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    kills: u32,
    #[arg(long, default_value = "2s")]
    lease_ttl: String,
    #[arg(long, default_value = "500ms")]
    heartbeat_interval: String,
    #[arg(long, default_value = "250ms")]
    reaper_interval: String,
    /// Passed to both workers when set (the worker's default is 500ms).
    #[arg(long)]
    poll_interval: Option<String>,
    /// FAILPOINTS of worker A.
    #[arg(long, default_value = "after_checkpoint_chunked=sleep(60000)")]
    failpoint: String,
    /// Give worker B the failpoint too (it resumes at embedding, so it is not hit).
    #[arg(long)]
    failpoint_in_second: bool,
    /// How often the database is polled, in milliseconds.
    #[arg(long, default_value_t = 10)]
    poll_ms: u64,
    /// Wait a pseudo-random 0..=this many milliseconds between seeing `chunked` and the kill,
    /// so that kills land at every phase of the heartbeat (0: kill at once).
    #[arg(long, default_value_t = 0)]
    kill_delay_max_ms: u64,
}

/// A pseudo-random number in 0..=max from the clock's nanoseconds; good enough to spread kills.
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64);
    nanos.wrapping_mul(6_364_136_223_846_793_005).rotate_right(17) % (max + 1)
}

/// One kill.
struct Kill {
    /// T1 − T0.
    latency: Duration,
    /// The lease's expiry (`lock_until`) − T0, from the last row read before the kill.
    expiry_after_kill: f64,
    /// T0 → the job first seen `pending` again (requeued by B's reaper), if seen.
    requeued_after: Option<Duration>,
    /// B's new `started_at` − the old lease's expiry, from the database's own timestamps.
    leased_after_expiry: f64,
}

const DEADLINE: Duration = Duration::from_secs(120);

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub async fn run(args: Args) -> BenchResult<()> {
    if !args.book.is_file() {
        println!("NOTICE: book {} is absent; the recovery benchmark is skipped.", args.book.display());
        return Ok(());
    }
    let quire = std::fs::canonicalize(&args.quire).map_err(|e| format!("{}: {e}", args.quire.display()))?;
    let mut kills = Vec::new();
    for i in 1..=args.kills {
        let kill = one_kill(&args, &quire, i).await?;
        eprintln!(
            "kill {i}/{}: latency {:.0?}; lease expired {:.0} ms after the kill; requeued after {:?}; leased {:.0} ms after expiry",
            args.kills, kill.latency, kill.expiry_after_kill, kill.requeued_after, kill.leased_after_expiry
        );
        kills.push(kill);
    }
    let latency = Spread::of(kills.iter().map(|k| k.latency.as_secs_f64() * 1000.0)).expect("at least one kill");
    let expiry = Spread::of(kills.iter().map(|k| k.expiry_after_kill)).expect("at least one kill");
    let requeued = Spread::of(kills.iter().filter_map(|k| k.requeued_after).map(|d| d.as_secs_f64() * 1000.0));
    let after = Spread::of(kills.iter().map(|k| k.leased_after_expiry)).expect("at least one kill");
    let range = |s: Spread| format!("{} ({}–{})", ms(s.median), ms(s.min), ms(s.max));
    println!(
        "Settings: --lease-ttl {} --heartbeat-interval {} --reaper-interval {} --poll-interval {} --concurrency 1 --metrics-addr off; \
         worker A FAILPOINTS={}; worker B {}; database polled every {} ms; kill delay after `chunked` 0–{} ms; book {}",
        args.lease_ttl,
        args.heartbeat_interval,
        args.reaper_interval,
        args.poll_interval.as_deref().unwrap_or("500ms (default)"),
        args.failpoint,
        if args.failpoint_in_second { "with the same failpoint" } else { "without failpoints" },
        args.poll_ms,
        args.kill_delay_max_ms,
        args.book.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    );
    println!();
    println!("| {} kills | median | min | worst |", kills.len());
    println!("|---|---:|---:|---:|");
    println!(
        "| **SIGKILL → leased again (T1 − T0)** | **{}** | {} | **{}** |",
        ms(latency.median),
        ms(latency.min),
        ms(latency.max)
    );
    println!(
        "| lease expiry − T0 (TTL left after the last heartbeat) | {} | {} | {} |",
        ms(expiry.median),
        ms(expiry.min),
        ms(expiry.max)
    );
    if let Some(requeued) = requeued {
        println!(
            "| T0 → seen `pending` again (reaped; {} of {} seen) | {} | {} | {} |",
            requeued.n,
            kills.len(),
            ms(requeued.median),
            ms(requeued.min),
            ms(requeued.max)
        );
    }
    println!(
        "| new `started_at` − old lease expiry (database clock) | {} | {} | {} |",
        ms(after.median),
        ms(after.min),
        ms(after.max)
    );
    eprintln!("latency {}", range(latency));
    Ok(())
}

/// A worker process, SIGKILLed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(
    args: &Args,
    quire: &Path,
    data_dir: &Path,
    name: &str,
    failpoints: Option<&str>,
    log: &Path,
) -> BenchResult<Worker> {
    let mut command = Command::new(quire);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["worker", "--name", name, "--concurrency", "1", "--metrics-addr", "off", "--embedder", "local"])
        .args([
            "--lease-ttl",
            &args.lease_ttl,
            "--heartbeat-interval",
            &args.heartbeat_interval,
            "--reaper-interval",
            &args.reaper_interval,
        ]);
    if let Some(poll) = &args.poll_interval {
        command.args(["--poll-interval", poll]);
    }
    command
        .env("RUST_LOG", "info")
        .env_remove("FAILPOINTS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?);
    if let Some(failpoints) = failpoints {
        command.env("FAILPOINTS", failpoints);
    }
    Ok(Worker(command.spawn()?))
}

async fn one_kill(args: &Args, quire: &Path, i: u32) -> BenchResult<Kill> {
    let dir = tempfile::Builder::new().prefix("quire-recovery-bench-").tempdir()?;
    let data_dir = dir.path().join("data");
    let submit = Command::new(quire)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["submit", "--json"])
        .arg(&args.book)
        .env_remove("FAILPOINTS")
        .output()?;
    if !submit.status.success() {
        return Err(format!("quire submit failed: {}", String::from_utf8_lossy(&submit.stderr)).into());
    }
    let store = store::open(&data_dir).await?;
    let (log_a, log_b) = (dir.path().join("worker-a.log"), dir.path().join("worker-b.log"));
    let (name_a, name_b) = (format!("bench-a-{i}"), format!("bench-b-{i}"));
    let mut a = worker(args, quire, &data_dir, &name_a, Some(&args.failpoint), &log_a)?;
    let poll = Duration::from_millis(args.poll_ms);

    // Until the checkpoint shows `chunked` under A's lease.
    let deadline = Instant::now() + DEADLINE;
    let before = loop {
        let job = store::newest(&store, JobKind::ProcessDocument).await?.ok_or("no process_document job")?;
        if job.status == JobStatus::Processing && job.checkpoint().has_completed(Stage::Chunked) {
            break job;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "kill {i}: the job never reached chunked; worker A log:\n{}",
                crate::child::tail(&log_a, 30)
            )
            .into());
        }
        tokio::time::sleep(poll).await;
    };
    tokio::time::sleep(Duration::from_millis(jitter(args.kill_delay_max_ms))).await;
    // The lease as of just before the kill (a heartbeat may have renewed it since `before`).
    let last = store::newest(&store, JobKind::ProcessDocument).await?.unwrap_or(before);
    if last.lock_owner.as_deref() != Some(name_a.as_str()) {
        return Err(format!("kill {i}: the job is not held by worker A before the kill: {:?}", last.lock_owner).into());
    }
    let t0 = Instant::now();
    let t0_unix = unix_ms();
    a.0.kill()?;
    let _ = a.0.wait();
    let _b =
        worker(args, quire, &data_dir, &name_b, args.failpoint_in_second.then_some(args.failpoint.as_str()), &log_b)?;

    let mut requeued_after = None;
    let deadline = Instant::now() + DEADLINE;
    let leased = loop {
        let job = store::newest(&store, JobKind::ProcessDocument).await?.ok_or("no process_document job")?;
        if requeued_after.is_none() && job.status == JobStatus::Pending {
            requeued_after = Some(t0.elapsed());
        }
        if job.lock_owner.as_deref() == Some(name_b.as_str()) && job.lease_token != last.lease_token {
            break job;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "kill {i}: worker B never leased the job; its log:\n{}",
                crate::child::tail(&log_b, 30)
            )
            .into());
        }
        tokio::time::sleep(poll).await;
    };
    let latency = t0.elapsed();
    close(store).await;
    let expiry = last.lock_until.unwrap_or(t0_unix);
    Ok(Kill {
        latency,
        expiry_after_kill: (expiry - t0_unix) as f64,
        requeued_after,
        leased_after_expiry: (leased.started_at.unwrap_or(0) - expiry) as f64,
    })
}

async fn close(store: SqliteStore) {
    store.close().await;
}
