//! The parent's side of isolation, against stand-in children: a chatty child cannot block on
//! its output, a crashing child fails the job permanently with a reason, a child that runs past
//! its time limit is stopped, and every child starts confined (limits, no environment) and dies
//! with its worker.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use checkpoint_store::{JobId, Lease};
use tokio_util::sync::CancellationToken;
use worker::{Isolation, JobContext, JobError};

/// Held for the whole of each test. A test writes a script and then executes it; if another
/// test's thread forks a child while the script is still open for writing, the fork holds that
/// descriptor until it execs, and executing the script fails with "Text file busy" (ETXTBSY).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Writes an executable shell script standing in for `quire isolated … extract EPUB WORK_DIR`.
fn child(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("child.sh");
    std::fs::write(&path, format!("#!/bin/sh\nwork_dir=\"$6\"\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn context() -> JobContext {
    JobContext {
        lease: Lease { job_id: JobId(1), token: 1 },
        attempt: 1,
        lease_lost: CancellationToken::new(),
        shutdown: CancellationToken::new(),
        cancel: CancellationToken::new(),
    }
}

const WRITE_RESULT: &str = r#"printf '# Title\n\nText.\n' > "$work_dir/extracted.md"
printf '{"title":"Title","author":null,"language":null,"chapters":1}' > "$work_dir/extracted.json""#;

#[tokio::test]
async fn a_child_that_writes_megabytes_to_stderr_still_finishes() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // `set -e`: if the parent stopped reading, dd dies of SIGPIPE and so does the child.
    let script =
        child(dir.path(), &format!("set -e\ndd if=/dev/zero bs=1048576 count=4 status=none >&2\n{WRITE_RESULT}"));
    let isolation = Isolation { time_limit: Duration::from_secs(3600), ..Isolation::new(script) };
    let metadata = isolation.extract(Path::new("book.epub"), dir.path(), &context()).await.unwrap();
    assert_eq!(metadata.title.as_deref(), Some("Title"));
}

#[tokio::test]
async fn a_crashing_child_fails_the_job_permanently_with_the_signal() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let script = child(dir.path(), "echo 'thread main has overflowed its stack' >&2\nkill -SEGV $$");
    let isolation = Isolation { time_limit: Duration::from_secs(3600), ..Isolation::new(script) };
    let error = isolation.extract(Path::new("book.epub"), dir.path(), &context()).await.unwrap_err();
    let JobError::Permanent(reason) = error else { panic!("expected a permanent failure, got {error:?}") };
    assert!(reason.contains("extraction of this book crashed"), "{reason}");
    assert!(reason.contains("stack"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_child_past_its_time_limit_is_stopped_and_tried_once_more_then_fails_permanently() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let script = child(dir.path(), &format!("sleep 30\n{WRITE_RESULT}"));
    let isolation = Isolation { time_limit: Duration::from_secs(120), ..Isolation::new(script) };
    let stopped = "extraction exceeded its time limit of 120s and was stopped";

    let first = isolation.extract(Path::new("book.epub"), dir.path(), &context()).await.unwrap_err();
    assert_eq!(first, JobError::Retryable(format!("{stopped} before using its CPU allowance; trying once more")));

    let second_attempt = JobContext { attempt: 2, ..context() };
    let second = isolation.extract(Path::new("book.epub"), dir.path(), &second_attempt).await.unwrap_err();
    assert_eq!(second, JobError::Permanent(stopped.into()));
}

#[tokio::test]
async fn a_child_starts_with_no_environment_no_core_dumps_and_capped_cpu_and_file_size() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let script = child(
        dir.path(),
        &format!("env > \"$work_dir/env\"\ncat /proc/self/limits > \"$work_dir/limits\"\n{WRITE_RESULT}"),
    );
    let isolation = Isolation {
        time_limit: Duration::from_secs(3600),
        cpu_limit: Duration::from_secs(7),
        file_size_limit: 5 << 20,
        ..Isolation::new(script)
    };
    isolation.extract(Path::new("book.epub"), dir.path(), &context()).await.unwrap();

    // The shell sets PWD (and may set SHLVL and _) itself; nothing of ours may arrive.
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    let inherited: Vec<&str> = env
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .filter(|name| !["PWD", "SHLVL", "_", "OLDPWD"].contains(name))
        .collect();
    assert!(std::env::vars().count() > 0, "the test process has an environment to leak");
    assert!(inherited.is_empty(), "the child inherited {inherited:?}");

    let limits = std::fs::read_to_string(dir.path().join("limits")).unwrap();
    let limit = |name: &str| -> Vec<String> {
        let line = limits.lines().find(|line| line.starts_with(name)).unwrap_or_else(|| panic!("{name}: {limits}"));
        line[name.len()..].split_whitespace().take(2).map(str::to_owned).collect()
    };
    assert_eq!(limit("Max cpu time"), ["7", "8"]);
    assert_eq!(limit("Max file size"), [(5u64 << 20).to_string(), (5u64 << 20).to_string()]);
    assert_eq!(limit("Max core file size"), ["0", "0"]);
}

#[tokio::test]
async fn a_child_past_its_cpu_limit_fails_the_job_permanently_at_once() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let script = child(dir.path(), "while :; do :; done");
    let isolation = Isolation {
        time_limit: Duration::from_secs(3600),
        cpu_limit: Duration::from_secs(1),
        ..Isolation::new(script)
    };
    let error = isolation.extract(Path::new("book.epub"), dir.path(), &context()).await.unwrap_err();
    let JobError::Permanent(reason) = error else { panic!("expected a permanent failure, got {error:?}") };
    assert!(reason.contains("it used more than its 1 s of CPU time"), "{reason}");
}

#[tokio::test]
async fn a_child_writing_past_its_file_size_limit_fails_the_job_permanently() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // `exec`: the shell becomes dd, so the signal that stops dd ends the child.
    let script = child(dir.path(), "exec dd if=/dev/zero of=\"$work_dir/extracted.md\" bs=1048576 count=8 status=none");
    let isolation =
        Isolation { time_limit: Duration::from_secs(3600), file_size_limit: 1 << 20, ..Isolation::new(script) };
    let error = isolation.extract(Path::new("book.epub"), dir.path(), &context()).await.unwrap_err();
    let JobError::Permanent(reason) = error else { panic!("expected a permanent failure, got {error:?}") };
    assert!(reason.contains("it wrote a file larger than its limit of 1 MiB"), "{reason}");
    assert!(std::fs::metadata(dir.path().join("extracted.md")).unwrap().len() <= 1 << 20);
}

/// Set in the copy of this test binary that plays the worker in
/// [`a_child_dies_with_its_worker`]: the directory to work in.
const STAND_IN_WORKER: &str = "QUIRE_TEST_STAND_IN_WORKER";

/// A real process plays the worker (this test binary, run again for this one test), starts an
/// isolated child and is killed with SIGKILL; the child must not outlive it.
#[tokio::test]
async fn a_child_dies_with_its_worker() {
    if let Ok(dir) = std::env::var(STAND_IN_WORKER) {
        // The worker's side: start the child, which records its pid and waits.
        let dir = PathBuf::from(dir);
        let script = child(
            &dir,
            "echo $$ > \"$work_dir/child.pid.tmp\"\nmv \"$work_dir/child.pid.tmp\" \"$work_dir/child.pid\"\nexec sleep 600",
        );
        let isolation = Isolation { time_limit: Duration::from_secs(3600), ..Isolation::new(script) };
        let _ = isolation.extract(Path::new("book.epub"), &dir, &context()).await;
        return;
    }
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut worker = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_child_dies_with_its_worker", "--nocapture", "--test-threads=1"])
        .env(STAND_IN_WORKER, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("child.pid");
    let child_pid = wait_for(|| std::fs::read_to_string(&pid_file).ok()?.trim().parse::<u32>().ok())
        .expect("the stand-in worker never started its child");
    assert!(alive(child_pid), "the child is running while its worker is");

    worker.kill().unwrap(); // SIGKILL: the worker gets no chance to clean up.
    worker.wait().unwrap();
    assert!(wait_for(|| (!alive(child_pid)).then_some(())).is_some(), "child {child_pid} outlived its worker");
}

/// Whether a process exists and has not exited (a zombie waiting to be reaped has).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Polls `probe` for up to 30 s: what real processes do takes real time.
fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_lost_lease_stops_the_child_at_once() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let script = child(dir.path(), &format!("sleep 30\n{WRITE_RESULT}"));
    let isolation = Isolation { time_limit: Duration::from_secs(3600), ..Isolation::new(script) };
    let context = context();
    context.lease_lost.cancel();
    let error = isolation.extract(Path::new("book.epub"), dir.path(), &context).await.unwrap_err();
    assert_eq!(error, JobError::LeaseLost);
}
