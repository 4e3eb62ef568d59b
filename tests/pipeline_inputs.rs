//! Every input ends one of two ways: processed to `complete`, or dead-lettered at once with a
//! clear reason and no retry. Real books from the shared corpus, broken files from a validator's
//! suite, and hostile files built here; the book parser runs in the real isolated child process.

mod support;

use std::path::Path;

use checkpoint_store::{DocumentStore, ErrorKind, JobFilter, JobKind, JobStatus, JobStore};
use support::{CountingEmbedder, Rig};

/// What became of one submitted file.
#[derive(Debug)]
struct Verdict {
    document_status: String,
    chunk_count: u32,
    job_status: JobStatus,
    attempts: u32,
    error_kind: Option<ErrorKind>,
    error: Option<String>,
}

async fn process(name: &str, bytes: &[u8]) -> Verdict {
    let rig = Rig::new(CountingEmbedder::new(64)).await;
    let submission = rig.submit(name, bytes).await;
    rig.drive().await;
    let document = rig.store.document(&submission.document_id).await.unwrap().unwrap();
    let filter = JobFilter { kind: Some(JobKind::ProcessDocument), ..Default::default() };
    let job = rig.store.list_jobs(&filter).await.unwrap().remove(0);
    Verdict {
        document_status: document.status.to_string(),
        chunk_count: document.chunk_count,
        job_status: job.status,
        attempts: job.attempts,
        error_kind: job.error_kind,
        error: document.error,
    }
}

/// A permanent failure: dead after one attempt, the reason on the document.
fn assert_refused(verdict: &Verdict, what: &str, reason_contains: &str) {
    assert_eq!(verdict.job_status, JobStatus::Dead, "{what}: {verdict:?}");
    assert_eq!(verdict.attempts, 1, "{what}: a permanent failure is never retried");
    assert_eq!(verdict.error_kind, Some(ErrorKind::Permanent), "{what}");
    assert_eq!(verdict.document_status, "failed", "{what}");
    let error = verdict.error.as_deref().unwrap_or_default();
    assert!(error.to_lowercase().contains(reason_contains), "{what}: reason {error:?} lacks {reason_contains:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_fail_permanently_with_a_clear_reason() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("zip bomb", epub_fixtures::hostile::zip_bomb(), "beyond the 128 mib per-entry limit"),
        ("billion laughs in the package", epub_fixtures::hostile::billion_laughs_opf(), "entit"),
        ("billion laughs in a chapter", epub_fixtures::hostile::billion_laughs_chapter(), "entit"),
        ("a spine entry escaping the archive", epub_fixtures::hostile::path_traversal_spine(), "outside"),
        ("a truncated archive", epub_fixtures::hostile::truncated(), "zip"),
        ("not a zip file", epub_fixtures::hostile::not_a_zip(), "zip"),
        ("an empty spine", epub_fixtures::hostile::empty_spine(), "spine is empty"),
        ("a DRM-encrypted chapter", epub_fixtures::hostile::drm_encrypted(), "encrypted"),
        ("100,000 nested elements", epub_fixtures::hostile::deep_nesting(100_000), "nests"),
        ("a book with no text", epub_fixtures::hostile::no_text(), "no text"),
        ("an empty container path", epub_fixtures::hostile::container_full_path_empty(), "full-path"),
        ("no container", epub_fixtures::hostile::missing_container(), "container.xml is missing"),
        ("a missing chapter", epub_fixtures::hostile::missing_spine_item(), "not found"),
    ];
    for (what, bytes, reason) in cases {
        let verdict = process("hostile.epub", &bytes).await;
        assert_refused(&verdict, what, reason);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_but_readable_files_complete() {
    let cases = [
        ("font obfuscation", epub_fixtures::hostile::font_obfuscated()),
        ("a two-megabyte run without spaces", epub_fixtures::hostile::long_run()),
        ("an unreferenced entry named with ../", epub_fixtures::hostile::path_traversal_entry()),
        ("an EPUB 2 book", epub_fixtures::epub2_book()),
        ("a book with an image", epub_fixtures::sample_book_with_image()),
    ];
    for (what, bytes) in cases {
        let verdict = process("book.epub", &bytes).await;
        assert_eq!(verdict.document_status, "complete", "{what}: {verdict:?}");
        assert!(verdict.chunk_count > 0, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_valid_corpus_book_processes_to_complete() {
    let Some(corpus) = epub_fixtures::shared_corpus() else { return };
    let manifest = std::fs::read_to_string(corpus.join("valid/MANIFEST.tsv")).unwrap();
    let files: Vec<&str> =
        manifest.lines().skip(1).filter_map(|line| line.split('\t').next()).filter(|f| !f.is_empty()).collect();
    assert_eq!(files.len(), 14);
    for file in files {
        let bytes = std::fs::read(corpus.join("valid").join(file)).unwrap();
        let verdict = process(file, &bytes).await;
        assert_eq!(verdict.document_status, "complete", "{file}: {verdict:?}");
        assert!(verdict.chunk_count > 0, "{file}");
        assert_eq!(verdict.attempts, 1, "{file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_corpus_file_completes_or_fails_permanently_as_the_table_says() {
    let Some(corpus) = epub_fixtures::shared_corpus() else { return };
    let table = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../epub-extract/tests/invalid-corpus-expectations.tsv"),
    )
    .unwrap();
    let rows: Vec<Vec<&str>> =
        table.lines().filter(|l| !l.starts_with('#')).skip(1).map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 40, "one row per file of the invalid corpus");
    for row in rows {
        let (file, verdict_expected) = (row[0], row[1]);
        let bytes = std::fs::read(corpus.join("invalid").join(file)).unwrap();
        let verdict = process(file, &bytes).await;
        match verdict_expected {
            "accept" => {
                assert_eq!(verdict.document_status, "complete", "{file}: {verdict:?}");
                assert!(!file.ends_with("-fatal.epub"), "{file}: fatal files must fail");
            }
            "reject" => assert_refused(&verdict, file, ""),
            other => panic!("{file}: unknown verdict {other}"),
        }
    }
}
