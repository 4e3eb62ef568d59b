//! The operator's command line, driven through the real `quire` binary: every command's happy
//! path, the `--json` contracts, and the promises of the commands that change things (`clean
//! --dry-run` changes nothing, `dlq retry` brings a job back, `replay --from-stage` costs no AI
//! request, `serve` refuses bad uploads with a clear 4xx, `worker` exposes its metrics).
//!
//! Each test has its own temporary data directory and working directory (so no `quire.toml`
//! nearby is read). Cross-process waits poll with a bounded deadline; nothing asserts on timing.
//!
//! Longer than 500 lines because it covers every command of the binary with one small `Env`
//! helper; each test is a command's contract, and splitting them by command would copy the
//! helper into every file.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use checkpoint_store::{
    DocumentStore, JobId, JobKind, JobStatus, JobStore, LeaseRequest, SqliteStore, SqliteStoreOptions,
};
use epub_fixtures::{Block, BookSpec, ChapterSpec};
use serde_json::Value;
use support::fake_openai::{FakeOpenAi, Reply};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_quire");

/// Environment variables that would change what the binary does if the developer has them set.
const QUIRE_ENV: [&str; 21] = [
    "QUIRE_CONFIG",
    "QUIRE_DATA_DIR",
    "QUIRE_DATABASE_URL",
    "QUIRE_EMBEDDER",
    "QUIRE_EMBEDDING_MODEL",
    "QUIRE_EMBEDDING_DIMENSIONS",
    "QUIRE_METRICS_ADDR",
    "QUIRE_CONCURRENCY",
    "QUIRE_LEASE_TTL",
    "QUIRE_EXIT_WHEN_IDLE",
    "QUIRE_ADDR",
    "QUIRE_MAX_UPLOAD_BYTES",
    "QUIRE_MAX_CONCURRENT_UPLOADS",
    "QUIRE_HEADER_TIMEOUT",
    "QUIRE_BODY_TIMEOUT",
    "QUIRE_UPLOAD_TIMEOUT",
    "QUIRE_DATABASE_SCHEMA",
    "QUIRE_RETRY_BASE_DELAY",
    "QUIRE_RETRY_MAX_DELAY",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
];

/// A temporary working directory with a data directory inside.
struct Env {
    dir: TempDir,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::tempdir().expect("a temporary directory") }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `quire --data-dir DATA ARGS…`, run in the temporary directory.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path()).env("RUST_LOG", "warn").arg("--data-dir").arg(self.data_dir()).args(args);
        for name in QUIRE_ENV {
            cmd.env_remove(name);
        }
        cmd
    }

    /// Like [`Env::cmd`], as a `std` command for long-running children.
    fn spawn(&self, args: &[&str]) -> ChildGuard {
        let mut cmd = std::process::Command::new(BIN);
        cmd.current_dir(self.dir.path()).env("RUST_LOG", "warn").arg("--data-dir").arg(self.data_dir()).args(args);
        for name in QUIRE_ENV {
            cmd.env_remove(name);
        }
        let child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("quire starts");
        ChildGuard(child)
    }

    /// Runs a command that must succeed and print JSON.
    fn json(&self, args: &[&str]) -> Value {
        let output = self.cmd(args).output().expect("quire runs");
        assert!(output.status.success(), "quire {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("quire {args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&output.stdout))
        })
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.cmd(args).output().expect("quire runs");
        assert!(
            !output.status.success(),
            "quire {args:?} should have failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("fixture written");
        path
    }

    fn status(&self) -> Value {
        self.json(&["status", "--json"])
    }

    fn job(&self, id: i64) -> Value {
        let status = self.json(&["status", &id.to_string(), "--json"]);
        status["jobs"][0].clone()
    }

    /// Opens the binary's database from the test, for what no command does (leasing a job).
    async fn store(&self) -> SqliteStore {
        let data_dir = worker::DataDir::open(self.data_dir()).expect("data dir");
        SqliteStore::open(data_dir.database_path(), SqliteStoreOptions::default()).await.expect("store")
    }
}

/// Kills the child when the test ends, whichever way.
struct ChildGuard(Child);

impl ChildGuard {
    /// Reads stdout lines until one starts with `prefix`; returns the rest of it.
    fn wait_for_line(&mut self, prefix: &str) -> String {
        let stdout = self.0.stdout.as_mut().expect("piped stdout");
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            let read = reader.read_line(&mut line).expect("stdout readable");
            assert!(read > 0, "quire exited before printing {prefix:?}");
            if let Some(rest) = line.trim().strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `condition` every 50 ms until it holds, for at most 30 s.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 exchange over a fresh connection: `(status, body)`.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-length")) {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    // An empty value leaves the header out (a chunked request has no Content-Length).
    for (name, value) in headers.iter().filter(|(_, value)| !value.is_empty()) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("request sent");
    // A server may answer (and close) before reading a refused body; that is its right.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (status, body.to_owned())
}

fn json_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// A book whose one chapter says `text`, under its own title (so its bytes are its own).
fn book(title: &str, text: &str) -> Vec<u8> {
    let chapter = ChapterSpec::new("ch1.xhtml", "The Voyage", vec![Block::Paragraph(text.to_owned())]);
    epub_fixtures::build_epub(&BookSpec::new(title, "A. Tester", "en", vec![chapter]))
}

const WHALE: &str = "The white whale breached beside the Nantucket harpoon boat, and the crew \
    rowed hard through the cold grey swell while the mate stood ready with the iron.";

fn assert_document_contract(document: &Value) {
    for field in
        ["id", "title", "status", "chunk_count", "connection_count", "ai_requests", "embeddings_from_cache", "error"]
    {
        assert!(document.get(field).is_some(), "documents[] lacks {field}: {document}");
    }
}

fn assert_job_contract(job: &Value) {
    for field in ["id", "kind", "document_id", "status", "stage", "attempts", "last_error"] {
        assert!(job.get(field).is_some(), "jobs[] lacks {field}: {job}");
    }
}

#[test]
fn every_command_has_help_with_examples() {
    let env = Env::new();
    let output = env.cmd(&["--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["jobs", "connections", "search", "clean", "dlq", "replay", "serve", "quire.toml"] {
        assert!(help.contains(command), "quire --help does not mention {command}");
    }
    let commands: [&[&str]; 14] = [
        &["process"],
        &["submit"],
        &["worker"],
        &["status"],
        &["jobs", "list"],
        &["jobs", "cancel"],
        &["connections"],
        &["search"],
        &["clean"],
        &["dlq", "list"],
        &["dlq", "retry"],
        &["dlq", "purge"],
        &["replay"],
        &["serve"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let output = env.cmd(&args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("Examples:"), "quire {args:?} has no examples");
    }
}

#[test]
fn processed_books_can_be_listed_connected_and_searched() {
    let env = Env::new();
    let first = env.write("first.epub", &book("First Voyage", WHALE));
    let second = env.write("second.epub", &book("Second Voyage", &format!("{WHALE} Then the fog came down.")));
    // One after the other, so that the second book's connections see the first book's chunks.
    env.cmd(&["process", "--json"]).arg(&first).assert().success();
    env.cmd(&["process", "--json"]).arg(&second).assert().success();

    let status = env.status();
    let documents = status["documents"].as_array().unwrap();
    assert_eq!(documents.len(), 2);
    documents.iter().for_each(assert_document_contract);
    status["jobs"].as_array().unwrap().iter().for_each(assert_job_contract);
    assert!(documents.iter().all(|d| d["status"] == "complete" && d["error"].is_null()), "{status}");
    let first_id = documents.iter().find(|d| d["title"] == "First Voyage").unwrap()["id"].as_str().unwrap().to_owned();
    let second_id =
        documents.iter().find(|d| d["title"] == "Second Voyage").unwrap()["id"].as_str().unwrap().to_owned();

    let jobs = env.json(&["jobs", "list", "--json"]);
    assert_eq!(jobs.as_array().unwrap().len(), 4, "two process and two detect jobs: {jobs}");
    jobs.as_array().unwrap().iter().for_each(assert_job_contract);
    let processed =
        env.json(&["jobs", "list", "--status", "completed", "--kind", "process_document", "--limit", "1", "--json"]);
    assert_eq!(processed.as_array().unwrap().len(), 1);
    assert_eq!(processed[0]["kind"], "process_document");
    assert_eq!(processed[0]["status"], "completed");
    let refused = env.fails(&["jobs", "list", "--status", "sleeping"]);
    assert!(refused.contains("sleeping") && refused.contains("[possible values: pending, processing,"), "{refused}");
    let refused = env.fails(&["jobs", "list", "--kind", "embed"]);
    assert!(refused.contains("[possible values: process_document, detect_connections]"), "{refused}");

    let connections = env.json(&["connections", &second_id, "--json"]);
    let connections = connections.as_array().unwrap();
    let across = connections
        .iter()
        .find(|c| c["target"]["document_id"] == first_id.as_str())
        .expect("a connection to the first book");
    for side in ["source", "target"] {
        for field in ["document_id", "document_title", "chunk_index", "heading_path", "text"] {
            assert!(across[side].get(field).is_some(), "{side} lacks {field}: {across}");
        }
    }
    assert_eq!(across["target"]["document_title"], "First Voyage");
    assert!(across["engine"].is_string() && across["reason"].is_string());
    let scores: Vec<f64> = connections.iter().map(|c| c["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "strongest first: {scores:?}");
    let semantic =
        env.json(&["connections", &second_id, "--engine", "semantic", "--min-score", "0.5", "--limit", "1", "--json"]);
    assert!(semantic.as_array().unwrap().len() <= 1);
    assert!(
        semantic.as_array().unwrap().iter().all(|c| c["engine"] == "semantic" && c["score"].as_f64().unwrap() >= 0.5)
    );
    assert!(env.fails(&["connections", "doc-nope"]).contains("no document"));
    // A misspelt engine is a usage error naming the engines, not an empty answer.
    let output = env.cmd(&["connections", &second_id, "--engine", "semnatic"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("[possible values: lexical, semantic]"));
    env.cmd(&["connections", &second_id]).assert().success();

    let hits = env.json(&["search", "white whale harpoon boat", "--limit", "3", "--json"]);
    let hits = hits.as_array().unwrap();
    assert!(!hits.is_empty() && hits.len() <= 3, "{hits:?}");
    for field in ["score", "document_id", "document_title", "chunk_index", "heading_path", "text"] {
        assert!(hits[0].get(field).is_some(), "search hit lacks {field}");
    }
    assert!(hits[0]["text"].as_str().unwrap().contains("white whale"));
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    env.cmd(&["search", "whale"]).assert().success();
}

#[test]
fn titles_and_chunk_text_from_a_book_reach_the_terminal_without_control_characters() {
    // XML admits the 8-bit CSI (U+009B) in a title; HTML keeps ESC in a chapter's text.
    const CSI: char = '\u{9b}';
    const ESC: char = '\u{1b}';
    let env = Env::new();
    let text = format!("{WHALE} {ESC}]0;owned{ESC}\\{ESC}[2J{CSI}31m");
    let file = env.write("hostile.epub", &book(&format!("Red{CSI}31m Voyage"), &text));
    let processed = env.cmd(&["process"]).arg(&file).output().expect("quire runs");
    assert!(processed.status.success(), "{}", String::from_utf8_lossy(&processed.stderr));

    // The book really carries them: the JSON, which escapes or quotes them, shows them.
    let hits = env.json(&["search", "white whale harpoon", "--limit", "1", "--json"]);
    assert!(hits[0]["text"].as_str().unwrap().contains(ESC), "{hits}");
    assert!(env.status()["documents"][0]["title"].as_str().unwrap().contains(CSI));

    let document = env.status()["documents"][0]["id"].as_str().unwrap().to_owned();
    for args in [&["status"][..], &["search", "white whale harpoon"], &["jobs", "list"], &["connections", &document]] {
        let output = env.cmd(args).output().expect("quire runs");
        assert!(output.status.success(), "quire {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        let shown = String::from_utf8_lossy(&output.stdout);
        assert!(!shown.contains([ESC, CSI]), "quire {args:?} printed a control character: {shown:?}");
    }
    let shown = String::from_utf8_lossy(&processed.stdout);
    assert!(shown.contains("Red31m Voyage"), "{shown}");
    assert!(!shown.contains([ESC, CSI]), "quire process printed a control character: {shown:?}");
}

/// Leases the next process_document job as a worker named `owner` with a lease of `ttl`, as if
/// `ago` had passed since (its times are moved back; nothing sleeps), and returns its id.
fn lease_as(env: &Env, runtime: &tokio::runtime::Runtime, owner: &str, ttl: Duration, ago: Duration) -> i64 {
    runtime.block_on(async {
        let store = env.store().await;
        let request = LeaseRequest { owner, max_jobs: 1, ttl, kinds: &[JobKind::ProcessDocument] };
        let id = store.lease(request).await.unwrap()[0].id.0;
        sqlx::query(
            "UPDATE jobs SET started_at = started_at - ?2, last_heartbeat = last_heartbeat - ?2, \
             lock_until = lock_until - ?2 WHERE id = ?1",
        )
        .bind(id)
        .bind(i64::try_from(ago.as_millis()).unwrap())
        .execute(store.writer_pool())
        .await
        .unwrap();
        id
    })
}

#[test]
fn clean_dry_run_changes_nothing_and_clean_yes_requeues() {
    let env = Env::new();
    let file = env.write("sample.epub", &epub_fixtures::sample_book());
    let submitted = env.json(&["submit", "--json", file.to_str().unwrap()]);
    let job_id = submitted[0]["job_id"].as_i64().unwrap();

    // A worker that leased the job for a minute, two minutes ago, and died.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let leased = lease_as(&env, &runtime, "vanished-worker", Duration::from_secs(60), Duration::from_secs(120));
    assert_eq!(leased, job_id);

    let report = env.json(&["clean", "--dry-run", "--json"]);
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["stale"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["stale"][0]["id"], job_id);
    assert_eq!(report["stale"][0]["owner"], "vanished-worker");
    assert!(report["outcomes"].as_array().unwrap().is_empty());
    assert_eq!(env.job(job_id)["status"], "processing", "a dry run changes nothing");
    env.cmd(&["clean", "--dry-run"]).assert().success();

    // No terminal to confirm on, and no --yes: refused, nothing changed.
    let refused = env.fails(&["clean"]);
    assert!(refused.contains("--yes"), "{refused}");
    assert_eq!(env.job(job_id)["status"], "processing");

    // --older-than adds a silence the job has not reached yet.
    let quiet = env.json(&["clean", "--older-than", "1h", "--json"]);
    assert!(quiet["stale"].as_array().unwrap().is_empty(), "{quiet}");

    let report = env.json(&["clean", "--older-than", "0", "--yes", "--json"]);
    assert_eq!(report["outcomes"][0]["id"], job_id);
    assert_eq!(report["outcomes"][0]["action"], "requeued");
    assert_eq!(env.job(job_id)["status"], "pending");

    let runtime_job = runtime.block_on(async { env.store().await.job(JobId(job_id)).await.unwrap().unwrap() });
    assert_eq!(runtime_job.status, JobStatus::Pending);
    assert!(runtime_job.lock_owner.is_none());
}

#[test]
fn clean_by_default_takes_back_expired_leases_and_leaves_live_ones_however_silent() {
    let env = Env::new();
    for title in ["Live", "Crashed"] {
        let file = env.write(&format!("{title}.epub"), &book(title, "Some text to chunk."));
        env.json(&["submit", "--json", file.to_str().unwrap()]);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // `--lease-ttl 5m --heartbeat-interval 100s`: 100 s since its heartbeat, and alive.
    let live = lease_as(&env, &runtime, "patient-worker", Duration::from_secs(300), Duration::from_secs(100));
    // `--lease-ttl 1s` on a worker that crashed two seconds ago: stale now, not in a minute.
    let crashed = lease_as(&env, &runtime, "crashed-worker", Duration::from_secs(1), Duration::from_secs(2));

    let report = env.json(&["clean", "--yes", "--json"]);
    let taken: Vec<i64> = report["outcomes"].as_array().unwrap().iter().map(|o| o["id"].as_i64().unwrap()).collect();
    assert_eq!(taken, [crashed], "{report}");
    assert_eq!(env.job(live)["status"], "processing");
    assert_eq!(env.job(crashed)["status"], "pending");
}

#[test]
fn jobs_cancel_cancels_a_pending_job_asks_a_running_one_and_refuses_a_finished_one() {
    let env = Env::new();
    let file = env.write("sample.epub", &epub_fixtures::sample_book());
    let submitted = env.json(&["submit", "--json", file.to_str().unwrap()]);
    let job_id = submitted[0]["job_id"].as_i64().unwrap();
    let id = job_id.to_string();

    let cancelled = env.json(&["jobs", "cancel", &id, "--json"]);
    assert_eq!(cancelled["outcome"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["job"]["id"], job_id);
    assert_eq!(cancelled["job"]["status"], "cancelled");
    assert_eq!(env.job(job_id)["status"], "cancelled");
    assert_eq!(env.status()["documents"][0]["status"], "failed");
    let refused = env.fails(&["jobs", "cancel", &id]);
    assert!(refused.contains("cancelled") && refused.contains("quire replay"), "{refused}");
    assert!(env.fails(&["jobs", "cancel", "4040"]).contains("no job 4040"));

    // An operator restarts it; a worker takes it and is asked to stop.
    assert_eq!(env.json(&["replay", &id, "--json"])["status"], "pending");
    assert_eq!(env.status()["documents"][0]["status"], "pending");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let leased = lease_as(&env, &runtime, "busy-worker", Duration::from_secs(600), Duration::ZERO);
    assert_eq!(leased, job_id);
    let asked = env.json(&["jobs", "cancel", &id, "--json"]);
    assert_eq!(asked["outcome"], "requested", "{asked}");
    assert_eq!(asked["job"]["status"], "processing");
    assert_eq!(asked["job"]["lock_owner"], "busy-worker");
    let output = env.cmd(&["jobs", "cancel", &id]).output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("next stage boundary"), "{output:?}");
    assert_eq!(env.job(job_id)["status"], "processing", "the worker keeps its job until its boundary");

    // The same through the HTTP API.
    let mut server = env.spawn(&["serve", "--addr", "127.0.0.1:0"]);
    let addr = server.wait_for_line("listening on");
    let (status, body) = http(&addr, "POST", &format!("/v1/jobs/{id}/cancel"), &[], b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_body(&body)["outcome"], "requested");
    assert_eq!(http(&addr, "POST", "/v1/jobs/4040/cancel", &[], b"").0, 404);
    let finished = runtime.block_on(async {
        let store = env.store().await;
        let lease = store.job(JobId(job_id)).await.unwrap().unwrap().lease().unwrap();
        store.cancel_held(lease).await.unwrap()
    });
    assert_eq!(finished.status, JobStatus::Cancelled);
    let (status, body) = http(&addr, "POST", &format!("/v1/jobs/{id}/cancel"), &[], b"");
    assert_eq!(status, 409, "{body}");
    assert!(json_body(&body)["error"].as_str().unwrap().contains("cancelled"), "{body}");
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let env = Env::new();
    let output = env
        .cmd(&["worker", "--exit-when-idle", "--metrics-addr", "off"])
        .env("RUST_LOG", "info")
        .output()
        .expect("quire runs");
    assert!(output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("INFO"), "the worker logs at info: {logs}");
    assert!(!logs.contains('\u{1b}'), "escape codes in piped logs: {logs:?}");
}

#[test]
fn dlq_retry_brings_a_dead_job_back_and_purge_removes_it() {
    let env = Env::new();
    let file = env.write("not-a-book.epub", &epub_fixtures::hostile::not_a_zip());
    let submitted = env.json(&["submit", "--json", file.to_str().unwrap()]);
    let job_id = submitted[0]["job_id"].as_i64().unwrap();
    env.cmd(&["worker", "--exit-when-idle", "--metrics-addr", "off"]).assert().success();

    let dead = env.json(&["dlq", "list", "--json"]);
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    for field in ["id", "kind", "document_id", "attempts", "error_kind", "last_error", "finished_at"] {
        assert!(dead[0].get(field).is_some(), "dlq list lacks {field}");
    }
    assert_eq!(dead[0]["id"], job_id);
    assert_eq!(dead[0]["error_kind"], "permanent");
    assert!(dead[0]["finished_at"].is_i64());
    env.cmd(&["dlq", "list"]).assert().success();
    assert_eq!(env.status()["documents"][0]["status"], "failed");

    let retried = env.json(&["dlq", "retry", &job_id.to_string(), "--json"]);
    assert_eq!(retried[0]["id"], job_id);
    let job = env.job(job_id);
    assert_eq!(job["status"], "pending");
    assert_eq!(job["attempts"], 0, "a fresh attempt budget: {job}");
    assert_eq!(env.status()["documents"][0]["status"], "pending");
    assert!(env.json(&["dlq", "list", "--json"]).as_array().unwrap().is_empty());
    assert!(env.fails(&["dlq", "retry", &job_id.to_string()]).contains("dead"), "only dead jobs can be retried");

    // It fails again, for the same reason; then `--all` and `purge`.
    env.cmd(&["worker", "--exit-when-idle", "--metrics-addr", "off"]).assert().success();
    assert_eq!(env.job(job_id)["status"], "dead");
    assert_eq!(env.json(&["dlq", "retry", "--all", "--json"]).as_array().unwrap().len(), 1);
    env.cmd(&["worker", "--exit-when-idle", "--metrics-addr", "off"]).assert().success();
    assert!(env.fails(&["dlq", "purge"]).contains("--yes"), "no terminal: refused without --yes");
    assert_eq!(env.json(&["dlq", "list", "--json"]).as_array().unwrap().len(), 1);
    let purged = env.json(&["dlq", "purge", "--older-than", "1h", "--yes", "--json"]);
    assert_eq!(purged["purged"], 0, "the job died moments ago");
    let purged = env.json(&["dlq", "purge", "--yes", "--json"]);
    assert_eq!(purged["purged"], 1);
    assert!(env.json(&["dlq", "list", "--json"]).as_array().unwrap().is_empty());
}

#[test]
fn dlq_retry_all_continues_past_a_job_whose_unique_key_is_taken_and_reports_it() {
    let env = Env::new();
    let mut documents = Vec::new();
    for n in 1..=2u8 {
        let file = env.write(&format!("not-a-book-{n}.epub"), &[epub_fixtures::hostile::not_a_zip(), vec![n]].concat());
        let submitted = env.json(&["submit", "--json", file.to_str().unwrap()]);
        documents
            .push((submitted[0]["job_id"].as_i64().unwrap(), submitted[0]["document_id"].as_str().unwrap().to_owned()));
    }
    env.cmd(&["worker", "--exit-when-idle", "--metrics-addr", "off"]).assert().success();
    assert_eq!(env.json(&["dlq", "list", "--json"]).as_array().unwrap().len(), 2);
    // The first book is being processed again by a newer job, which holds its unique key.
    let (blocked, blocked_document) = &documents[0];
    let holder = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let options = checkpoint_store::EnqueueOptions {
            unique_key: Some(worker::process_document_key(blocked_document)),
            ..Default::default()
        };
        let payload = worker::JobPayload::process_document(blocked_document);
        payload.enqueue(&env.store().await, options).await.unwrap().job.id
    });

    let output = env.cmd(&["dlq", "retry", "--all", "--json"]).output().expect("quire runs");
    assert!(!output.status.success(), "a refused job makes the command fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("job {blocked} not retried")) && stderr.contains(&format!("job {holder} is active")),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let entry = |id: i64| report.as_array().unwrap().iter().find(|e| e["id"] == id).cloned().expect("reported");
    assert_eq!(entry(*blocked)["status"], "dead");
    assert!(entry(*blocked)["refused"].as_str().unwrap().contains("unique key"), "{report}");
    let (retried, _) = &documents[1];
    assert_eq!(entry(*retried)["status"], "pending", "the other job is retried all the same: {report}");
    assert!(entry(*retried).get("refused").is_none());
    assert_eq!(env.job(*retried)["status"], "pending");
}

#[test]
fn replay_from_chunked_reuses_cached_embeddings() {
    let env = Env::new();
    let file = env.write("sample.epub", &epub_fixtures::sample_book());
    env.cmd(&["process", "--json"]).arg(&file).assert().success();
    let before = env.status();
    let document = before["documents"][0].clone();
    let chunks = document["chunk_count"].as_u64().unwrap();
    let ai_requests = document["ai_requests"].as_u64().unwrap();
    assert!(chunks > 0 && ai_requests > 0, "{document}");
    let job_id = before["jobs"].as_array().unwrap().iter().find(|j| j["kind"] == "process_document").unwrap()["id"]
        .as_i64()
        .unwrap();

    // A completed job has nothing to resume.
    assert!(env.fails(&["replay", &job_id.to_string()]).contains("--from-stage"));
    assert!(env.fails(&["replay", &job_id.to_string(), "--from-stage", "polishing"]).contains("unknown stage"));

    let report = env.json(&["replay", &job_id.to_string(), "--from-stage", "chunked", "--inline", "--json"]);
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["resumes_at"], "chunking");
    assert_eq!(report["detect_job"]["status"], "completed");
    assert_eq!(report["work"]["extractions"], 0, "extraction is not redone");
    assert_eq!(report["work"]["chunkings"], 1);
    assert_eq!(report["work"]["ai_requests"], 0, "every embedding came from the cache");
    assert_eq!(report["work"]["embedding_cache_hits"].as_u64().unwrap(), chunks, "{report}");

    let after = env.status();
    let document = &after["documents"][0];
    assert_eq!(document["status"], "complete");
    assert_eq!(document["chunk_count"].as_u64().unwrap(), chunks);
    assert_eq!(document["ai_requests"].as_u64().unwrap(), ai_requests, "the job's cumulative AI requests did not grow");
    // Every chunk of the replayed embedding pass came from the cache.
    assert_eq!(document["embeddings_from_cache"].as_u64().unwrap(), chunks, "the replay was served from the cache");

    // Queued (not inline), then left to a worker.
    let queued = env.json(&["replay", &job_id.to_string(), "--fresh", "--json"]);
    assert_eq!(queued["status"], "pending");
    assert_eq!(queued["mode"], "fresh");
    assert_eq!(env.status()["documents"][0]["status"], "pending");
    env.cmd(&["worker", "--exit-when-idle", "--metrics-addr", "off"]).assert().success();
    assert_eq!(env.status()["documents"][0]["status"], "complete");
}

#[test]
fn serve_accepts_an_upload_and_refuses_what_is_not_an_epub() {
    let env = Env::new();
    let mut server = env.spawn(&["serve", "--addr", "127.0.0.1:0", "--max-upload-bytes", "200000"]);
    let addr = server.wait_for_line("listening on");
    let epub = epub_fixtures::sample_book();
    let epub_type = [("Content-Type", "application/epub+zip"), ("X-File-Name", "sample.epub")];

    let (status, body) = http(&addr, "POST", "/v1/documents", &epub_type, &epub);
    assert_eq!(status, 201, "{body}");
    let created = json_body(&body);
    let document_id = created["document_id"].as_str().unwrap().to_owned();
    let job_id = created["job_id"].as_i64().unwrap();
    assert_eq!(created["deduplicated"], false);

    let (status, body) = http(&addr, "POST", "/v1/documents", &epub_type, &epub);
    assert_eq!(status, 200, "the same bytes again: {body}");
    assert_eq!(json_body(&body)["deduplicated"], true);
    assert_eq!(json_body(&body)["document_id"], document_id.as_str());

    let (status, body) = http(&addr, "GET", &format!("/v1/documents/{document_id}"), &[], b"");
    assert_eq!(status, 200);
    let document = json_body(&body);
    assert_document_contract(&document);
    assert_eq!(document["status"], "pending");
    assert_eq!(document["jobs"][0]["id"], job_id);

    let (status, body) = http(&addr, "GET", &format!("/v1/jobs/{job_id}"), &[], b"");
    assert_eq!(status, 200);
    assert_eq!(json_body(&body)["status"], "pending");
    for path in ["/v1/jobs/999999", "/v1/jobs/abc", "/v1/documents/doc-nope"] {
        let (status, body) = http(&addr, "GET", path, &[], b"");
        assert_eq!(status, 404, "{path}");
        assert!(json_body(&body)["error"].as_str().unwrap().starts_with("no "), "{body}");
    }

    let (status, body) = http(&addr, "POST", "/v1/documents", &epub_type, &epub_fixtures::hostile::not_a_zip());
    assert_eq!(status, 422);
    assert!(json_body(&body)["error"].as_str().unwrap().contains("not an EPUB"), "{body}");

    let (status, body) = http(&addr, "POST", "/v1/documents", &[("Content-Type", "text/plain")], &epub);
    assert_eq!(status, 415);
    assert!(json_body(&body)["error"].as_str().unwrap().contains("application/epub+zip"), "{body}");

    // Over the limit by its declared length: refused before the body is read.
    let (status, body) = http(
        &addr,
        "POST",
        "/v1/documents",
        &[("Content-Type", "application/epub+zip"), ("Content-Length", "300000")],
        b"",
    );
    assert_eq!(status, 413);
    assert!(json_body(&body)["error"].as_str().unwrap().contains("200000 bytes"), "{body}");

    // Over the limit with no declared length (chunked): refused once the limit is read. It
    // begins as a ZIP archive does, or it would be refused for that first.
    let mut chunked = format!("{:x}\r\nPK\x03\x04", 250_000).into_bytes();
    chunked.extend(std::iter::repeat_n(b'x', 250_000 - 4));
    chunked.extend(b"\r\n0\r\n\r\n");
    let headers = [("Content-Type", "application/epub+zip"), ("Transfer-Encoding", "chunked"), ("Content-Length", "")];
    let (status, body) = http(&addr, "POST", "/v1/documents", &headers, &chunked);
    assert_eq!(status, 413);
    assert!(json_body(&body)["error"].as_str().unwrap().contains("larger than the limit"), "{body}");

    let (status, body) = http(&addr, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_body(&body)["status"], "ok");
    let (status, metrics) = http(&addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(metrics.contains("quire_jobs{status=\"pending\",kind=\"process_document\"} 1"), "{metrics}");

    // Nothing but the one upload was stored.
    drop(server);
    let status = env.status();
    assert_eq!(status["documents"].as_array().unwrap().len(), 1);
    assert_eq!(status["jobs"].as_array().unwrap().len(), 1);
}

#[test]
fn serve_closes_a_slow_loris_at_the_timeouts_it_is_given_and_takes_a_form_upload() {
    let env = Env::new();
    let args = ["serve", "--addr", "127.0.0.1:0", "--header-timeout", "1s", "--body-timeout", "1s"];
    let mut server = env.spawn(&[&args[..], &["--max-concurrent-uploads", "1"]].concat());
    let addr = server.wait_for_line("listening on");
    let closed_within = |stream: &mut TcpStream| {
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        assert!(started.elapsed() < Duration::from_secs(20), "the connection was held {:?}", started.elapsed());
        String::from_utf8_lossy(&answer).into_owned()
    };

    // Headers that never end: the connection is closed.
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.write_all(b"POST /v1/documents HTTP/1.1\r\nHost: x\r\nContent-Type: application/epub+zip\r\n").unwrap();
    closed_within(&mut stream);

    // A body that stops: 408, and its upload slot (the only one) is free again.
    let mut stream = TcpStream::connect(&addr).unwrap();
    let head = "POST /v1/documents HTTP/1.1\r\nHost: x\r\nContent-Type: application/epub+zip\r\nContent-Length: 100000\r\n\r\nPK\x03\x04";
    stream.write_all(head.as_bytes()).unwrap();
    let answer = closed_within(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("the upload stalled"), "{answer}");

    // As `curl -F file=@Moby.epub` sends it.
    let mut form =
        b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"Moby.epub\"\r\n\r\n".to_vec();
    form.extend(epub_fixtures::sample_book());
    form.extend(b"\r\n--b0undary--\r\n");
    let headers = [("Content-Type", "multipart/form-data; boundary=b0undary")];
    let (status, body) = http(&addr, "POST", "/v1/documents", &headers, &form);
    assert_eq!(status, 201, "{body}");
    drop(server);
    let document_id = json_body(&body)["document_id"].as_str().unwrap().to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let document = runtime.block_on(async { env.store().await.document(&document_id).await.unwrap().unwrap() });
    assert_eq!(document.file_name, "Moby.epub", "the part's file name");
}

/// The value of the first sample of `name` (with its labels, if any) in Prometheus text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}

#[test]
fn worker_serves_metrics_and_health() {
    let env = Env::new();
    let file = env.write("sample.epub", &epub_fixtures::sample_book());
    env.cmd(&["submit"]).arg(&file).assert().success();
    let mut worker =
        env.spawn(&["worker", "--metrics-addr", "127.0.0.1:0", "--reaper-interval", "1s", "--poll-interval", "50ms"]);
    let addr = worker.wait_for_line("metrics listening on");

    let mut metrics = String::new();
    eventually("the worker to complete the book and its connections", || {
        metrics = http(&addr, "GET", "/metrics", &[], b"").1;
        sample(&metrics, "quire_worker_jobs_completed_total") == Some(2.0)
    });
    for family in [
        "quire_jobs",
        "quire_jobs_stale",
        "quire_job_processing_age_seconds",
        "quire_worker_jobs_reaped_total",
        "quire_worker_jobs_retried_total",
        "quire_worker_jobs_dead_lettered_total",
        "quire_worker_leases_lost_total",
        "quire_worker_jobs_released_total",
        "quire_ai_requests_total",
        "quire_ai_cache_hits_total",
        "quire_worker_reaper_last_success_timestamp_seconds",
        "quire_job_attempt_duration_seconds",
        "quire_stage_duration_seconds",
    ] {
        assert!(metrics.contains(&format!("# TYPE {family} ")), "no {family} family in:\n{metrics}");
    }
    assert_eq!(sample(&metrics, "quire_jobs{status=\"completed\",kind=\"process_document\"}"), Some(1.0));
    assert_eq!(sample(&metrics, "quire_jobs{status=\"completed\",kind=\"detect_connections\"}"), Some(1.0));
    assert_eq!(sample(&metrics, "quire_jobs{status=\"dead\",kind=\"process_document\"}"), Some(0.0));
    assert_eq!(sample(&metrics, "quire_jobs_stale"), Some(0.0));
    assert_eq!(sample(&metrics, "quire_job_processing_age_seconds_bucket{le=\"30\"}"), Some(0.0));
    assert_eq!(sample(&metrics, "quire_job_processing_age_seconds_bucket{le=\"+Inf\"}"), Some(0.0));
    assert_eq!(sample(&metrics, "quire_worker_jobs_reaped_total{action=\"requeued\"}"), Some(0.0));
    assert_eq!(sample(&metrics, "quire_worker_jobs_dead_lettered_total"), Some(0.0));
    assert!(sample(&metrics, "quire_ai_requests_total").unwrap() >= 1.0);
    // One attempt of each kind, one observation of each stage.
    assert_eq!(sample(&metrics, "quire_job_attempt_duration_seconds_count{kind=\"process_document\"}"), Some(1.0));
    assert_eq!(sample(&metrics, "quire_job_attempt_duration_seconds_count{kind=\"detect_connections\"}"), Some(1.0));
    for stage in ["extracting", "saving_markdown", "chunking", "embedding"] {
        let count = format!("quire_stage_duration_seconds_count{{stage=\"{stage}\"}}");
        assert_eq!(sample(&metrics, &count), Some(1.0), "{count}");
        let inf = format!("quire_stage_duration_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}}");
        assert_eq!(sample(&metrics, &inf), Some(1.0), "{inf}");
    }
    let reaped_at = sample(&metrics, "quire_worker_reaper_last_success_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(reaped_at > 0.0 && reaped_at <= now + 1.0, "{reaped_at}");

    let (status, body) = http(&addr, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{body}");
    let health = json_body(&body);
    assert_eq!(health["database"], "ok");
    assert_eq!(health["reaper"], "ok");
}

#[test]
fn a_worker_whose_ai_account_is_refused_stays_up_and_says_why() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(FakeOpenAi::start(|_| Reply::Error(401, "Incorrect API key provided")));
    let env = Env::new();
    let file = env.write("sample.epub", &epub_fixtures::sample_book());
    env.cmd(&["submit"]).arg(&file).assert().success();
    let openai = ["--embedder", "openai", "--openai-base-url", &server.base_url, "--embedding-dimensions", "64"];
    let mut args =
        vec!["worker", "--metrics-addr", "127.0.0.1:0", "--reaper-interval", "1s", "--poll-interval", "50ms"];
    args.extend(openai);
    let mut worker = env.spawn(&args);
    let addr = worker.wait_for_line("metrics listening on");

    let mut health = Value::Null;
    eventually("the worker to pause its AI work", || {
        let (status, body) = http(&addr, "GET", "/healthz", &[], b"");
        health = json_body(&body);
        status == 200 && health["status"] == "degraded"
    });
    assert_eq!(health["ai_service"], "account refused");
    assert!(health["ai_pause_reason"].as_str().unwrap().contains("Incorrect API key"), "{health}");
    let metrics = http(&addr, "GET", "/metrics", &[], b"").1;
    assert_eq!(sample(&metrics, "quire_worker_ai_paused"), Some(1.0));
    assert_eq!(sample(&metrics, "quire_worker_jobs_account_refused_total"), Some(1.0));
    assert_eq!(sample(&metrics, "quire_worker_jobs_dead_lettered_total"), Some(0.0));
    // The book waits with its attempt given back, and it is not marked failed.
    let status = env.status();
    assert_eq!(status["documents"][0]["status"], "processing", "{status}");
    assert_eq!(server.requests(), 1, "one refusal pauses AI work: no request per book of the backlog");
}

#[test]
fn a_config_file_sets_defaults_that_flags_and_environment_override() {
    let env = Env::new();
    let dir = env.dir.path();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir).args(args);
        for name in QUIRE_ENV {
            cmd.env_remove(name);
        }
        cmd
    };
    std::fs::write(dir.join("quire.toml"), "data-dir = \"from-file\"\nconcurrency = 2\nlease-ttl = \"90s\"\n").unwrap();
    run(&["status", "--json"]).assert().success();
    assert!(dir.join("from-file").is_dir(), "the file's data-dir is used");
    run(&["status", "--json"]).env("QUIRE_DATA_DIR", "from-env").assert().success();
    assert!(dir.join("from-env").is_dir(), "the environment wins over the file");
    run(&["--data-dir", "from-flag", "status"]).env("QUIRE_DATA_DIR", "from-env").assert().success();
    assert!(dir.join("from-flag").is_dir(), "the flag wins over both");

    let elsewhere = dir.join("elsewhere.toml");
    std::fs::write(&elsewhere, "data-dir = \"from-named-file\"\n").unwrap();
    run(&["status"]).arg("--config").arg(&elsewhere).assert().success();
    assert!(dir.join("from-named-file").is_dir(), "--config names the file");

    std::fs::write(dir.join("quire.toml"), "data-dri = \"typo\"\n").unwrap();
    let output = run(&["status"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown key `data-dri`"));
    std::fs::write(dir.join("quire.toml"), "yes = true\n").unwrap();
    let output = run(&["status"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("command line"));
    let missing = run(&["status", "--config", "nope.toml"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

#[test]
fn settings_read_from_the_environment_are_options_shown_in_help_and_accepted_in_the_file() {
    let env = Env::new();
    let help = String::from_utf8(env.cmd(&["--help"]).output().unwrap().stdout).unwrap();
    for (flag, variable, default) in [
        ("--database-schema", "QUIRE_DATABASE_SCHEMA", "[default: quire]"),
        ("--retry-base-delay", "QUIRE_RETRY_BASE_DELAY", "[default: 10s]"),
        ("--retry-max-delay", "QUIRE_RETRY_MAX_DELAY", "[default: 30m]"),
    ] {
        assert!(help.contains(flag) && help.contains(variable) && help.contains(default), "{flag}: {help}");
    }
    let process_help = String::from_utf8(env.cmd(&["process", "--help"]).output().unwrap().stdout).unwrap();
    for (flag, variable) in [("--openai-org-id", "OPENAI_ORG_ID"), ("--openai-project-id", "OPENAI_PROJECT_ID")] {
        assert!(process_help.contains(flag) && process_help.contains(variable), "{flag}: {process_help}");
    }

    assert!(env.fails(&["--retry-base-delay", "soon", "status"]).contains("--retry-base-delay"));
    std::fs::write(env.dir.path().join("quire.toml"), "retry-base-delay = \"2s\"\nretry-max-delay = \"1m\"\n").unwrap();
    env.cmd(&["status"]).assert().success();
    // An organisation that cannot be sent as a header is refused before any request.
    let book = env.write("book.epub", &book("Org", "Some text for the embedder to see."));
    let refused = env
        .cmd(&["process", "--embedder", "openai", "--openai-base-url", "http://127.0.0.1:9"])
        .arg(&book)
        .env("OPENAI_ORG_ID", "org\nbroken")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("organisation"), "{refused:?}");
}

#[test]
fn a_worker_refuses_settings_under_which_it_would_lose_healthy_leases() {
    let env = Env::new();
    let stderr = env.fails(&["worker", "--lease-ttl", "10s", "--heartbeat-interval", "20s", "--metrics-addr", "off"]);
    assert!(stderr.contains("shorter than the lease"), "{stderr}");
    let stderr = env.fails(&["worker", "--concurrency", "0", "--metrics-addr", "off"]);
    assert!(stderr.contains("concurrency"), "{stderr}");
    // The defaults shown are the worker's own.
    let help = String::from_utf8(env.cmd(&["worker", "--help"]).output().unwrap().stdout).unwrap();
    assert!(help.contains("[default: 1m]") && help.contains("[default: 500ms]"), "{help}");
}
