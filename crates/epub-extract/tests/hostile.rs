//! Every hostile builder from `epub-fixtures` is refused with the right typed error, or accepted
//! when the policy says so, and nothing panics.

use epub_extract::{ExtractError, Limits, Part, extract_bytes};
use epub_fixtures::hostile;

fn refused(bytes: &[u8]) -> ExtractError {
    match extract_bytes(bytes, &Limits::default()) {
        Ok(book) => panic!("accepted a hostile file: {:?}", book.title),
        Err(error) => {
            assert!(!error.to_string().is_empty());
            error
        }
    }
}

#[test]
fn zip_bomb_is_refused_from_declared_sizes_without_inflating() {
    // The declared size is 1 GiB; the pre-scan refuses it before anything is inflated (the test
    // would otherwise take seconds and a gigabyte).
    let started = std::time::Instant::now();
    let error = refused(&hostile::zip_bomb());
    assert_eq!(error.code(), "zip_bomb");
    assert!(matches!(&error, ExtractError::EntryTooLarge { entry, .. } if entry == "OEBPS/ch1.xhtml"), "{error}");
    assert!(error.to_string().contains("OEBPS/ch1.xhtml"));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn zip_bomb_under_the_size_limit_is_caught_by_the_ratio() {
    let error = refused(&hostile::zip_bomb_of(64));
    assert!(matches!(error, ExtractError::CompressionRatio { ratio, limit: 200, .. } if ratio > 200), "{error}");
    assert_eq!(error.code(), "zip_bomb");
}

#[test]
fn billion_laughs_in_the_package_document_is_refused() {
    let error = refused(&hostile::billion_laughs_opf());
    assert_eq!(error, ExtractError::XmlEntities { part: Part::Package, path: "OEBPS/content.opf".into() });
}

#[test]
fn billion_laughs_in_a_chapter_is_refused() {
    let error = refused(&hostile::billion_laughs_chapter());
    assert_eq!(error, ExtractError::XmlEntities { part: Part::Chapter, path: "OEBPS/ch1.xhtml".into() });
}

#[test]
fn unreferenced_escaping_entry_is_ignored() {
    let book = extract_bytes(&hostile::path_traversal_entry(), &Limits::default()).unwrap();
    assert!(book.markdown.contains("Ordinary, readable text."));
    assert!(!book.markdown.contains("escaped"));
}

#[test]
fn spine_item_escaping_the_container_is_refused() {
    let error = refused(&hostile::path_traversal_spine());
    assert_eq!(error.code(), "path_escape");
    assert!(error.to_string().contains("../../evil.xhtml"), "{error}");
}

#[test]
fn truncated_and_foreign_files_are_not_zip() {
    assert_eq!(refused(&hostile::truncated()).code(), "not_zip");
    assert_eq!(refused(&hostile::not_a_zip()).code(), "not_zip");
    assert_eq!(refused(b"").to_string(), "not a zip archive: the file is empty");
}

#[test]
fn empty_spine_is_refused() {
    assert_eq!(refused(&hostile::empty_spine()), ExtractError::EmptySpine);
}

#[test]
fn encrypted_chapter_is_refused_as_drm() {
    let error = refused(&hostile::drm_encrypted());
    assert_eq!(
        error,
        ExtractError::Encrypted { path: "OEBPS/ch1.xhtml".into(), algorithm: hostile::DRM_ALGORITHM.into() }
    );
    assert_eq!(error.to_string(), format!("chapter OEBPS/ch1.xhtml is encrypted (DRM): {}", hostile::DRM_ALGORITHM));
}

#[test]
fn font_obfuscation_is_accepted() {
    let book = extract_bytes(&hostile::font_obfuscated(), &Limits::default()).unwrap();
    assert!(book.markdown.contains("Ordinary, readable text."));
}

#[test]
fn deep_chapter_nesting_is_refused_before_parsing() {
    let error = refused(&hostile::deep_nesting(100_000));
    assert_eq!(
        error,
        ExtractError::TooDeep { part: Part::Chapter, path: "OEBPS/ch1.xhtml".into(), depth: 100_003, limit: 256 }
    );
    assert_eq!(error.to_string(), "chapter OEBPS/ch1.xhtml nests 100003 levels deep (limit 256)");
}

#[test]
fn nesting_just_under_the_limit_is_read() {
    let book = extract_bytes(&hostile::deep_nesting(200), &Limits::default()).unwrap();
    assert!(book.markdown.contains("deep"));
}

#[test]
fn deep_package_document_is_refused_before_epub_parses_it() {
    // Regression: the nesting elements are `<x:meta>`, which an HTML-minded scanner took for the
    // void `<meta>` and let through to epub's quadratic XML code.
    let error = refused(&hostile::deep_opf(100_000));
    assert!(matches!(error, ExtractError::TooDeep { part: Part::Package, .. }), "{error}");
}

#[test]
fn long_run_without_whitespace_is_hard_split() {
    let book = extract_bytes(&hostile::long_run(), &Limits::default()).unwrap();
    let longest = book.markdown.split_whitespace().map(|w| w.chars().count()).max().unwrap();
    assert!(longest <= epub_extract::MAX_RUN_CHARS, "longest run {longest}");
    let letters: usize = book.markdown.chars().filter(|c| ('a'..='j').contains(c)).count();
    assert!(letters >= hostile::LONG_RUN_BYTES, "no text lost");
}

#[test]
fn book_without_text_is_refused() {
    assert_eq!(refused(&hostile::no_text()), ExtractError::NoText);
}

#[test]
fn empty_full_path_is_refused_instead_of_panicking_in_epub() {
    assert_eq!(refused(&hostile::container_full_path_empty()).code(), "bad_container");
}

#[test]
fn missing_container_is_refused() {
    assert_eq!(refused(&hostile::missing_container()).to_string(), "META-INF/container.xml is missing");
}

#[test]
fn missing_spine_item_is_named() {
    let error = refused(&hostile::missing_spine_item());
    assert_eq!(error.to_string(), "spine item OEBPS/ch2.xhtml not found in the archive");
}

#[test]
fn upload_limit_is_checked_first() {
    let limits = Limits { max_upload_bytes: 10, ..Limits::default() };
    let error = extract_bytes(&epub_fixtures::sample_book(), &limits).unwrap_err();
    assert_eq!(error.code(), "too_large");
}

#[test]
fn exhausted_time_budget_is_refused() {
    let limits = Limits { time_budget: std::time::Duration::ZERO, ..Limits::default() };
    let error = extract_bytes(&epub_fixtures::sample_book(), &limits).unwrap_err();
    assert_eq!(error.code(), "time_budget");
    assert!(
        error.to_string().starts_with("time budget of 0s exceeded while reading chapter OEBPS/ch1.xhtml"),
        "{error}"
    );
}

// Regressions: the guard scanned bytes for ASCII markup, so a file in UTF-16, which the `epub`
// crate's XML parser and the chapter conversion both decode, carried its markup past it unseen.

#[test]
fn billion_laughs_in_a_utf16_package_document_is_refused() {
    let error = refused(&hostile::utf16_billion_laughs_opf());
    assert_eq!(error, ExtractError::XmlEntities { part: Part::Package, path: "OEBPS/content.opf".into() });
}

#[test]
fn a_utf16_package_document_does_not_hide_its_ncx_from_the_guard() {
    let error = refused(&hostile::utf16_opf_with_billion_laughs_ncx());
    assert_eq!(error, ExtractError::XmlEntities { part: Part::Ncx, path: "OEBPS/toc.ncx".into() });
}

#[test]
fn deep_nesting_in_a_utf16_chapter_is_refused_before_parsing() {
    let error = refused(&hostile::utf16_deep_nesting(1_000));
    assert_eq!(
        error,
        ExtractError::TooDeep { part: Part::Chapter, path: "OEBPS/ch1.xhtml".into(), depth: 1_003, limit: 256 }
    );
}

#[test]
fn a_utf16_chapter_is_read() {
    let book = extract_bytes(&hostile::utf16_chapter(), &Limits::default()).unwrap();
    assert!(book.markdown.contains("Ordinary text, read from UTF-16: é."), "{}", book.markdown);
}

#[test]
fn a_utf32_chapter_is_refused_by_name() {
    let error = refused(&hostile::utf32_chapter());
    assert_eq!(
        error,
        ExtractError::UnsupportedEncoding {
            part: Part::Chapter,
            path: "OEBPS/ch1.xhtml".into(),
            encoding: "UTF-32LE".into()
        }
    );
    assert_eq!(error.code(), "unsupported_encoding");
    assert_eq!(
        error.to_string(),
        "chapter OEBPS/ch1.xhtml is encoded in UTF-32LE, which is not supported (use UTF-8 or UTF-16)"
    );
}
