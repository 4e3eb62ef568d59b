//! The shared corpus of real books (`shared/corpus/`, beside the workspace). Skipped with a notice
//! when the corpus is absent, so the crate still tests elsewhere; under `CI=true`, where CI has
//! it, an absent corpus fails.

use std::collections::HashMap;
use std::path::Path;

use epub_extract::{Limits, extract_file};

/// Rows of a TSV file (after its header line), comments skipped.
fn tsv_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .skip(1)
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

fn epub_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".epub"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_valid_book_extracts_with_its_manifest_title() {
    let Some(corpus) = epub_fixtures::shared_corpus() else { return };
    let dir = corpus.join("valid");
    let titles: HashMap<String, String> =
        tsv_rows(&dir.join("MANIFEST.tsv")).into_iter().map(|row| (row[0].clone(), row[8].clone())).collect();
    let files = epub_files(&dir);
    assert!(!files.is_empty());
    for name in files {
        let book = extract_file(&dir.join(&name), &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(book.markdown.chars().any(char::is_alphanumeric), "{name}: empty markdown");
        assert_eq!(book.title.as_ref(), titles.get(&name), "{name}: title");
        assert!(book.chapters > 0, "{name}");
        let longest = book.markdown.split_whitespace().map(|w| w.chars().count()).max().unwrap_or(0);
        assert!(longest <= epub_extract::MAX_RUN_CHARS, "{name}: run of {longest}");
    }
}

#[test]
fn every_invalid_file_is_accepted_or_rejected_as_the_table_says() {
    let Some(corpus) = epub_fixtures::shared_corpus() else { return };
    let dir = corpus.join("invalid");
    let table = tsv_rows(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/invalid-corpus-expectations.tsv")));
    let expected: HashMap<String, (String, String)> =
        table.into_iter().map(|row| (row[0].clone(), (row[1].clone(), row[2].clone()))).collect();
    let files = epub_files(&dir);
    let mut failures: Vec<String> = expected
        .keys()
        .filter(|name| !files.contains(name))
        .map(|name| format!("{name}: row for a missing file"))
        .collect();
    for name in files {
        let Some((verdict, code)) = expected.get(&name) else {
            failures.push(format!("{name}: no row in invalid-corpus-expectations.tsv"));
            continue;
        };
        if name.ends_with("-fatal.epub") && verdict != "reject" {
            failures.push(format!("{name}: a -fatal file must be rejected"));
        }
        match (extract_file(&dir.join(&name), &Limits::default()), verdict.as_str()) {
            (Ok(book), "accept") if book.markdown.chars().any(char::is_alphanumeric) => {}
            (Ok(_), "accept") => failures.push(format!("{name}: accepted with empty markdown")),
            (Err(error), "reject") if error.code() == code => {}
            (Err(error), "reject") => {
                failures.push(format!("{name}: rejected as {} ({error}), expected {code}", error.code()))
            }
            (Ok(_), _) => failures.push(format!("{name}: accepted, expected {code}")),
            (Err(error), _) => {
                failures.push(format!("{name}: rejected as {} ({error}), expected acceptance", error.code()))
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
