//! The one error type of the crate. Every variant is permanent: the same bytes fail the same way,
//! so a caller never retries. Each `Display` is a human reason naming the offending file.

use serde::{Deserialize, Serialize};

/// Which part of the book a structural error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// `META-INF/container.xml`.
    Container,
    /// The OPF package document.
    Package,
    /// The EPUB 2 NCX table of contents.
    Ncx,
    /// `META-INF/encryption.xml`.
    Encryption,
    /// An XHTML spine item.
    Chapter,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Container => "container file",
            Part::Package => "package document",
            Part::Ncx => "NCX table of contents",
            Part::Encryption => "encryption file",
            Part::Chapter => "chapter",
        })
    }
}

/// Why a book was refused. See [`ExtractError::code`] for the stable machine-readable kind.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExtractError {
    /// The file could not be read from disk.
    #[error("cannot read the file: {reason}")]
    Io {
        /// The operating system's message.
        reason: String,
    },
    /// The upload is larger than [`Limits::max_upload_bytes`](crate::Limits::max_upload_bytes).
    #[error("the file is {size} bytes, over the upload limit of {limit} bytes")]
    TooLarge {
        /// Size of the file in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The bytes are not a readable zip archive (empty, truncated, another format).
    #[error("not a zip archive: {reason}")]
    NotZip {
        /// What the zip reader said.
        reason: String,
    },
    /// More entries than [`Limits::max_entries`](crate::Limits::max_entries).
    #[error("the archive has {count} entries (limit {limit})")]
    TooManyEntries {
        /// Entries in the central directory.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The same entry name appears twice, so which content a reader sees is ambiguous (the zip
    /// reader keeps one of them and cannot say which name was repeated).
    #[error("the archive lists the same entry name more than once")]
    DuplicateEntries,
    /// One entry declares an uncompressed size past the per-entry limit.
    #[error("entry {entry} expands to {size} bytes, beyond the {} MiB per-entry limit", limit >> 20)]
    EntryTooLarge {
        /// Entry name.
        entry: String,
        /// Declared uncompressed size.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The entries together declare more than the total limit.
    #[error("entry {entry} expands beyond the {} MiB limit for the whole archive", limit >> 20)]
    TotalTooLarge {
        /// The entry at which the running total passed the limit.
        entry: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// An entry compresses suspiciously well (a zip bomb).
    #[error("entry {entry} is compressed {ratio}:1, beyond the limit of {limit}:1 (zip bomb)")]
    CompressionRatio {
        /// Entry name.
        entry: String,
        /// Uncompressed size divided by compressed size.
        ratio: u64,
        /// The limit.
        limit: u64,
    },
    /// `META-INF/container.xml` is absent.
    #[error("META-INF/container.xml is missing")]
    MissingContainer,
    /// `META-INF/container.xml` names no usable package document.
    #[error("META-INF/container.xml is unusable: {reason}")]
    BadContainer {
        /// What is wrong.
        reason: String,
    },
    /// The package document named by the container is not in the archive.
    #[error("the package document {path} named in META-INF/container.xml is missing")]
    MissingPackage {
        /// The `full-path`.
        path: String,
    },
    /// The package document could not be parsed.
    #[error("the package document {path} cannot be read: {reason}")]
    BadPackage {
        /// The `full-path`.
        path: String,
        /// The parser's message.
        reason: String,
    },
    /// An XML file declares entities; they are refused rather than expanded (billion laughs).
    #[error("{part} {path} declares XML entities, which are refused (entity expansion attack)")]
    XmlEntities {
        /// Which kind of file.
        part: Part,
        /// Its name in the archive.
        path: String,
    },
    /// A file nests elements deeper than [`Limits::max_nesting_depth`](crate::Limits::max_nesting_depth).
    #[error("{part} {path} nests {depth} levels deep (limit {limit})")]
    TooDeep {
        /// Which kind of file.
        part: Part,
        /// Its name in the archive.
        path: String,
        /// The deepest nesting found.
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// A file is in an encoding the guard cannot check and no parser downstream reads (UTF-32).
    #[error("{part} {path} is encoded in {encoding}, which is not supported (use UTF-8 or UTF-16)")]
    UnsupportedEncoding {
        /// Which kind of file.
        part: Part,
        /// Its name in the archive.
        path: String,
        /// The encoding its byte-order mark names.
        encoding: String,
    },
    /// The spine is empty: nothing to read.
    #[error("the spine is empty")]
    EmptySpine,
    /// A spine itemref names an id the manifest does not declare.
    #[error("spine item {idref} is not declared in the manifest")]
    UndeclaredSpineItem {
        /// The dangling `idref`.
        idref: String,
    },
    /// A spine item's href resolves outside the container (`..` past the root, absolute path).
    #[error("spine item {href} points outside the archive")]
    PathEscape {
        /// The href as resolved against the package document.
        href: String,
    },
    /// A spine item is not in the archive.
    #[error("spine item {path} not found in the archive")]
    MissingSpineItem {
        /// The resolved path.
        path: String,
    },
    /// A spine item is in the archive but could not be read (corrupt data).
    #[error("spine item {path} could not be read from the archive")]
    UnreadableSpineItem {
        /// The resolved path.
        path: String,
    },
    /// A spine item is encrypted (DRM); its text cannot be read.
    #[error("chapter {path} is encrypted (DRM): {algorithm}")]
    Encrypted {
        /// The chapter's path.
        path: String,
        /// The encryption algorithm URI, or "zip encryption".
        algorithm: String,
    },
    /// The book has spine items but none of them holds any text.
    #[error("the book contains no text")]
    NoText,
    /// The wall-clock budget ran out.
    #[error("time budget of {}s exceeded while reading chapter {chapter}", budget_ms / 1000)]
    TimeBudget {
        /// The budget in milliseconds.
        budget_ms: u64,
        /// The chapter about to be read when the budget was found exhausted.
        chapter: String,
    },
    /// The `epub` crate rejected the book.
    #[error("the EPUB cannot be parsed: {reason}")]
    Epub {
        /// Its message, with our context.
        reason: String,
    },
    /// A dependency panicked; the panic was contained.
    #[error("the EPUB reader crashed on this book: {reason}")]
    Panicked {
        /// The panic message.
        reason: String,
    },
    /// The extraction thread could not be started.
    #[error("internal error: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
}

impl ExtractError {
    /// A stable snake_case kind for logs, metrics and the job table (several variants can share a
    /// code when callers need not tell them apart, e.g. the three zip-bomb checks).
    pub fn code(&self) -> &'static str {
        match self {
            ExtractError::Io { .. } => "io",
            ExtractError::TooLarge { .. } => "too_large",
            ExtractError::NotZip { .. } => "not_zip",
            ExtractError::TooManyEntries { .. } => "too_many_entries",
            ExtractError::DuplicateEntries => "duplicate_entries",
            ExtractError::EntryTooLarge { .. }
            | ExtractError::TotalTooLarge { .. }
            | ExtractError::CompressionRatio { .. } => "zip_bomb",
            ExtractError::MissingContainer => "missing_container",
            ExtractError::BadContainer { .. } => "bad_container",
            ExtractError::MissingPackage { .. } => "missing_package",
            ExtractError::BadPackage { .. } => "bad_package",
            ExtractError::XmlEntities { .. } => "xml_entities",
            ExtractError::TooDeep { .. } => "too_deep",
            ExtractError::UnsupportedEncoding { .. } => "unsupported_encoding",
            ExtractError::EmptySpine => "empty_spine",
            ExtractError::UndeclaredSpineItem { .. } => "undeclared_spine_item",
            ExtractError::PathEscape { .. } => "path_escape",
            ExtractError::MissingSpineItem { .. } => "missing_spine_item",
            ExtractError::UnreadableSpineItem { .. } => "unreadable_spine_item",
            ExtractError::Encrypted { .. } => "drm_encrypted",
            ExtractError::NoText => "no_text",
            ExtractError::TimeBudget { .. } => "time_budget",
            ExtractError::Epub { .. } => "epub_parse",
            ExtractError::Panicked { .. } => "reader_panic",
            ExtractError::Internal { .. } => "internal",
        }
    }
}
