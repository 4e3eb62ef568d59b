//! Small EPUB files made by quire itself, for tests: well-formed books and hostile files.
//!
//! The main types are [`BookSpec`] (a book: metadata and [`ChapterSpec`]s made of [`Block`]s) and
//! [`build_epub`], which packages one with the `zip` crate: `mimetype` first and stored,
//! `META-INF/container.xml`, an OPF, an EPUB 3 navigation document or an EPUB 2 NCX, XHTML
//! chapters and generated PNG images. [`sample_book`], [`sample_book_with_image`] and
//! [`epub2_book`] are the standard fixtures; [`corpus_of`] makes many distinct books sharing
//! vocabulary; the [`hostile`] module makes zip bombs, entity bombs, path traversal and the like.
//! [`shared_corpus`] finds the real books beside the checkout, for the tests that read them.
//!
//! **Design choice: output is deterministic.** Every entry carries the same fixed timestamp, so
//! the same spec always yields the same bytes. The generated fixtures are committed under
//! `fixtures/` and a test proves they match a fresh build (`cargo run -p epub-fixtures` rewrites
//! them). Hostile files that the `zip` writer would refuse to make (a pre-deflated bomb with
//! chosen headers) come from a tiny hand-rolled writer instead.
//!
//! ```
//! use epub_fixtures::{BookSpec, Block, ChapterSpec, build_epub};
//!
//! let chapter = ChapterSpec::new("ch1.xhtml", "Opening", vec![Block::Paragraph("Hello.".into())]);
//! let bytes = build_epub(&BookSpec::new("Tiny", "Anon", "en", vec![chapter]));
//! assert_eq!(&bytes[30..38], b"mimetype");
//! assert_eq!(bytes, build_epub(&BookSpec::new("Tiny", "Anon", "en", vec![
//!     ChapterSpec::new("ch1.xhtml", "Opening", vec![Block::Paragraph("Hello.".into())]),
//! ])));
//! ```

mod corpus;
pub mod hostile;
mod package;
mod png;
mod rawzip;
mod samples;
mod spec;

use std::path::Path;

pub use corpus::shared_corpus;
pub use package::{CONTAINER_XML, Entry, book_entries, build_epub, chapter_document, package_document, zip_entries};
pub use png::tiny_png;
pub use samples::{
    corpus_of, epub2_book, epub2_book_spec, sample_book, sample_book_spec, sample_book_with_image,
    sample_book_with_image_spec,
};
pub use spec::{Block, BookSpec, ChapterSpec, EpubVersion, escape, noteref, slug};

/// The standard fixtures as `(file name, bytes)`, in the order the bin writes them.
pub fn standard_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("sample.epub", sample_book()),
        ("sample-with-image.epub", sample_book_with_image()),
        ("epub2-sample.epub", epub2_book()),
    ]
}

/// The workspace's `fixtures/` directory (where the committed fixtures live).
pub fn fixtures_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"))
}

/// Writes [`standard_fixtures`] into `dir`, returning the paths written.
pub fn write_standard_fixtures(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    standard_fixtures()
        .into_iter()
        .map(|(name, bytes)| {
            let path = dir.join(name);
            std::fs::write(&path, bytes)?;
            Ok(path)
        })
        .collect()
}
