//! The generated books from `epub-fixtures` come out as faithful markdown.

use epub_extract::{ExtractedBook, Limits, extract_bytes, extract_file};

fn extract(bytes: &[u8]) -> ExtractedBook {
    extract_bytes(bytes, &Limits::default()).unwrap_or_else(|e| panic!("refused: {e}"))
}

/// Asserts that `needles` occur in `markdown` in this order.
fn assert_in_order(markdown: &str, needles: &[&str]) {
    let mut from = 0;
    for needle in needles {
        match markdown[from..].find(needle) {
            Some(at) => from += at + needle.len(),
            None => panic!("{needle:?} missing or out of order in:\n{markdown}"),
        }
    }
}

#[test]
fn sample_book_metadata_comes_from_the_opf() {
    let book = extract(&epub_fixtures::sample_book());
    assert_eq!(book.title.as_deref(), Some("The Lighthouse Sampler"));
    assert_eq!(book.author.as_deref(), Some("Ada Quillfeather"));
    assert_eq!(book.language.as_deref(), Some("en"));
    assert_eq!(book.chapters, 3, "the nav document is not a chapter");
}

#[test]
fn sample_book_keeps_spine_order_and_atx_headings() {
    let book = extract(&epub_fixtures::sample_book());
    assert!(book.markdown.starts_with("# Chapter One: Beginnings\n\n"), "{}", book.markdown);
    assert_in_order(
        &book.markdown,
        &[
            "\n## The Lamp Room\n",
            "\n### Supplies\n",
            "\n# Chapter Two: Voices\n",
            "\n## The Reply\n",
            "\n# Chapter Three: Many Tongues\n",
        ],
    );
}

#[test]
fn sample_book_keeps_lists_quotes_and_emphasis() {
    let md = extract(&epub_fixtures::sample_book()).markdown;
    assert_in_order(&md, &["- Paraffin oil\n", "- Wicks of *cotton*\n", "- A brass key"]);
    assert_in_order(&md, &["1. Extinguish the lamp\n", "2. Draw the curtains\n", "3. Record the weather"]);
    assert!(md.contains("\n> Keep the light burning, whatever the weather, for someone is always at sea.\n"));
    assert!(md.contains("*forty years*") && md.contains("**one hundred and twelve**"));
    assert!(md.contains("***steady***"));
}

#[test]
fn sample_book_has_no_markdown_escapes_or_stray_spaces() {
    let md = extract(&epub_fixtures::sample_book()).markdown;
    assert!(md.contains("given as 2*3 shillings and 1. was never"), "{md}");
    assert!(!md.contains('\\'), "no backslash escapes: {md}");
    assert!(md.contains("wrote in the log:\nwind north-east"), "<br/> is a plain newline: {md}");
    assert!(!md.lines().any(|l| l.ends_with(' ')), "no trailing spaces");
    assert!(!md.contains("\n\n\n"), "blank lines collapsed");
}

#[test]
fn footnote_text_is_kept_and_the_noteref_dropped() {
    let md = extract(&epub_fixtures::sample_book()).markdown;
    assert!(md.contains("A letter arrived from the mainland with news of the harbour."), "{md}");
    assert!(md.contains("The mainland post came only on Thursdays."));
    assert!(!md.contains("](") && !md.contains("#fn1"), "no link syntax or targets: {md}");
}

#[test]
fn head_title_style_and_nav_are_not_text() {
    let md = extract(&epub_fixtures::sample_book()).markdown;
    assert!(!md.contains("margin"), "style content leaked");
    assert!(!md.contains("Table of Contents"), "nav document leaked");
    // Chapter titles appear once, as the h1, not again from <title>.
    assert_eq!(md.matches("Chapter Two: Voices").count(), 1);
    // Chapter three has a self-closing <title/>; its body must survive.
    assert!(md.contains("Les élèves"));
}

#[test]
fn non_ascii_text_is_preserved() {
    let md = extract(&epub_fixtures::sample_book()).markdown;
    for text in [
        "Les élèves étaient déjà là, à côté du château.",
        "Die Straße ist groß und weiß.",
        "Καλημέρα κόσμε, είπε ο φαροφύλακας.",
        "吾輩は猫である。名前はまだ無い。",
    ] {
        assert!(md.contains(text), "{text} missing");
    }
}

#[test]
fn image_variant_keeps_alt_text_and_no_image_syntax() {
    let book = extract(&epub_fixtures::sample_book_with_image());
    assert_eq!(book.title.as_deref(), Some("The Lighthouse Sampler, Illustrated"));
    assert!(book.markdown.contains("The lamp at night"));
    assert!(!book.markdown.contains("!["));
    assert!(!book.markdown.contains("lamp.png"));
}

#[test]
fn epub2_variant_with_ncx_works() {
    let book = extract(&epub_fixtures::epub2_book());
    assert_eq!(book.title.as_deref(), Some("The Orchard Book"));
    assert_eq!(book.author.as_deref(), Some("Barnaby Fenwick"));
    assert_eq!(book.language.as_deref(), Some("en-GB"));
    assert_eq!(book.chapters, 2);
    assert_in_order(&book.markdown, &["# Part One: The Orchard", "## Bees", "# Part Two: The Harvest", "- Pippins"]);
}

#[test]
fn committed_fixture_files_extract_from_disk() {
    for (name, _) in epub_fixtures::standard_fixtures() {
        let book = extract_file(&epub_fixtures::fixtures_dir().join(name), &Limits::default()).unwrap();
        assert!(!book.markdown.is_empty());
    }
}

#[test]
fn corpus_books_extract_with_their_titles() {
    for (name, bytes) in epub_fixtures::corpus_of(5, 1) {
        let book = extract(&bytes);
        assert!(book.title.as_deref().is_some_and(|t| t.starts_with("Book ")), "{name}");
        assert_eq!(book.chapters, 3, "{name}");
    }
}

#[test]
fn errors_serialize_with_their_kind() {
    let error = extract_bytes(b"nope", &Limits::default()).unwrap_err();
    let json = serde_json::to_value(&error).unwrap();
    assert_eq!(json["kind"], "not_zip");
    let back: epub_extract::ExtractError = serde_json::from_value(json).unwrap();
    assert_eq!(back, error);
}
