//! The parent's side of isolation, against stand-in children: a chatty child cannot block on
//! its output, a crashing child fails the job permanently with a reason, and a child that runs
//! past its time limit is stopped.

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
        lease_lost: CancellationToken::new(),
        shutdown: CancellationToken::new(),
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
async fn a_child_past_its_time_limit_is_stopped_and_the_job_fails_permanently() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let script = child(dir.path(), &format!("sleep 30\n{WRITE_RESULT}"));
    let isolation = Isolation { time_limit: Duration::from_secs(120), ..Isolation::new(script) };
    let error = isolation.extract(Path::new("book.epub"), dir.path(), &context()).await.unwrap_err();
    assert_eq!(error, JobError::Permanent("extraction exceeded its time limit of 120s and was stopped".into()));
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
