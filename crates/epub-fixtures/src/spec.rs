//! The book description a test writes: a [`BookSpec`] made of [`ChapterSpec`]s made of [`Block`]s.
//!
//! Inline markup inside blocks is trusted XHTML written by the project itself (e.g. `<em>`), so a
//! fixture can exercise exactly the markup it wants without a second builder layer.

/// Which EPUB generation to package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpubVersion {
    /// EPUB 2.0.1: OPF `version="2.0"`, an NCX table of contents named by `<spine toc>`.
    Epub2,
    /// EPUB 3: OPF `version="3.0"`, an XHTML navigation document (`properties="nav"`) in the spine.
    Epub3,
}

/// One structural block of a chapter body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// `<hN>` with N in 1..=6; the text may hold inline markup.
    Heading {
        /// Heading level, 1 to 6.
        level: u8,
        /// Inline XHTML.
        text: String,
    },
    /// `<p>` holding inline XHTML.
    Paragraph(String),
    /// `<ul>` or `<ol>`, one `<li>` per item (inline XHTML).
    List {
        /// `true` for `<ol>`.
        ordered: bool,
        /// The items.
        items: Vec<String>,
    },
    /// `<blockquote><p>…</p></blockquote>`.
    Quote(String),
    /// An EPUB 3 footnote: `<aside epub:type="footnote" id="…">`. Reference it from a paragraph with
    /// [`noteref`].
    Footnote {
        /// The `id` the noteref points to.
        id: String,
        /// Inline XHTML of the note.
        text: String,
    },
    /// `<img>` of a tiny generated PNG packaged as `OEBPS/images/<file>`.
    Image {
        /// File name inside `OEBPS/images/`.
        file: String,
        /// The `alt` text.
        alt: String,
    },
    /// Raw XHTML inserted verbatim into `<body>` (hostile or unusual markup).
    Raw(String),
}

/// One spine item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapterSpec {
    /// File name inside `OEBPS/`, e.g. `ch1.xhtml`.
    pub file: String,
    /// The `<title>` in the head (never body text: the extractor must drop it).
    pub title: String,
    /// Body blocks in order.
    pub blocks: Vec<Block>,
}

/// A whole book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookSpec {
    /// `dc:title`.
    pub title: String,
    /// `dc:creator`.
    pub author: String,
    /// `dc:language` (BCP 47).
    pub language: String,
    /// `dc:identifier`, the package's unique identifier.
    pub identifier: String,
    /// EPUB 2 (NCX) or EPUB 3 (nav document).
    pub version: EpubVersion,
    /// Spine items in reading order.
    pub chapters: Vec<ChapterSpec>,
}

impl BookSpec {
    /// An EPUB 3 book with a derived identifier.
    pub fn new(title: &str, author: &str, language: &str, chapters: Vec<ChapterSpec>) -> Self {
        Self {
            title: title.to_owned(),
            author: author.to_owned(),
            language: language.to_owned(),
            identifier: format!("urn:quire:fixture:{}", slug(title)),
            version: EpubVersion::Epub3,
            chapters,
        }
    }
}

impl ChapterSpec {
    /// A chapter whose body starts with an `<h1>` equal to its title.
    pub fn new(file: &str, title: &str, mut blocks: Vec<Block>) -> Self {
        blocks.insert(0, Block::Heading { level: 1, text: escape(title) });
        Self { file: file.to_owned(), title: title.to_owned(), blocks }
    }
}

/// Inline XHTML for an EPUB 3 footnote reference to the [`Block::Footnote`] with this id.
pub fn noteref(id: &str, marker: &str) -> String {
    format!(r##"<a epub:type="noteref" role="doc-noteref" href="#{id}">{marker}</a>"##)
}

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Lowercase ASCII letters and digits joined by `-`.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}
