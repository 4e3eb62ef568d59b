//! Running `quire` as a child process: wall time and peak memory of one invocation.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::BenchResult;

/// What one `quire` invocation cost.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: ExitStatus,
    /// From spawn to reaped.
    pub wall: Duration,
    /// `ru_maxrss` from `wait4(2)` for this child, in KiB: the larger of the child's own peak
    /// RSS and the peak RSS of any descendant it waited for (the isolated parsing processes).
    /// A maximum over processes, not a sum: see the module documentation of `main.rs`.
    pub max_rss_kib: u64,
    /// User + system CPU time of the child and its waited-for descendants.
    pub cpu: Duration,
    /// Its standard output.
    pub stdout: String,
}

/// Runs `command` to completion with stdout to `stdout_file` and stderr to `stderr_file`, and
/// reaps it with `wait4` to read its own resource usage.
pub fn run(mut command: Command, stdout_file: &Path, stderr_file: &Path) -> BenchResult<Finished> {
    command.stdin(Stdio::null()).stdout(File::create(stdout_file)?).stderr(File::create(stderr_file)?);
    let started = Instant::now();
    let child = command.spawn()?;
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own unreaped child; both pointers are to live locals.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4({pid}): {error}").into());
        }
    }
    let wall = started.elapsed();
    // The child is reaped; dropping the handle neither waits nor kills.
    drop(child);
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    Ok(Finished {
        status: ExitStatus::from_raw(status),
        wall,
        max_rss_kib: usage.ru_maxrss as u64,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        stdout: std::fs::read_to_string(stdout_file).unwrap_or_default(),
    })
}

/// The last lines of a log, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
