//! Text-like chunks for a generated library: passages of the corpus's real books, varied.
//!
//! Uniform random vectors have no neighbourhoods, so recall measured on them misleads. Here
//! every chunk is a real passage (the corpus books, extracted and chunked as quire does) in
//! which a seeded few words are swapped for words of other passages: each chunk is distinct,
//! and its nearest neighbours are its siblings from the same passage and passages on the same
//! subject, as in a real library with many editions and related books.

use std::path::Path;

use embedder::LocalEmbedder;

use crate::BenchResult;

/// Source passages and the words to vary them with.
pub struct Passages {
    passages: Vec<String>,
    words: Vec<String>,
}

impl Passages {
    /// The chunks of every readable EPUB under `corpus` (its `valid/` folder).
    pub fn from_corpus(corpus: &Path) -> BenchResult<Passages> {
        let mut passages = Vec::new();
        let mut entries: Vec<_> =
            std::fs::read_dir(corpus.join("valid"))?.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for path in entries.into_iter().filter(|p| p.extension().is_some_and(|e| e == "epub")) {
            let Ok(book) = epub_extract::extract_file(&path, &epub_extract::Limits::default()) else { continue };
            let chunks = chunker::chunk_markdown("corpus", &book.markdown, &chunker::ChunkerConfig::default());
            passages.extend(chunks.into_iter().map(|c| c.text).filter(|t| t.len() > 200));
        }
        if passages.is_empty() {
            return Err(format!("no readable book under {}", corpus.join("valid").display()).into());
        }
        let mut words: Vec<String> =
            passages.iter().flat_map(|p| p.split_whitespace().map(str::to_owned)).filter(|w| w.len() > 3).collect();
        words.sort();
        words.dedup();
        Ok(Passages { passages, words })
    }

    /// How many distinct source passages there are.
    pub fn len(&self) -> usize {
        self.passages.len()
    }

    /// The `n`th generated chunk: passage `n mod len`, with one word in eight (chosen by `n`)
    /// replaced by another word of the corpus.
    pub fn chunk(&self, n: u64) -> String {
        let passage = &self.passages[(n % self.passages.len() as u64) as usize];
        let mut state = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let variant = n / self.passages.len() as u64;
        passage
            .split_whitespace()
            .map(|word| {
                if variant > 0 && next() % 8 == 0 {
                    self.words[(next() % self.words.len() as u64) as usize].as_str()
                } else {
                    word
                }
            })
            .collect::<Vec<&str>>()
            .join(" ")
    }
}

/// quire's default embedder, as `quire worker` runs it.
pub fn embedder() -> LocalEmbedder {
    LocalEmbedder::default()
}
