//! Markdown to chunks for quire: heading-aware, size-bounded, with stable ids and char offsets.
//!
//! The entry point is [`chunk_markdown`], which turns one document's markdown into [`Chunk`]s
//! according to a [`ChunkerConfig`] (a target and a maximum size in characters). Each chunk knows
//! its position in the markdown as char offsets, the stack of headings in force at its start
//! (its [`heading_path`](Chunk::heading_path)), a SHA-256 of its text, and an id derived from
//! the document id, its index and that hash ([`chunk_id`]).
//!
//! **Key design choice:** the splitting itself is text-splitter's `MarkdownSplitter` (sizes in
//! characters), but it never sees the whole document. The markdown is first cut into segments:
//! before every `#` or `##` heading (so a chunk never spans two chapters), at the latest every
//! `8 × max_chars` bytes (at least 8 KiB; preferring blank lines), and around every run of
//! non-whitespace longer than `max_chars`. text-splitter is quadratic on long stretches without
//! break opportunities (a 1 MiB word takes ~25 s); with the segments the total cost is linear:
//! a 2 MB single word chunks in ~15 ms, a 2 MB paragraph without punctuation in ~0.1 s
//! (release build). Every chunk's text is a slice of the original markdown.
//!
//! **Invariant:** the crate is pure: no I/O, no async, no global state. The same input always
//! yields the same chunks and ids.
//!
//! ```
//! use chunker::{chunk_markdown, ChunkerConfig};
//!
//! let markdown = "# Part One\n\n## Chapter 1\n\nCall me Ishmael.\n\n# Part Two\n\nThe end.";
//! let config = ChunkerConfig::new(20, 40)?;
//! let chunks = chunk_markdown("moby-dick", markdown, &config);
//!
//! assert_eq!(chunks[0].heading_path, ["Part One"]);
//! let ishmael = chunks.iter().find(|c| c.text.contains("Ishmael")).unwrap();
//! assert_eq!(ishmael.heading_path, ["Part One", "Chapter 1"]);
//! assert!(chunks.iter().all(|c| c.text.chars().count() <= 40));
//!
//! // Offsets are char offsets into the markdown, end exclusive.
//! let last = chunks.last().unwrap();
//! let slice: String = markdown.chars().skip(last.start).take(last.end - last.start).collect();
//! assert_eq!(slice, last.text);
//! assert_eq!(last.heading_path, ["Part Two"]);
//! # Ok::<(), chunker::ConfigError>(())
//! ```

mod headings;
mod segment;

use sha2::{Digest, Sha256};
use text_splitter::{ChunkConfig, MarkdownSplitter};

/// Sizes for [`chunk_markdown`], in characters (Unicode scalar values).
///
/// Build it with [`ChunkerConfig::new`] to have it validated. The fields are public so that the
/// pipeline can store and show them; [`chunk_markdown`] tolerates an invalid value built by hand
/// by treating a zero target as 1 and a maximum below the target as the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkerConfig {
    /// The size the splitter aims for: it packs paragraphs (and smaller units) into a chunk
    /// until the next one would make it larger than this.
    pub target_chars: usize,
    /// The hard upper bound: no chunk's text is longer than this many characters.
    pub max_chars: usize,
}

impl ChunkerConfig {
    /// Returns a validated configuration: `target_chars` must be positive and `max_chars` at
    /// least `target_chars`.
    pub fn new(target_chars: usize, max_chars: usize) -> Result<Self, ConfigError> {
        if target_chars == 0 {
            return Err(ConfigError::ZeroTarget);
        }
        if max_chars < target_chars {
            return Err(ConfigError::MaxBelowTarget { target_chars, max_chars });
        }
        Ok(Self { target_chars, max_chars })
    }

    /// The configuration actually used: a zero target becomes 1, a maximum below the target
    /// becomes the target.
    fn normalized(&self) -> (usize, usize) {
        let target = self.target_chars.max(1);
        (target, self.max_chars.max(target))
    }
}

impl Default for ChunkerConfig {
    /// 1000 characters targeted, 1500 at most.
    fn default() -> Self {
        Self { target_chars: 1000, max_chars: 1500 }
    }
}

/// Why a [`ChunkerConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The target size was zero.
    #[error("chunk target size must be at least 1 character")]
    ZeroTarget,
    /// The maximum size was below the target size.
    #[error("chunk maximum size ({max_chars}) is below the target size ({target_chars})")]
    MaxBelowTarget {
        /// The target size given.
        target_chars: usize,
        /// The maximum size given.
        max_chars: usize,
    },
}

/// One chunk of a document's markdown.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chunk {
    /// Stable id: see [`chunk_id`].
    pub id: String,
    /// Position among the document's chunks; contiguous from 0.
    pub index: u32,
    /// Titles of the ATX headings in force at the chunk's start, outermost first
    /// (e.g. `["Part One", "Chapter 3"]`). Empty before the first heading.
    pub heading_path: Vec<String>,
    /// The chunk's text: exactly the markdown between `start` and `end`. Never whitespace only.
    pub text: String,
    /// Char offset (in Unicode scalar values) of the chunk's first character in the markdown.
    pub start: usize,
    /// Char offset one past the chunk's last character (exclusive).
    pub end: usize,
    /// Lowercase hex SHA-256 of `text`.
    pub content_hash: String,
}

/// The deterministic id of a chunk: the first 32 hex digits of
/// SHA-256(`document_id` NUL `index` in decimal NUL `content_hash`).
///
/// ```
/// let id = chunker::chunk_id("doc", 0, "abc");
/// assert_eq!(id.len(), 32);
/// assert_eq!(id, chunker::chunk_id("doc", 0, "abc"));
/// assert_ne!(id, chunker::chunk_id("doc", 1, "abc"));
/// ```
pub fn chunk_id(document_id: &str, index: u32, content_hash: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(document_id.as_bytes());
    hasher.update([0]);
    hasher.update(index.to_string().as_bytes());
    hasher.update([0]);
    hasher.update(content_hash.as_bytes());
    let mut id = hex::encode(hasher.finalize());
    id.truncate(32);
    id
}

/// Splits a document's markdown into chunks.
///
/// Chunks follow the markdown's structure: a `#` or `##` heading always starts a new chunk, and
/// within a section text-splitter packs the largest units that fit (sections, paragraphs, lines,
/// sentences, words, then characters) up to `target_chars`, never exceeding `max_chars`.
/// Leading newlines and trailing whitespace are trimmed from each chunk (indentation is kept when
/// the chunk spans several lines); whitespace-only chunks are dropped. The whole call is linear in
/// the length of the markdown.
pub fn chunk_markdown(document_id: &str, markdown: &str, config: &ChunkerConfig) -> Vec<Chunk> {
    let (target, max) = config.normalized();
    let splitter = MarkdownSplitter::new(ChunkConfig::new(target..=max));
    let headings = headings::scan(markdown);
    let mut heading_stack = headings::HeadingStack::new(&headings);
    let mut cursor = CharCursor::new(markdown);
    let mut chunks = Vec::new();

    for segment in segment::segments(markdown, &headings, max) {
        for (offset, text) in splitter.chunk_indices(&markdown[segment.clone()]) {
            if text.trim().is_empty() {
                continue;
            }
            let byte_start = segment.start + offset;
            let start = cursor.char_offset(byte_start);
            let end = cursor.char_offset(byte_start + text.len());
            let Ok(index) = u32::try_from(chunks.len()) else {
                // More than four billion chunks cannot come from a document that fits in memory
                // with a positive chunk size; stop rather than wrap the index.
                return chunks;
            };
            let content_hash = hex::encode(Sha256::digest(text.as_bytes()));
            chunks.push(Chunk {
                id: chunk_id(document_id, index, &content_hash),
                index,
                heading_path: heading_stack.path_at(byte_start),
                text: text.to_owned(),
                start,
                end,
                content_hash,
            });
        }
    }
    chunks
}

/// Converts byte offsets to char offsets by walking the string from the previous position, so a
/// sequence of non-decreasing offsets costs one pass over the text in total.
struct CharCursor<'a> {
    text: &'a str,
    byte: usize,
    chars: usize,
}

impl<'a> CharCursor<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, byte: 0, chars: 0 }
    }

    /// The char offset of `byte`, which must be a char boundary of the text.
    fn char_offset(&mut self, byte: usize) -> usize {
        if byte >= self.byte {
            self.chars += self.text[self.byte..byte].chars().count();
        } else {
            // Chunks come in order, so this branch only keeps the cursor correct if they do not.
            self.chars -= self.text[byte..self.byte].chars().count();
        }
        self.byte = byte;
        self.chars
    }
}
