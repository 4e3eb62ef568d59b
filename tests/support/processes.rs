//! Driving real `quire` processes: a data directory shared by workers, `quire submit`, and
//! `quire worker` processes with short leases whose logs are kept for failure messages.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use checkpoint_store::{DocumentStatus, DocumentStore, JobStatus, JobStore};
use serde_json::Value;

use super::quire_bin;

/// A data directory, the database the workers share, and the logs of every worker started.
pub struct Processes {
    pub dir: tempfile::TempDir,
    /// `--database-url` and `QUIRE_DATABASE_SCHEMA`, for PostgreSQL; SQLite in the data
    /// directory otherwise.
    database: Option<(String, String)>,
    logs: Mutex<Vec<PathBuf>>,
}

/// How long a worker's leases last and how often it renews them (`--lease-ttl`,
/// `--heartbeat-interval`).
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    pub ttl: &'static str,
    pub heartbeat: &'static str,
}

/// A `quire worker` process, killed (and first resumed, if stopped) when dropped.
pub struct WorkerProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl Processes {
    /// Workers on the SQLite database of a fresh data directory.
    pub fn sqlite() -> Processes {
        Processes { dir: tempfile::tempdir().unwrap(), database: None, logs: Mutex::default() }
    }

    /// Workers on a PostgreSQL database, in `schema`.
    pub fn postgres(url: &str, schema: &str) -> Processes {
        Processes {
            dir: tempfile::tempdir().unwrap(),
            database: Some((url.to_owned(), schema.to_owned())),
            logs: Mutex::default(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `quire` with this data directory and database, no metrics endpoint, no failpoints.
    pub fn quire(&self) -> Command {
        let mut command = Command::new(quire_bin());
        command
            .arg("--data-dir")
            .arg(self.data_dir())
            .env("QUIRE_METRICS_ADDR", "off")
            .env_remove("QUIRE_DATABASE_URL")
            .env_remove("FAILPOINTS");
        if let Some((url, schema)) = &self.database {
            command.arg("--database-url").arg(url).env("QUIRE_DATABASE_SCHEMA", schema);
        }
        command
    }

    /// Submits books with `quire submit`; returns their document ids in order.
    pub fn submit(&self, books: &[(String, Vec<u8>)]) -> Vec<String> {
        let mut paths = Vec::new();
        for (name, bytes) in books {
            let path = self.dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            paths.push(path);
        }
        let output = self.quire().arg("submit").arg("--json").args(&paths).output().unwrap();
        assert!(output.status.success(), "submit failed: {}", String::from_utf8_lossy(&output.stderr));
        let submissions: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
        submissions.iter().map(|s| s["document_id"].as_str().unwrap().to_owned()).collect()
    }

    /// Starts a worker with 2 s leases, one job at a time; `failpoints` as in the FAILPOINTS
    /// variable, where `return(MS)` stalls a job without blocking its worker and `sleep(MS)`
    /// blocks it.
    pub fn worker(&self, name: &str, failpoints: Option<&str>, extra: &[&str]) -> WorkerProcess {
        self.worker_with_lease(name, Lease { ttl: "2s", heartbeat: "300ms" }, failpoints, extra)
    }

    /// [`Processes::worker`] with leases of another length.
    pub fn worker_with_lease(
        &self,
        name: &str,
        lease: Lease,
        failpoints: Option<&str>,
        extra: &[&str],
    ) -> WorkerProcess {
        let mut logs = self.logs.lock().unwrap();
        let log = self.dir.path().join(format!("worker-{name}-{}.log", logs.len()));
        logs.push(log.clone());
        let mut command = self.quire();
        command
            .arg("worker")
            .args(["--name", name, "--concurrency", "1", "--lease-ttl", lease.ttl])
            .args(["--heartbeat-interval", lease.heartbeat])
            .args(["--reaper-interval", "300ms", "--poll-interval", "100ms", "--shutdown-grace", "500ms"])
            .args(extra)
            .env("QUIRE_RETRY_BASE_DELAY", "100ms")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(failpoints) = failpoints {
            command.env("FAILPOINTS", failpoints);
        }
        WorkerProcess { child: command.spawn().unwrap(), log }
    }

    /// The last lines of every worker's log, for failure messages.
    pub fn all_logs(&self) -> String {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|log| format!("== {}\n{}", log.display(), tail(log)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `store` until every document of `ids` is complete; a failed one fails the test at
    /// once.
    pub async fn wait_complete<S: DocumentStore + ?Sized>(&self, store: &S, ids: &[String], within: Duration) {
        let deadline = Instant::now() + within;
        'poll: loop {
            assert!(Instant::now() < deadline, "timed out waiting for every document to complete\n{}", self.all_logs());
            for id in ids {
                match store.document(id).await {
                    Ok(Some(d)) if d.status == DocumentStatus::Complete => {}
                    Ok(Some(d)) if d.status == DocumentStatus::Failed => {
                        panic!("{id} failed: {:?}\n{}", d.error, self.all_logs())
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue 'poll;
                    }
                }
            }
            return;
        }
    }

    /// Polls `store` until no job is pending or processing. (A document is marked complete just
    /// before its job is, and its connections are detected by a job of their own.)
    pub async fn wait_idle<S: JobStore + ?Sized>(&self, store: &S, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let active = store.counts().await.map(|counts| {
                counts
                    .iter()
                    .filter(|c| matches!(c.status, JobStatus::Pending | JobStatus::Processing))
                    .map(|c| c.count)
                    .sum::<u64>()
            });
            if active.is_ok_and(|active| active == 0) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for the queue to drain\n{}", self.all_logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails the test if any of `workers` has exited: none may exit because of what happened
    /// to it from outside (other than the kills the test made itself).
    pub fn assert_running(&self, workers: &mut [WorkerProcess]) {
        for worker in workers.iter_mut() {
            if let Some(status) = worker.exited() {
                panic!(
                    "a worker exited with {status}; its log:\n{}\n\nall logs:\n{}",
                    tail(&worker.log),
                    self.all_logs()
                );
            }
        }
    }

    /// How often `needle` appears in all workers' logs.
    pub fn logs_containing(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|log| std::fs::read_to_string(log).unwrap_or_default().matches(needle).count())
            .sum()
    }
}

impl WorkerProcess {
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid()).status().unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits (polling) for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(Instant::now() < deadline, "worker did not exit; log:\n{}", tail(&self.log));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).unwrap_or_default().contains(needle)
    }

    /// The local TCP ports of the sockets the process holds open (Linux `/proc`): the client
    /// ports `pg_stat_activity` shows for its database connections.
    pub fn tcp_ports(&self) -> Vec<i32> {
        let pid = self.child.id();
        let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
        let inodes: HashSet<String> = entries
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter_map(|target| Some(target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
            .collect();
        let mut ports = Vec::new();
        for table in ["tcp", "tcp6"] {
            let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() > 9
                    && inodes.contains(fields[9])
                    && let Some(port) = fields[1].rsplit(':').next().and_then(|hex| i32::from_str_radix(hex, 16).ok())
                {
                    ports.push(port);
                }
            }
        }
        ports
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-CONT").arg(self.pid()).stderr(Stdio::null()).status();
        self.kill9();
    }
}

/// The last 40 lines of a log.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A `quire serve` process, killed when dropped, and the address it listens on.
pub struct ServeProcess {
    child: Child,
    pub addr: String,
}

impl ServeProcess {
    /// Starts `command` (a `quire … serve --addr 127.0.0.1:0`) and waits until it says where it
    /// listens (`listening on ADDR`, on stdout, once it accepts connections).
    pub fn start(mut command: Command) -> ServeProcess {
        use std::io::{BufRead, BufReader};
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("quire serve starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut server = ServeProcess { child, addr: String::new() };
        let mut lines = BufReader::new(stdout).lines();
        server.addr = loop {
            let line = lines.next().expect("quire serve printed its address").expect("stdout readable");
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                break addr.to_owned();
            }
        };
        server
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
