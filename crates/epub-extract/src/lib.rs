//! Untrusted EPUB in, clean markdown out — or a typed, permanent refusal.
//!
//! The entry points are [`extract_file`] and [`extract_bytes`]; they return an [`ExtractedBook`]
//! (metadata and one markdown string, chapters in spine order, ATX `#` headings) or an
//! [`ExtractError`] whose `Display` is a human reason and whose [`ExtractError::code`] is a stable
//! snake_case kind. [`Limits`] bounds everything a hostile file could inflate.
//!
//! **Design choice: nothing parses a byte that has not been checked by cheaper code first.** The
//! `epub` crate and html5ever are tolerant but not defensive: they panic, overflow the stack on
//! deep nesting, or would inflate a zip bomb. So the layers run in this order:
//!
//! 1. [`prescan`](crate::prescan): the zip central directory alone — entry count, declared sizes,
//!    compression ratio, duplicate and escaping names. Nothing is inflated.
//! 2. `package`: `container.xml`, the OPF, the NCX and `encryption.xml` are read by us and passed
//!    through `xml_guard` (no `<!ENTITY` declarations, bounded nesting, checked in UTF-8 after
//!    transcoding UTF-16; UTF-32 refused) before `epub` sees them;
//!    the `full-path` values that make `epub` panic are refused.
//! 3. `epub` parses the package; each spine item's bytes are guarded again before htmd converts
//!    them, on a thread with a 64 MiB stack, inside `catch_unwind` as a last line of defence.
//!
//! Callers that need isolation from aborts (allocation failure) should still run this in a child
//! process with a memory limit: `catch_unwind` cannot catch those.
//!
//! ```
//! let bytes = epub_fixtures::sample_book();
//! let book = epub_extract::extract_bytes(&bytes, &epub_extract::Limits::default()).unwrap();
//! assert_eq!(book.title.as_deref(), Some("The Lighthouse Sampler"));
//! assert!(book.markdown.starts_with("# Chapter One: Beginnings"));
//!
//! let refused = epub_extract::extract_bytes(b"not a zip", &Default::default()).unwrap_err();
//! assert_eq!(refused.code(), "not_zip");
//! ```

mod encoding;
mod error;
mod extract;
mod html;
mod package;
mod paths;
mod prescan;
mod text;
mod xml_guard;

use std::path::Path;
use std::time::{Duration, Instant};

pub use error::{ExtractError, Part};

/// Runs of non-whitespace longer than this many characters get a newline inserted, because the
/// downstream text splitter is quadratic on long runs without break opportunities.
pub const MAX_RUN_CHARS: usize = 2_000;

/// Stack size of the extraction thread: html5ever and htmd use about 1 KB per nesting level, and
/// the nesting guard keeps depth far below what this allows.
const STACK_BYTES: usize = 64 << 20;

/// Resource bounds for one book. Every limit produces a permanent [`ExtractError`] when exceeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted file, in bytes (default 100 MiB).
    pub max_upload_bytes: u64,
    /// Most entries in the zip central directory (default 10 000).
    pub max_entries: usize,
    /// Largest declared uncompressed size of one entry (default 128 MiB).
    pub max_entry_uncompressed: u64,
    /// Largest sum of declared uncompressed sizes (default 512 MiB).
    pub max_total_uncompressed: u64,
    /// Highest uncompressed:compressed ratio, checked only for entries over 1 MiB uncompressed
    /// (default 200; real books stay far below, text deflates about 3:1).
    pub max_compression_ratio: u64,
    /// Deepest element nesting in any XML or XHTML file (default 256; real books reach about 20).
    pub max_nesting_depth: usize,
    /// Wall-clock budget, checked between spine items (default 60 s).
    pub time_budget: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_upload_bytes: 100 << 20,
            max_entries: 10_000,
            max_entry_uncompressed: 128 << 20,
            max_total_uncompressed: 512 << 20,
            max_compression_ratio: 200,
            max_nesting_depth: 256,
            time_budget: Duration::from_secs(60),
        }
    }
}

/// The text of a book and its package metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedBook {
    /// `dc:title` (the first one), whitespace collapsed.
    pub title: Option<String>,
    /// `dc:creator` (the first one).
    pub author: Option<String>,
    /// `dc:language` (the first one), as written (e.g. `en-GB`).
    pub language: Option<String>,
    /// The chapters' markdown in spine order, separated by blank lines.
    pub markdown: String,
    /// Number of spine items that yielded text.
    pub chapters: usize,
}

/// Reads and extracts the EPUB at `path`. The size is checked before the file is read.
pub fn extract_file(path: &Path, limits: &Limits) -> Result<ExtractedBook, ExtractError> {
    let io = |e: std::io::Error| ExtractError::Io { reason: format!("{}: {e}", path.display()) };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > limits.max_upload_bytes {
        return Err(ExtractError::TooLarge { size, limit: limits.max_upload_bytes });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    extract_bytes(&bytes, limits)
}

/// Extracts an EPUB held in memory.
pub fn extract_bytes(bytes: &[u8], limits: &Limits) -> Result<ExtractedBook, ExtractError> {
    let size = bytes.len() as u64;
    if size > limits.max_upload_bytes {
        return Err(ExtractError::TooLarge { size, limit: limits.max_upload_bytes });
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("epub-extract".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(scope, || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| extract::extract(bytes, limits, started)))
                    .unwrap_or_else(|payload| Err(panicked(payload.as_ref())))
            })
            .map_err(|e| ExtractError::Internal { reason: format!("cannot start the extraction thread: {e}") })?;
        // The closure catches unwinding panics itself; a join error would mean one escaped anyway.
        handle.join().unwrap_or_else(|payload| Err(panicked(payload.as_ref())))
    })
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> ExtractError {
    let reason = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    ExtractError::Panicked { reason }
}
