//! Where the tests find the shared corpus of real books, and what its absence means.

use std::path::{Path, PathBuf};

/// The shared corpus of real books (`shared/corpus/`, beside the checkout), for the tests that
/// read it. Absent, it is `None` with a notice, so the workspace still tests on a machine without
/// it. Under `CI=true` its absence panics, as a missing PostgreSQL does: CI places the corpus
/// beside the checkout, and a suite that skipped itself there would pass having tested nothing.
pub fn shared_corpus() -> Option<PathBuf> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpus"));
    corpus_at(dir, std::env::var("CI").is_ok_and(|ci| ci == "true"))
}

/// [`shared_corpus`] at `dir`, with `in_ci` for `CI=true`.
fn corpus_at(dir: &Path, in_ci: bool) -> Option<PathBuf> {
    if dir.is_dir() {
        return Some(dir.to_path_buf());
    }
    assert!(!in_ci, "CI=true but the shared corpus {} is absent: the corpus tests must run in CI", dir.display());
    // Past the test harness's output capture, so that a plain `cargo test` shows the skip.
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "notice: {} is absent; skipping the corpus tests", dir.display());
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "CI=true but the shared corpus")]
    fn an_absent_corpus_fails_loudly_under_ci() {
        corpus_at(Path::new("/nonexistent/shared/corpus"), true);
    }

    #[test]
    fn an_absent_corpus_is_skipped_with_a_notice_outside_ci() {
        assert_eq!(corpus_at(Path::new("/nonexistent/shared/corpus"), false), None);
    }

    #[test]
    fn a_present_corpus_is_found_in_ci_or_not() {
        let dir = std::env::temp_dir();
        assert_eq!(corpus_at(&dir, true), Some(dir.clone()));
        assert_eq!(corpus_at(&dir, false), Some(dir));
    }
}
