//! Behaviour of `chunk_markdown` on crafted documents, hostile inputs and arbitrary strings.

use chunker::{Chunk, ChunkerConfig, ConfigError, chunk_id, chunk_markdown};
use proptest::prelude::*;

/// Chunks `markdown` and asserts every invariant the pipeline relies on.
fn check(markdown: &str, config: &ChunkerConfig) -> Vec<Chunk> {
    let chunks = chunk_markdown("doc-1", markdown, config);
    let chars: Vec<char> = markdown.chars().collect();
    let mut previous_end = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.index as usize, i, "indices are contiguous from 0");
        assert!(chunk.text.chars().count() <= config.max_chars, "chunk {i} over max: {chunk:?}");
        assert!(!chunk.text.trim().is_empty(), "chunk {i} is whitespace only");
        assert!(chunk.start < chunk.end && chunk.end <= chars.len(), "chunk {i} offsets {chunk:?}");
        assert!(chunk.start >= previous_end, "chunk {i} overlaps or goes backwards");
        previous_end = chunk.end;
        let slice: String = chars[chunk.start..chunk.end].iter().collect();
        assert_eq!(slice, chunk.text, "chunk {i} text does not match its offsets");
        if markdown.len() < 100_000 {
            // The pipeline's own formulation; quadratic over all chunks, so only on small inputs.
            let skipped: String = markdown.chars().skip(chunk.start).take(chunk.end - chunk.start).collect();
            assert_eq!(skipped, chunk.text);
        }
        assert_eq!(chunk.id, chunk_id("doc-1", chunk.index, &chunk.content_hash));
        assert_eq!(chunk.content_hash.len(), 64);
    }
    assert_eq!(chunks, chunk_markdown("doc-1", markdown, config), "chunking is deterministic");
    assert_all_text_is_covered(&chars, &chunks);
    chunks
}

/// Nothing is lost: every character outside the chunks is whitespace.
fn assert_all_text_is_covered(chars: &[char], chunks: &[Chunk]) {
    let mut covered = vec![false; chars.len()];
    for chunk in chunks {
        covered[chunk.start..chunk.end].iter_mut().for_each(|c| *c = true);
    }
    let lost: String =
        chars.iter().zip(&covered).filter(|(c, covered)| !**covered && !c.is_whitespace()).map(|(c, _)| *c).collect();
    assert!(lost.is_empty(), "text in no chunk: {lost:?}");
}

fn config(target: usize, max: usize) -> ChunkerConfig {
    ChunkerConfig::new(target, max).expect("valid test config")
}

const BOOK: &str = "\
# Part One

Intro to part one.

## Chapter 1

It was a dark night. The wind howled over the moor and nobody slept.

### Scene 1.1 ###

A scene inside chapter one.

## Chapter 2

```
# not a heading, this is code
```

Text of chapter two.

# Part Two

#### Deep note

Part two text.
";

#[test]
fn heading_paths_follow_the_heading_stack() {
    let chunks = check(BOOK, &config(10, 30));
    let path_of =
        |needle: &str| chunks.iter().find(|c| c.text.contains(needle)).map(|c| c.heading_path.clone()).unwrap();
    assert_eq!(path_of("Intro to part one"), ["Part One"]);
    assert_eq!(path_of("The wind howled"), ["Part One", "Chapter 1"]);
    assert_eq!(path_of("A scene inside"), ["Part One", "Chapter 1", "Scene 1.1"]);
    assert_eq!(path_of("Text of chapter two"), ["Part One", "Chapter 2"]);
    assert_eq!(path_of("Part two text"), ["Part Two", "Deep note"]);
}

#[test]
fn text_before_the_first_heading_has_an_empty_path() {
    let chunks = check("Preface text.\n\n# One\n\nBody.", &ChunkerConfig::default());
    assert_eq!(chunks[0].text, "Preface text.");
    assert!(chunks[0].heading_path.is_empty());
    assert_eq!(chunks[1].heading_path, ["One"]);
}

#[test]
fn chunks_never_span_two_top_level_sections_that_fit_separately() {
    // Everything fits in one default-sized chunk, yet each `#`/`##` section gets its own.
    let chunks = check(BOOK, &ChunkerConfig::default());
    for chunk in &chunks {
        let top_level = chunk.text.lines().filter(|l| l.starts_with("# Part") || l.starts_with("## Chapter")).count();
        assert!(top_level <= 1, "chunk spans sections: {:?}", chunk.text);
    }
    let starts: Vec<_> = chunks.iter().map(|c| c.text.lines().next().unwrap()).collect();
    assert_eq!(starts, ["# Part One", "## Chapter 1", "## Chapter 2", "# Part Two"]);
    // Deeper headings do not force a split: the scene stays with its chapter.
    assert!(chunks[1].text.contains("### Scene 1.1 ###"));
}

#[test]
fn small_paragraphs_are_packed_up_to_the_target() {
    let markdown = "Short paragraph number one.\n\n".repeat(100);
    let chunks = check(&markdown, &config(200, 300));
    assert!(chunks.len() < 20, "paragraphs were not packed: {} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.text.ends_with("one.")), "chunks end at paragraph ends");
}

#[test]
fn ids_are_deterministic_and_depend_on_the_document() {
    let a = check(BOOK, &config(30, 80));
    let b = chunk_markdown("doc-2", BOOK, &config(30, 80));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.id != y.id && x.content_hash == y.content_hash));
    let mut ids: Vec<_> = a.iter().map(|c| &c.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), a.len(), "ids are unique within a document");
}

#[test]
fn non_ascii_offsets_are_in_chars() {
    let markdown = "# Éléments\n\nCafé crème, naïve façade. 漢字かな交じり文。🐋🐳 whale.\n\n## Ωμέγα\n\nΤέλος.";
    let chunks = check(markdown, &config(10, 20));
    assert!(chunks.len() > 3);
    let last = chunks.last().unwrap();
    assert_eq!(last.heading_path, ["Éléments", "Ωμέγα"]);
    assert_eq!(last.end, markdown.chars().count());
}

#[test]
fn a_two_megabyte_single_word_is_hard_split() {
    // text-splitter alone takes tens of seconds on this (see DEPENDENCY-NOTES.md).
    let word = "x".repeat(2_000_000);
    let chunks = check(&word, &ChunkerConfig::default());
    assert_eq!(chunks.iter().map(|c| c.end - c.start).sum::<usize>(), 2_000_000);
    assert!(chunks.iter().all(|c| c.text.len() == 1500 || c.index as usize == chunks.len() - 1));
}

#[test]
fn a_long_word_inside_prose_keeps_the_prose_around_it() {
    let markdown = format!("Before the blob.\n\n![img](data:{})\n\nAfter the blob.", "Q".repeat(5000));
    let chunks = check(&markdown, &config(100, 200));
    assert_eq!(chunks.first().unwrap().text, "Before the blob.");
    assert_eq!(chunks.last().unwrap().text, "After the blob.");
}

#[test]
fn a_long_paragraph_without_punctuation_chunks() {
    let markdown = "lorem ipsum dolor ".repeat(20_000);
    let chunks = check(&markdown, &ChunkerConfig::default());
    assert!(chunks.len() > 200);
}

#[test]
fn empty_and_whitespace_only_inputs_give_no_chunks() {
    for markdown in ["", " ", "\n\n\n", " \t\n \u{3000}\n"] {
        assert!(check(markdown, &ChunkerConfig::default()).is_empty(), "{markdown:?}");
    }
}

#[test]
fn config_is_validated() {
    assert_eq!(ChunkerConfig::new(0, 10), Err(ConfigError::ZeroTarget));
    assert_eq!(ChunkerConfig::new(10, 9), Err(ConfigError::MaxBelowTarget { target_chars: 10, max_chars: 9 }));
    assert_eq!(ChunkerConfig::new(5, 5), Ok(ChunkerConfig { target_chars: 5, max_chars: 5 }));
    assert_eq!(ChunkerConfig::default(), ChunkerConfig { target_chars: 1000, max_chars: 1500 });
}

#[test]
fn an_invalid_hand_built_config_does_not_panic() {
    let zero = ChunkerConfig { target_chars: 0, max_chars: 0 };
    let chunks = chunk_markdown("d", "some words here", &zero);
    assert!(chunks.iter().all(|c| c.text.chars().count() == 1));
    let inverted = ChunkerConfig { target_chars: 10, max_chars: 3 };
    assert!(chunk_markdown("d", "some words here", &inverted).iter().all(|c| c.text.len() <= 10));
}

/// Pieces that make strings look like markdown, including the awkward parts.
fn markdownish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("# ".to_owned()),
        Just("## ".to_owned()),
        Just("###### ".to_owned()),
        Just("#".to_owned()),
        Just("\n".to_owned()),
        Just("\n\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("```\n".to_owned()),
        Just("~~~".to_owned()),
        Just("- ".to_owned()),
        Just("> ".to_owned()),
        Just("    ".to_owned()),
        Just(" ".to_owned()),
        Just("| a | b |\n|---|---|\n".to_owned()),
        Just(". ".to_owned()),
        Just("*".to_owned()),
        "[a-z]{1,12}",
        "[éßΩ漢字🐋\u{301}\u{200b}]{1,4}",
        "x{20,60}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..120).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_markdownish_text_keeps_every_invariant(
        markdown in markdownish(),
        target in 1usize..40,
        extra in 0usize..40,
    ) {
        check(&markdown, &config(target, target + extra));
    }

    #[test]
    fn arbitrary_strings_keep_every_invariant(markdown in any::<String>(), target in 1usize..20) {
        check(&markdown, &config(target, target * 2));
    }
}
