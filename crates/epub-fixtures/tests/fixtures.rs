//! The committed fixtures are exactly what the generator makes today, and the builders produce
//! well-formed archives of the expected shape.

use std::io::{Cursor, Read};

use epub_fixtures::{corpus_of, fixtures_dir, hostile, sample_book, standard_fixtures};

#[test]
fn committed_fixtures_equal_freshly_generated_bytes() {
    for (name, fresh) in standard_fixtures() {
        let path = fixtures_dir().join(name);
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}); run `cargo run -p epub-fixtures`", path.display()));
        assert!(committed == fresh, "{name} is stale; run `cargo run -p epub-fixtures`");
    }
}

#[test]
fn generation_is_deterministic() {
    assert_eq!(sample_book(), sample_book());
    assert_eq!(corpus_of(3, 7), corpus_of(3, 7));
    assert_ne!(corpus_of(1, 7)[0].1, corpus_of(1, 8)[0].1);
}

#[test]
fn mimetype_is_first_and_stored() {
    let bytes = sample_book();
    let mut zip = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
    let mut first = zip.by_index(0).unwrap();
    assert_eq!(first.name().unwrap(), "mimetype");
    assert_eq!(first.compression(), zip::CompressionMethod::Stored);
    let mut text = String::new();
    first.read_to_string(&mut text).unwrap();
    assert_eq!(text, "application/epub+zip");
}

#[test]
fn corpus_books_are_distinct_and_share_vocabulary() {
    let books = corpus_of(6, 42);
    assert_eq!(books.len(), 6);
    let names: std::collections::HashSet<_> = books.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names.len(), 6);
    let texts: Vec<String> = books
        .iter()
        .map(|(_, bytes)| {
            let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
            let mut all = String::new();
            for i in 0..zip.len() {
                let mut file = zip.by_index(i).unwrap();
                if file.name().unwrap().ends_with(".xhtml") {
                    file.read_to_string(&mut all).unwrap();
                }
            }
            all
        })
        .collect();
    let shared = ["lighthouse", "orchard", "telescope", "locomotive", "manuscript"]
        .iter()
        .filter(|word| texts.iter().filter(|t| t.contains(*word)).count() >= 2)
        .count();
    assert!(shared >= 1, "some theme word must appear in at least two books");
}

#[test]
fn zip_bomb_is_small_but_declares_a_huge_entry() {
    let bytes = hostile::zip_bomb();
    assert!(bytes.len() < 4 << 20, "bomb file is {} bytes", bytes.len());
    let zip = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
    let index = zip.index_for_name("OEBPS/ch1.xhtml").unwrap();
    let entry = zip.by_index_data(index).unwrap();
    assert_eq!(entry.size(), u64::from(hostile::ZIP_BOMB_MIB) << 20);
}

#[test]
fn small_zip_bomb_really_inflates_to_its_declared_size() {
    // Proves the hand-built deflate stream and CRC are honest, on a size a test can afford.
    let bytes = hostile::zip_bomb_of(8);
    let mut zip = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
    let mut entry = zip.by_name("OEBPS/ch1.xhtml").unwrap();
    let mut sink = Vec::new();
    entry.read_to_end(&mut sink).unwrap();
    assert_eq!(sink.len(), 8 << 20);
    assert!(sink.iter().all(|&b| b == 0));
}

#[test]
fn every_hostile_builder_produces_bytes() {
    for bytes in [
        hostile::billion_laughs_opf(),
        hostile::billion_laughs_chapter(),
        hostile::path_traversal_entry(),
        hostile::path_traversal_spine(),
        hostile::truncated(),
        hostile::not_a_zip(),
        hostile::empty_spine(),
        hostile::drm_encrypted(),
        hostile::font_obfuscated(),
        hostile::deep_nesting(1000),
        hostile::deep_opf(1000),
        hostile::long_run(),
        hostile::no_text(),
        hostile::container_full_path_empty(),
        hostile::missing_container(),
        hostile::missing_spine_item(),
        hostile::utf16_billion_laughs_opf(),
        hostile::utf16_opf_with_billion_laughs_ncx(),
        hostile::utf16_deep_nesting(1000),
        hostile::utf16_chapter(),
        hostile::utf32_chapter(),
    ] {
        assert!(!bytes.is_empty());
    }
}
