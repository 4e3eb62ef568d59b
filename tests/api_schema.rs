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
//! The run is bounded (a few examples per operation, a fixed seed) to stay well under a minute.
//! Without `st` on the PATH the test says so and passes, unless `CI=true`, where it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use epub_fixtures::{Block, BookSpec, ChapterSpec};

const BIN: &str = env!("CARGO_BIN_EXE_quire");

/// The checks every answer must pass.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

/// Kills the server when the test ends, whichever way.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `quire --data-dir DATA ARGS…`, with no setting of the developer's environment.
fn quire(data_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.env("RUST_LOG", "warn").arg("--data-dir").arg(data_dir).args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("QUIRE_") || name.starts_with("OPENAI_") {
            command.env_remove(name);
        }
    }
    command
}

fn run(data_dir: &Path, args: &[&str]) {
    let output = quire(data_dir, args).output().expect("quire runs");
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
    if !schemathesis_installed() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "schemathesis (`st`) is not installed; .ci/run installs it from PyPI"
        );
        eprintln!("skipped: schemathesis (`st`) is not installed; `pip install schemathesis` to run this test");
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data_dir = dir.path().join("data");
    let first = book(dir.path(), "first.epub", "First Voyage", WHALE);
    let second = book(dir.path(), "second.epub", "Second Voyage", &format!("{WHALE} Then the fog came down."));
    run(&data_dir, &["process", "--json", first.to_str().unwrap()]);
    run(&data_dir, &["process", "--json", second.to_str().unwrap()]);
    let broken = dir.path().join("broken.epub");
    std::fs::write(&broken, epub_fixtures::hostile::not_a_zip()).expect("file written");
    run(&data_dir, &["submit", "--json", broken.to_str().unwrap()]);
    run(&data_dir, &["worker", "--exit-when-idle", "--metrics-addr", "off"]);
    let third = book(dir.path(), "third.epub", "Third Voyage", "Calm water, grey sky, and no land in sight.");
    run(&data_dir, &["submit", "--json", third.to_str().unwrap()]);

    let mut child = quire(&data_dir, &["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("quire serve starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("quire serve printed its address").expect("stdout readable");
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            break addr.to_owned();
        }
    };

    let output = Command::new("st")
        .current_dir(dir.path())
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
