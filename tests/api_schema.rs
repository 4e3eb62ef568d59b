//! The HTTP API against its own description: schemathesis (from PyPI) reads
//! `GET /v1/openapi.json` from a real `quire serve` and sends it requests generated from every
//! operation there — valid ones and invalid ones — checking that none is answered with a server
//! error and that every answer has a status, a content type and a body the description allows.
//!
//! The server runs on SQLite in a temporary data directory holding books in every state a list
//! can show: two processed (chunks, connections, search hits), one dead-lettered (not an EPUB),
//! one pending. It listens on loopback with no token, so the generated changes (cancel, retry,
//! replay, purge, uploads) are allowed and exercised too.
//!
//! The same run on PostgreSQL, in a schema of the test's own on the server named by
//! `QUIRE_TEST_DATABASE_URL`: the answers may not depend on the backend (a NUL byte in a query,
//! which PostgreSQL's text refuses, included).
//!
//! The run is bounded (a few examples per operation, a fixed seed) to stay well under a minute.
//! Without `st` on the PATH (or, for the second run, without the URL) the test says so and
//! passes, unless `CI=true`, where it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use epub_fixtures::{Block, BookSpec, ChapterSpec};
use support::postgres::TestSchema;
use support::processes::ServeProcess;

const BIN: &str = env!("CARGO_BIN_EXE_quire");

/// The checks every answer must pass.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

/// Where the server keeps its data: a data directory and, for PostgreSQL, a schema of the test's own.
struct Backend<'a> {
    data_dir: &'a Path,
    postgres: Option<&'a TestSchema>,
}

/// `quire --data-dir DATA ARGS…`, with no setting of the developer's environment.
fn quire(backend: &Backend, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("QUIRE_") || name.starts_with("OPENAI_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "warn").arg("--data-dir").arg(backend.data_dir);
    if let Some(schema) = backend.postgres {
        command.arg("--database-url").arg(schema.url()).env("QUIRE_DATABASE_SCHEMA", schema.name());
    }
    command.args(args);
    command
}

fn run(backend: &Backend, args: &[&str]) {
    let output = quire(backend, args).output().expect("quire runs");
    assert!(output.status.success(), "quire {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// A one-chapter book that says `text`.
fn book(dir: &Path, name: &str, title: &str, text: &str) -> PathBuf {
    let chapter = ChapterSpec::new("ch1.xhtml", "The Voyage", vec![Block::Paragraph(text.to_owned())]);
    let path = dir.join(name);
    std::fs::write(&path, epub_fixtures::build_epub(&BookSpec::new(title, "A. Tester", "en", vec![chapter])))
        .expect("book written");
    path
}

const WHALE: &str = "The white whale breached beside the Nantucket harpoon boat, and the crew rowed hard \
    through the cold grey swell while the mate stood ready with the iron.";

/// Whether schemathesis's `st` runs here.
fn schemathesis_installed() -> bool {
    Command::new("st").arg("--version").output().is_ok_and(|output| output.status.success())
}

#[test]
fn every_answer_of_the_api_matches_its_openapi_description() {
    if !schemathesis_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data_dir = dir.path().join("data");
    check_the_api(dir.path(), &Backend { data_dir: &data_dir, postgres: None });
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_of_the_api_on_postgresql_matches_its_openapi_description() {
    if !schemathesis_ready() {
        return;
    }
    let Some(url) = support::postgres::database_url() else { return };
    let schema = TestSchema::new(&url).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data_dir = dir.path().join("data");
    let backend = Backend { data_dir: &data_dir, postgres: Some(&schema) };
    // The processes are blocking: off the runtime, which drops the schema afterwards.
    tokio::task::block_in_place(|| check_the_api(dir.path(), &backend));
}

/// Whether schemathesis is here to run; a notice (or, under `CI=true`, a failure) when not.
fn schemathesis_ready() -> bool {
    if schemathesis_installed() {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "schemathesis (`st`) is not installed; .ci/run installs it from PyPI"
    );
    eprintln!("skipped: schemathesis (`st`) is not installed; `pip install schemathesis` to run this test");
    false
}

/// Books in every state, a server over them, and schemathesis against it.
fn check_the_api(dir: &Path, backend: &Backend) {
    let first = book(dir, "first.epub", "First Voyage", WHALE);
    let second = book(dir, "second.epub", "Second Voyage", &format!("{WHALE} Then the fog came down."));
    run(backend, &["process", "--json", first.to_str().unwrap()]);
    run(backend, &["process", "--json", second.to_str().unwrap()]);
    let broken = dir.join("broken.epub");
    std::fs::write(&broken, epub_fixtures::hostile::not_a_zip()).expect("file written");
    run(backend, &["submit", "--json", broken.to_str().unwrap()]);
    run(backend, &["worker", "--exit-when-idle", "--metrics-addr", "off"]);
    let third = book(dir, "third.epub", "Third Voyage", "Calm water, grey sky, and no land in sight.");
    run(backend, &["submit", "--json", third.to_str().unwrap()]);

    let server = ServeProcess::start(quire(backend, &["serve", "--addr", "127.0.0.1:0"]));
    let addr = &server.addr;

    let output = Command::new("st")
        .current_dir(dir)
        .args(["run", &format!("http://{addr}/v1/openapi.json"), "--checks", CHECKS])
        .args(["--max-examples", "8", "--seed", "15", "--workers", "1", "--generation-database", "none"])
        .args(["--request-timeout", "30", "--no-color"])
        .output()
        .expect("schemathesis runs");
    drop(server);
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found answers that do not match the description:\n{report}");
    // A run that tested nothing would also succeed.
    let selected = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Operations:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u32>().ok());
    assert!(selected.is_some_and(|operations| operations > 0), "no operation tested:\n{report}");
    println!("{report}");
}
