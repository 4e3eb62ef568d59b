//! PostgreSQL seen from outside the workers: the shared server the tests run against and a
//! schema of each test's own on it, a server of the test's own that it may restart, the server
//! connections of given worker processes (found by their client ports) and how to cut them, and
//! the cluster's progress as the jobs table shows it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPool;

use super::processes::WorkerProcess;

/// The shared server to test against, from `QUIRE_TEST_DATABASE_URL` (e.g.
/// `postgres://postgres@127.0.0.1:5432/test`), or `None` when it is not set: a notice outside CI,
/// where the test then passes, and a failure under `CI=true` (see [`super::prerequisite_missing`]).
pub fn database_url() -> Option<String> {
    match std::env::var("QUIRE_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            super::prerequisite_missing("QUIRE_TEST_DATABASE_URL is not set");
            None
        }
    }
}

/// A schema of one test's own on the shared server, `quire_t_<pid>_<n>`, where its workers and
/// its store keep their tables. Dropped, best effort, when this is dropped, also when the test
/// panicked; declare the worker processes after it, so that they are killed first.
pub struct TestSchema {
    url: String,
    name: String,
}

impl TestSchema {
    /// Names a schema no other test of this process uses, and drops a leftover of that name (an
    /// earlier process with the same pid) that would only confuse the checks. Panics when the
    /// server cannot be reached: whoever set the URL expects the tests to run there.
    pub async fn new(url: &str) -> TestSchema {
        use sqlx::Connection;
        /// Numbers the schemas of this process.
        static SCHEMAS: AtomicU32 = AtomicU32::new(0);
        let name = format!("quire_t_{}_{}", std::process::id(), SCHEMAS.fetch_add(1, Ordering::SeqCst));
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to QUIRE_TEST_DATABASE_URL: {error}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {name} CASCADE")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        TestSchema { url: url.to_owned(), name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestSchema {
    /// Drops the schema on a thread of its own: `Drop` cannot await, and the test's runtime may
    /// be the one dropping it.
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::query("SET lock_timeout = '10s'").execute(&mut conn).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test schema {}: {dropped:?}", self.name);
        }
    }
}

/// A PostgreSQL server of the test's own: its own data directory, port and socket directory in a
/// temporary directory, so that the test may restart it while other tests use the shared server.
/// Stopped and removed when dropped, also when the test panics.
///
/// PostgreSQL refuses to run as root, so a test running as root runs the server's programs as the
/// `postgres` user (as `.ci/pgvector-server` does).
pub struct PrivateServer {
    /// The directory holding `initdb` and `pg_ctl`.
    bin: PathBuf,
    /// Holds the data directory, the socket directory and the server's log; removed on drop,
    /// after the server stopped.
    dir: tempfile::TempDir,
    port: u16,
    /// Whether the programs run through `runuser -u postgres`.
    as_postgres: bool,
}

impl PrivateServer {
    /// Creates and starts a server, or returns `None` after a notice (a failure under `CI=true`)
    /// when this machine has no PostgreSQL binaries, or runs tests as root and has no `postgres`
    /// user to run them as.
    pub fn start() -> Option<PrivateServer> {
        let Some(bin) = binaries() else {
            super::prerequisite_missing("no PostgreSQL binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin");
            return None;
        };
        let as_postgres = output(Command::new("id").arg("-u")).is_some_and(|uid| uid == "0");
        let owner = if as_postgres {
            let uid = output(Command::new("id").args(["-u", "postgres"]));
            let gid = output(Command::new("id").args(["-g", "postgres"]));
            match uid.zip(gid).and_then(|(uid, gid)| Some((uid.parse::<u32>().ok()?, gid.parse::<u32>().ok()?))) {
                Some(ids) => Some(ids),
                None => {
                    super::prerequisite_missing(
                        "tests run as root and there is no `postgres` user to run PostgreSQL as",
                    );
                    return None;
                }
            }
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("quire-pg-").tempdir().unwrap();
        let server = PrivateServer { bin, dir, port: free_port(), as_postgres };
        // The server's user must reach its directories: the temporary directory is root's, 0700.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(server.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(server.sockets()).unwrap();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(server.sockets(), Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(server.dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = server.data();
        server.run(
            "initdb",
            &["-D", path(&data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
        );
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            server.port,
            server.sockets().display()
        );
        server.pg_ctl(&["-o", options.as_str(), "start"]);
        Some(server)
    }

    /// The URL of its `postgres` database over TCP (the tests find connections by client port).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Restarts the server (`pg_ctl restart -m fast`: every session is terminated, then the
    /// server stops and starts again with the same options) and returns once it accepts
    /// connections; returns how long it was out.
    pub fn restart(&self) -> Duration {
        let started = Instant::now();
        self.pg_ctl(&["-m", "fast", "restart"]);
        started.elapsed()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn sockets(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Runs `pg_ctl` on this server, waiting for it to finish what it was asked (`-w`).
    fn pg_ctl(&self, args: &[&str]) {
        let (data, log) = (self.data(), self.log());
        let mut all = vec!["-D", path(&data), "-l", path(&log), "-w", "-t", "60"];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    /// One of the server's programs, to run as `postgres` when the test runs as root (the
    /// server refuses to run as root).
    fn command(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Runs one of the server's programs, as `postgres` when the test runs as root; fails the
    /// test with the program's output and the server's log when it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = self.command(&program);
        // The server's user may not be allowed into the test's working directory.
        let output = command.args(args).current_dir(self.dir.path()).stdin(Stdio::null()).output().unwrap();
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}{}\nserver log:\n{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }
}

impl Drop for PrivateServer {
    /// Stops the server at once (its data is about to be removed); the temporary directory goes
    /// after it.
    fn drop(&mut self) {
        let (data, log) = (self.data(), self.log());
        let mut command = self.command(&self.bin.join("pg_ctl"));
        let stopped = command
            .args(["-D", path(&data), "-l", path(&log), "-w", "-m", "immediate", "stop"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !stopped.is_ok_and(|status| status.success()) {
            eprintln!("could not stop the private PostgreSQL server in {}", data.display());
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb` and `pg_ctl`.
fn binaries() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A TCP port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The trimmed standard output of a command that succeeded.
fn output(command: &mut Command) -> Option<String> {
    let output = command.stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn path(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// One server connection of a worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// The server process serving it (what `pg_terminate_backend` takes).
    pub pid: i32,
    /// Which of the workers given to [`worker_backends`] holds it.
    pub worker: usize,
    /// Whether its statement waits for a lock.
    pub waiting_on_lock: bool,
}

/// The server connections of `workers`, as the server sees them now; only theirs, found by their
/// client ports.
pub async fn worker_backends(admin: &PgPool, workers: &[WorkerProcess]) -> Vec<Backend> {
    let ports: Vec<(usize, i32)> =
        workers.iter().enumerate().flat_map(|(i, w)| w.tcp_ports().into_iter().map(move |port| (i, port))).collect();
    let all: Vec<i32> = ports.iter().map(|(_, port)| *port).collect();
    let rows: Vec<(i32, i32, bool)> = sqlx::query_as(
        "SELECT pid, client_port, COALESCE(wait_event_type = 'Lock', false) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'quire' \
         AND client_port = ANY($1)",
    )
    .bind(&all)
    .fetch_all(admin)
    .await
    .unwrap();
    rows.into_iter()
        .filter_map(|(pid, port, waiting_on_lock)| {
            let worker = ports.iter().find(|(_, p)| *p == port)?.0;
            Some(Backend { pid, worker, waiting_on_lock })
        })
        .collect()
}

/// Terminates these server connections with `pg_terminate_backend`; returns how many it
/// terminated.
pub async fn terminate(admin: &PgPool, backends: &[Backend]) -> u64 {
    let pids: Vec<i32> = backends.iter().map(|b| b.pid).collect();
    let terminated: Vec<bool> = sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM UNNEST($1::int[]) AS pid")
        .bind(&pids)
        .fetch_all(admin)
        .await
        .unwrap();
    terminated.iter().filter(|t| **t).count() as u64
}

/// How far the cluster has got: the milestones every job has checkpointed plus the jobs
/// completed. It only grows, whichever worker does the work.
pub async fn progress(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT (COALESCE(SUM(jsonb_array_length(COALESCE(metadata->'completed_stages', '[]'::jsonb))), 0) \
         + COUNT(*) FILTER (WHERE status = 'completed'))::BIGINT FROM jobs",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}
