//! The data directory on a disk that fills up: every write fails cleanly, says what failed and
//! where, and leaves no temporary file behind.
//!
//! The full disk is real: a copy of this test binary runs the writes under `RLIMIT_FSIZE`, with
//! `SIGXFSZ` ignored (by the shell that starts it; an ignored signal stays ignored across
//! `exec`), so a write past the limit fails with `EFBIG` exactly where a full disk fails with
//! `ENOSPC`. Mounting a small tmpfs would need privileges the test suite does not have.

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

use worker::{DataDir, write_atomically};

/// Set in the copy of this test binary that writes under the limit: the data directory.
const STAND_IN_WRITER: &str = "QUIRE_TEST_FULL_DISK_DATA_DIR";

/// The largest file the writer may make.
const FILE_SIZE_LIMIT: u64 = 64 * 1024;

/// Writes far past the limit in each of the three ways the data directory writes a file, and
/// prints one line per way: `full-disk <way> <ErrorKind>: <message>` (or `ok`).
fn write_past_the_limit(root: &Path) {
    rlimit::setrlimit(rlimit::Resource::FSIZE, FILE_SIZE_LIMIT, FILE_SIZE_LIMIT).expect("set RLIMIT_FSIZE");
    let data_dir = DataDir::open(root).expect("open the data directory");
    let big = vec![7u8; 1 << 20];
    let report = |way: &str, result: std::io::Result<()>| match result {
        Ok(()) => println!("full-disk {way} ok"),
        Err(error) => println!("full-disk {way} {:?}: {error}", error.kind()),
    };
    report("store_upload", data_dir.store_upload(&big).map(drop));
    report("write_atomically", write_atomically(&data_dir.markdown_path("abc"), &big));
    let streamed = data_dir.upload_writer().and_then(|mut writer| {
        for piece in big.chunks(16 * 1024) {
            writer.write(piece)?;
        }
        writer.finish().map(drop)
    });
    report("upload_writer", streamed);
}

#[test]
fn a_write_that_fills_the_disk_leaves_no_temporary_file_and_names_what_failed() {
    if let Ok(root) = std::env::var(STAND_IN_WRITER) {
        write_past_the_limit(Path::new(&root));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let this_test = "a_write_that_fills_the_disk_leaves_no_temporary_file_and_names_what_failed";
    let output = Command::new("sh")
        .args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", this_test, "--nocapture", "--test-threads=1"])
        .env(STAND_IN_WRITER, dir.path())
        .output()
        .expect("the writer runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the writer failed: {output:?}");
    // The test harness prints the test's name before its output, on the same line.
    let lines: Vec<&str> =
        stdout.lines().filter_map(|line| line.split_once("full-disk ").map(|(_, rest)| rest)).collect();
    assert_eq!(lines.len(), 3, "one report per way of writing:\n{stdout}");
    for (line, place) in lines.iter().zip(["uploads", "markdown", "uploads"]) {
        let kind = format!("{:?}", ErrorKind::FileTooLarge);
        assert!(line.contains(&format!(" {kind}: ")), "the error keeps its kind: {line}");
        assert!(line.contains(place) && line.contains("cannot write"), "the error says what and where: {line}");
    }
    for sub in ["uploads", "markdown"] {
        let left: Vec<String> = std::fs::read_dir(dir.path().join(sub))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.is_empty(), "{sub}/ holds {left:?} after failed writes");
    }
}
