//! The zip pre-scan: runs on the central directory alone, before the `epub` crate or any parser
//! sees the bytes, and refuses archives whose declared sizes make them dangerous to inflate.
//!
//! Declared sizes can be trusted because zip 9.8 stops with an error when an entry inflates past
//! the size its header declares; so the checks here need no inflating at all.
//!
//! **Policy for escaping names.** An entry whose name is absolute or climbs above the root with
//! `..` is *ignored*, not refused: quire never extracts to disk, and nothing reads an entry unless
//! the package refers to it. A spine item whose href resolves outside the container is refused
//! later ([`ExtractError::PathEscape`]), so an escaping entry can never become text. Ignored
//! entries still count towards the size limits.

use std::io::{Cursor, Read};

use crate::Limits;
use crate::error::ExtractError;
use crate::paths;

/// Uncompressed size above which the compression-ratio check applies: small files (a CSS file of
/// repeated rules, a blank page) legitimately compress very well.
const RATIO_THRESHOLD: u64 = 1 << 20;

/// The archive after a successful pre-scan, for the few entries we read ourselves.
pub(crate) struct Archive<'a> {
    zip: zip::ZipArchive<Cursor<&'a [u8]>>,
    /// Names of entries that are encrypted at the zip level (traditional or AES).
    zip_encrypted: Vec<String>,
    /// Names that escape the container, ignored by policy (see the module doc).
    ignored: Vec<String>,
}

/// Checks the archive's central directory against `limits`.
pub(crate) fn prescan<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Archive<'a>, ExtractError> {
    if bytes.is_empty() {
        return Err(ExtractError::NotZip { reason: "the file is empty".into() });
    }
    let zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| ExtractError::NotZip { reason: e.to_string() })?;
    if zip.len() > limits.max_entries {
        return Err(ExtractError::TooManyEntries { count: zip.len(), limit: limits.max_entries });
    }
    if zip.has_duplicate_names() {
        return Err(ExtractError::DuplicateEntries);
    }
    let mut total: u64 = 0;
    let mut zip_encrypted = Vec::new();
    let mut ignored = Vec::new();
    for index in 0..zip.len() {
        let entry = zip.by_index_data(index).map_err(|e| ExtractError::NotZip { reason: e.to_string() })?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        if paths::normalize(&name).is_none() {
            ignored.push(name.clone());
        }
        let size = entry.size();
        if size > limits.max_entry_uncompressed {
            return Err(ExtractError::EntryTooLarge { entry: name, size, limit: limits.max_entry_uncompressed });
        }
        if size > RATIO_THRESHOLD {
            let ratio = size / entry.compressed_size().max(1);
            if ratio > limits.max_compression_ratio {
                return Err(ExtractError::CompressionRatio { entry: name, ratio, limit: limits.max_compression_ratio });
            }
        }
        total = total.saturating_add(size);
        if total > limits.max_total_uncompressed {
            return Err(ExtractError::TotalTooLarge { entry: name, limit: limits.max_total_uncompressed });
        }
        if entry.encrypted() {
            zip_encrypted.push(name);
        }
    }
    Ok(Archive { zip, zip_encrypted, ignored })
}

impl Archive<'_> {
    /// The exact entry name `epub` would find for `name`: verbatim, else percent-decoded (the
    /// same fallback as `epub::archive::EpubArchive::get_entry`).
    pub(crate) fn lookup(&self, name: &str) -> Option<String> {
        if self.zip.index_for_name(name).is_some() {
            return Some(name.to_owned());
        }
        let decoded = paths::percent_decode(name);
        self.zip.index_for_name(&decoded).map(|_| decoded)
    }

    /// Reads an entry (sizes were bounded by the pre-scan). `None` if absent.
    pub(crate) fn read(&mut self, name: &str) -> Option<Result<Vec<u8>, String>> {
        let name = self.lookup(name)?;
        let result = self.zip.by_name(&name).map_err(|e| e.to_string()).and_then(|mut file| {
            let mut data = Vec::with_capacity(usize::try_from(file.size()).unwrap_or(0).min(1 << 24));
            file.read_to_end(&mut data).map(|_| data).map_err(|e| e.to_string())
        });
        Some(result)
    }

    /// Entries ignored because their names escape the container.
    pub(crate) fn ignored(&self) -> &[String] {
        &self.ignored
    }

    /// Whether the entry is encrypted at the zip level.
    pub(crate) fn is_zip_encrypted(&self, name: &str) -> bool {
        self.zip_encrypted.iter().any(|n| n == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_are_not_zip() {
        let limits = Limits::default();
        assert_eq!(prescan(b"", &limits).err().map(|e| e.code()), Some("not_zip"));
        assert_eq!(prescan(b"hello world", &limits).err().map(|e| e.code()), Some("not_zip"));
    }

    #[test]
    fn total_limit_applies_across_entries() {
        let book = epub_fixtures::sample_book();
        let limits = Limits { max_total_uncompressed: 1000, ..Limits::default() };
        assert!(matches!(prescan(&book, &limits), Err(ExtractError::TotalTooLarge { .. })));
        let limits = Limits { max_entries: 3, ..Limits::default() };
        assert!(matches!(prescan(&book, &limits), Err(ExtractError::TooManyEntries { limit: 3, .. })));
    }
}
