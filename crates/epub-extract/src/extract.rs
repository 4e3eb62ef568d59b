//! The conversion itself: pre-scan, our own OCF checks, then the `epub` crate for metadata and
//! spine, one guarded htmd conversion per spine item, all under the wall-clock budget.
//!
//! **Spine policy.** Spine items are read in spine order, each id once (a repeated itemref would
//! duplicate text). The EPUB 3 navigation document (manifest `properties="nav"`) is skipped: its
//! text is a table of contents, not book text. `linear="no"` items are *kept* in spine order:
//! they are covers (which yield no text), but also endnotes and glossaries whose text belongs to
//! the book. Image, audio, video and font spine items (SVG covers, fixed-layout pages) are skipped.
//! A spine item that cannot be read (undeclared, missing, escaping, encrypted) refuses the whole
//! book: extracting the rest would silently lose a chapter.

use std::collections::HashSet;
use std::io::Cursor;
use std::time::Instant;

use epub::doc::EpubDoc;

use crate::error::{ExtractError, Part};
use crate::{ExtractedBook, Limits, MAX_RUN_CHARS, html, package, paths, prescan, text, xml_guard};

pub(crate) fn extract(bytes: &[u8], limits: &Limits, started: Instant) -> Result<ExtractedBook, ExtractError> {
    let depth = limits.max_nesting_depth;
    let mut archive = prescan::prescan(bytes, limits)?;
    let opf_path = package::rootfile(&mut archive, depth)?;
    let shape = package::guard_package(&mut archive, &opf_path, depth)?;
    let encrypted = package::encrypted_resources(&mut archive, depth)?;

    let mut doc = EpubDoc::from_reader(Cursor::new(bytes)).map_err(|error| {
        let reason = match (&error, shape.missing_section()) {
            (epub::doc::DocError::InvalidEpub, Some(section)) => format!("it has no <{section}> element"),
            _ => error.to_string(),
        };
        ExtractError::BadPackage { path: opf_path.clone(), reason }
    })?;

    let title = metadata(&doc, "title");
    let author = metadata(&doc, "creator");
    let language = metadata(&doc, "language");

    if doc.spine.is_empty() {
        return Err(ExtractError::EmptySpine);
    }
    let converter = html::converter();
    let mut seen = HashSet::new();
    let mut parts: Vec<String> = Vec::new();
    for index in 0..doc.spine.len() {
        let idref = doc.spine[index].idref.clone();
        if !seen.insert(idref.clone()) {
            continue;
        }
        let Some(resource) = doc.resources.get(&idref).cloned() else {
            return Err(ExtractError::UndeclaredSpineItem { idref });
        };
        if resource.properties.as_deref().is_some_and(|p| p.split_whitespace().any(|p| p == "nav")) {
            continue;
        }
        let raw_path = resource.path.to_string_lossy().into_owned();
        let Some(path) = paths::normalize(&paths::percent_decode(&raw_path)) else {
            return Err(ExtractError::PathEscape { href: raw_path });
        };
        if ["image/", "audio/", "video/", "font/"].iter().any(|prefix| resource.mime.starts_with(prefix)) {
            continue;
        }
        if started.elapsed() > limits.time_budget {
            let budget_ms = u64::try_from(limits.time_budget.as_millis()).unwrap_or(u64::MAX);
            return Err(ExtractError::TimeBudget { budget_ms, chapter: path });
        }
        // Any algorithm on a chapter scrambles its text, font obfuscation included: the exception
        // for obfuscation holds only for the fonts it was designed for.
        if let Some(entry) = encrypted.iter().find(|e| e.path == path) {
            return Err(ExtractError::Encrypted { path, algorithm: entry.algorithm.clone() });
        }
        if archive.is_zip_encrypted(&raw_path) {
            return Err(ExtractError::Encrypted { path, algorithm: "zip encryption".into() });
        }
        if !doc.set_current_chapter(index) {
            return Err(ExtractError::MissingSpineItem { path });
        }
        // `get_current` (bytes), not `get_current_str`: epub turns invalid UTF-8 into `None`,
        // indistinguishable from a missing file. Its errors are generic, so we add the name.
        let Some((chapter, _mime)) = doc.get_current() else {
            return Err(if archive.lookup(&raw_path).is_some() {
                ExtractError::UnreadableSpineItem { path }
            } else {
                ExtractError::MissingSpineItem { path }
            });
        };
        // Invalid UTF-8 becomes U+FFFD rather than losing the chapter.
        let chapter = xml_guard::guard(&chapter, Part::Chapter, &path, depth)?;
        let markdown = text::tidy(&html::to_markdown(&converter, &String::from_utf8_lossy(&chapter)), MAX_RUN_CHARS);
        if markdown.chars().any(|c| !c.is_whitespace()) {
            parts.push(markdown);
        }
    }
    if parts.is_empty() {
        return Err(ExtractError::NoText);
    }
    let ignored = archive.ignored();
    if !ignored.is_empty() {
        tracing::info!(?ignored, "ignored archive entries whose names escape the container");
    }
    Ok(ExtractedBook { title, author, language, chapters: parts.len(), markdown: parts.join("\n\n") })
}

/// The first metadata value of this property, whitespace collapsed; `None` when blank.
fn metadata<R: std::io::Read + std::io::Seek>(doc: &EpubDoc<R>, property: &str) -> Option<String> {
    let value = doc.mdata(property)?.value.split_whitespace().collect::<Vec<_>>().join(" ");
    (!value.is_empty()).then_some(value)
}
