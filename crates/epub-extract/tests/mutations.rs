//! Damaged books, generated: a generated EPUB with one of its files cut, spliced or salted with
//! markup, then zipped again. Whatever the damage, extraction returns the text or a typed,
//! human refusal: it never panics (not even a panic caught at the last line of defence) and
//! never reports an internal error.

use epub_extract::{Limits, extract_bytes};
use epub_fixtures::{book_entries, sample_book_spec, zip_entries};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Damage {
    /// Keep only the first `at` bytes.
    Truncate { at: usize },
    /// Insert these bytes at `at`.
    Insert { at: usize, bytes: Vec<u8> },
    /// Remove `len` bytes at `at`.
    Remove { at: usize, len: usize },
}

fn markup_bytes() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop_oneof![
        Just(b"<".to_vec()),
        Just(b">".to_vec()),
        Just(b"</".to_vec()),
        Just(b"/>".to_vec()),
        Just(b"&".to_vec()),
        Just(b"&amp;".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"<!--".to_vec()),
        Just(b"<![CDATA[".to_vec()),
        Just(b"<?xml".to_vec()),
        Just(b"<div>".to_vec()),
        Just(b"full-path=\"\"".to_vec()),
        Just(b"idref=\"nowhere\"".to_vec()),
        Just(vec![0xff, 0xfe]),
        Just(vec![0]),
        proptest::collection::vec(any::<u8>(), 1..8),
    ];
    proptest::collection::vec(pieces, 1..6).prop_map(|parts| parts.concat())
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(|at| Damage::Truncate { at }),
        (any::<usize>(), markup_bytes()).prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Damage::Remove { at, len }),
    ]
}

fn apply(data: &mut Vec<u8>, damage: &Damage) {
    let len = data.len().max(1);
    match damage {
        Damage::Truncate { at } => data.truncate(at % len),
        Damage::Insert { at, bytes } => {
            let at = at % (data.len() + 1);
            data.splice(at..at, bytes.iter().copied());
        }
        Damage::Remove { at, len: remove } => {
            let at = at % len;
            let end = (at + remove).min(data.len());
            if at < end {
                data.drain(at..end);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn damaged_books_are_read_or_refused_never_crash(entry in any::<usize>(), damages in proptest::collection::vec(damage(), 1..4)) {
        let mut entries = book_entries(&sample_book_spec());
        let index = entry % entries.len();
        for damage in &damages {
            apply(&mut entries[index].data, damage);
        }
        let bytes = zip_entries(&entries);
        match extract_bytes(&bytes, &Limits::default()) {
            Ok(book) => prop_assert!(!book.markdown.trim().is_empty()),
            Err(error) => {
                prop_assert!(!matches!(error.code(), "reader_panic" | "internal"), "{} in {}: {error}", error.code(), entries[index].name);
                prop_assert!(!error.to_string().is_empty());
            }
        }
    }
}
